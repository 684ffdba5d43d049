"""Erasure: forget a project completely, on `DELETE /projects/P` or LS's `PROJECT_DELETED`.

The invariant: once `erase` returns, the backend holds nothing of the project but one tombstone in
the global erasure stream (ids, counts and who asked; never a text or a label), its erasure count
(`generation`), the creation stamp that maps its LS id to it (`keys.instances`) and, unless
`erase_models`, its model artifacts and their records (and a change count that starts from what
they saw). Redis loses every `lsb:<P>:*` key (labels,
texts, the pool, the queue and head, monitor, agreement, drift, disputes, the audit trail) and the
project's entries in the global schedule and project set; MODEL_DIR loses the pool cache, the
queue scores and the labeling rules (with `erase_models`, the whole project directory). Queued
jobs of the project are cancelled and running ones stopped (RQ's stop command kills a forking
worker's work-horse), and the erasure takes the project's locks before it deletes, waiting up to
LOCK_WAIT for a job that still holds one (the embedded worker's threads run on); train and publish
jobs check the erasure count (`generation`) before each write and stop without writing.
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
from rq.job import Job, JobStatus
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
    if not _take_locks(redis, project, stopped, LOCK_WAIT):  # a job writing under one finishes first (deleted with the rest)
        log.warning("project %s: a job still held its lock after %.0f s; erasing anyway (it stops at its next check)", project, LOCK_WAIT)
    more, also_stopped = _stop_jobs(settings, redis, project)  # what a job that finished meanwhile asked for
    cancelled, stopped = cancelled + more, stopped + also_stopped
    removed = 0
    batch: list[bytes] = []
    locks = {keys.train_lock(project).encode(), keys.publish_lock(project).encode()}
    redis.delete(*locks)  # ours now: not counted as the project's data
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
    pointer = None if erase_models else registry.pointer(project)
    if pointer is not None:  # kept models: new labels count on from what they saw, not as labels Redis lost
        redis.set(keys.change_seq(project), pointer.watermark)
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


def _stop_jobs(settings: Settings, redis: Redis, project: int) -> tuple[int, list[Job]]:
    """Cancel the project's queued and scheduled jobs and stop its running ones; (cancelled, stopped)."""
    cancelled, stopped = 0, []
    for name in (settings.queue_name, keys.rank_queue(settings.queue_name)):
        queue = Queue(name, connection=redis, serializer=JSONSerializer)
        waiting = queue.get_job_ids() + ScheduledJobRegistry(queue=queue).get_job_ids()
        for job in _jobs_of(redis, waiting, project):
            try:
                job.cancel()
                job.delete()
                cancelled += 1
            except (InvalidJobOperation, NoSuchJobError):  # another erasure (or its worker) got there first
                continue
        for job in _jobs_of(redis, StartedJobRegistry(queue=queue).get_job_ids(), project):
            try:
                send_stop_job_command(redis, job.id)
                stopped.append(job)
            except (InvalidJobOperation, NoSuchJobError):
                continue
    return cancelled, stopped


def _take_locks(redis: Redis, project: int, stopped: list[Job], wait: float) -> bool:
    """Hold the project's train and publish locks, waiting up to `wait` seconds for the jobs that
    hold them. A lock of a job this erasure stopped is taken over once RQ no longer counts the job
    as started (a forking worker killed its work-horse; the embedded worker's thread runs on until it
    lets go). False when the time ran out first."""
    deadline = time.monotonic() + wait
    token = f"erasure-{time.time()}"
    publishers = [job for job in stopped if job.func_name == keys.PUBLISH_JOB]  # a publish lock's token is not its job's id
    by_id = {job.id: job for job in stopped}
    for name, holders in ((keys.train_lock(project), None), (keys.publish_lock(project), publishers)):
        while not redis.set(name, token, nx=True, px=keys.LOCK_TTL_MS):
            holder = redis.get(name)
            jobs = holders if holders is not None else [by_id[h] for h in [holder and holder.decode()] if h in by_id]
            if jobs and not any(_running(job) for job in jobs):
                redis.set(name, token, px=keys.LOCK_TTL_MS)
                break
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
    return True


def _running(job: Job) -> bool:
    try:
        return job.get_status(refresh=True) == JobStatus.STARTED
    except NoSuchJobError:
        return False


def _jobs_of(redis: Redis, job_ids: list[str], project: int) -> list[Job]:
    jobs = Job.fetch_many(job_ids, connection=redis, serializer=JSONSerializer) if job_ids else []
    return [job for job in jobs if job is not None and job.args and _as_int(job.args[0]) == project]


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
