"""The retrain loop on real parts: redis-server, RQ worker processes, gunicorn with 2 workers."""

from __future__ import annotations

import concurrent.futures
import time

import numpy as np
import pytest
import requests

from backend.state.registry import Registry
from tests.conftest import LABEL_CONFIG, annotation_event, wait_for

pytestmark = pytest.mark.slow


def post_labels(url: str, tweets, start: int, stop: int, project: int = 1, threads: int = 1) -> None:
    def send(i: int) -> None:
        event = annotation_event(i + 1, i + 1, tweets.texts[i], tweets.labels[i], project=project)
        response = requests.post(f"{url}/webhook", json=event, timeout=5)
        assert response.status_code == 200, response.text

    if threads == 1:
        for i in range(start, stop):
            send(i)
    else:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(send, range(start, stop)))


def settled(registry: Registry, project: int, changes: int, timeout: float = 90) -> list[dict]:
    """The history once a train job has judged all `changes` label changes."""

    def done():
        history = registry.history(project)
        judged = max((r.get("watermark", 0) for r in history), default=0) >= changes
        return history if judged and history[-1]["decision"] != "promoting" else None

    return wait_for(done, timeout=timeout, interval=0.2)


def predict(url: str, texts: list[str], project: int = 1) -> requests.Response:
    tasks = [{"id": i, "data": {"text": t}} for i, t in enumerate(texts)]
    return requests.post(
        f"{url}/predict", json={"tasks": tasks, "project": f"{project}.1700000000", "label_config": LABEL_CONFIG}, timeout=30
    )


def accuracy(registry: Registry, record: dict, tweets, project: int = 1) -> float:
    bundle = registry.load(project, record["version"], record["sha256"])
    model = bundle.controls["sentiment"]
    texts, labels = tweets.texts[20000:21000], tweets.labels[20000:21000]
    predicted = [model.labels[i] for i in model.predict_proba(texts).argmax(axis=1)]
    return float(np.mean([p == y for p, y in zip(predicted, labels)]))


def versions_by_worker(url: str, pids: set[int], want: str, timeout: float = 10) -> dict[int, str]:
    """Send requests until every gunicorn worker in `pids` has answered with version `want`."""
    seen: dict[int, str] = {}

    def one(_: int) -> tuple[int, str]:
        response = predict(url, ["hello there"])
        assert response.status_code == 200, f"/predict answered {response.status_code}: {response.text[:300]}"
        return int(response.headers["X-Backend-Worker"]), response.json()["results"][0]["model_version"]

    deadline = time.monotonic() + timeout
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        while time.monotonic() < deadline:
            for pid, version in pool.map(one, range(16)):
                seen[pid] = version
            if set(seen) >= pids and all(seen[p] == want for p in pids):
                return seen
    raise AssertionError(f"workers did not all serve {want}: {seen}")


def test_webhooks_to_a_promoted_version_served_by_every_worker(services, tweets):
    url, web = services.web(workers=2, RETRAIN_THRESHOLD="150")
    services.worker()
    registry = Registry(services.model_dir)
    post_labels(url, tweets, 0, 150)
    first = settled(registry, 1, 150)
    post_labels(url, tweets, 150, 600, threads=4)
    history = settled(registry, 1, 600)
    promoted = [r for r in history if r["decision"] == "promoted"]
    assert len(promoted) >= 2, [(r["version"], r["decision"], r["reason"]) for r in history]
    assert promoted[0]["version"] == first[0]["version"]
    assert accuracy(registry, promoted[-1], tweets) > accuracy(registry, promoted[0], tweets) + 0.02
    current = registry.pointer(1)
    assert current.version == promoted[-1]["version"]
    workers = set(web.children())
    assert len(workers) == 2
    versions_by_worker(url, workers, current.version)
    record = promoted[-1]
    assert record["parent"] == promoted[-2]["version"] and record["fingerprint"] and record["sha256"]
    assert record["label_counts"]["sentiment"] and record["evaluation"]["challenger"]["sentiment"]["n"] > 0


def test_a_burst_causes_at_most_two_trainings_and_projects_are_independent(services, tweets):
    url, _ = services.web(workers=2, RETRAIN_THRESHOLD="1")
    services.worker(SLEEP_AT="fit", SLEEP_SECONDS="1")
    registry = Registry(services.model_dir)
    post_labels(url, tweets, 0, 100, threads=8)
    for _ in range(10):  # identical ANNOTATION_UPDATED deliveries change nothing
        event = annotation_event(100, 100, tweets.texts[99], tweets.labels[99], action="ANNOTATION_UPDATED")
        assert requests.post(f"{url}/webhook", json=event, timeout=5).status_code == 200
    post_labels(url, tweets, 200, 260, project=2, threads=4)
    history = settled(registry, 1, 100)
    settled(registry, 2, 60)
    time.sleep(2)  # anything still queued would have started by now
    assert 1 <= len(registry.history(1)) <= 2, [(r["version"], r["watermark"]) for r in registry.history(1)]
    assert registry.pointer(2) is not None
    assert max(r["watermark"] for r in history) == 100


