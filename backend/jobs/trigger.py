"""When to retrain, and how to enqueue it without ever queueing a project twice.

Every decision to retrain is taken here: `monitor` only measures, and `ingest` and the admin API
only pass on what happened and answer with the `Request` (`Request.to_json`). The decisions (each
enqueued retrain is recorded in the audit trail with its reason and who caused it):

- label count: `retrain_threshold` label changes since the last request (`check_labels`);
- START_TRAINING: Label Studio asks (the webhook, or older versions' `/train`) (`check_asked`);
- config change: a PROJECT_UPDATED brings another label config (`check_asked`);
- queue settings: a setting the queue follows changed on a configured project (`check_settings`);
- a head refill or resize (a publish, not a retrain): annotators took half of LS's head
  (`check_head`), or `push_top` changed (`check_settings`);
- live accuracy: the serving version's rolling window is `live_accuracy_drop` below its offline
  estimate (`check_quality`, after annotations and after `/predict`);
- drift: the confidence PSI of recent `/predict` traffic reaches `drift_threshold` (`check_quality`);
- schedule: the project's `retrain_every` came due (`fire_due`, ticked by every worker).

An explicit order (`POST /projects/P/train`) enqueues without a decision (`request_retrain`).

A project has at most one queued and one running train job. The queued job's id lives in
`keys.queued_retrain`; a new request while that job is still waiting is coalesced into it. The running
job takes the project lock first and then clears the flag, so what arrives during training queues
exactly one follow-up job. A burst of any size therefore causes at most two trainings.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis import Redis
from rq import Queue, Retry
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from .. import monitor
from ..config import Settings
from ..erasure import generation
from ..head import refill_due
from ..policy import LABEL_SETTINGS, QUEUE_SETTINGS, Policy, next_due, policy_for
from ..state import audit, keys
from ..state.registry import Registry
from ..state.store import Store
from .lock import release

# Replace the queued-job flag only if it still holds what we read (nothing, or a job that ended).
_CLAIM = """
local value = redis.call('GET', KEYS[1])
if (value == false and ARGV[1] == '') or value == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""
log = logging.getLogger(__name__)
WAITING_STATUSES = {s.value for s in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.STARTED)}


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
    """Publish jobs have a queue of their own, worked beside the retrain queue, so a new pool is
    ranked and pushed while a training runs, and a slow LS never delays a training."""
    return Queue(keys.rank_queue(settings.queue_name), connection=redis, serializer=JSONSerializer, default_timeout=settings.job_timeout)


def queued_job(redis: Redis, project: int, flag: Callable[[int], str] = keys.queued_retrain) -> str | None:
    """The id of the project's job waiting in `flag` (a `keys` function), if any."""
    raw = redis.get(flag(project))
    return raw.decode() if raw else None


def started(redis: Redis, project: int, job_id: str, flag: Callable[[int], str]) -> None:
    """Job `job_id` started: clear `flag` if it still names it, so a request from now on queues a
    job of its own instead of joining one that no longer waits."""
    release(redis, flag(project), job_id)


def _claim(settings: Settings, redis: Redis, project: int, flag: Callable[[int], str], prefix: str) -> Request:
    """A new job id for `project` in `flag`, unless a job there is still waiting to start (then
    that one, with `enqueued` False: the caller enqueues only a claimed id)."""
    current = queued_job(redis, project, flag)
    if current and _still_waiting(redis, current):
        return Request(current, False)
    job_id = f"{prefix}-{int(project)}-{uuid.uuid4().hex[:12]}"
    claimed = redis.register_script(_CLAIM)(
        keys=[flag(project)], args=[current or "", job_id, settings.job_timeout * keys.QUEUED_FLAG_TIMEOUTS]
    )
    if not claimed:  # another request replaced the flag first: its job is the one waiting
        return Request(queued_job(redis, project, flag) or job_id, False)
    return Request(job_id, True)


def request_retrain(
    settings: Settings, redis: Redis, project: int, reason: str, full_sync: bool = False, actor: str = "webhook"
) -> Request:
    """Enqueue a retrain of `project` unless one is already waiting to start (each enqueued one is
    recorded in the audit trail with its reason and who asked)."""
    request = _claim(settings, redis, project, keys.queued_retrain, "retrain")
    if not request.enqueued:
        return request
    retrain_queue(settings, redis).enqueue(
        keys.RETRAIN_JOB,
        int(project),
        reason,
        full_sync,
        job_id=request.job_id,
        retry=Retry(max=settings.job_retries),
        job_timeout=settings.job_timeout,
        result_ttl=keys.JOB_RESULT_TTL,
        failure_ttl=keys.JOB_FAILURE_TTL,
        description=f"retrain project {int(project)}: {reason}",
        meta={"generation": generation(redis, project)},  # an erasure after this outlives the job (`entry.retrain`)
    )
    audit.record(redis, project, "trigger", actor, reason, job_id=request.job_id, full_sync=full_sync)
    return request


