"""The publish job against a stand-in Label Studio API: the head, not the pool; hygiene; refills;
the incremental pool; early stops. (The real LS at 10,000 tasks: tests/e2e.)"""

from __future__ import annotations

import time

import pytest

from backend import labelstudio
from backend.config import Settings
from backend.jobs import publish as publish_module
from backend.jobs.publish import publish
from backend.model import UNTRAINED
from lab.standin_ls import StandinLabelStudio
from tests.conftest import annotation_event, wait_for
from tests.web.test_api import train

POOL = range(1000, 3000)  # task ids of the stand-in's unlabeled tasks (tweets of the same index)


@pytest.fixture
def settings(tmp_path):
    """Only START_TRAINING trains (`train`'s last step): no version is promoted during a test's push."""
    return Settings.from_env(
        {}, model_dir=tmp_path / "models", retrain_min_interval=0.0, swap_poll_interval=0.05, log_level="WARNING", retrain_threshold=100_000
    )


@pytest.fixture(autouse=True)
def no_label_error_checks(monkeypatch):
    """Row counts below are exact: no label-error check runs behind a test's back (the one test of
    their push stores a check itself)."""
    from backend.jobs import entry

    monkeypatch.setattr(entry, "enqueue_mislabels", lambda runtime, project, version: None)


@pytest.fixture
def standin(tweets):
    with StandinLabelStudio([{"id": i, "data": {"text": tweets.texts[i]}} for i in POOL]) as ls:
        yield ls


def connection(standin: StandinLabelStudio) -> labelstudio.Connection:
    return labelstudio.connect(labelstudio.Credentials(standin.url, "token"), standin.project)


def settings_of(client, **values) -> None:
    assert client.put("/projects/1/settings", json=values).status_code == 200


def take(client, tweets, task_ids) -> list[dict]:
    """Annotators label these tasks (LS sends ANNOTATION_CREATED); the answers."""
    answers = []
    for task in task_ids:
        event = annotation_event(10_000 + task, task, tweets.texts[task], tweets.labels[task])
        response = client.post("/webhook", json=event)
        assert response.status_code == 200
        answers.append(response.json)
    return answers


def test_a_promotion_pushes_the_head_not_the_pool_and_removes_the_previous_version(client, runtime, tweets, standin):
    ls = connection(standin)
    runtime.store.set_meta(1, label_config=open("label_config.xml").read())
    settings_of(client, push_top=50)
    first = publish(runtime, 1, ls)  # untrained: the cold-start order's head
    assert first["listed"]["listed"] == len(POOL) and first["pushed"] == first["head"] == 50
    assert standin.model_version == UNTRAINED and standin.rows() == 50

    version = train(client, tweets)
    settings_of(client, push_top=120, uncertainty_sampling=True)
    summary = publish(runtime, 1, ls)
    assert summary["pushed"] == summary["head"] == 120, summary
    assert standin.model_version == version and standin.sampling == "Uncertainty sampling"
    assert standin.versions() == {version: 120}  # the untrained head is gone
    assert summary["removed"] == {UNTRAINED: 50}
    queue = client.get("/queue?project=1&limit=120").json
    assert standin.current_tasks() == {t["task"] for t in queue["tasks"]}  # exactly the head of our queue
    served, from_predictions = standin.next_task()
    assert from_predictions and served == queue["tasks"][0]["task"]
    assert standin.traffic.past_end == 0


def test_only_our_versions_are_removed(client, runtime, tweets, standin):
    ls = connection(standin)
    labelstudio.call(
        ls,
        "POST",
        f"api/projects/{standin.project}/import/predictions",
        body=[{"task": 1000, "result": [], "score": 0.5, "model_version": "their-model"}],
    )
    version = train(client, tweets)
    settings_of(client, push_top=60)
    publish(runtime, 1, ls)
    assert standin.versions() == {version: 60, "their-model": 1}


