"""When to retrain, and how to enqueue it without ever queueing a project twice.

A project has at most one queued and one running train job. The queued job's id lives in
`lsb:<p>:queued`; a new request while that job is still waiting is coalesced into it. The running
job takes the project lock first and then clears the flag, so what arrives during training queues
exactly one follow-up job. A burst of any size therefore causes at most two trainings.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from redis import Redis
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from . import audit
from .config import Settings
from .store import Store, key

# Replace the queued-job flag only if it still holds what we read (nothing, or a job that ended).
_CLAIM = """
local value = redis.call('GET', KEYS[1])
if (value == false and ARGV[1] == '') or value == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""
WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.STARTED}


@dataclass(frozen=True)
class Request:
    """What a retrain request led to."""

    job_id: str
    enqueued: bool

    def to_json(self) -> dict[str, object]:
        """The `retrain` object of every answer that asked for a retrain."""
        return {"job_id": self.job_id, "enqueued": self.enqueued}


def retrain_queue(settings: Settings, redis: Redis) -> Queue:
    return Queue(settings.queue_name, connection=redis, serializer=JSONSerializer, default_timeout=settings.job_timeout)


def rank_queue(settings: Settings, redis: Redis) -> Queue:
    """Ranking jobs have a queue of their own, worked beside the retrain queue, so a new pool is
    ranked while a training runs."""
    return Queue(f"{settings.queue_name}-rank", connection=redis, serializer=JSONSerializer, default_timeout=settings.job_timeout)


def queued_job(redis: Redis, project: int, flag: str = "queued") -> str | None:
    raw = redis.get(key(project, flag))
    return raw.decode() if raw else None


def _claim(settings: Settings, redis: Redis, project: int, flag: str, prefix: str) -> Request:
    """A new job id for `project` in `flag`, unless a job there is still waiting to start (then
    that one, with `enqueued` False: the caller enqueues only a claimed id)."""
    current = queued_job(redis, project, flag)
    if current and _still_waiting(redis, current):
        return Request(current, False)
    job_id = f"{prefix}-{int(project)}-{uuid.uuid4().hex[:12]}"
    claimed = redis.register_script(_CLAIM)(keys=[key(project, flag)], args=[current or "", job_id, settings.job_timeout * 4])
    if not claimed:  # another request replaced the flag first: its job is the one waiting
        return Request(queued_job(redis, project, flag) or job_id, False)
    return Request(job_id, True)


def request_retrain(
    settings: Settings, redis: Redis, project: int, reason: str, full_sync: bool = False, actor: str = "webhook"
) -> Request:
    """Enqueue a retrain of `project` unless one is already waiting to start (each enqueued one is
    recorded in the audit trail with its reason and who asked)."""
    request = _claim(settings, redis, project, "queued", "retrain")
    if not request.enqueued:
        return request
    retrain_queue(settings, redis).enqueue(
        "backend.job.retrain",
        int(project),
        reason,
        full_sync,
        job_id=request.job_id,
        retry=Retry(max=settings.job_retries),
        job_timeout=settings.job_timeout,
        result_ttl=3600,
        failure_ttl=7 * 24 * 3600,
        description=f"retrain project {int(project)}: {reason}",
    )
    audit.record(redis, project, "trigger", actor, reason, job_id=request.job_id, full_sync=full_sync)
    return request


def request_ranking(settings: Settings, redis: Redis, project: int) -> Request:
    """Rank `project`'s stored pool again soon (new tasks), coalesced like retrains: every request
    counts (`Store.request_ranking`), one job waits at most."""
    Store(redis).request_ranking(project)
    request = _claim(settings, redis, project, "rank_queued", "rank")
    if request.enqueued:
        rank_queue(settings, redis).enqueue(
            "backend.job.rank_job", int(project), job_id=request.job_id, retry=Retry(max=settings.job_retries),
            job_timeout=settings.job_timeout, result_ttl=600, failure_ttl=7 * 24 * 3600,
            description=f"rank project {int(project)}'s pool",
        )
    return request


def _still_waiting(redis: Redis, job_id: str) -> bool:
    """Reads only the job's status: every webhook due for a retrain asks, and `Job.fetch` would load
    and parse the whole job hash."""
    status = redis.hget(Job.key_for(job_id), "status")
    return status is not None and status.decode() in {s.value for s in WAITING}