def request_publish(settings: Settings, redis: Redis, project: int, rerank: bool = False) -> Request:
    """Publish `project` soon (`jobs.publish`: list new tasks, rank when out of date, refill LS's
    head), coalesced like retrains: one job waits at most. `rerank`: the stored ranking no longer
    holds (new tasks, new labels, new queue settings), so the job ranks again (`Store.request_ranking`)."""
    if rerank:
        Store(redis).request_ranking(project)
    request = _claim(settings, redis, project, keys.queued_publish, "publish")
    if request.enqueued:
        rank_queue(settings, redis).enqueue(
            keys.PUBLISH_JOB,
            int(project),
            job_id=request.job_id,
            retry=Retry(max=settings.job_retries),
            job_timeout=settings.job_timeout,
            result_ttl=600,
            failure_ttl=keys.JOB_FAILURE_TTL,
            description=f"publish project {int(project)}'s queue",
            meta={"generation": generation(redis, project)},
        )
    return request


def check_head(settings: Settings, store: Store, project: int, task_ids: list[int]) -> Request | None:
    """Refill LS's head once annotators took enough of it (`head.refill_due`): the tasks of an
    annotation event count as taken."""
    left, target = store.take_from_head(project, task_ids)
    if refill_due(left, target):
        return request_publish(settings, store.redis, project)
    return None


def _still_waiting(redis: Redis, job_id: str) -> bool:
    """Will job `job_id` still run? Reads only the job's status (every webhook due for a retrain
    asks, and `Job.fetch` would load and parse the whole job hash), and for a queued job whether it
    is still in its queue (or a worker's intermediate queue): a worker stopped or killed just as it
    popped the job takes it nowhere, and a request must not join a job that will never start."""
    status, origin = redis.hmget(Job.key_for(job_id), ["status", "origin"])
    if status is None or status.decode() not in WAITING_STATUSES:
        return False
    if status.decode() != JobStatus.QUEUED.value or not origin:
        return True
    queue_key = Queue.redis_queue_namespace_prefix + origin.decode()
    pipe = redis.pipeline(transaction=False)
    pipe.lpos(queue_key, job_id)
    pipe.lpos(IntermediateQueue.get_intermediate_queue_key(queue_key), job_id)
    return any(position is not None for position in pipe.execute())


# -- the decisions on what happened ---------------------------------------------------------------


def check_asked(settings: Settings, redis: Redis, project: int, action: str, config_changed: bool) -> Request | None:
    """Retrain when Label Studio asks (START_TRAINING) or a PROJECT_UPDATED changed the label config
    (`config_changed`: a config was known before and differs); None when neither."""
    if action == "START_TRAINING":
        return request_retrain(settings, redis, project, "START_TRAINING")
    if action == "PROJECT_UPDATED" and config_changed:
        return request_retrain(settings, redis, project, "label config changed")
    return None


def check_labels(settings: Settings, store: Store, project: int, policy: Policy, seq: int, action: str) -> Request | None:
    """Retrain when the label changes of `action`, which took the change sequence to `seq` (0: no
    change), are `retrain_threshold` changes past the last request (`Store.due`, true once)."""
    if seq and store.due(project, seq, policy.retrain_threshold):
        return request_retrain(settings, store.redis, project, f"{action}: labels changed")
    return None


def check_settings(settings: Settings, store: Store, project: int, before: Policy, after: Policy, actor: str) -> Request | None:
    """Retrain when a setting the queue follows (`policy.QUEUE_SETTINGS`) or one that changes the
    training labels (`policy.LABEL_SETTINGS`) changed and the project has a label config: the queue
    and the model follow at once (a committee strategy needs its members trained). A new `push_top`
    asks for a publish, which resizes LS's head."""
    if before.push_top != after.push_top:
        request_publish(settings, store.redis, project)  # the head's new size, without a retrain
    changed = [name for name in (*QUEUE_SETTINGS, *LABEL_SETTINGS) if getattr(before, name) != getattr(after, name)]
    if not changed or not store.meta(project).get("label_config"):
        return None
    return request_retrain(settings, store.redis, project, "settings changed: " + ", ".join(changed), actor=actor)


def check_quality(settings: Settings, redis: Redis, registry: Registry, project: int, policy: Policy) -> Request | None:
    """Retrain when live accuracy fell `live_accuracy_drop` below the offline estimate or drift
    passed `drift_threshold` (figures: `monitor.status`), and at least `live_min_samples` label
    changes arrived since the serving version was trained (at most one check per project every
    `trigger_check_interval` seconds, at most one retrain per serving version every
    `keys.TRIGGER_LATCH` seconds); None when it does not."""
    interval_ms = int(settings.trigger_check_interval * 1000)
    if interval_ms > 0 and not redis.set(keys.trigger_check(project), 1, nx=True, px=interval_ms):
        return None
    state = monitor.status(redis, registry, project)
    pointer = registry.pointer(project)
    unseen_labels = int(redis.get(keys.change_seq(project)) or 0) - (pointer.watermark if pointer else 0)
    if pointer is None or unseen_labels < policy.live_min_samples:
        return None  # a retrain without new labels could not change the model
    reasons = []
    window = state.get("live_window") or {}
    if (
        state.get("live_gap") is not None
        and window.get("n", 0) >= policy.live_min_samples
        and state["live_gap"] >= policy.live_accuracy_drop
    ):
        reasons.append(
            f"live accuracy {window['accuracy']:.3f} is {state['live_gap']:.3f} below the offline estimate "
            f"{state['offline_accuracy']:.3f} ({window['n']} annotations)"
        )
    found = state.get("drift") or {}
    if found.get("samples", 0) >= policy.drift_min_samples and found.get("confidence_psi", 0) >= policy.drift_threshold:
        reasons.append(f"confidence drift: PSI {found['confidence_psi']:.3f} over {found['samples']} predictions")
    if not reasons:
        return None
    latch = keys.triggered(project, state["version"])
    if not redis.set(latch, 1, nx=True, ex=keys.TRIGGER_LATCH):
        return None  # this version already triggered a retrain recently
    reason = "; ".join(reasons) + f"; {unseen_labels} label changes since {state['version']}"
    return request_retrain(settings, redis, project, reason, actor="monitor")


