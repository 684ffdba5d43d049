"""What RQ workers (or the embedded worker threads) run: the functions named in `state.keys`.

Each is idempotent and safe to retry: `retrain` snapshots the stored labels under the project's
train lock, skips work when the champion was trained on the same data, and leaves training,
judging and promotion to `promotion`; `publish` (on the rank queue) lists new tasks, ranks, and
makes every write into Label Studio, so a training never waits for a push (it reads new
annotations from LS first, `sync`, giving up after LABEL_STUDIO_TIMEOUT).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rq import get_current_job
from rq.job import Job

from .. import erasure, mislabels
from .. import runtime as runtime_module
from ..policy import policy_for
from ..runtime import Runtime
from ..state import audit, keys
from .lock import project_lock
from .promotion import snapshot_of, train_project
from .publish import publish as publish_project
from .sync import ls_client, sync
from .trigger import request_publish, retrain_queue, started

log = logging.getLogger(__name__)

BACKOFF = (1.0, 5.0, 15.0)  # seconds before retry 1, 2, 3 (RQ re-enqueues at once)


def _current() -> tuple[Job, Runtime]:
    """The RQ job being run and this worker's runtime."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("RQ entry points run inside an RQ job")
    return job, runtime_module.for_job(job.connection)


def retrain(project: int, reason: str = "", full_sync: bool = False) -> dict[str, Any]:
    """RQ entry point: train project `project` once, coalescing everything stored so far."""
    job, runtime = _current()
    born = _generation(job, runtime, project)
    if born is None:
        return {"status": "erased", "project": project}
    job.meta["generation"] = born  # a retry runs under the same one
    attempt = int(job.meta.get("attempt", 0))  # counted here: the enqueuer's JOB_RETRIES may differ from ours
    job.meta["attempt"] = attempt + 1
    job.save_meta()
    if attempt > 0:
        time.sleep(BACKOFF[min(attempt, len(BACKOFF)) - 1])
    try:
        with project_lock(runtime.redis, project, wait=max(1.0, runtime.settings.job_timeout - 30), token=job.id):
            _respect_min_interval(runtime, project)
            erasure.check_not_erased(runtime.redis, project, born)
            started(runtime.redis, project, job.id, keys.queued_retrain)
            ls = ls_client(runtime, project)
            if ls is not None:
                sync(runtime, ls, project, full_sync)
            result = train_project(runtime, project, reason, job.id, last_attempt=not job.retries_left, generation=born)
            erasure.check_not_erased(runtime.redis, project, born)
            return _after_training(runtime, job, project, reason, full_sync, result)  # still holding the lock an erasure waits for
    except erasure.ProjectErased:
        log.warning("project %s: erased while train job %s ran; it stops without writing more", project, job.id)
        return {"status": "erased", "project": project}


def _after_training(runtime: Runtime, job: Job, project: int, reason: str, full_sync: bool, result: dict[str, Any]) -> dict[str, Any]:
    """What a train job records and asks for once its candidate is judged."""
    runtime.redis.set(keys.last_trained(project), time.time())
    if result.get("status") == "unchanged" and reason == "schedule":
        audit.record(
            runtime.redis,
            project,
            "training",
            f"train job {job.id}",
            f"scheduled retrain skipped: the labels are those {result.get('version') or 'the last candidate'} saw",
            reason="schedule",
            version=result.get("version"),
        )
    if result.get("status") == "promoted":
        enqueue_mislabels(runtime, project, result["version"])
    if full_sync:
        runtime.store.mark_listed(project, runtime.store.pool_listing(project)[0], full_at=0)  # the next listing is a full one
    # ranked again even without a new version: the labels (the cold-start rule) or the queue settings changed
    result["publish"] = request_publish(runtime.settings, runtime.redis, project, rerank=True).to_json()
    return result


def enqueue_mislabels(runtime: Runtime, project: int, version: str) -> None:
    """Look for suspected label errors with the new version's data, in a job of its own."""
    retrain_queue(runtime.settings, runtime.redis).enqueue(
        keys.MISLABELS_JOB,
        int(project),
        version,
        job_id=f"mislabels-{int(project)}-{version}",
        job_timeout=runtime.settings.job_timeout,
        result_ttl=keys.JOB_RESULT_TTL,
        failure_ttl=keys.JOB_FAILURE_TTL,
        description=f"suspected label errors of project {int(project)} ({version})",
    )


def find_mislabels(project: int, version: str) -> dict[str, Any]:
    """RQ entry point: cleanlab over the stored labels; store the suspects, record them in the audit
    trail and ask for a publish, which pushes their `mislabeling` scores to LS (this job, on the
    retrain queue, never calls LS: a slow LS must not delay the next training)."""
    job, runtime = _current()
    born = erasure.generation(runtime.redis, project)
    store = runtime.store
    pointer = runtime.registry.pointer(project)
    if pointer is None or pointer.version != version:  # a newer version's own job follows: skip the stale one
        return {"suspects": 0, "skipped": f"{version} is no longer current"}
    config = store.label_config(project)
    if config is None:
        return {"suspects": 0}
    snapshot, _ = snapshot_of(runtime, project, config, policy_for(runtime.settings, store.meta(project)))
    started = time.perf_counter()
    suspects, predicted, figures = mislabels.check(snapshot)
    if erasure.generation(runtime.redis, project) != born:
        return {"suspects": 0, "skipped": "the project was erased"}
    store.save_mislabels(
        project,
        {
            "version": version,
            "checked": snapshot.size,
            "suspects": mislabels.to_json(suspects),
            "controls": figures,
            "predicted": {control: {str(t): v for t, v in by.items()} for control, by in predicted.items()},
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    audit.record(
        runtime.redis,
        project,
        "label_errors",
        f"label-error job {job.id}",
        f"{len(suspects)} suspected label errors among {snapshot.size} labeled tasks",
        version=version,
    )
    if suspects:
        request_publish(runtime.settings, runtime.redis, project)  # which pushes their `mislabeling` scores to LS
    return {"suspects": len(suspects)}


def publish(project: int) -> dict[str, Any]:
    """RQ entry point: list the project's new tasks in LS, rank the pool when the ranking is out of
    date, and keep LS's head of the served version full (`publish.publish`); without LS, rank the
    stored pool (tasks seen through TASKS_CREATED and /predict) so `GET /queue` has it."""
    job, runtime = _current()
    born = _generation(job, runtime, project)
    if born is None:
        return {"status": "erased", "project": project}
    started(runtime.redis, project, job.id, keys.queued_publish)
    try:
        return publish_project(runtime, project, ls_client(runtime, project), generation=born)
    except erasure.ProjectErased:
        log.warning("project %s: erased while publish job %s ran; it stops without writing more", project, job.id)
        return {"status": "erased", "project": project}


def _generation(job: Job, runtime: Runtime, project: int) -> int | None:
    """The project's erasure count this job runs under (`erasure.generation`); None when the project
    was erased after the job was asked for (`trigger` stamps the count at enqueue)."""
    born = erasure.generation(runtime.redis, project)
    return born if job.meta.get("generation", born) == born else None


def _respect_min_interval(runtime: Runtime, project: int) -> None:
    last = float(runtime.redis.get(keys.last_trained(project)) or 0)
    wait = last + runtime.settings.retrain_min_interval - time.time()
    if wait > 0:
        time.sleep(min(wait, runtime.settings.retrain_min_interval))
