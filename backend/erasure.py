"""Erasure: forget a project completely, on `DELETE /projects/P` or LS's `PROJECT_DELETED`.

The invariant: once `erase` returns, the backend holds nothing of the project but one tombstone in
the global erasure stream (ids, counts and who asked; never a text or a label) and, unless
`erase_models`, its model artifacts and their records. Redis loses every `lsb:<P>:*` key (labels,
texts, the pool, the queue and head, monitor, agreement, drift, disputes, the audit trail) and the
project's entries in the global schedule and project set; MODEL_DIR loses the pool cache, the
queue scores and the labeling rules (with `erase_models`, the whole project directory). Queued
jobs of the project are cancelled and running ones stopped (RQ's stop command kills their
work-horse), and the erasure takes the project's locks before it deletes, waiting a little for a
job that holds one; a job that still runs (the embedded worker's threads) finds the erasure count
moved on at its next write point (`generation`) and stops without writing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from .config import Settings
from .state import keys
from .state.registry import Registry

log = logging.getLogger(__name__)

SCAN_BATCH = 1000
LOCK_WAIT = 10.0  # seconds an erasure waits for the project's running jobs to let go of its locks


class ProjectErased(Exception):
    """The project was erased while a job of it ran: the job stops without writing."""


@dataclass(frozen=True)
class Erasure:
    """What one erasure removed (the tombstone's content and the API's answer)."""

    project: int
    by: str
    at: float
    redis_keys: int
    jobs_cancelled: int
    jobs_stopped: int
    files: int
    models_erased: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def generation(redis: Redis, project: int) -> int:
    """How many times the project was erased; a job compares it with the value it started with."""
    return int(redis.hget(keys.ERASED, int(project)) or 0)


def check_not_erased(redis: Redis, project: int, started_with: int) -> None:
    """Raise ProjectErased when the project was erased since a job read `started_with`."""
    if generation(redis, project) != started_with:
        raise ProjectErased(f"project {project} was erased while this job ran")


def erase(settings: Settings, redis: Redis, registry: Registry, project: int, by: str, erase_models: bool = False) -> Erasure:
    """Forget `project` (see the module docstring); `by` names who asked, for the tombstone."""
    project = int(project)
    redis.hincrby(keys.ERASED, project, 1)  # first: a job checking from now on stops
    cancelled, stopped = _stop_jobs(settings, redis, project)
    _take_locks(redis, project, stopped, LOCK_WAIT)  # a job writing under one finishes first (deleted with the rest)
    removed = 0
    batch: list[bytes] = []
    for name in redis.scan_iter(match=f"{keys.PREFIX}:{project}:*", count=SCAN_BATCH):
        batch.append(name)
        if len(batch) >= SCAN_BATCH:
            removed += redis.unlink(*batch)
            batch = []
    if batch:
        removed += redis.unlink(*batch)
    pipe = redis.pipeline(transaction=False)
    pipe.srem(keys.PROJECTS, project)
    pipe.zrem(keys.SCHEDULE, project)
    pipe.hdel(keys.SCHEDULE_SPECS, project)
    removed += sum(int(n) for n in pipe.execute())
    files = registry.erase(project, models=erase_models)
    erasure = Erasure(project, by[:200], time.time(), removed, cancelled, len(stopped), files, erase_models)
    redis.xadd(keys.ERASURES, {k: str(v) for k, v in erasure.to_json().items()}, maxlen=keys.AUDIT_EVENTS, approximate=True)
    log.warning(
        "project %s erased by %s: %d Redis keys, %d files, models %s",
        project,
        erasure.by,
        removed,
        files,
        "erased" if erase_models else "kept",
    )
    return erasure


def tombstones(redis: Redis, limit: int = 100) -> list[dict[str, Any]]:
    """The newest erasure records first."""
    return [
        {"id": event_id.decode(), **{k.decode(): v.decode() for k, v in fields.items()}}
        for event_id, fields in redis.xrevrange(keys.ERASURES, count=limit)
    ]


def _stop_jobs(settings: Settings, redis: Redis, project: int) -> tuple[int, list[Job]]:
    """Cancel the project's queued and scheduled jobs and stop its running ones; (cancelled, stopped)."""
    cancelled, stopped = 0, []
    for name in (settings.queue_name, keys.rank_queue(settings.queue_name)):
        queue = Queue(name, connection=redis, serializer=JSONSerializer)
        waiting = queue.get_job_ids() + ScheduledJobRegistry(queue=queue).get_job_ids()
        for job in _jobs_of(redis, waiting, project):
            job.cancel()
            job.delete()
            cancelled += 1
        for job in _jobs_of(redis, StartedJobRegistry(queue=queue).get_job_ids(), project):
            try:
                send_stop_job_command(redis, job.id)
                stopped.append(job)
            except (InvalidJobOperation, NoSuchJobError):
                continue
    return cancelled, stopped


def _take_locks(redis: Redis, project: int, stopped: list[Job], wait: float) -> None:
    """Hold the project's train and publish locks, waiting up to `wait` seconds for the running jobs
    that hold them; a lock of a job just stopped is taken over at once (its work-horse is dead)."""
    deadline = time.monotonic() + wait
    token = f"erasure-{time.time()}"
    dead = {job.id for job in stopped}
    for name, stopped_here in (
        (keys.train_lock(project), False),
        (keys.publish_lock(project), any(j.func_name == keys.PUBLISH_JOB for j in stopped)),
    ):
        while not redis.set(name, token, nx=True, px=keys.LOCK_TTL_MS) and time.monotonic() < deadline:
            holder = redis.get(name)
            if stopped_here or (holder is not None and holder.decode() in dead):
                redis.set(name, token, px=keys.LOCK_TTL_MS)
                break
            time.sleep(0.05)


def _jobs_of(redis: Redis, job_ids: list[str], project: int) -> list[Job]:
    jobs = Job.fetch_many(job_ids, connection=redis, serializer=JSONSerializer) if job_ids else []
    return [job for job in jobs if job is not None and job.args and _as_int(job.args[0]) == project]


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