def after_predict(settings: Settings, redis: Redis, registry: Registry, store: Store, project: int, observation: Any) -> None:
    """What a `/predict` leaves to the background writer (`runtime.BackgroundWriter`, which merges
    the observations of one version): measure it (`monitor.observe_predictions`), then check the
    live-accuracy and drift triggers."""
    monitor.observe_predictions(store, project, observation)
    check_quality(settings, redis, registry, project, policy_for(settings, store.meta(project)))


# -- scheduled retrains ---------------------------------------------------------------------------
# Every project with a `retrain_every` schedule has its next due time in one sorted set. Any process
# that ticks (every RQ worker, the embedded worker) fires what is due, claiming each firing with a
# compare-and-set on its due time, so a firing happens exactly once however many processes tick,
# and no single owner can die with the schedule (F16). Settings change at run time per project
# (settings API, extra_params), which RQ's CronScheduler (a fixed set registered at start) and its
# scheduler (one lock owner per queue, taken over a minute after it dies) do not fit.
TICK_INTERVAL = 1.0

# KEYS: schedule, specs; ARGV: project, due time read, next due time, spec read.
# Moves the project to its next due time only if neither moved since they were read.
_ADVANCE = """
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or 'nan') ~= tonumber(ARGV[2]) then return 0 end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[4] then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""


def reschedule(redis: Redis, project: int, spec: int | str, now: float | None = None) -> float | None:
    """Follow the project's `retrain_every`: a new or changed schedule is due next from now, an
    unchanged one keeps its due time, no schedule removes it. Returns the due time."""
    member, text = str(int(project)), json.dumps(spec)
    if not spec:
        pipe = redis.pipeline()
        pipe.zrem(keys.SCHEDULE, member)
        pipe.hdel(keys.SCHEDULE_SPECS, member)
        pipe.execute()
        return None
    current = redis.hget(keys.SCHEDULE_SPECS, member)
    score = redis.zscore(keys.SCHEDULE, member)
    if current is not None and current.decode() == text and score is not None:
        return float(score)
    due = next_due(spec, time.time() if now is None else now)
    pipe = redis.pipeline()
    pipe.hset(keys.SCHEDULE_SPECS, member, text)
    pipe.zadd(keys.SCHEDULE, {member: due})
    pipe.execute()
    return due


def fire_due(settings: Settings, redis: Redis, now: float | None = None) -> list[tuple[int, Request]]:
    """Request a retrain (reason `schedule`) of every project whose due time has come, and move it
    to its next due time; each firing is claimed by one caller only."""
    now = time.time() if now is None else now
    fired = []
    advance = redis.register_script(_ADVANCE)
    for raw, score in redis.zrangebyscore(keys.SCHEDULE, "-inf", now, withscores=True):
        member = raw.decode()
        spec_raw = redis.hget(keys.SCHEDULE_SPECS, member)
        if spec_raw is None:
            redis.zrem(keys.SCHEDULE, member)
            continue
        spec = json.loads(spec_raw)
        due = next_due(spec, max(now, score))
        if due is None or not advance(keys=[keys.SCHEDULE, keys.SCHEDULE_SPECS], args=[member, repr(score), repr(due), spec_raw.decode()]):
            continue
        fired.append((int(member), request_retrain(settings, redis, int(member), "schedule", actor="schedule")))
    return fired


def start_ticker(settings: Settings, redis: Redis, name: str = "schedule", stopping: threading.Event | None = None) -> threading.Thread:
    """A thread that fires due scheduled retrains every TICK_INTERVAL (every worker runs one)
    until `stopping` is set."""
    stopping = stopping or threading.Event()

    def loop() -> None:
        while not stopping.wait(TICK_INTERVAL):
            try:
                for project, request in fire_due(settings, redis):
                    log.info(
                        "project %s: scheduled retrain %s (%s)",
                        project,
                        request.job_id,
                        "enqueued" if request.enqueued else "coalesced into the waiting one",
                    )
            except Exception as exc:  # Redis away: the next tick tries again
                log.warning("schedule tick failed: %s", type(exc).__name__)

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread
