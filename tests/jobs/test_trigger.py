"""When to retrain: Label Studio's asking and label-config changes, label counts, live accuracy and
drift (once per serving version, never without new labels), and the schedule (`retrain_every`),
which fires exactly once per due time, whoever ticks."""

import time
from dataclasses import replace

import fakeredis
import pytest

from backend.config import Settings
from backend.jobs import trigger
from backend.payload import InvalidPayload
from backend.policy import policy_for, validated
from backend.state import audit, keys
from backend.state.registry import Registry
from backend.state.store import Store
from tests.conftest import wait_for
from tests.test_monitor import annotate, fast_client, predicted_for  # noqa: F401 - fast_client is a fixture
from tests.web.test_api import predict, train


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


def test_label_studio_asking_and_a_changed_label_config_request_a_retrain_and_nothing_else_does(redis):
    settings = Settings.from_env({})
    asked = trigger.check_asked(settings, redis, 1, "START_TRAINING", config_changed=False)
    assert asked is not None and asked.enqueued
    assert trigger.check_asked(settings, redis, 2, "PROJECT_UPDATED", config_changed=False) is None
    assert trigger.check_asked(settings, redis, 2, "ANNOTATION_CREATED", config_changed=True) is None
    changed = trigger.check_asked(settings, redis, 2, "PROJECT_UPDATED", config_changed=True)
    assert changed is not None and changed.enqueued
    assert trigger.check_asked(settings, redis, 1, "START_TRAINING", config_changed=False) == trigger.Request(asked.job_id, False)
    assert changed.to_json() == {"job_id": changed.job_id, "enqueued": True}
    assert [e["message"] for e in audit.events(redis, 1, 10, "trigger")] == ["START_TRAINING"]
    assert [e["message"] for e in audit.events(redis, 2, 10, "trigger")] == ["label config changed"]


def test_label_changes_request_a_retrain_once_per_threshold(redis):
    settings, store = Settings.from_env({}), Store(redis)
    policy = replace(policy_for(settings, {}), retrain_threshold=3)
    assert trigger.check_labels(settings, store, 1, policy, 0, "ANNOTATIONS_DELETED") is None  # nothing changed
    assert trigger.check_labels(settings, store, 1, policy, 2, "ANNOTATION_CREATED") is None
    due = trigger.check_labels(settings, store, 1, policy, 3, "ANNOTATION_CREATED")
    assert due is not None and due.enqueued
    assert trigger.check_labels(settings, store, 1, policy, 5, "ANNOTATION_UPDATED") is None  # 2 past the request
    assert [e["message"] for e in audit.events(redis, 1, 10, "trigger")] == ["ANNOTATION_CREATED: labels changed"]


def test_a_request_joins_a_waiting_job_but_not_one_a_dying_worker_popped(redis):
    """A queued job that is in no queue (popped by a worker killed or stopped at that moment) will
    never start: the next request enqueues a job of its own instead of joining it (seen in the fault
    tests: START_TRAINING and the schedule joined such a job and nothing trained)."""
    settings = Settings.from_env({})
    first = trigger.request_retrain(settings, redis, 1, "START_TRAINING")
    assert first.enqueued and trigger.request_retrain(settings, redis, 1, "START_TRAINING") == trigger.Request(first.job_id, False)
    queue = trigger.retrain_queue(settings, redis)
    redis.lmove(queue.key, queue.intermediate_queue_key)  # a live worker's reliable dequeue: still waiting
    assert not trigger.request_retrain(settings, redis, 1, "START_TRAINING").enqueued
    redis.delete(queue.intermediate_queue_key)  # popped and lost
    again = trigger.request_retrain(settings, redis, 1, "START_TRAINING")
    assert again.enqueued and again.job_id != first.job_id and queue.get_job_ids() == [again.job_id]


def test_quality_of_an_untrained_project_never_triggers(redis, tmp_path):
    settings = Settings.from_env({}, trigger_check_interval=0)
    redis.set(keys.change_seq(1), 10_000)
    assert trigger.check_quality(settings, redis, Registry(tmp_path / "models"), 1, policy_for(settings, {})) is None
    assert audit.events(redis, 1, 10, "trigger") == []


def test_schedule_values_are_seconds_or_cron_strings():
    assert validated({"retrain_every": 3600}, strict=True) == {"retrain_every": 3600}
    assert validated({"retrain_every": "*/15 * * * *"}, strict=True) == {"retrain_every": "*/15 * * * *"}
    for bad in (-1, "every hour", "* * *", True, 1.5, 10**9):
        with pytest.raises(InvalidPayload):
            validated({"retrain_every": bad}, strict=True)


def test_a_due_schedule_fires_once_however_many_tick_and_moves_on(redis):
    settings = Settings.from_env({})
    trigger.reschedule(redis, 7, 30, now=1000.0)
    assert trigger.fire_due(settings, redis, now=1029.0) == []
    fired = trigger.fire_due(settings, redis, now=1031.0)
    assert [p for p, _ in fired] == [7] and fired[0][1].enqueued
    assert trigger.fire_due(settings, redis, now=1031.0) == []  # a second ticker finds it moved on
    assert redis.zscore(keys.SCHEDULE, "7") == 1061.0
    assert [(e["actor"], e["message"]) for e in audit.events(redis, 7, 10, "trigger")] == [("schedule", "schedule")]


def test_rescheduling_keeps_an_unchanged_due_time_and_drops_a_removed_schedule(redis):
    first = trigger.reschedule(redis, 3, 600, now=1000.0)
    assert trigger.reschedule(redis, 3, 600, now=5000.0) == first == 1600.0
    assert trigger.reschedule(redis, 3, 60, now=5000.0) == 5060.0
    assert trigger.reschedule(redis, 3, 0) is None and redis.zscore(keys.SCHEDULE, "3") is None
    assert trigger.fire_due(Settings.from_env({}), redis, now=time.time() + 10**6) == []


def test_extra_params_schedule_a_project_and_the_settings_api_overrides_it(client):
    from tests.conftest import LABEL_CONFIG

    client.post("/setup", json={"project": "4.1700000000", "schema": LABEL_CONFIG, "extra_params": {"retrain_every": "0 3 * * *"}})
    redis = client.application.extensions["backend"].redis
    due = redis.zscore(keys.SCHEDULE, "4")
    assert due is not None and time.gmtime(due).tm_hour == 3 and time.gmtime(due).tm_min == 0
    client.put("/projects/4/settings", json={"retrain_every": 60})
    assert redis.zscore(keys.SCHEDULE, "4") == pytest.approx(time.time() + 60, abs=5)
    client.put("/projects/4/settings", json={"retrain_every": 0})
    assert redis.zscore(keys.SCHEDULE, "4") is None


def test_live_accuracy_below_the_offline_estimate_triggers_a_recorded_retrain(fast_client, tweets):
    client, rt = fast_client
    train(client, tweets, n=150)
    assert client.put("/projects/1/settings", json={"live_min_samples": 20, "live_accuracy_drop": 0.2}).status_code == 200
    ids = list(range(3000, 3030))
    ours = predicted_for(client, rt, tweets, ids)
    wrong = [next(label for label in ("positive", "negative", "neutral") if label != ours[i]) for i in ids]
    annotate(client, tweets, ids, wrong)
    triggers = client.get("/projects/1/audit?kind=trigger").json["events"]
    live = [e for e in triggers if e["actor"] == "monitor"]
    assert len(live) == 1, triggers  # latched: one retrain per serving version, not one per annotation
    assert "live accuracy 0.000" in live[0]["message"] and "below the offline estimate" in live[0]["message"]


def test_drifted_traffic_raises_psi_and_triggers_a_retrain(fast_client, tweets):
    client, rt = fast_client
    train(client, tweets, n=150)
    client.put("/projects/1/settings", json={"drift_min_samples": 100, "drift_threshold": 0.25, "live_min_samples": 20})
    same = [{"id": 10_000 + i, "data": {"text": tweets.texts[4000 + i]}} for i in range(150)]
    predict(client, same)
    wait_for(lambda: rt.redis.llen(keys.traffic(1)) >= 150, timeout=10)
    calm = client.get("/projects/1/monitor").json["drift"]
    assert calm["samples"] == 150 and calm["confidence_psi"] < 0.25
    assert not [e for e in client.get("/projects/1/audit?kind=trigger").json["events"] if e["actor"] == "monitor"]
    predict(client, [{"id": 30_000 + i, "data": {"text": f"quarterly zeta report {i}"}} for i in range(150)])
    time.sleep(0.3)
    assert not [e for e in client.get("/projects/1/audit?kind=trigger").json["events"] if e["actor"] == "monitor"], (
        "drift without new labels must not retrain: the model could not change"
    )
    rt.redis.delete(keys.traffic(1))
    annotate(client, tweets, list(range(5000, 5020)), [tweets.labels[i] for i in range(5000, 5020)])  # new labels to learn from
    odd = [{"id": 20_000 + i, "data": {"text": f"quarterly zeta report {i} lorem ipsum dolor sit amet"}} for i in range(150)]
    predict(client, odd)
    wait_for(lambda: [e for e in client.get("/projects/1/audit?kind=trigger").json["events"] if e["actor"] == "monitor"], timeout=10)
    moved = client.get("/projects/1/monitor").json["drift"]
    assert moved["confidence_psi"] >= 0.25 and moved["unseen_mean"]["recent"] > calm["unseen_mean"]["recent"]
