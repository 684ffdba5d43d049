"""The retrain job that RQ workers (or the embedded worker thread) run.

Idempotent and safe to retry: it snapshots the stored labels, skips work when the champion was
trained on the same data, trains and judges a challenger, records the candidate, and moves the
project's pointer only through the registry's compare-and-set.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from redis import Redis
from rq import get_current_job

from . import audit, families, faults, labelstudio, mislabels
from . import runtime as runtime_module
from .labelconfig import LabelConfigError, parse_label_config
from .registry import RegistryError
from .runtime import Runtime
from .store import key, texts_of
from .model import UNTRAINED
from .policy import policy_for
from .pool import cache_for
from .ranking import rank
from .training import Snapshot, build_snapshot, example_digest, poisoned_tasks, predicted_targets
from .trigger import retrain_queue

log = logging.getLogger(__name__)

LOCK_TTL_MS = 15_000
STABILITY_SAMPLE = 5000
BACKOFF = (1.0, 5.0, 15.0)  # seconds before retry 1, 2, 3 (RQ re-enqueues at once)

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_EXTEND = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"


class LockTimeout(Exception):
    """Another train job of the project held the lock for longer than this job may wait."""


@contextmanager
def project_lock(redis: Redis, project: int, wait: float, token: str, name: str = "lock") -> Iterator[None]:
    """Hold one of the project's locks (`lock`: training, `rank_lock`: ranking), kept alive by a
    heartbeat; expires if the holder dies.

    The train lock's token is the job id, so the worker whose work-horse died can release it at once.
    """
    name = key(project, name)
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
    attempt = int(job.meta.get("attempt", 0))  # counted here: the enqueuer's JOB_RETRIES may differ from ours
    job.meta["attempt"] = attempt + 1
    job.save_meta()
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
        result = train_project(runtime, project, reason, job.id, last_attempt=not job.retries_left)
        runtime.redis.set(key(project, "last_trained"), time.time())
    if result.get("status") == "unchanged" and reason == "schedule":
        audit.record(runtime.redis, project, "training", f"train job {job.id}",
                     f"scheduled retrain skipped: the labels are those {result.get('version') or 'the last candidate'} saw",
                     reason="schedule", version=result.get("version"))
    if result.get("status") == "promoted":
        enqueue_mislabels(runtime, project, result["version"])
    result.update(publish_queue(runtime, ls, project))
    return result


def enqueue_mislabels(runtime: Runtime, project: int, version: str) -> None:
    """Look for suspected label errors with the new version's data, in a job of its own."""
    retrain_queue(runtime.settings, runtime.redis).enqueue(
        "backend.job.find_mislabels", int(project), version, job_id=f"mislabels-{int(project)}-{version}",
        job_timeout=runtime.settings.job_timeout, result_ttl=3600, failure_ttl=7 * 24 * 3600,
        description=f"suspected label errors of project {int(project)} ({version})",
    )


