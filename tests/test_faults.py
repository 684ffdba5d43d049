"""Faults F1-F20 of the reliability plan (section 7; F14, a burst of retrains, is in tests/jobs/test_entry.py), against real processes
on loopback: redis-server, gunicorn and RQ worker processes.

Every test starts from the same trained deployment: project 1 trained on 150 and then 200 labels
once per module (`template`), copied into the test's Redis and model directory and served by a
fresh gunicorn. Besides what its fault requires, each test checks that no stored annotation is
lost, that no partial artifact becomes current, and that the previous model serves while the
fault lasts.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import secrets
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import skops.io as sio
from rq import Queue, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from backend import families
from backend.config import Settings
from backend.jobs.trigger import retrain_queue
from backend.state import keys
from backend.state.registry import POINTER, Pointer, Registry, atomic_write
from backend.state.store import Store
from backend.training import holdout_rate, in_holdout
from tests.conftest import LABEL_CONFIG, Services, annotation_event, free_port, wait_for
from tests.jobs.test_entry import post_labels, predict, settled, versions_by_worker

pytestmark = pytest.mark.slow

RECOVERY_BOUND = 60  # seconds within which an interrupted train job must be retried (RQ alone: up to 15 min)
TRAINED = 200  # labels of the template's champion: annotations 1..200 on tasks 1..200 of project 1


def start_training(url: str, project: int = 1) -> str:
    """START_TRAINING as LS sends it; the id of the train job it queued (or joined)."""
    response = requests.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": project}}, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["retrain"]["job_id"]


def idle_children(worker) -> set[int]:
    """The worker's children before any job (its scheduler process), once it is up."""
    wait_for(lambda: "Listening on" in worker.log.read_text() or "started with PID" in worker.log.read_text(), timeout=20)
    time.sleep(1.5)
    return set(worker.children())


def horse_of(worker, before: set[int]) -> int:
    """The work-horse: the child that appeared once the job started."""
    return wait_for(lambda: (new := set(worker.children()) - before) and min(new), timeout=20)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def no_partial_files(model_dir) -> None:
    project = model_dir / "project-1"
    artifacts = {p.stem for p in project.glob("*.skops")}
    records = {p.stem for p in project.glob("p1-v*.json")}
    assert artifacts <= records, f"artifacts without a record: {artifacts - records}"


def intact(deployment: Services, registry: Registry, labels: int) -> None:
    """Every annotation stored is still there, and the current artifact passes its checks."""
    assert Store(redis.Redis.from_url(deployment.redis_url)).annotation_count(1) == labels
    pointer = registry.pointer(1)
    registry.load(1, pointer.version, pointer.sha256)
    no_partial_files(deployment.model_dir)


def warm(url: str, web, version: str) -> set[int]:
    """Both gunicorn workers, once each has answered with `version` (a worker's first request
    imports the LS SDK's label-config parser: about 2 s on a busy machine)."""
    pids = set(wait_for(lambda: len(web.children()) == 2 and web.children(), timeout=30))
    versions_by_worker(url, pids, version, timeout=30)
    return pids


def serves(url: str, version: str, within: float = 0) -> None:
    """/predict answers with `version` (now, or once the workers have swapped to it `within` s)."""

    def answered() -> bool:
        response = predict(url, ["the crew was lovely"])
        return response.status_code == 200 and response.json()["results"][0]["model_version"] == version

    assert wait_for(answered, timeout=within) if within else answered()


def queue_of(deployment: Services) -> Queue:
    return retrain_queue(Settings.from_env({}, redis_url=deployment.redis_url), redis.Redis.from_url(deployment.redis_url))


def job(queue: Queue, job_id: str) -> Job:
    return Job.fetch(job_id, connection=queue.connection, serializer=JSONSerializer)


def failed(queue: Queue, job_id: str) -> Job | None:
    return job(queue, job_id) if job_id in FailedJobRegistry(queue=queue) else None


@dataclass(frozen=True)
class Template:
    models: Path
    keys: dict[bytes, tuple[bytes, int]]
    first: dict[str, Any]
    champion: dict[str, Any]


