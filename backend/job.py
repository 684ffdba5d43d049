"""The retrain job that RQ workers (or the embedded worker thread) run.

Idempotent and safe to retry: it snapshots the stored labels, skips work when the champion was
trained on the same data, trains and judges a challenger, records the candidate, and moves the
project's pointer only through the registry's compare-and-set.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from redis import Redis
from rq import get_current_job

from . import faults, labelstudio
from . import runtime as runtime_module
from .labelconfig import LabelConfigError, parse_label_config
from .registry import RegistryError
from .runtime import Runtime
from .store import key, texts_of
from .training import build_snapshot

log = logging.getLogger(__name__)

LOCK_TTL_MS = 15_000
BACKOFF = (1.0, 5.0, 15.0)  # seconds before retry 1, 2, 3 (RQ re-enqueues at once)

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_EXTEND = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"


class LockTimeout(Exception):
    """Another train job of the project held the lock for longer than this job may wait."""


@contextmanager
def project_lock(redis: Redis, project: int, wait: float, token: str) -> Iterator[None]:
    """Hold the project's train lock, kept alive by a heartbeat; expires if the holder dies.

    The token is the job id, so the worker whose work-horse died can release it at once.
    """
    name = key(project, "lock")
    deadline = time.monotonic() + wait
    while not redis.set(name, token, nx=True, px=LOCK_TTL_MS):
        if time.monotonic() > deadline:
            raise LockTimeout(f"project {project} is locked by another train job")
        time.sleep(0.1)
    stop = threading.Event()
    extend = redis.register_script(_EXTEND)

    def heartbeat() -> None:
        while not stop.wait(LOCK_TTL_MS / 3000):
            try:
                extend(keys=[name], args=[token, LOCK_TTL_MS])
            except Exception:
                log.warning("project %s: could not extend the train lock", project)

    thread = threading.Thread(target=heartbeat, name="train-lock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        redis.register_script(_RELEASE)(keys=[name], args=[token])


def release_lock_of(redis: Redis, project: int, job_id: str) -> bool:
    """Release a project's train lock held by `job_id` (whose process is known to be dead)."""
    return bool(redis.register_script(_RELEASE)(keys=[key(project, "lock")], args=[job_id]))


def retrain(project: int, reason: str = "", full_sync: bool = False) -> dict[str, Any]:
    """RQ entry point: train project `project` once, coalescing everything stored so far."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("retrain runs inside an RQ job")
    runtime = runtime_module.for_job(job.connection)
    attempt = runtime.settings.job_retries - (job.retries_left if job.retries_left is not None else runtime.settings.job_retries)
    if attempt > 0:
        time.sleep(BACKOFF[min(attempt, len(BACKOFF)) - 1])
    with project_lock(runtime.redis, project, wait=max(1.0, runtime.settings.job_timeout - 30), token=job.id):
        _respect_min_interval(runtime, project)
        flag = key(project, "queued")
        if runtime.redis.get(flag) == job.id.encode():
            runtime.redis.delete(flag)
        ls = ls_client(runtime, project)
        if ls is not None:
            sync(runtime, ls, project, full_sync)
        result = train_project(runtime, project, reason, job.id)
        runtime.redis.set(key(project, "last_trained"), time.time())
    if ls is not None:
        result["pushed"] = push_current(runtime, ls, project)
    return result


def ls_client(runtime: Runtime, project: int) -> Any:
    settings = runtime.settings
    creds = labelstudio.credentials(settings.label_studio_url, settings.label_studio_api_key, runtime.store.meta(project))
    return labelstudio.client(creds, timeout=settings.label_studio_timeout) if creds else None


def sync(runtime: Runtime, ls: Any, project: int, full: bool) -> None:
    """Reconcile the store with LS; an unreachable LS leaves the webhook store as the source."""
    keys, limit = runtime.store.input_keys(project), runtime.settings.max_text_chars
    try:
        summary = labelstudio.sync_annotations(ls, runtime.store, project, lambda task: texts_of(task, keys, limit), full)
        log.info("project %s: synced from Label Studio: %s", project, summary)
    except Exception as exc:  # the SDK raises HTTP, connection and validation errors of many types
        log.warning("project %s: could not sync from Label Studio (%s); training on stored labels", project, type(exc).__name__)


def push_current(runtime: Runtime, ls: Any, project: int) -> int:
    """Push the current version's predictions for unlabeled tasks unless LS already has them."""
    pointer = runtime.registry.pointer(project)
    pushed_key = key(project, "pushed_version")
    if pointer is None or runtime.redis.get(pushed_key) == pointer.version.encode():
        return 0
    try:
        config = parse_label_config(runtime.store.meta(project).get("label_config", ""))
    except LabelConfigError:
        return 0
    runtime.cache.refresh(project)
    served = runtime.cache.get(project)
    if served is None or served.version != pointer.version:
        return 0
    try:
        tasks = [{"id": t.id, "data": t.data or {}} for t in labelstudio.unlabeled_tasks(ls, project)]
        predictions = []
        for start in range(0, len(tasks), 1000):
            chunk = tasks[start : start + 1000]
            for task, entry in zip(chunk, runtime.model.predict(chunk, project=project, config=config)):
                if entry:
                    predictions.append({"task": task["id"], **entry})
        if runtime.registry.pointer(project) != pointer:
            return 0  # a newer version was promoted meanwhile; its own job pushes it
        count = labelstudio.push_predictions(ls, project, pointer.version, predictions)
    except Exception as exc:
        log.warning("project %s: could not push predictions to Label Studio (%s); retried by the next job", project, type(exc).__name__)
        return 0
    runtime.redis.set(pushed_key, pointer.version)
    log.info("project %s: pushed %s predictions of %s to Label Studio", project, count, pointer.version)
    return count