def find_mislabels(project: int, version: str) -> dict[str, Any]:
    """RQ entry point: cleanlab over the stored labels; store the suspects, push their `mislabeling`
    scores to LS (as predictions of `version` on the labeled tasks) and record it in the audit trail."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("find_mislabels runs inside an RQ job")
    runtime = runtime_module.for_job(job.connection)
    store = runtime.store
    pointer = runtime.registry.pointer(project)
    if pointer is None or pointer.version != version:  # a newer version's own job follows: skip the stale one
        return {"suspects": 0, "skipped": f"{version} is no longer current"}
    try:
        config = parse_label_config(store.meta(project).get("label_config", ""))
    except LabelConfigError:
        return {"suspects": 0}
    labeled = store.labeled_tasks(project)
    snapshot = build_snapshot(
        project, labeled, config, store.change_seq(project), runtime.settings.max_text_chars, store.quarantined(project)
    )
    started = time.perf_counter()
    suspects = mislabels.find(snapshot)
    store.save_mislabels(project, {"version": version, "checked": snapshot.size, "suspects": mislabels.to_json(suspects),
                                   "seconds": round(time.perf_counter() - started, 3)})
    pushed = 0
    ls = ls_client(runtime, project)
    if ls is not None and suspects:
        by_task = {t.task: t for t in labeled}
        tasks = [{"id": s.task, "data": by_task[s.task].data} for s in suspects if s.task in by_task]
        results = runtime.model.predict(tasks, project=project, config=config)
        worst = {}
        for s in suspects:
            worst[s.task] = max(worst.get(s.task, 0.0), s.mislabeling)
        predictions = [
            {"task": t["id"], "result": r["result"], "score": r["score"], "model_version": version, "mislabeling": worst[t["id"]]}
            for t, r in zip(tasks, results) if isinstance(r, dict)
        ]
        try:
            pushed = labelstudio.push_mislabeling(ls, predictions)
        except Exception as exc:
            log.warning("project %s: could not push mislabeling scores to Label Studio (%s)", project, type(exc).__name__)
    audit.record(runtime.redis, project, "label_errors", f"label-error job {job.id}",
                 f"{len(suspects)} suspected label errors among {snapshot.size} labeled tasks", version=version, pushed=pushed)
    return {"suspects": len(suspects), "pushed": pushed}


def ls_client(runtime: Runtime, project: int) -> Any:
    settings = runtime.settings
    creds = labelstudio.credentials(settings.label_studio_url, settings.label_studio_api_key, runtime.store.meta(project))
    return labelstudio.connect(creds, runtime.store.ls_project(project), timeout=settings.label_studio_timeout) if creds else None


def sync(runtime: Runtime, ls: Any, project: int, full: bool) -> None:
    """Reconcile the store with LS; an unreachable LS leaves the webhook store as the source."""
    keys, limit = runtime.store.input_keys(project), runtime.settings.max_text_chars
    try:
        summary = labelstudio.sync_annotations(ls, runtime.store, project, lambda task: texts_of(task, keys, limit), full)
        log.info("project %s: synced from Label Studio: %s", project, summary)
    except Exception as exc:  # the SDK raises HTTP, connection and validation errors of many types
        log.warning("project %s: could not sync from Label Studio (%s); training on stored labels", project, type(exc).__name__)


def rank_job(project: int) -> dict[str, Any]:
    """RQ entry point: rank the project's stored pool (tasks seen through TASKS_CREATED, /predict
    and earlier listings) with the served model, without waiting for any training and without
    calling LS, so a new pool is in `GET /queue` at once. The next retrain pushes it to LS."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("rank_job runs inside an RQ job")
    runtime = runtime_module.for_job(job.connection)
    flag = key(project, "rank_queued")
    if runtime.redis.get(flag) == job.id.encode():
        runtime.redis.delete(flag)
    ranked = rank_pool(runtime, project, None, stability=False)
    return {"queue": len(ranked.queue.entries) if ranked else 0}


@dataclass
class Ranked:
    """A stored ranking and what it was made with."""

    queue: Any
    pool: list[dict[str, Any]]
    config: Any
    policy: Any
    pointer: Any
    served: Any


def rank_pool(runtime: Runtime, project: int, ls: Any, stability: bool) -> Ranked | None:
    """Rank the unlabeled pool (listed in LS when `ls` is given, else the stored one) with the
    current model, or for cold start, and store the queue; None without a usable config or pool.
    One ranking of a project at a time; a ranking whose model was replaced meanwhile is not stored."""
    store, registry = runtime.store, runtime.registry
    meta = store.meta(project)
    try:
        config = parse_label_config(meta.get("label_config", ""))
    except LabelConfigError:
        return None
    policy = policy_for(runtime.settings, meta)
    with project_lock(runtime.redis, project, wait=runtime.settings.job_timeout, token=uuid.uuid4().hex, name="rank_lock"):
        covers = store.ranking_requests(project)
        pointer = registry.pointer(project)
        runtime.cache.refresh(project)
        served = runtime.cache.get(project) if pointer else None
        version = served.version if served else UNTRAINED
        if ls is not None:
            try:
                pool = labelstudio.unlabeled(ls)
            except Exception as exc:
                log.warning("project %s: could not list tasks in Label Studio (%s)", project, type(exc).__name__)
                return None
            keys, limit = config.data_keys or None, runtime.settings.max_text_chars
            store.remember_tasks(project, {int(t["id"]): texts_of(t, keys, limit) for t in pool})
        else:
            pool = store.unlabeled_pool(project)
        labeled = store.labeled_tasks(project)
        counts, total = label_counts(labeled, config)
        warm = policy.warm(counts, {c.from_name: c.labels for c in config.controls}, total)
        queue = rank(pool, config, policy, served.bundle if served else None, version, warm, runtime.settings.max_text_chars,
                     cache=cache_for(registry.project_dir(project)))
        signal = stopping_signal(runtime, project, served, config, pool, policy) if served and stability else None
        if registry.pointer(project) != pointer:
            return None  # a newer version was promoted meanwhile: its own ranking follows
        store.save_queue(project, queue.summary(), queue.order(), signal, covers)
    return Ranked(queue, pool, config, policy, pointer, served)


