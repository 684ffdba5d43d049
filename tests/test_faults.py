"""Faults F1, F2, F5, F7, F13 and F14 of the reliability plan, against real processes on loopback."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import shutil
import subprocess
import threading
import time

import pytest
import redis
import requests

from backend.registry import Registry
from tests.conftest import annotation_event, free_port, wait_for
from tests.test_job import post_labels, predict, settled

pytestmark = pytest.mark.slow

RECOVERY_BOUND = 60  # seconds within which an interrupted train job must be retried (RQ alone: up to 15 min)


def start_training(url: str, project: int = 1) -> None:
    assert requests.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": project}}, timeout=5).status_code == 200


def idle_children(worker) -> set[int]:
    """The worker's children before any job (its scheduler process), once it is up."""
    wait_for(lambda: "Listening on" in worker.log.read_text() or "started with PID" in worker.log.read_text(), timeout=20)
    time.sleep(1.5)
    return set(worker.children())


def horse_of(worker, before: set[int]) -> int:
    """The work-horse: the child that appeared once the job started."""
    return wait_for(lambda: (new := set(worker.children()) - before) and min(new), timeout=20)


def no_partial_files(model_dir) -> None:
    project = model_dir / "project-1"
    artifacts = {p.stem for p in project.glob("*.skops")}
    records = {p.stem for p in project.glob("p1-v*.json")}
    assert artifacts <= records, f"artifacts without a record: {artifacts - records}"


def deploy_trained(deployment, tweets):
    """gunicorn (2 workers) and one RQ worker whose project 1 serves a first model of 200 labels."""
    url, web = deployment.web(workers=2, RETRAIN_THRESHOLD="100000")
    worker = deployment.worker()
    registry = Registry(deployment.model_dir)
    post_labels(url, tweets, 0, 200, threads=4)
    start_training(url)
    champion = settled(registry, 1, 200)[-1]
    assert champion["decision"] == "promoted"
    return url, web, worker, registry, champion


@pytest.fixture
def trained(services, tweets):
    """A trained deployment whose worker is stopped, so each test brings the worker it needs."""
    url, web, worker, registry, champion = deploy_trained(services, tweets)
    worker.stop()
    return url, web, registry, champion


def training_in_a_horse(services, url, tweets, pause: str):
    """A worker paused inside `fit` of a retrain on 100 new labels, and its work-horse pid."""
    worker = services.worker(SLEEP_AT="fit", SLEEP_SECONDS=pause)
    before = idle_children(worker)
    post_labels(url, tweets, 200, 300, threads=4)
    start_training(url)
    return worker, horse_of(worker, before)


def test_f1_sigkill_of_worker_and_horse_mid_training_is_retried(services, tweets, trained):
    url, _, registry, champion = trained
    slow, horse = training_in_a_horse(services, url, tweets, "60")
    time.sleep(1)
    os.kill(horse, signal.SIGKILL)
    slow.kill_group()
    killed_at = time.monotonic()
    assert predict(url, ["still serving"]).json()["results"][0]["model_version"] == champion["version"]
    services.worker()
    history = settled(registry, 1, 300, timeout=RECOVERY_BOUND)
    assert time.monotonic() - killed_at < RECOVERY_BOUND
    assert history[-1]["decision"] == "promoted"
    assert registry.pointer(1).version == history[-1]["version"] != champion["version"]
    no_partial_files(services.model_dir)


def test_f2_sigkill_of_the_horse_only_is_retried_at_once(services, tweets, trained):
    url, _, registry, champion = trained
    worker, horse = training_in_a_horse(services, url, tweets, "3")
    os.kill(horse, signal.SIGKILL)
    killed_at = time.monotonic()
    history = settled(registry, 1, 300, timeout=30)
    assert time.monotonic() - killed_at < 30  # lock released by the worker, retry after 1 s backoff + 3 s pause
    assert history[-1]["decision"] == "promoted"
    assert "terminated unexpectedly" in worker.log.read_text() or "died" in worker.log.read_text()