@pytest.fixture(scope="module")
def template(redis_server, tmp_path_factory, tweets) -> Template:
    """Project 1 trained on 150 labels, then on 200 (two promoted versions): its model directory
    and its Redis keys, taken once the deployment has stopped."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    deployment = Services(redis_server, tmp_path_factory.mktemp("template"))
    try:
        url, _ = deployment.web(workers=1, RETRAIN_THRESHOLD="100000")
        worker = deployment.worker()
        registry = Registry(deployment.model_dir)
        post_labels(url, tweets, 0, 150, threads=4)
        start_training(url)
        first = settled(registry, 1, 150)[-1]
        post_labels(url, tweets, 150, TRAINED, threads=4)
        start_training(url)
        champion = settled(registry, 1, TRAINED)[-1]
        assert first["decision"] == champion["decision"] == "promoted"
        worker.stop()  # a warm shutdown: the job it runs (the label-error check) finishes first
    finally:
        deployment.stop()
    keys = {k: (client.dump(k), client.pttl(k)) for k in client.scan_iter("lsb:*") if not k.endswith(b":lock")}
    return Template(deployment.model_dir, keys, first, champion)


def deploy(deployment: Services, template: Template, **env: str) -> tuple[str, Any, Registry]:
    """The template's Redis keys and model directory in the deployment's, served by gunicorn (2
    workers, both warm)."""
    client = redis.Redis.from_url(deployment.redis_url)
    for name, (value, ttl) in template.keys.items():
        if value is not None:
            client.restore(name, max(ttl, 0), value, replace=True)
    shutil.copytree(template.models, deployment.model_dir)
    url, web = deployment.web(workers=2, RETRAIN_THRESHOLD="100000", **env)
    warm(url, web, template.champion["version"])
    return url, web, Registry(deployment.model_dir)


@pytest.fixture
def web_env() -> dict[str, str]:
    """Environment of the trained deployment's gunicorn; a test parametrizes it to change it."""
    return {}


@pytest.fixture
def trained(services, template, web_env):
    """The template served by gunicorn (2 workers), no RQ worker: each test brings the ones it needs."""
    url, web, registry = deploy(services, template, **web_env)
    return url, web, registry, template.champion


@pytest.fixture
def on_private_redis(private_redis, template, tmp_path):
    """Deploy the template on a redis-server of the test's own, started with `options`; returns the
    server, the deployment, gunicorn's url and process, and the registry."""
    started: list[Services] = []

    def start(*options: str):
        server = private_redis(*options)
        started.append(Services(server.url, tmp_path))
        return (server, started[-1], *deploy(started[-1], template))

    yield start
    for deployment in started:
        deployment.stop()


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


def test_f3_f20_an_orphaned_horse_publishes_once_and_a_worker_restarted_at_once_takes_over(services, tweets, template, trained):
    """F3: SIGKILL of the worker's process group spares its work-horse (RQ puts it in a group of
    its own), which finishes and publishes exactly one version. F20: a worker started right after
    the kill, while the dead one is still registered, gets a name of its own and works the next job."""
    url, _, registry, champion = trained
    before = registry.pointer(1)
    client = redis.Redis.from_url(services.redis_url)
    queue = queue_of(services)  # the training queue: each worker's ranker registers on a queue of its own
    worker, horse = training_in_a_horse(services, url, tweets, "4")
    dead = {w.name for w in Worker.all(queue=queue)}
    worker.kill_group()
    for name in dead:  # as if it died right after a heartbeat with RQ's default TTL (ours lapses in 10 s)
        client.expire(Worker.redis_worker_namespace_prefix + name, 120)
    try:
        assert alive(horse)
        fresh = services.worker()
        idle_children(fresh)
        names = {w.name for w in Worker.all(queue=queue)}
        assert len(dead) == 1 and dead < names and len(names) == 2, names  # the dead one still registered
        assert "There exists an active worker" not in fresh.log.read_text() and fresh.popen.poll() is None
        history = settled(registry, 1, 300)
        wait_for(lambda: not alive(horse), timeout=20)
    finally:
        if alive(horse):
            os.kill(horse, signal.SIGKILL)
    published = history[-1]
    assert published["decision"] == "promoted" and published["job_id"]
    # the job ends finished: by the orphan itself, or retried once its heartbeat expired, finding nothing new to train
    wait_for(lambda: job(queue, published["job_id"]).get_status() == "finished", timeout=RECOVERY_BOUND)
    assert [r["version"] for r in registry.history(1)] == [template.first["version"], champion["version"], published["version"]]
    assert registry.pointer(1).version == published["version"] and registry.pointer(1).seq == before.seq + 1
    serves(url, published["version"], within=10)
    # the worker started after the kill works the next job: the label-error check of the new version
    check = wait_for(lambda: (j := job(queue, f"mislabels-1-{published['version']}")).get_status() == "finished" and j, timeout=60)
    assert check.worker_name in names - dead
    intact(services, registry, 300)


@pytest.mark.parametrize("web_env", [{"JOB_TIMEOUT": "5", "JOB_RETRIES": "1"}], ids=["timeout-5s"])
def test_f4_a_job_past_its_timeout_is_retried_then_failed_and_frees_the_project(services, tweets, trained):
    url, _, registry, champion = trained
    before = registry.pointer(1)
    stuck = services.worker(SLEEP_AT="fit", SLEEP_SECONDS="60")
    post_labels(url, tweets, 200, 300, threads=4)
    job_id = start_training(url)
    queue = queue_of(services)
    serves(url, champion["version"])
    ended = wait_for(lambda: failed(queue, job_id), timeout=40)
    assert "JobTimeoutException" in ended.latest_result().exc_string
    assert ended.retries_left == 0 and stuck.log.read_text().count("fault injection: holding at fit") == 2
    assert job_id not in StartedJobRegistry(queue=queue)
    assert queue.connection.get(keys.train_lock(1)) is None  # released by the timed-out horse
    assert registry.pointer(1) == before
    serves(url, champion["version"])
    intact(services, registry, 300)
    stuck.stop()
    services.worker()
    start_training(url)
    history = settled(registry, 1, 300, timeout=120)  # a fresh worker imports and trains on a busy CI machine
    assert history[-1]["decision"] == "promoted" and registry.pointer(1).seq == before.seq + 1


@pytest.mark.parametrize("point", ["before_dump", "mid_dump", "after_dump_before_replace", "after_replace_before_pointer"])
def test_f5_crash_at_each_publish_step_keeps_the_old_model(services, tweets, trained, point):
    url, _, registry, champion = trained
    before = registry.pointer(1)
    crashing = services.worker(CRASH_AT=point, JOB_RETRIES="0")
    post_labels(url, tweets, 200, 300, threads=4)
    start_training(url)
    queue = queue_of(services)
    wait_for(lambda: FailedJobRegistry(queue=queue).count >= 1, timeout=30)
    assert registry.pointer(1) == before
    assert predict(url, ["x"]).json()["results"][0]["model_version"] == champion["version"]
    crashing.stop()
    services.worker()
    start_training(url)
    history = settled(registry, 1, 300, timeout=120)  # a fresh worker imports and trains on a busy CI machine
    promoted = [h for h in history if h["decision"] == "promoted"]
    assert promoted[-1]["version"] == registry.pointer(1).version != champion["version"]
    assert registry.pointer(1).seq == before.seq + 1
    no_partial_files(services.model_dir)


class Hostile:
    """A type no loader may trust: building it from a file runs code (it leaves a file behind)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __setstate__(self, state: dict[str, str]) -> None:
        Path(state["path"]).write_text("loaded")


def make_current(registry: Registry, version: str, data: bytes, sha256: str) -> None:
    """An artifact no job wrote, made current: a disk fault, or someone with write access."""
    directory = registry.project_dir(1)
    (directory / f"{version}.skops").write_bytes(data)
    current = registry.pointer(1)
    atomic_write(directory / POINTER, json.dumps(Pointer(version, current.seq + 1, sha256, current.watermark).to_json()).encode())


def every_worker(url: str, pids: set[int], path: str, accept, timeout: float = 15) -> None:
    """GET `path` until each gunicorn worker in `pids` has answered with a body that `accept`s."""
    done: set[int] = set()
    deadline = time.monotonic() + timeout
    while done < pids:
        response = requests.get(f"{url}{path}", timeout=5)
        if accept(response.json()):
            done.add(int(response.headers["X-Backend-Worker"]))
        assert time.monotonic() < deadline, f"workers {pids - done} never answered as expected"


def test_f6_a_corrupt_or_hostile_artifact_is_refused_and_the_previous_model_serves(services, tweets, trained, tmp_path):
    url, web, registry, champion = trained
    pids = warm(url, web, champion["version"])
    good = (registry.project_dir(1) / f"{champion['version']}.skops").read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    ran = tmp_path / "hostile-code-ran"
    artifact = families.to_artifact(registry.load(1, champion["version"], champion["sha256"]))
    hostile = {
        "truncated": (good[: len(good) // 2], champion["sha256"], "fails its checksum"),
        "flipped": (bytes(flipped), champion["sha256"], "fails its checksum"),
        "pickle": (pickle.dumps({"format": 2, "controls": {}, "hook": Hostile(ran)}), None, "was refused: BadZipFile"),
        "untrusted": (sio.dumps({**artifact, "hook": Hostile(ran)}), None, "was refused: UntrustedTypesFoundException"),
    }
    for n, (data, sha, why) in enumerate(hostile.values()):
        version = f"p1-v{90 + n}"
        make_current(registry, version, data, sha or hashlib.sha256(data).hexdigest())
        reported = f"artifact {version} {why}"
        every_worker(url, pids, "/health", lambda body, reported=reported: body.get("degraded", {}).get("1") == reported)
        versions_by_worker(url, pids, champion["version"])
    assert not ran.exists(), "a hostile artifact was deserialized"
    log = web.log.read_bytes().decode("utf-8")  # text only: no artifact bytes were dumped into it
    assert log.count("keeping the served model") >= 2 * len(hostile)
    assert "Hostile" not in log and str(ran) not in log and "Traceback" not in log
    response = requests.post(f"{url}/projects/1/rollback", json={"version": champion["version"]}, timeout=5)
    assert response.status_code == 200
    every_worker(url, pids, "/health", lambda body: "degraded" not in body)
    versions_by_worker(url, pids, champion["version"])
    registry.load(1, champion["version"], registry.pointer(1).sha256)
    assert Store(redis.Redis.from_url(services.redis_url)).annotation_count(1) == TRAINED


def test_f7_redis_unreachable_gives_fast_503_and_predictions_keep_serving(on_private_redis, template):
    """SIGSTOP a private redis-server: webhooks answer 503 quickly, /predict keeps answering."""
    server, _, url, _, _ = on_private_redis("--appendonly", "no")
    version = template.champion["version"]
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        for i in range(5):
            started = time.perf_counter()
            response = requests.post(f"{url}/webhook", json=annotation_event(500 + i, 500 + i, "late", "positive"), timeout=5)
            assert response.status_code == 503 and response.json()["error"]
            assert time.perf_counter() - started < 0.5
            serves(url, version)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    response = requests.post(f"{url}/webhook", json=annotation_event(600, 600, "back", "positive"), timeout=5)
    assert response.status_code == 200


def test_f8_redis_sigkill_with_aof_keeps_queued_jobs_and_reaps_the_started_one(on_private_redis, template, tweets):
    """AOF on (everysec: a SIGKILL loses nothing already written to the kernel). First, project 1's
    job is started on a worker that dies with Redis, and project 2's is queued behind it. Then Redis
    is killed again and kept away for longer than a heartbeat while a job runs: the worker process
    carries on, and the jobs that had finished are not run again."""
    server, deployment, url, _, registry = on_private_redis()
    champion = template.champion["version"]
    slow, horse = training_in_a_horse(deployment, url, tweets, "60")
    post_labels(url, tweets, 0, 60, project=2, threads=4)
    queued = start_training(url, project=2)
    queue = queue_of(deployment)
    assert queue.get_job_ids() == [queued]
    [started] = StartedJobRegistry(queue=queue).get_job_ids()
    os.kill(horse, signal.SIGKILL)
    slow.kill_group()
    server.restart()
    killed_at = time.monotonic()
    serves(url, champion)
    queue = queue_of(deployment)
    assert queue.get_job_ids() == [queued] and job(queue, started).get_status() == "started"  # both survived
    worker = deployment.worker(SLEEP_AT="fit", SLEEP_SECONDS="10")
    wait_for(lambda: job(queue, started).retries_left < Settings().job_retries, timeout=RECOVERY_BOUND)
    assert time.monotonic() - killed_at < RECOVERY_BOUND  # the started job was reaped and retried
    second = settled(registry, 2, 60, timeout=90)
    history = settled(registry, 1, 300, timeout=90)
    assert second[-1]["decision"] == history[-1]["decision"] == "promoted"
    assert history[-1]["job_id"] == started
    jobs = [started, queued]
    wait_for(
        lambda: (
            [job(queue, j).get_status() for j in jobs] == ["finished", "finished"]
            and not queue.count
            and not StartedJobRegistry(queue=queue).count
        ),
        timeout=60,
    )  # the worker is idle
    done = registry.history(1)
    post_labels(url, tweets, 60, 80, project=2, threads=4)
    probe = start_training(url, project=2)
    wait_for(lambda: worker.log.read_text().count("holding at fit") == 3, timeout=30)
    server.kill()
    time.sleep(6)  # longer than the worker's heartbeat interval (5 s), while its work-horse holds at fit
    server.start()
    queue = queue_of(deployment)
    wait_for(lambda: job(queue, probe).get_status() == "finished", timeout=60)
    assert [r["decision"] for r in settled(registry, 2, 80)] == ["promoted", "promoted"]  # a re-run made no version
    again = start_training(url, project=2)  # taken by the worker that replaced the one that quit
    wait_for(lambda: job(queue, again).get_status() == "finished", timeout=30)
    assert job(queue, again).return_value()["status"] == "unchanged" and worker.popen.poll() is None
    assert registry.history(1) == done and [job(queue, j).get_status() for j in jobs] == ["finished", "finished"]
    serves(url, history[-1]["version"], within=10)
    intact(deployment, registry, 300)


def test_f9_redis_restart_without_persistence_keeps_serving_and_keeps_the_champion(on_private_redis, template, tweets):
    """Redis restarted empty (no AOF, no RDB). There is no Label Studio here to reconcile from, so
    the labels are gone: the web workers keep serving the on-disk model, webhooks work at once, and
    a retrain on the few labels stored since does not replace the champion until as many are stored
    again as it was trained on."""
    server, deployment, url, web, registry = on_private_redis("--appendonly", "no")
    champion = template.champion
    worker = deployment.worker()
    idle_children(worker)
    pids = warm(url, web, champion["version"])
    server.restart()
    store = Store(redis.Redis.from_url(server.url))
    assert store.annotation_count(1) == 0 and not store.meta(1) and not store.change_seq(1)  # all labels gone
    versions_by_worker(url, pids, champion["version"])
    every_worker(url, pids, "/health", lambda body: body["status"] == "UP" and "degraded" not in body)
    statuses = []
    for i in range(1000, 1040):  # no 5xx loop: the web processes reconnect at once
        event = annotation_event(i + 1, i + 1, tweets.texts[i], tweets.labels[i])
        statuses.append(requests.post(f"{url}/webhook", json=event, timeout=5).status_code)
    assert set(statuses) == {200}, statuses
    start_training(url)
    retrained = wait_for(lambda: len(h := registry.history(1)) == 3 and h[-1]["decision"] != "promoting" and h[-1], timeout=60)
    assert retrained["examples"] == 40 and retrained["watermark"] >= champion["watermark"]
    assert retrained["decision"] == "rejected" and "Redis lost the labels" in retrained["reason"], retrained["reason"]
    assert registry.pointer(1).version == champion["version"]
    versions_by_worker(url, pids, champion["version"])
    post_labels(url, tweets, 1040, 1000 + TRAINED, threads=4)
    start_training(url)
    regrown = wait_for(lambda: len(h := registry.history(1)) == 4 and h[-1]["decision"] != "promoting" and h[-1], timeout=60)
    assert regrown["examples"] == TRAINED and regrown["decision"] == "promoted", regrown["reason"]
    versions_by_worker(url, pids, regrown["version"])


def test_f10_redis_out_of_memory_gives_fast_503_evicts_nothing_and_recovers(on_private_redis, template, tweets):
    """maxmemory 2 MB with noeviction, filled by another client: every write fails with an OOM
    error, so webhooks answer 503 at once; the labels stay as they were; once memory is freed,
    webhooks are stored again and a retrain is enqueued."""
    server, deployment, url, _, registry = on_private_redis("--maxmemory", "2mb")
    champion = template.champion["version"]
    client = redis.Redis.from_url(server.url)
    stored = labels_of(client)
    filled = 0
    for size in (65536, 1024, 16):  # down to small values: no write of any size fits
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            while filled < 1000:
                client.set(f"filler:{filled}", b"x" * size)
                filled += 1
    # Keys expiring meanwhile (locks, heartbeats) would free room for one more write: keep the
    # limit well below what is used.
    client.config_set("maxmemory", client.info("memory")["used_memory"] // 2)
    for i in range(3):
        event = annotation_event(TRAINED + 1 + i, TRAINED + 1 + i, tweets.texts[TRAINED + i], tweets.labels[TRAINED + i])
        for body in (event, {"action": "START_TRAINING", "project": {"id": 1}}):
            started = time.perf_counter()
            response = requests.post(f"{url}/webhook", json=body, timeout=5)
            assert response.status_code == 503 and response.json()["error"]
            assert time.perf_counter() - started < 1.0  # LS's webhook timeout
        serves(url, champion)
    assert labels_of(client) == stored  # nothing evicted or half-written
    client.delete(*[f"filler:{i}" for i in range(filled)])
    client.config_set("maxmemory", "4mb")  # room for the 100 labels below (about 260 KB on the 1.7 MB left in use)
    post_labels(url, tweets, TRAINED, 300, threads=4)  # LS's next sync or the annotators' next saves
    job_id = start_training(url)
    assert queue_of(deployment).get_job_ids() == [job_id]
    serves(url, champion)
    intact(deployment, registry, 300)


def labels_of(client: redis.Redis) -> dict[str, Any]:
    """Everything the store keeps of project 1's labels."""
    hashes = {
        name.__name__: client.hgetall(name(1))
        for name in (keys.annotations, keys.annotation_labels, keys.annotation_times, keys.texts, keys.tombstones, keys.meta)
    }
    return {**hashes, "seq": client.get(keys.change_seq(1))}