def publish_queue(runtime: Runtime, ls: Any, project: int) -> dict[str, Any]:
    """Rank the unlabeled pool with the current model (or for cold start), store the queue, and
    push it to LS as predictions of the current version, then set the project's model version."""
    store, registry = runtime.store, runtime.registry
    ranked = rank_pool(runtime, project, ls, stability=True)
    if ranked is None:
        return {"queue": 0}
    queue, pool, config, policy, pointer, served = ranked.queue, ranked.pool, ranked.config, ranked.policy, ranked.pointer, ranked.served
    version = queue.version
    pushed = 0
    if ls is not None and queue.entries and store.redis.get(key(project, "pushed_version")) != version.encode():
        by_id = {int(t["id"]): t for t in pool}
        entries = {e.task: e for e in queue.entries}
        tasks = [by_id[e.task] for e in queue.entries]
        results = runtime.model.predict(tasks, project=project, config=config) if served else [None] * len(tasks)
        observation = getattr(results, "observation", None)
        predictions = []
        for task, result in zip(tasks, results):
            entry = entries[int(task["id"])]
            regions = result["result"] if isinstance(result, dict) else []
            predictions.append({"task": entry.task, "result": regions, "score": entry.score,
                                "model_version": version, "cluster": entry.cluster if queue.strategy == "diversity" else None})
        if registry.pointer(project) != pointer:
            return {"queue": len(queue.entries), "pushed": 0}  # a newer version was promoted meanwhile
        try:
            pushed = labelstudio.push_predictions(ls, version, predictions, policy.uncertainty_sampling)
        except Exception as exc:
            log.warning("project %s: could not push predictions to Label Studio (%s); retried by the next job", project, type(exc).__name__)
            return {"queue": len(queue.entries), "pushed": 0}
        store.redis.set(key(project, "pushed_version"), version)
        if observation is not None:
            store.remember_predictions(project, version, observation.predicted)
        log.info("project %s: pushed %s predictions of %s (%s)", project, pushed, version, queue.strategy)
    return {"queue": len(queue.entries), "pushed": pushed, "strategy": queue.strategy}


def label_counts(labeled: list[Any], config: Any) -> tuple[dict[str, dict[str, int]], int]:
    counts: dict[str, dict[str, int]] = {}
    total = 0
    for task in labeled:
        counted = False
        for control in config.controls:
            for label in task.labels.get(control.from_name, []):
                if label in control.labels:
                    counts.setdefault(control.from_name, {}).setdefault(label, 0)
                    counts[control.from_name][label] += 1
                    counted = True
        total += counted
    return counts, total


def stopping_signal(
    runtime: Runtime, project: int, served: Any, config: Any, pool: list[dict[str, Any]], policy: Any
) -> dict[str, Any] | None:
    """Do more labels still change the model? Agreement (Cohen's kappa) of the served version and
    its parent on the unlabeled pool, and the pool's mean uncertainty (small-text's ideas)."""
    from sklearn.metrics import cohen_kappa_score

    from .ranking import uncertainties

    record = runtime.registry.record(project, served.version) or {}
    parent = record.get("parent")
    sample = pool[:STABILITY_SAMPLE]
    signal: dict[str, Any] = {"version": served.version, "parent": parent, "pool": len(pool)}
    if sample:
        signal["mean_uncertainty"] = round(float(uncertainties(served.bundle, config, sample, policy, runtime.settings.max_text_chars).mean()), 4)
    parent_record = runtime.registry.record(project, parent) if parent else None
    if sample and parent_record and parent_record.get("sha256"):
        try:
            old = runtime.registry.load(project, parent, parent_record["sha256"])
        except RegistryError:
            return signal
        kappas = []
        for control in config.controls:
            texts = [t for t in (control.text_of(task.get("data") or {}, runtime.settings.max_text_chars) for task in sample) if t]
            name = served.bundle.family_of(control.from_name)
            if not texts or control.from_name not in served.bundle.controls or not families.family(name).claims(control):
                continue
            family = families.family(name)
            same = old.family_of(control.from_name) == name
            new = [json.dumps(t) for t in predicted_targets(family, served.bundle.controls[control.from_name], control, texts, 0.5)]
            before = [json.dumps(t) for t in predicted_targets(family, old.controls.get(control.from_name) if same else None,
                                                               control, texts, 0.5)]
            kappas.append(1.0 if new == before else float(cohen_kappa_score(new, before)))
        if kappas:
            signal["agreement_kappa"] = round(float(np.mean(kappas)), 4)
    return signal


def quarantine_poison(runtime: Runtime, project: int, snapshot: Snapshot, labeled: list[Any], job_id: str) -> None:
    """Set aside the labeled tasks whose examples make fitting raise (they stay stored, and are
    tried again once edited), and say so in the log and the audit trail."""
    poisoned = sorted(poisoned_tasks(snapshot))
    if not poisoned:
        return
    by_task = {t.task: t for t in labeled}
    runtime.store.quarantine(project, {t: example_digest(by_task[t]) for t in poisoned})
    log.error("project %s: quarantined %s labeled tasks whose examples make training fail: %s", project, len(poisoned), poisoned[:20])
    audit.record(runtime.redis, project, "training", f"train job {job_id}",
                 f"quarantined {len(poisoned)} labeled tasks whose examples make training fail", tasks=poisoned[:100])