@pytest.mark.parametrize("point", ["before_dump", "mid_dump", "after_dump_before_replace", "after_replace_before_pointer"])
def test_f5_crash_at_each_publish_step_keeps_the_old_model(services, tweets, trained, point):
    url, _, registry, champion = trained
    before = registry.pointer(1)
    crashing = services.worker(CRASH_AT=point, JOB_RETRIES="0")
    post_labels(url, tweets, 200, 300, threads=4)
    start_training(url)
    r = redis.Redis.from_url(services.redis_url)
    from rq.registry import FailedJobRegistry

    from backend.trigger import retrain_queue
    from backend.config import Settings

    queue = retrain_queue(Settings.from_env({}, redis_url=services.redis_url), r)
    wait_for(lambda: FailedJobRegistry(queue=queue).count >= 1, timeout=30)
    assert registry.pointer(1) == before
    assert predict(url, ["x"]).json()["results"][0]["model_version"] == champion["version"]
    crashing.stop()
    services.worker()
    start_training(url)
    history = settled(registry, 1, 300, timeout=40)
    promoted = [h for h in history if h["decision"] == "promoted"]
    assert promoted[-1]["version"] == registry.pointer(1).version != champion["version"]
    assert registry.pointer(1).seq == before.seq + 1
    no_partial_files(services.model_dir)


def test_f7_redis_unreachable_gives_fast_503_and_predictions_keep_serving(tmp_path, tweets):
    """SIGSTOP a private redis-server: webhooks answer 503 quickly, /predict keeps answering."""
    from tests.conftest import Services

    port = free_port()
    server = subprocess.Popen([shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    url_redis = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: _ping(url_redis), timeout=10)
    deployment = Services(url_redis, tmp_path)
    try:
        url, _, _, _, champion = deploy_trained(deployment, tweets)
        version = champion["version"]
        os.kill(server.pid, signal.SIGSTOP)
        try:
            for i in range(5):
                started = time.perf_counter()
                response = requests.post(f"{url}/webhook", json=annotation_event(500 + i, 500 + i, "late", "positive"), timeout=5)
                assert response.status_code == 503 and response.json()["error"]
                assert time.perf_counter() - started < 0.5
                response = predict(url, ["the show goes on"])
                assert response.status_code == 200 and response.json()["results"][0]["model_version"] == version
        finally:
            os.kill(server.pid, signal.SIGCONT)
        response = requests.post(f"{url}/webhook", json=annotation_event(600, 600, "back", "positive"), timeout=5)
        assert response.status_code == 200
    finally:
        deployment.stop()
        server.terminate()
        server.wait(timeout=10)


def _ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.RedisError:
        return False


def test_f13_hot_swap_under_concurrent_load_fails_no_request(services, tweets):
    url, _, _, registry, champion = deploy_trained(services, tweets)
    old = champion["version"]
    post_labels(url, tweets, 200, 600, threads=4)
    results: list[tuple[float, float, int, int, str]] = []  # sent, done, status, worker pid, version
    stop = threading.Event()
    lock = threading.Lock()

    def load() -> None:
        session = requests.Session()
        while not stop.is_set():
            sent = time.monotonic()
            response = session.post(f"{url}/predict", json={"tasks": [{"id": 1, "data": {"text": "on time, thanks"}}],
                                                            "project": "1.1", "label_config": _config()}, timeout=10)
            version = response.json()["results"][0]["model_version"] if response.status_code == 200 else ""
            with lock:
                results.append((sent, time.monotonic(), response.status_code, int(response.headers.get("X-Backend-Worker", 0)), version))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        start_training(url)
        new = settled(registry, 1, 600)[-1]
        assert new["decision"] == "promoted"
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(results) >= 200
    assert all(status == 200 for _, _, status, _, _ in results)
    assert {v for *_, v in results} <= {old, new["version"]}
    for pid in {pid for *_, pid, _ in results}:
        mine = [r for r in results if r[3] == pid]
        swapped = min((done for _, done, _, _, v in mine if v == new["version"]), default=None)
        assert swapped is not None, f"worker {pid} never served {new['version']}"
        # once a worker has answered with the new version, no request sent to it later gets the old one
        late = [v for sent, _, _, _, v in mine if sent > swapped]
        assert set(late) <= {new["version"]}, f"worker {pid} went back to the old version"


def _config() -> str:
    from tests.conftest import LABEL_CONFIG

    return LABEL_CONFIG