def _respect_min_interval(runtime: Runtime, project: int) -> None:
    last = float(runtime.redis.get(key(project, "last_trained")) or 0)
    wait = last + runtime.settings.retrain_min_interval - time.time()
    if wait > 0:
        time.sleep(min(wait, runtime.settings.retrain_min_interval))


def train_project(runtime: Runtime, project: int, reason: str, job_id: str = "") -> dict[str, Any]:
    """Snapshot, train, judge, record and (maybe) promote. Returns a summary of what happened."""
    store, registry = runtime.store, runtime.registry
    meta = store.meta(project)
    try:
        config = parse_label_config(meta.get("label_config", ""))
    except LabelConfigError:
        return {"status": "skipped", "reason": "no usable label config stored for the project yet"}
    pointer = registry.pointer(project)
    if pointer:
        store.raise_change_seq(project, pointer.watermark)
    watermark = store.change_seq(project)
    snapshot = build_snapshot(
        project, store.labeled_tasks(project), config, watermark, runtime.settings.max_text_chars
    )
    history = registry.history(project)
    if history and history[-1].get("fingerprint") == snapshot.fingerprint and history[-1].get("decision") != "promoting":
        return {"status": "unchanged", "version": pointer.version if pointer else None}
    champion = None
    if pointer:
        try:
            champion = registry.load(project, pointer.version, pointer.sha256)
        except RegistryError as exc:
            log.error("project %s: champion %s unusable, judging without it: %s", project, pointer.version, exc)
    faults.point("fit")
    result = runtime.model.fit("START_TRAINING", snapshot, champion)
    version = registry.next_version(project)
    record: dict[str, Any] = {
        "version": version,
        "project": project,
        "parent": pointer.version if pointer else None,
        "created_at": time.time(),
        "job_id": job_id,
        "trigger": reason,
        "fingerprint": snapshot.fingerprint,
        "watermark": snapshot.watermark,
        "label_config": config.digest,
        "examples": snapshot.size,
        "label_counts": {name: data.counts() for name, data in snapshot.controls.items()},
        "set_aside": snapshot.set_aside,
        "train_seconds": round(result.seconds, 3),
        "evaluation": result.judgement.to_json(),
        "sha256": None,
        "decision": "rejected",
        "reason": result.judgement.reason,
    }
    if result.bundle is not None:
        record["sha256"] = registry.save_artifact(project, version, result.bundle)
    if result.bundle is not None and result.judgement.promote:
        record["decision"] = "promoting"
        registry.save_record(project, record)
        try:
            registry.promote(project, version, record["sha256"], snapshot.watermark, pointer.seq if pointer else 0)
            record["decision"] = "promoted"
        except RegistryError as exc:
            record["decision"] = "superseded"
            record["reason"] = f"{result.judgement.reason}; not promoted: {exc}"
    registry.save_record(project, record)
    log.info("project %s: %s %s (%s)", project, version, record["decision"], record["reason"])
    return {"status": record["decision"], "version": version, "reason": record["reason"]}