def _respect_min_interval(runtime: Runtime, project: int) -> None:
    last = float(runtime.redis.get(key(project, "last_trained")) or 0)
    wait = last + runtime.settings.retrain_min_interval - time.time()
    if wait > 0:
        time.sleep(min(wait, runtime.settings.retrain_min_interval))


def train_project(
    runtime: Runtime, project: int, reason: str, job_id: str = "", last_attempt: bool = False
) -> dict[str, Any]:
    """Snapshot, train, judge, record and (maybe) promote. Returns a summary of what happened.

    When the last attempt fails in `fit`, the tasks whose examples make it fail are quarantined,
    so the project's next job trains without them.
    """
    store, registry = runtime.store, runtime.registry
    meta = store.meta(project)
    try:
        config = parse_label_config(meta.get("label_config", ""))
    except LabelConfigError:
        return {"status": "skipped", "reason": "no usable label config stored for the project yet"}
    pointer = registry.pointer(project)
    if pointer and store.raise_change_seq(project, pointer.watermark):
        trained_on = int((registry.record(project, pointer.version) or {}).get("examples", 0))
        store.redis.set(key(project, "lost_labels"), trained_on)
        log.error("project %s: Redis lost labels %s was trained on (%s labeled tasks)", project, pointer.version, trained_on)
    watermark = store.change_seq(project)
    labeled = store.labeled_tasks(project)
    snapshot = build_snapshot(
        project, labeled, config, watermark, runtime.settings.max_text_chars, store.quarantined(project)
    )
    policy = policy_for(runtime.settings, meta)
    history = registry.history(project)
    if history and history[-1].get("fingerprint") == snapshot.fingerprint and history[-1].get("decision") != "promoting" \
            and history[-1].get("committee", 0) == policy.committee:
        return {"status": "unchanged", "version": pointer.version if pointer else None}
    champion = None
    if pointer:
        try:
            champion = registry.load(project, pointer.version, pointer.sha256)
        except RegistryError as exc:
            log.error("project %s: champion %s unusable, judging without it: %s", project, pointer.version, exc)
    faults.point("fit")
    try:
        result = runtime.model.fit(reason, snapshot, champion, metric=policy.gate_metric, margin=policy.gate_margin,
                                   committee=policy.committee)
    except Exception:
        if last_attempt:
            quarantine_poison(runtime, project, snapshot, labeled, job_id)
        raise
    version = registry.next_version(project)
    record: dict[str, Any] = {
        "version": version,
        "project": project,
        "parent": pointer.version if pointer else None,
        "created_at": time.time(),
        "job_id": job_id,
        "trigger": result.event or reason,
        "fingerprint": snapshot.fingerprint,
        "committee": policy.committee,
        "watermark": snapshot.watermark,
        "label_config": config.digest,
        "examples": snapshot.size,
        "label_counts": {name: data.counts() for name, data in snapshot.controls.items()},
        "families": {name: data.family.name for name, data in snapshot.controls.items()},
        "set_aside": snapshot.set_aside,
        "train_seconds": round(result.seconds, 3),
        "evaluation": result.judgement.to_json(),
        "sha256": None,
        "reference": result.reference,
        "decision": "rejected",
        "reason": result.judgement.reason,
    }
    promote = result.bundle is not None and result.judgement.promote
    lost = int(store.redis.get(key(project, "lost_labels")) or 0)
    if promote and not result.judgement.champion and snapshot.size < lost:
        # judged without the champion (too few held-out labels): a model of the few labels stored
        # since Redis lost its data must not replace one trained on many
        promote = False
        record["reason"] = (f"{result.judgement.reason}; kept the champion: Redis lost the labels it was trained on "
                            f"({lost} labeled tasks), {snapshot.size} stored since")
    if result.bundle is not None:
        record["sha256"] = registry.save_artifact(project, version, result.bundle)
    if promote:
        record["decision"] = "promoting"
        registry.save_record(project, record)
        try:
            registry.promote(project, version, record["sha256"], snapshot.watermark, pointer.seq if pointer else 0)
            record["decision"] = "promoted"
            store.redis.delete(key(project, "lost_labels"))
        except RegistryError as exc:
            record["decision"] = "superseded"
            record["reason"] = f"{result.judgement.reason}; not promoted: {exc}"
    registry.save_record(project, record)
    log.info("project %s: %s %s (%s)", project, version, record["decision"], record["reason"])
    promoted = record["decision"] == "promoted"
    audit.record(
        runtime.redis, project, "promotion" if promoted else "rejection", f"train job {job_id}" if job_id else "train job",
        f"{version} {record['decision']}: {record['reason']}", version=version, parent=record["parent"],
        trigger=reason, examples=snapshot.size, metrics=record["evaluation"].get("challenger"),
    )
    return {"status": record["decision"], "version": version, "reason": record["reason"]}