class Load:
    """About 20 /predict requests a second from two threads, each on a new connection (as a
    client without keep-alive), recording (sent, done, status or 0 for no answer, worker, version)."""

    def __init__(self, url: str):
        self.url, self.results, self.stop = url, [], threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(2)]

    def run(self) -> None:
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                response = predict(self.url, ["on time, thanks"])
                row = (
                    sent,
                    time.monotonic(),
                    response.status_code,
                    int(response.headers.get("X-Backend-Worker", 0)),
                    response.json()["results"][0]["model_version"] if response.status_code == 200 else "",
                )
            except requests.RequestException:
                row = (sent, time.monotonic(), 0, 0, "")
            self.results.append(row)
            time.sleep(max(0.0, 0.1 - (time.monotonic() - sent)))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def test_f11_f12_gunicorn_worker_sigkill_and_hup_under_load(services, template, trained):
    """The pointer moves after the master started (a rollback), so a respawned worker that served
    the import-time version would show. F11: SIGKILL of one gunicorn worker: only a request that
    worker was answering can fail; its replacement serves the current version. F12: HUP of the
    master: no request fails and the new workers serve the current version."""
    url, web, registry, champion = trained
    older = template.first["version"]
    pids = warm(url, web, champion["version"])
    with Load(url) as load:
        assert requests.post(f"{url}/projects/1/rollback", json={"version": older}, timeout=5).status_code == 200
        versions_by_worker(url, pids, older)
        moved_at = time.monotonic()
        victim = min(pids)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        respawned = set(wait_for(lambda: len(c := set(web.children())) == 2 and victim not in c and c, timeout=30))
        versions_by_worker(url, respawned - pids, older, timeout=40)  # it imports the app after the fork
        time.sleep(1)
        hup_at = time.monotonic()
        os.kill(web.pid, signal.SIGHUP)
        renewed = set(wait_for(lambda: len(c := set(web.children())) == 2 and not c & respawned and c, timeout=30))
        versions_by_worker(url, renewed, older, timeout=40)
        time.sleep(1)
    results = load.results
    assert len(results) >= 60 and {r[3] for r in results} >= renewed
    lost = [r for r in results if r[2] != 200]
    assert all(r[2] == 0 and r[0] <= killed_at <= r[1] for r in lost), lost  # only requests in flight at the SIGKILL
    assert len(lost) <= len(load.threads)
    assert not [r for r in results if r[0] >= hup_at and r[2] != 200]
    assert {r[4] for r in results if r[2] == 200} <= {older, champion["version"]}
    assert {r[4] for r in results if r[0] >= moved_at and r[2] == 200} == {older}