def test_a_worse_challenger_is_rejected_and_the_champion_keeps_serving(services, tweets):
    from backend.training import holdout_rate, in_holdout

    url, _ = services.web(workers=1, RETRAIN_THRESHOLD="100000")
    services.worker()
    registry = Registry(services.model_dir)
    n = 1200
    post_labels(url, tweets, 0, n, threads=4)
    requests.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}, timeout=5)
    champion = settled(registry, 1, n)[-1]
    assert champion["decision"] == "promoted"
    labels = ["positive", "negative", "neutral"]
    rate = holdout_rate(n)
    flipped = 0
    for i in range(n):  # corrupt only what the challenger trains on; the held-out truth stays clean
        if in_holdout(1, i + 1, rate):
            continue
        wrong = labels[(labels.index(tweets.labels[i]) + 1) % 3]
        event = annotation_event(i + 1, i + 1, tweets.texts[i], wrong, action="ANNOTATION_UPDATED", updated_at="2026-02-01T00:00:00Z")
        assert requests.post(f"{url}/webhook", json=event, timeout=5).status_code == 200
        flipped += 1
    requests.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}, timeout=5)
    challenger = settled(registry, 1, n + flipped)[-1]
    assert challenger["decision"] == "rejected", challenger["reason"]
    assert challenger["evaluation"]["method"] == "holdout" and "worse" in challenger["reason"]
    assert registry.pointer(1).version == champion["version"]
    assert predict(url, ["what a great flight"]).json()["results"][0]["model_version"] == champion["version"]


def test_rollback_moves_the_pointer_back_and_workers_follow(services, tweets):
    url, web = services.web(workers=2, RETRAIN_THRESHOLD="150")
    services.worker()
    registry = Registry(services.model_dir)
    post_labels(url, tweets, 0, 150)
    settled(registry, 1, 150)
    post_labels(url, tweets, 150, 450, threads=4)
    promoted = [r for r in settled(registry, 1, 450) if r["decision"] == "promoted"]
    assert len(promoted) >= 2
    first = promoted[0]["version"]
    response = requests.post(f"{url}/projects/1/rollback", json={"version": first}, timeout=5)
    assert response.status_code == 200 and response.json()["current"]["version"] == first
    versions_by_worker(url, set(web.children()), first)
    assert requests.post(f"{url}/projects/1/rollback", json={"version": "p1-v999"}, timeout=5).status_code == 404


def test_after_a_promotion_the_queue_follows_the_strategy_order(services, tweets):
    from backend import strategy
    from backend.families.base import restrict

    url, _ = services.web(workers=2, RETRAIN_THRESHOLD="100000")
    services.worker()
    registry = Registry(services.model_dir)
    pool = [{"id": 50_000 + i, "data": {"text": tweets.texts[i]}} for i in range(3000, 3500)]
    requests.post(
        f"{url}/webhook", json={"action": "TASKS_CREATED", "tasks": pool, "project": {"id": 1, "label_config": LABEL_CONFIG}}, timeout=5
    )
    post_labels(url, tweets, 0, 300, threads=4)
    requests.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}, timeout=5)
    record = settled(registry, 1, 300)[-1]
    assert record["decision"] == "promoted"
    answers: list[dict] = []

    def ranked_by_the_new_version() -> dict | None:
        answers.append(requests.get(f"{url}/queue", params={"project": 1, "limit": 500}, timeout=5).json())
        q = answers[-1]
        return q if q.get("version") == record["version"] and len(q.get("tasks", [])) == 500 else None

    try:
        body = wait_for(ranked_by_the_new_version, timeout=30, interval=0.2)  # the ranker may rank the pool after the version is served
    except AssertionError:
        last = answers[-1] if answers else {}
        raise AssertionError(f"last /queue: version {last.get('version')}, {len(last.get('tasks', []))} tasks, {str(last)[:300]}") from None
    assert body["strategy"] == "margin"
    model = registry.load(1, record["version"], record["sha256"]).controls["sentiment"]
    texts = [tweets.texts[t["task"] - 50_000] for t in body["tasks"]]
    expected = strategy.margin(restrict(model.predict_proba(texts), model.labels, ("positive", "negative", "neutral"), False))
    got = [t["uncertainty"] for t in body["tasks"]]
    assert np.allclose(got, expected, atol=1e-5)
    assert got[20:] == sorted(got[20:], reverse=True)  # after the de-duplicated first batch: strictly the strategy's order


def test_a_scheduled_retrain_fires_on_a_real_worker_and_skips_unchanged_labels(services, tweets):
    url, _ = services.web(workers=1, RETRAIN_THRESHOLD="100000")
    services.worker()
    registry = Registry(services.model_dir)
    requests.post(f"{url}/setup", json={"project": "1.1700000000", "schema": LABEL_CONFIG}, timeout=5)
    post_labels(url, tweets, 0, 150)
    assert registry.history(1) == []  # no label count, no START_TRAINING: only the schedule trains
    answer = requests.put(f"{url}/projects/1/settings", json={"retrain_every": 2}, timeout=5).json()
    assert answer["settings"]["retrain_every"] == 2
    record = settled(registry, 1, 150, timeout=60)[-1]
    assert record["trigger"] == "schedule" and record["decision"] == "promoted"

    def audit(kind: str) -> list[dict]:
        return requests.get(f"{url}/projects/1/audit", params={"kind": kind}, timeout=5).json()["events"]

    skipped = wait_for(lambda: [e for e in audit("training") if "scheduled retrain skipped" in e["message"]], timeout=30)
    assert skipped[0]["details"]["reason"] == "schedule"
    assert len([e for e in audit("trigger") if e["message"] == "schedule"]) >= 2
    assert [r["version"] for r in registry.history(1)] == [record["version"]]  # unchanged labels: no new candidate
    requests.put(f"{url}/projects/1/settings", json={"retrain_every": 0}, timeout=5)
    fired = len([e for e in audit("trigger") if e["message"] == "schedule"])
    time.sleep(4)
    assert len([e for e in audit("trigger") if e["message"] == "schedule"]) <= fired + 1  # one may have been due already
