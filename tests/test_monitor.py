"""Live accuracy and drift as measured, through the HTTP surface (embedded app); the retrains they
trigger are `trigger`'s, tested in tests/jobs/test_trigger.py."""

from __future__ import annotations

import json

import fakeredis
import pytest

from backend import monitor
from backend.config import Settings
from backend.consensus import SUBMITTED
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


def test_span_live_accuracy_is_an_exact_match_with_span_f1_and_recall_per_type():
    redis = fakeredis.FakeRedis()
    ours = {"v": "p1-v1", "c": {"ner": ["0,3,PER", "8,11,PER"]}}
    redis.hset(keys.predicted(1), mapping={"1": json.dumps(ours), "2": json.dumps(ours), "3": json.dumps({"v": "p1-v1", "c": {"ner": []}})})
    annotations = [
        (1, {SUBMITTED: [], "ner": ["0,3,PER", "8,11,PER"]}),  # exact
        (2, {SUBMITTED: [], "ner": ["0,3,PER", "15,19,LOC"]}),  # one of two
        (3, {SUBMITTED: []}),  # "no entities", as we predicted
    ]
    found = monitor.observe_annotations(redis, 1, annotations, span_controls={"ner"})
    assert [(o["task"], o["agree"], o["span_f1"]) for o in found] == [(1, True, 1.0), (2, False, 0.5), (3, True, 1.0)]
    slot = monitor.live_accuracy(redis, 1)["lifetime"]["p1-v1"]["ner"]
    assert slot["n"] == 3 and slot["accuracy"] == round(2 / 3, 4) and slot["span_f1"] == round(2.5 / 3, 4)
    assert slot["classes"] == {"PER": {"n": 3, "agree": 3, "recall": 1.0}, "LOC": {"n": 1, "agree": 0, "recall": 0.0}}
    assert monitor.observe_annotations(redis, 1, annotations, span_controls={"ner"}) == []  # once per task