def test_f13_hot_swap_under_concurrent_load_fails_no_request(services, tweets, trained):
    url, _, registry, champion = trained
    services.worker()
    old = champion["version"]
    post_labels(url, tweets, 200, 600, threads=4)
    results: list[tuple[float, float, int, int, str]] = []  # sent, done, status, worker pid, version
    stop = threading.Event()
    lock = threading.Lock()

    def load() -> None:
        session = requests.Session()
        while not stop.is_set():
            sent = time.monotonic()
            response = session.post(
                f"{url}/predict",
                json={"tasks": [{"id": 1, "data": {"text": "on time, thanks"}}], "project": "1.1700000000", "label_config": LABEL_CONFIG},
                timeout=10,
            )
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


def test_f15_an_older_job_finishing_late_is_refused_by_compare_and_set(services, tweets, trained):
    """Job A (labels up to 300) pauses in `fit` long enough for its project lock to expire (SIGSTOP:
    a GC pause or a frozen VM); job B (up to 400) runs meanwhile and publishes; A resumes and its
    publish is refused."""
    url, _, registry, _ = trained
    before = registry.pointer(1)
    slow, horse = training_in_a_horse(services, url, tweets, "2")
    wait_for(lambda: "holding at fit" in slow.log.read_text(), timeout=20)
    os.kill(horse, signal.SIGSTOP)
    try:
        post_labels(url, tweets, 300, 400, threads=4)
        start_training(url)
        services.worker()
        newer = wait_for(lambda: (p := registry.pointer(1)) and p.watermark == 400 and p, timeout=60)
        assert newer.seq == before.seq + 1
        wait_for(lambda: predict(url, ["ok"]).json()["results"][0]["model_version"] == newer.version)
    finally:
        os.kill(horse, signal.SIGCONT)
    late = wait_for(lambda: [r for r in registry.history(1) if r["watermark"] == 300 and r["decision"] != "promoting"], timeout=60)[0]
    assert late["decision"] == "superseded" and "champion moved" in late["reason"], late["reason"]
    assert registry.pointer(1) == newer
    serves(url, newer.version)
    intact(services, registry, 400)


@pytest.mark.parametrize("web_env", [{"JOB_RETRIES": "1"}], ids=["one-retry"])
def test_f17_disk_full_while_dumping_fails_the_job_cleanly_and_keeps_the_model(services, tweets, trained):
    """The work-horse may write no file beyond 128 KB once it starts dumping (RLIMIT_FSIZE: EFBIG, as
    on a full disk); an artifact of 300 tweets is about 560 KB."""
    url, _, registry, champion = trained
    before = registry.pointer(1)
    services.worker(DISK_FULL_AT="before_dump", DISK_FULL_BYTES=str(2**17))
    post_labels(url, tweets, 200, 300, threads=4)
    job_id = start_training(url)
    ended = wait_for(lambda: failed(queue_of(services), job_id), timeout=60)
    assert "File too large" in ended.latest_result().exc_string and ended.retries_left == 0
    assert registry.pointer(1) == before
    serves(url, champion["version"])
    directory = registry.project_dir(1)
    assert not list(directory.glob(".tmp-*"))
    for artifact in directory.glob("*.skops"):  # every file under a final name is whole
        registry.load(1, artifact.stem, registry.record(1, artifact.stem)["sha256"])
    intact(services, registry, 300)
    assert queue_of(services).connection.get(keys.train_lock(1)) is None  # the next job may start at once


class Silent:
    """A loopback server that accepts connections (in the kernel's backlog) and never answers."""

    def __enter__(self) -> str:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_f18_label_studio_unreachable_or_silent_times_out_keeps_the_model_and_never_logs_the_key(services, trained, tmp_path):
    """The train job reads LS before training (reconciliation), and the publish job it asks for
    after it lists new tasks and pushes the queue's head. LS unreachable (closed port, credentials
    from the environment), then silent (a server that never answers, credentials from /setup):
    each call gives up after LABEL_STUDIO_TIMEOUT and the jobs go on with the labels the webhooks
    stored (nothing new here, so the champion stays) instead of failing; neither API key is written
    to any log."""
    url, _, registry, champion = trained
    before = registry.pointer(1)
    queue = queue_of(services)
    env_key, setup_key = f"env-{secrets.token_hex(16)}", f"setup-{secrets.token_hex(16)}"
    closed = free_port()
    worker = services.worker(
        LABEL_STUDIO_URL=f"http://127.0.0.1:{closed}", LABEL_STUDIO_API_KEY=env_key, LABEL_STUDIO_TIMEOUT="1", LOG_LEVEL="DEBUG"
    )
    first = start_training(url)
    wait_for(lambda: job(queue, first).get_status() == "finished", timeout=30)
    assert job(queue, first).return_value()["status"] == "unchanged"
    assert "could not sync from Label Studio" in worker.log.read_text()
    worker.stop()
    with Silent() as silent:
        setup = {"project": "1.1700000000", "schema": LABEL_CONFIG, "hostname": silent, "access_token": setup_key}
        assert requests.post(f"{url}/setup", json=setup, timeout=5).status_code == 200
        worker = services.worker(LABEL_STUDIO_TIMEOUT="1", LOG_LEVEL="DEBUG")
        second = start_training(url)
        started = time.monotonic()
        wait_for(lambda: job(queue, second).get_status() == "finished", timeout=30)
        assert time.monotonic() - started < 10  # one call of 1 s, not LS's 60 s sleep; the publish job calls LS after
        wait_for(lambda: "could not list tasks in Label Studio (ReadTimeout)" in worker.log.read_text(), timeout=20)
    log = worker.log.read_text()
    assert "could not sync from Label Studio (ReadTimeout)" in log
    assert registry.pointer(1) == before
    serves(url, champion["version"])
    for path in tmp_path.rglob("*.log"):
        text = path.read_text(errors="replace")
        assert env_key not in text and setup_key not in text, f"an API key is in {path.name}"
    intact(services, registry, TRAINED)


