"""Live accuracy, drift and the triggers they drive, through the HTTP surface (embedded app)."""

from __future__ import annotations

import time

import fakeredis
import pytest

from backend import monitor
from backend.app import create_app
from backend.config import Settings
from backend.runtime import Runtime
from backend.store import key
from tests.conftest import annotation_event, wait_for
from tests.test_api import predict, train


@pytest.fixture
def fast_client(tmp_path):
    """An embedded app that checks the triggers on every event."""
    settings = Settings(model_dir=tmp_path / "models", retrain_min_interval=0, trigger_check_interval=0,
                        retrain_threshold=1000, swap_poll_interval=0.05, log_level="WARNING")
    rt = Runtime.build(settings, redis=fakeredis.FakeRedis())
    yield create_app(settings, rt).test_client(), rt
    rt.cache.stop()


def predicted_for(client, rt, tweets, ids):
    tasks = [{"id": i, "data": {"text": tweets.texts[i]}} for i in ids]
    results = predict(client, tasks).json["results"]
    wait_for(lambda: rt.redis.hlen(key(1, "predicted")) >= len(ids), timeout=10)
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
    wait_for(lambda: rt.redis.llen(key(1, "traffic")) >= 150, timeout=10)
    calm = client.get("/projects/1/monitor").json["drift"]
    assert calm["samples"] == 150 and calm["confidence_psi"] < 0.25
    assert not [e for e in client.get("/projects/1/audit?kind=trigger").json["events"] if e["actor"] == "monitor"]
    predict(client, [{"id": 30_000 + i, "data": {"text": f"quarterly zeta report {i}"}} for i in range(150)])
    time.sleep(0.3)
    assert not [e for e in client.get("/projects/1/audit?kind=trigger").json["events"] if e["actor"] == "monitor"], \
        "drift without new labels must not retrain: the model could not change"
    rt.redis.delete(key(1, "traffic"))
    annotate(client, tweets, list(range(5000, 5020)), [tweets.labels[i] for i in range(5000, 5020)])  # new labels to learn from
    odd = [{"id": 20_000 + i, "data": {"text": f"quarterly zeta report {i} lorem ipsum dolor sit amet"}} for i in range(150)]
    predict(client, odd)
    wait_for(lambda: [e for e in client.get("/projects/1/audit?kind=trigger").json["events"] if e["actor"] == "monitor"], timeout=10)
    moved = client.get("/projects/1/monitor").json["drift"]
    assert moved["confidence_psi"] >= 0.25 and moved["unseen_mean"]["recent"] > calm["unseen_mean"]["recent"]


def test_monitor_of_an_untrained_project_is_empty(client):
    body = client.get("/projects/9/monitor").json
    assert body["version"] is None and body["live"]["window"]["n"] == 0


def test_offline_accuracy_is_the_mean_over_controls():
    record = {"evaluation": {"challenger": {"a": {"accuracy": 0.8, "n": 10}, "b": {"accuracy": 0.6, "n": 5}, "c": {"accuracy": 0.1, "n": 0}}}}
    assert monitor.offline_accuracy(record) == 0.7
    assert monitor.offline_accuracy(None) is None
