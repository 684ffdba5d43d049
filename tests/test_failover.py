"""Redis failover with Sentinel, against real processes on loopback: a redis-server master (AOF,
`appendfsync always`), two replicas and three Sentinels (`redis-server --sentinel`), with gunicorn
and an RQ worker that reach them through REDIS_SENTINELS, with passwords, and with
REDIS_MIN_REPLICAS_ACK=1. The master is SIGKILLed under webhook and `/predict` load while one
retrain runs and another waits in the queue."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from backend.config import Settings
from backend.jobs.trigger import retrain_queue
from backend.state.registry import Registry
from backend.state.store import Store
from lab.processes import SentinelGroup
from tests.conftest import Services, annotation_event, wait_for
from tests.jobs.test_entry import post_labels, settled
from tests.test_faults import Load, start_training

pytestmark = pytest.mark.slow

DOWN_AFTER_MS = 1000  # Sentinel's down-after-milliseconds here; the compose file's is 5000


class Webhooks:
    """Annotation webhooks for project 1 from one thread, each a new annotation, recording
    (sent, answered, annotation id, status or 0 for no answer)."""

    def __init__(self, url: str, tweets, first: int):
        self.url, self.tweets, self.next = url, tweets, first
        self.results: list[tuple[float, float, int, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        while not self.stop.is_set():
            i, sent = self.next, time.monotonic()
            self.next += 1
            event = annotation_event(i, i, self.tweets.texts[i], self.tweets.labels[i])
            try:
                status = requests.post(f"{self.url}/webhook", json=event, timeout=5).status_code
            except requests.RequestException:
                status = 0
            self.results.append((sent, time.monotonic(), i, status))
            time.sleep(0.02)

    def __enter__(self) -> Webhooks:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_sigkill_of_the_master_under_load_loses_no_acknowledged_label_and_fails_no_prediction(redis_server, tmp_path, tweets):
    group = SentinelGroup(tmp_path / "redis", replicas=2, sentinels=3, down_after_ms=DOWN_AFTER_MS, password="data secret")
    deployment = Services(f"redis://127.0.0.1:{group.master_port}/0", tmp_path)
    env = {**group.env(), "REDIS_MIN_REPLICAS_ACK": "1", "RETRAIN_THRESHOLD": "100000", "REDIS_TIMEOUT": "1.0"}
    try:
        url, _ = deployment.web(workers=2, **env)
        registry = Registry(deployment.model_dir)
        first = deployment.worker(**env)
        post_labels(url, tweets, 0, 150, threads=4)
        start_training(url)
        assert settled(registry, 1, 150)[-1]["decision"] == "promoted"
        first.stop()

        worker = deployment.worker(SLEEP_AT="fit", SLEEP_SECONDS="6", **env)  # each fit holds 6 s
        post_labels(url, tweets, 150, 200, threads=4)
        running = start_training(url)
        wait_for(lambda: "holding at fit" in worker.log.read_text(), timeout=60)
        post_labels(url, tweets, 0, 60, project=2, threads=4)
        queued = start_training(url, project=2)
        queue = retrain_queue(Settings(), group.client(group.master()))
        assert queue.get_job_ids() == [queued] != [running]

        with Load(url) as predictions, Webhooks(url, tweets, 1000) as webhooks:
            time.sleep(2)
            killed_at = time.monotonic()
            old = group.kill_master()
            wait_for(lambda: group.master() != old, timeout=60, interval=0.1)
            promoted_at = time.monotonic()
            wait_for(lambda: any(r[0] > promoted_at and r[3] == 200 for r in webhooks.results), timeout=30, interval=0.1)
            time.sleep(3)

        sent = webhooks.results
        acked = {r[2] for r in sent if r[3] == 200}
        refused = [r for r in sent if r[3] != 200]
        stored = Store(group.client(group.master())).annotation_ids(1)
        assert acked <= stored, sorted(acked - stored)  # every acknowledged label is on the new master
        assert {r[3] for r in refused} <= {503}  # refused quickly and clearly, never a 5xx of another kind
        assert acked and any(r[0] > killed_at and r[3] == 200 for r in sent)
        answered = predictions.results
        assert len(answered) >= 40 and [r for r in answered if r[2] != 200] == []  # /predict never failed

        new_master = group.master()
        wait_for(lambda: group.online_replicas(new_master) >= 1, timeout=120, interval=0.1)  # the other replica follows it
        assert settled(registry, 2, 60)[-1]["decision"] == "promoted"  # the queued retrain survived
        assert settled(registry, 1, 200)[-1]["job_id"] == running  # the running one finished (or was retried)
        after = Store(group.client(group.master())).change_seq(1)
        wait_for(lambda: asked_for_training(url), timeout=30, interval=0.5)  # a 503 says: ask again
        assert settled(registry, 1, after)[-1]["decision"] == "promoted"  # a retrain after the failover
        assert worker.popen.poll() is None

        window = [r for r in sent if r[0] >= killed_at - 0.5]
        first_ok = min(r[1] for r in sent if r[0] > killed_at and r[3] == 200)
        print(
            f"\nfailover: {len(sent)} webhooks sent, {len(acked)} acknowledged (2xx), {len(stored & {r[2] for r in sent})} stored, "
            f"{len(refused)} answered 503; Sentinel named a new master {promoted_at - killed_at:.1f} s after the SIGKILL, "
            f"webhooks answered 2xx again after {first_ok - killed_at:.1f} s; longest 503 answer "
            f"{max((r[1] - r[0] for r in refused), default=0) * 1000:.0f} ms; "
            f"{len(window)} webhooks from the kill on; /predict {len(answered)} requests, 0 failed"
        )
    finally:
        deployment.stop()
        group.stop()


def asked_for_training(url: str) -> bool:
    """START_TRAINING as LS sends it; False on a 503 (too few replicas confirmed it: LS's user asks again)."""
    response = requests.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}, timeout=5)
    assert response.status_code in (200, 503), response.text
    return response.status_code == 200