def test_annotators_taking_half_the_head_ask_for_a_refill(client, runtime, tweets, standin):
    ls = connection(standin)
    version = train(client, tweets)
    settings_of(client, push_top=60)
    publish(runtime, 1, ls)
    head = sorted(standin.current_tasks())
    for task in head[:31]:
        standin.annotate(task)
    answers = take(client, tweets, head[:31])
    assert "publish" not in answers[29]  # 30 of 60 left
    assert answers[30]["publish"]["job_id"]  # 29 left: fewer than half
    summary = publish(runtime, 1, ls)
    assert summary["pushed"] == 31 and len(standin.current_tasks()) == 60
    assert standin.versions() == {version: 91}  # LS keeps the taken tasks' predictions, of this version only


def test_a_push_for_a_version_no_longer_served_stops_between_batches(client, runtime, tweets, standin, monkeypatch):
    ls = connection(standin)
    version = train(client, tweets)
    settings_of(client, push_top=350)
    answers = iter([version] * 4 + ["p1-v99"] * 100)
    monkeypatch.setattr(publish_module, "served_version", lambda runtime, project: next(answers))
    summary = publish(runtime, 1, ls)
    assert summary["stopped"] == f"{version} is no longer served"
    assert 0 < summary["pushed"] < 350 and summary["pushed"] % labelstudio.PUSH_BATCH == 0
    assert standin.model_version == version  # set once its first batch was stored
    assert standin.rows() == standin.rows(version) == summary["pushed"]


def test_the_pool_is_listed_incrementally_and_reconciled_in_full(client, runtime, tweets, standin):
    ls = connection(standin)
    version = train(client, tweets)
    assert publish(runtime, 1, ls)["listed"] == {"full": 1, "listed": len(POOL), "added": len(POOL), "removed": 0}
    standin.add_tasks([{"id": i, "data": {"text": tweets.texts[i]}} for i in range(5000, 5010)])
    before = standin.traffic.bytes_out
    assert publish(runtime, 1, ls)["listed"] == {"full": 0, "listed": 10, "added": 10, "removed": 0}
    assert standin.traffic.bytes_out - before < 20_000  # the new tasks, not the pool
    assert {5000, 5009} <= {t["id"] for t in runtime.store.unlabeled_pool(1)}
    del standin.tasks[5000]
    runtime.store.mark_listed(1, 5009, full_at=time.time() - 3601)
    assert publish(runtime, 1, ls)["listed"]["removed"] == 1
    assert standin.traffic.past_end == 0
    assert version


def test_predict_scores_a_task_as_the_pushed_head_does(client, runtime, tweets, standin):
    ls = connection(standin)
    version = train(client, tweets)
    settings_of(client, push_top=50)
    publish(runtime, 1, ls)
    pushed = {p["task"]: p["score"] for p in standin.predictions.values()}
    queue = client.get("/queue?project=1&limit=200").json["tasks"]
    outside = queue[150]
    body = {
        "tasks": [{"id": t, "data": {"text": tweets.texts[t]}} for t in (queue[0]["task"], outside["task"])],
        "project": "1.1700000000",
        "label_config": open("label_config.xml").read(),
    }
    results = client.post("/predict", json=body).json["results"]
    assert results[0]["score"] == pushed[queue[0]["task"]] == queue[0]["score"]
    assert results[1]["score"] == outside["score"] > max(pushed.values())
    assert all(r["model_version"] == version for r in results)


def test_the_default_head_follows_the_labeling_rate(client, runtime, tweets, standin):
    from backend.head import head_size, promotion_cycle
    from backend.policy import policy_for

    ls = connection(standin)
    train(client, tweets)
    settings_of(client, retrain_threshold=40)
    runtime.store.record_activity(1, [(50_000 + i, i % 3) for i in range(600)])  # 3 annotators, 600 labels in a minute
    rate, annotators = runtime.store.labeling_rate(1)
    assert annotators == 3 and rate == pytest.approx((120 + 600) / 60)  # train's 120 webhooks too
    policy = policy_for(runtime.settings, runtime.store.meta(1))
    expected = head_size(0, policy.retrain_threshold, rate, annotators, promotion_cycle(runtime.registry.history(1)))
    summary = publish(runtime, 1, ls)
    assert summary["head"] == summary["pushed"] == expected == 2 * 40 + 4 * 3


def test_the_label_error_check_is_pushed_once_by_the_publish_job(client, runtime, tweets, standin):
    ls = connection(standin)
    version = train(client, tweets)
    settings_of(client, push_top=50)
    publish(runtime, 1, ls)
    suspects = [{"task": 5, "mislabeling": 0.9}, {"task": 5, "mislabeling": 0.95}, {"task": 7, "mislabeling": 0.4}]
    runtime.store.save_mislabels(1, {"version": version, "checked": 120, "suspects": suspects})
    assert publish(runtime, 1, ls)["mislabels"] == 2
    flagged = {p["task"]: p["mislabeling"] for p in standin.predictions.values() if p["mislabeling"]}
    assert flagged == {5: 0.95, 7: 0.4}
    assert publish(runtime, 1, ls)["mislabels"] == 0 and standin.rows(version) == 52  # once
    runtime.store.save_mislabels(1, {"version": "p1-v0", "checked": 120, "suspects": suspects})
    assert publish(runtime, 1, ls)["mislabels"] == 0  # a check of another version is not pushed


def test_a_slow_label_studio_never_delays_the_next_training(tmp_path, tweets, monkeypatch):
    """LS answers every request 0.2 s late: the head's push takes about a minute, and a training
    asked for meanwhile is judged within seconds, because every write into LS is a publish job's
    (the label-error check runs here too: it used to push from the retrain queue)."""
    import fakeredis

    monkeypatch.undo()  # the label-error check runs, as in production

    from backend.runtime import Runtime
    from backend.web.app import create_app

    pool = [{"id": i, "data": {"text": tweets.texts[i]}} for i in POOL]
    with StandinLabelStudio(pool, latency=0.2) as standin:
        settings = Settings.from_env(
            {},
            model_dir=tmp_path / "models",
            retrain_min_interval=0.0,
            swap_poll_interval=0.05,
            log_level="WARNING",
            retrain_threshold=100_000,
            label_studio_url=standin.url,
            label_studio_api_key="token",
        )
        runtime = Runtime.build(settings, redis=fakeredis.FakeRedis())
        client = create_app(runtime=runtime).test_client()
        first = train(client, tweets)
        wait_for(lambda: standin.rows(first) > 0, timeout=60)  # its head is being pushed
        for i in range(120, 240):
            client.post("/webhook", json=annotation_event(i + 1, i + 1, tweets.texts[i], tweets.labels[i]))
        client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
        started = time.monotonic()
        wait_for(lambda: len(runtime.registry.history(1)) >= 2, timeout=60)
        assert time.monotonic() - started < 20
        assert standin.rows(first) < 50  # the first head is still being stored
        runtime.stop()


def test_label_counts_count_spans_by_type_and_tasks_without_spans_as_labeled():
    from backend.consensus import LabeledTask
    from backend.jobs.publish import label_counts
    from backend.labelconfig import parse_label_config
    from lab.client import ner_config

    config = parse_label_config(ner_config(["PER", "LOC"], choices=["a", "b"]))
    tasks = [
        LabeledTask(1, {}, {"ner": ["0,3,PER", "4,7,PER", "9,12,LOC"]}, {}),
        LabeledTask(2, {}, {"ner": []}, {}),  # "no entities" is a label
        LabeledTask(3, {}, {"sentiment": ["a"]}, {}),
    ]
    assert label_counts(tasks, config) == ({"ner": {"PER": 2, "LOC": 1}, "sentiment": {"a": 1}}, 3)
    assert config.classes == {"sentiment": ("a", "b")}  # the cold-start rule waits for Choices classes only
