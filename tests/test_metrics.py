"""Prometheus metrics under several gunicorn workers (multiprocess mode), parsed with
prometheus_client's own parser."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from backend.state.registry import Registry
from tests.jobs.test_entry import post_labels, predict, settled

pytestmark = pytest.mark.slow


def scrape(url: str) -> dict[str, list]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_counts_are_merged_across_gunicorn_workers_and_project_state_is_exposed(services, tweets, tmp_path):
    samples_dir = tmp_path / "prometheus"
    samples_dir.mkdir()
    url, _ = services.web(workers=2, RETRAIN_THRESHOLD="150", PROMETHEUS_MULTIPROC_DIR=str(samples_dir))
    worker = services.worker()
    sent, pids = 0, set()
    with ThreadPoolExecutor(4) as pool:  # concurrent, so both workers answer some (accept is a race)
        while sent < 60 or (len(pids) < 2 and sent < 2000):
            answers = list(pool.map(lambda _: requests.get(f"{url}/versions", timeout=10), range(20)))
            pids |= {r.headers["X-Backend-Worker"] for r in answers}
            sent += len(answers)
    assert len(pids) == 2, "both workers must have answered for the merge to be tested"
    for _ in range(3):  # whichever worker answers the scrape, the total is the same
        families = scrape(url)
        versions = [s for s in families["lsb_http_requests"] if s.name == "lsb_http_requests_total" and s.labels["endpoint"] == "/versions"]
        assert sum(s.value for s in versions) == sent
    latency = [
        s
        for s in families["lsb_http_request_seconds"]
        if s.name == "lsb_http_request_seconds_count" and s.labels["endpoint"] == "/versions"
    ]
    assert sum(s.value for s in latency) == sent

    post_labels(url, tweets, 0, 150)
    record = settled(Registry(services.model_dir), 1, 150)[-1]
    assert record["decision"] == "promoted"
    predict(url, tweets.texts[5000:5050])
    families = scrape(url)
    info = {s.labels["version"]: s.value for s in families["lsb_model_version_info"]}
    assert info == {record["version"]: 1.0}
    outcomes = {s.labels["outcome"]: s.value for s in families["lsb_train_jobs"] if s.name == "lsb_train_jobs_total"}
    assert outcomes.get("promoted") == 1
    worker.stop()  # nothing dequeues now: the gauge must count exactly what waits
    waiting = [s.value for s in scrape(url)["lsb_queue_depth"]]
    assert requests.post(f"{url}/projects/1/train", timeout=10).status_code in (200, 202)
    assert [s.value for s in scrape(url)["lsb_queue_depth"]] == [waiting[0] + 1]
    predictions = sum(s.value for s in families["lsb_predictions"] if s.name == "lsb_predictions_total" and s.labels["kind"] == "model")
    assert predictions == 50
    assert families["lsb_offline_accuracy"][0].value > 0.3