@pytest.mark.parametrize("web_env", [{"JOB_RETRIES": "1"}], ids=["one-retry"])
def test_f19_a_poison_example_fails_its_job_once_then_is_quarantined(services, tweets, trained):
    """An annotation whose text makes fitting raise (POISON_TEXT): its job fails on every attempt and
    ends failed without looping; its last attempt finds the task and quarantines it, so the next
    event trains without it. The annotation stays stored."""
    url, _, registry, champion = trained
    before = registry.pointer(1)
    marker = f"poison-{secrets.token_hex(4)}"
    worker = services.worker(POISON_TEXT=marker)
    post_labels(url, tweets, 200, 300, threads=4)
    task = next(t for t in range(100_001, 100_100) if not in_holdout(1, t, holdout_rate(301)))  # trained on, not held out
    poison = annotation_event(task, task, f"{marker} the seat was fine", "neutral")
    assert requests.post(f"{url}/webhook", json=poison, timeout=5).status_code == 200
    job_id = start_training(url)
    queue = queue_of(services)
    ended = wait_for(lambda: failed(queue, job_id), timeout=60)
    assert "poisoned training example" in ended.latest_result().exc_string and ended.retries_left == 0
    assert registry.pointer(1) == before and len(registry.history(1)) == 2
    serves(url, champion["version"])
    assert queue.count == 0 and StartedJobRegistry(queue=queue).count == 0  # no loop: nothing runs or waits
    audit = requests.get(f"{url}/projects/1/audit", params={"kind": "training"}, timeout=5).json()
    assert [e["details"]["tasks"] for e in audit["events"]] == [[task]], audit
    post_labels(url, tweets, 300, 301)  # the next good event
    start_training(url)
    history = settled(registry, 1, 302, timeout=60)
    assert history[-1]["decision"] == "promoted" and history[-1]["set_aside"] == {"quarantined": 1}
    assert history[-1]["examples"] == 301
    serves(url, history[-1]["version"], within=10)
    intact(services, registry, 302)  # the poisoned annotation is kept, only set aside
    assert "poisoned training example" in worker.log.read_text()


def test_f16_the_schedule_has_no_owner_to_lose_a_sigkilled_worker_leaves_it_firing(services, tweets, trained):
    """F16 as it applies here: scheduled retrains are fired by whichever worker ticks first (a
    compare-and-set on the due time), so SIGKILL of one worker leaves the schedule to the others."""
    url, _, registry, champion = trained
    first, second = services.worker(), services.worker()

    def fired() -> int:
        events = requests.get(f"{url}/projects/1/audit", params={"kind": "trigger", "limit": 1000}, timeout=5).json()["events"]
        return len([e for e in events if e["message"] == "schedule"])

    assert requests.put(f"{url}/projects/1/settings", json={"retrain_every": 1}, timeout=5).status_code == 200
    wait_for(lambda: fired() >= 2, timeout=30)
    first.kill_group()
    killed = fired()
    wait_for(lambda: fired() >= killed + 3, timeout=30)  # about one a second from the survivor
    assert second.popen.poll() is None
    assert registry.pointer(1).version == champion["version"]  # nothing changed: every scheduled run skipped
