"""Webhook handling through the app on fakeredis with the embedded worker thread."""

import numpy as np

from backend.consensus import for_policy
from backend.jobs.trigger import queued_job, request_retrain
from backend.labelconfig import parse_label_config
from backend.policy import Policy
from lab.client import ner_config, span_event
from tests.conftest import LABEL_CONFIG, annotation_event, labeled, wait_for


def test_bulk_annotations_created_are_stored(client, runtime, tweets):
    events = [annotation_event(i + 1, i + 1, tweets.texts[i], tweets.labels[i]) for i in range(5)]
    bulk = {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [e["annotation"] for e in events],
        "task": [e["task"] for e in events],
        "project": events[0]["project"],
    }
    assert client.post("/webhook", json=bulk).json["changed"] == 5
    assert len(labeled(runtime.store, 1)) == 5


def test_deletions_arrive_as_ids_only(client, runtime):
    client.post("/webhook", json=annotation_event(10, 1, "text", "positive"))
    response = client.post(
        "/webhook", json={"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 10}, {"id": 77}], "project": {"id": 1}}
    )
    assert response.status_code == 200 and response.json["deleted"] == 2
    assert labeled(runtime.store, 1) == []


def test_tasks_created_fill_the_pool(client, runtime):
    client.post("/setup", json={"project": 1, "schema": LABEL_CONFIG})
    client.post(
        "/webhook", json={"action": "TASKS_CREATED", "tasks": [{"id": 3, "data": {"text": "a", "secret": "s"}}], "project": {"id": 1}}
    )
    assert runtime.store.pool(1) == {3: {"text": "a"}}
    client.post("/webhook", json={"action": "TASKS_DELETED", "tasks": [{"id": 3}], "project": {"id": 1}})
    assert runtime.store.pool(1) == {}


def test_tasks_deleted_take_their_texts_annotations_and_cached_features_with_them(client, runtime, tweets):
    from backend.families.pool import cache_for
    from tests.web.test_api import train

    train(client, tweets, n=60)
    tasks = [{"id": 1000 + i, "data": {"text": tweets.texts[1000 + i]}} for i in range(40)]
    client.post("/webhook", json={"action": "TASKS_CREATED", "tasks": tasks, "project": {"id": 1}})
    cache = runtime.registry.project_dir(1) / "pool" / "index.npz"
    wait_for(lambda: cache.exists() and 1005 in np.load(cache)["ids"].tolist(), timeout=60)
    doomed = [{"id": 3}, {"id": 4}, {"id": 1005}]
    answer = client.post("/webhook", json={"action": "TASKS_DELETED", "tasks": doomed, "project": {"id": 1}}).json
    assert "publish" in answer and runtime.store.annotated(1, [3, 4, 5]) == {5}  # texts gone at once
    wait_for(lambda: not ({3, 4} & {int(r.task) for r in labeled(runtime.store, 1)}), timeout=5)
    wait_for(lambda: not ({3, 4} & runtime.store.annotation_ids(1)), timeout=60)  # annotations, by the publish job
    wait_for(lambda: 1005 not in np.load(cache)["ids"].tolist(), timeout=60)
    rows = sum(len(np.load(p)) - 1 for p in cache.parent.glob("seg-*.indptr.npy")) // 2
    assert rows == len(np.load(cache)["ids"])  # no row of a deleted task is left in the files
    assert cache_for(runtime.registry.project_dir(1)).forget([1005]) == 0


def test_a_label_config_change_requests_a_retrain(client, runtime):
    client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 1, "label_config": LABEL_CONFIG}})
    edited = LABEL_CONFIG.replace('<Choice value="neutral"/>', "")
    answer = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 1, "label_config": edited}}).json
    assert "retrain" in answer and runtime.store.meta(1)["label_config"] == edited


def test_retrain_requests_are_coalesced_while_one_waits(settings, tmp_path):
    import fakeredis

    redis = fakeredis.FakeRedis()  # no worker on this one: the first job stays queued
    first = request_retrain(settings, redis, 1, "a")
    second = request_retrain(settings, redis, 1, "b")
    other = request_retrain(settings, redis, 2, "c")
    assert first.enqueued and not second.enqueued and second.job_id == first.job_id
    assert other.enqueued and other.job_id != first.job_id
    assert queued_job(redis, 1) == first.job_id


def test_a_failed_job_does_not_block_later_retrains(settings):
    import fakeredis
    from rq.job import Job
    from rq.serializers import JSONSerializer

    redis = fakeredis.FakeRedis()
    first = request_retrain(settings, redis, 1, "a")
    job = Job.fetch(first.job_id, connection=redis, serializer=JSONSerializer)
    job.set_status("failed")
    again = request_retrain(settings, redis, 1, "b")
    assert again.enqueued and again.job_id != first.job_id


def test_start_training_trains_now_in_embedded_mode(client, runtime, tweets):
    for i in range(3):
        client.post("/webhook", json=annotation_event(i + 1, i + 1, tweets.texts[i], tweets.labels[i]))
    assert runtime.registry.history(1) == []  # below the threshold of 5
    for i in range(3, 40):
        runtime.store.upsert(
            1,
            __import__("backend.state.store", fromlist=["Annotation"]).Annotation(
                i + 1, i + 1, 1.0, {"sentiment": [tweets.labels[i]]}, 1, {"text": tweets.texts[i]}
            ),
        )
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    wait_for(lambda: runtime.registry.pointer(1), timeout=30)


def test_a_submission_without_regions_is_a_label_change_only_where_a_labels_control_reads_it(client, runtime):
    ner = ner_config(["PER"])
    assert client.post("/webhook", json=span_event(1, 1, "nothing here", [], config=ner, project=3)).json["changed"] == 1
    assert client.post("/webhook", json=span_event(1, 1, "nothing here", [], config=ner, project=3)).json["changed"] == 0  # a replay
    skipped = span_event(2, 2, "a skip", [], config=ner, project=3, cancelled=True)
    assert client.post("/webhook", json=skipped).json["changed"] == 0
    empty = annotation_event(3, 3, "text", None, project=4)  # a Choices project: no choice, no label
    assert client.post("/webhook", json=empty).json["changed"] == 0
    found = for_policy(runtime.store.task_votes(3), Policy(), parse_label_config(ner))
    assert [(t.task, t.labels) for t in found.tasks] == [(1, {"ner": []})]
