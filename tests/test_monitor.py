"""Live accuracy and drift as measured, through the HTTP surface (embedded app); the retrains they
trigger are `trigger`'s, tested in tests/jobs/test_trigger.py."""

from __future__ import annotations

import fakeredis
import pytest

from backend import monitor
from backend.config import Settings
from backend.runtime import Runtime
from backend.state import keys
from backend.web.app import create_app
from tests.conftest import annotation_event, wait_for
from tests.web.test_api import predict, train


@pytest.fixture
def fast_client(tmp_path):
    """An embedded app that checks the triggers on every event."""
    settings = Settings(
        model_dir=tmp_path / "models",
        retrain_min_interval=0,
        trigger_check_interval=0,
        retrain_threshold=1000,
        swap_poll_interval=0.05,
        log_level="WARNING",
    )
    rt = Runtime.build(settings, redis=fakeredis.FakeRedis())
    yield create_app(settings, rt).test_client(), rt
    rt.stop()


def predicted_for(client, rt, tweets, ids):
    tasks = [{"id": i, "data": {"text": tweets.texts[i]}} for i in ids]
    results = predict(client, tasks).json["results"]
    wait_for(lambda: rt.redis.hlen(keys.predicted(1)) >= len(ids), timeout=10)
    return {i: r["result"][0]["value"]["choices"][0] for i, r in zip(ids, results)}


def annotate(client, tweets, ids, labels, ann_offset=100_000):
    for i, label in zip(ids, labels):
        assert client.post("/webhook", json=annotation_event(ann_offset + i, i, tweets.texts[i], label)).status_code == 200


def test_live_accuracy_counts_each_task_once_per_version_control_and_class(fast_client, tweets):
    client, rt = fast_client
    version = train(client, tweets, n=150)
    ids = list(range(2000, 2060))
    ours = predicted_for(client, rt, tweets, ids)
    truth = [tweets.labels[i] for i in ids]
    annotate(client, tweets, ids, truth)
    annotate(client, tweets, ids[:10], truth[:10], ann_offset=200_000)  # second annotations do not count again
    body = client.get("/projects/1/monitor").json
    slot = body["live"]["lifetime"][version]["sentiment"]
    agreed = sum(ours[i] == t for i, t in zip(ids, truth))
    assert slot["n"] == 60 and slot["agree"] == agreed and slot["accuracy"] == round(agreed / 60, 4)
    for label, figures in slot["classes"].items():
        members = [i for i, t in zip(ids, truth) if t == label]
        assert figures["n"] == len(members) and figures["agree"] == sum(ours[i] == label for i in members)
    assert body["live_window"] == {"n": 60, "accuracy": round(agreed / 60, 4)}
    assert body["offline_accuracy"] is not None and body["live_gap"] == round(body["offline_accuracy"] - agreed / 60, 4)


def test_monitor_of_an_untrained_project_is_empty(client):
    body = client.get("/projects/9/monitor").json
    assert body["version"] is None and body["live"]["window"]["n"] == 0


def test_offline_accuracy_is_the_mean_over_controls():
    record = {
        "evaluation": {"challenger": {"a": {"accuracy": 0.8, "n": 10}, "b": {"accuracy": 0.6, "n": 5}, "c": {"accuracy": 0.1, "n": 0}}}
    }
    assert monitor.offline_accuracy(record) == 0.7
    assert monitor.offline_accuracy(None) is None


def test_monitor_only_measures():
    from tests.test_layout import backend_imports

    assert not {m for m in backend_imports("backend.monitor") if m.startswith("backend.jobs")}, "retrains are trigger's decision"
