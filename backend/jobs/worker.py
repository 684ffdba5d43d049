"""Workers that run the jobs: RQ worker processes, or threads in embedded mode.

A worker works the retrain queue and runs a ranker beside it on the rank queue (a child process
that dies with it; `--ranker` is that child) and the schedule ticker (`trigger.start_ticker`).
Embedded mode runs the same three as threads of the web process, from the same RQ queues, so a
new user needs no Redis and no second process. Both train at a lower CPU priority (WORKER_NICE) than the web workers, so on
a shared host a retrain takes the CPU time requests leave over instead of delaying them.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker, Worker
from rq.exceptions import StopRequested
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty
from rq.worker import WorkerStatus

from .. import runtime as runtime_module
from ..config import Settings
from ..runtime import Runtime
from ..state import keys
from ..state.connection import blocking_twin, redis_for
from ..state.store import Store
from .lock import release_lock_of
from .trigger import rank_queue, retrain_queue, start_ticker

log = logging.getLogger(__name__)


EMBEDDED_LOG = logging.getLogger("rq.worker.embedded")
# At exit the embedded store stops while the (daemon) worker threads still wait on it: their
# reconnection errors then are noise.
atexit.register(setattr, EMBEDDED_LOG, "disabled", True)


class ThreadWorker(SimpleWorker):
    """An RQ worker that runs inside a thread of the web process (no fork, no signals).

    The embedded store persists (MODEL_DIR/.redis), so the job of a process that was killed stays
    "started" in it. The thread keeps its job's heartbeat alive from a side thread, with the
    forking worker's short expiry, and cleans the registries every 10 to 15 s, so such a job is
    taken for abandoned (and retried) within about 25 s of the next start instead of after
    JOB_TIMEOUT + 60 s, and the retrains coalesced into it do not wait that long.
    """

    death_penalty_class = TimerDeathPenalty

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("worker_ttl", 30)
        kwargs.setdefault("job_monitoring_interval", MONITORING_INTERVAL)
        kwargs.setdefault("maintenance_interval", 10)  # checked before each dequeue (every 15 s when idle)
        super().__init__(*args, **kwargs)
        self.log = EMBEDDED_LOG

    def _install_signal_handlers(self) -> None:  # signals belong to the main thread
        pass

    def stop(self) -> None:
        """Ask the thread to leave RQ's work loop: between dequeue waits (every `dequeue_timeout`
        seconds) when idle, else once its current job is done."""
        self._stop_requested = True

    def heartbeat(self, *args: Any, **kwargs: Any) -> None:
        if self._stop_requested and self.get_state() != WorkerStatus.BUSY:
            raise StopRequested  # RQ's work loop ends on it
        super().heartbeat(*args, **kwargs)

    def get_heartbeat_ttl(self, job: Job) -> int:
        return MONITORING_INTERVAL + HEARTBEAT_GRACE

    def execute_job(self, job: Job, queue: Queue) -> None:
        self.prepare_execution(job)
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(MONITORING_INTERVAL):
                try:
                    self.maintain_heartbeats(job)
                except Exception as exc:  # noqa: BLE001 - the next beat tries again
                    log.warning("embedded worker: heartbeat of %s failed: %s", job.id, type(exc).__name__)

        beating = threading.Thread(target=beat, name="embedded-heartbeat", daemon=True)
        beating.start()
        try:
            self.perform_job(job, queue)
        finally:
            stop.set()
            beating.join()
        self.set_state(WorkerStatus.IDLE)


def worker_connection(runtime: Runtime) -> Redis:
    """The connection embedded worker threads block on: on the private redis-server a client of
    its own (`blocking_twin`: RQ raises its connection's socket timeout to its dequeue wait, which
    must not reach the request path's client), whose jobs run with a runtime on it, as under a
    forking worker; fakeredis as it is."""
    connection = blocking_twin(runtime.redis)
    if connection is not runtime.redis:
        runtime_module.install(dataclasses.replace(runtime, redis=connection, store=Store(connection)))
    return connection


def lower_priority(nice: int) -> int:
    """Run the calling thread, and the threads and processes it starts from now on, at CPU priority
    `nice` (0-19; Linux keeps a nice value per thread). Never raises the priority (that needs
    privileges); returns the nice value the thread now has."""
    thread = threading.get_native_id()
    current = os.getpriority(os.PRIO_PROCESS, thread)
    target = min(nice, 19)
    if target > current:
        os.setpriority(os.PRIO_PROCESS, thread, target)
        log.debug("train worker thread %s runs at nice %s", thread, target)
    return max(current, target)


_started: dict[tuple[int, int], threading.Thread] = {}


def start_embedded_worker(runtime: Runtime) -> threading.Thread:
    """Start (once per process and Redis) the threads that work the retrain and rank queues and
    tick the schedule; `runtime.stop()` stops them. Returns the retrain queue's thread."""
    slot = (os.getpid(), id(runtime.redis))
    thread = _started.get(slot)
    if thread is not None and thread.is_alive():
        return thread
    runtime_module.install(runtime)
    connection = worker_connection(runtime)
    stopping = threading.Event()
    threads, workers = [], []
    for name, queue in (
        ("embedded-worker", retrain_queue(runtime.settings, connection)),
        ("embedded-ranker", rank_queue(runtime.settings, connection)),
    ):
        worker = ThreadWorker([queue], connection=connection, serializer=JSONSerializer)

        def work(worker: ThreadWorker = worker) -> None:
            lower_priority(runtime.settings.worker_nice)
            while not stopping.is_set():
                try:
                    worker.work(burst=False, with_scheduler=False, logging_level=runtime.settings.log_level)
                except Exception:
                    log.exception("embedded worker stopped; restarting")
                    stopping.wait(1.0)  # not a busy loop while the store is away

        workers.append(worker)
        threads.append(threading.Thread(target=work, name=name, daemon=True))
        threads[-1].start()
    start_ticker(runtime.settings, runtime.redis, name="embedded-schedule", stopping=stopping)
    _started[slot] = threads[0]

    def stop() -> None:
        stopping.set()
        for worker in workers:
            worker.stop()
        _started.pop(slot, None)

    runtime.on_stop(stop)
    return threads[0]


HEARTBEAT_GRACE = 5  # seconds past a missed heartbeat before a job counts as abandoned (RQ: 60)
MONITORING_INTERVAL = 5
REAP_INTERVAL = 5.0


class RetrainWorker(Worker):
    """A forking RQ worker whose dead jobs are noticed in seconds, not minutes.

    RQ keeps a started job alive for `monitoring interval + 60 s` after each heartbeat and reaps it
    only at its next maintenance pass; this worker uses a 5 s grace and reaps every 5 s.
    """

    stopping = False  # a SIGTERM or SIGINT asked it to stop

    def get_heartbeat_ttl(self, job: Job) -> int:
        return MONITORING_INTERVAL + HEARTBEAT_GRACE

    def handle_warm_shutdown_request(self) -> None:
        self.stopping = True
        super().handle_warm_shutdown_request()


def release_dead_horse_lock(job: Job, retpid: int, ret_val: int, rusage: object) -> None:
    """RQ calls this in the worker when its work-horse died (OOM, SIGKILL): free the project lock."""
    if job.func_name == keys.RETRAIN_JOB and job.args:
        release_lock_of(job.connection, int(job.args[0]), job.id)
        log.warning("work-horse of %s died (signal %s); project lock released", job.id, ret_val & 0x7F)


def reap_abandoned(queue: Queue) -> None:
    """Fail or retry (RQ's own handling) every started job whose heartbeat has expired."""
    StartedJobRegistry(queue=queue).cleanup()


def start_reaper(settings: Settings) -> threading.Thread:
    def loop() -> None:
        redis = redis_for(settings)
        queues = (retrain_queue(settings, redis), rank_queue(settings, redis))
        while True:
            time.sleep(REAP_INTERVAL)
            try:
                for queue in queues:
                    reap_abandoned(queue)
            except Exception as exc:
                log.warning("reaper pass failed: %s", type(exc).__name__)

    thread = threading.Thread(target=loop, name="reaper", daemon=True)
    thread.start()
    return thread


def start_ranker(settings: Settings) -> subprocess.Popen[bytes]:
    """The ranking worker beside this one: a process of its own on the rank queue, so a new pool
    is ranked while this worker trains; it exits when this process dies (Linux)."""
    preexec = None
    if sys.platform.startswith("linux"):
        import ctypes

        def preexec() -> None:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return subprocess.Popen([sys.executable, "-m", "backend", "worker", "--ranker"], preexec_fn=preexec)


def run_worker(settings: Settings, burst: bool = False, ranker: bool = False) -> None:
    """A forking RQ worker with a reaper thread for abandoned train jobs, at nice WORKER_NICE.
    It works the retrain queue and starts a ranking worker beside it (`ranker`: be that worker, on
    the rank queue only); with `burst` it works both queues itself and starts nothing.

    One queue per worker is also what makes RQ dequeue reliably: it moves the job into an
    intermediate queue (BLMOVE) that its maintenance recovers, where a pop from several queues
    (BLPOP) loses a job popped by a worker killed or stopped at that moment.

    RQ's worker quits when Redis fails anywhere but in its wait for the next job (a Redis restart
    while a job runs); then the job's work-horse may finish, and a new worker (with a new name)
    takes over once Redis answers again, so the process keeps working without a supervisor.
    """
    settings.configure_logging()
    lower_priority(settings.worker_nice)  # first: the reaper thread and every forked work-horse inherit it
    runtime = Runtime.build(settings, redis=redis_for(settings, blocking=True), poll=False)
    queues = [rank_queue(settings, runtime.redis)]
    if not ranker:
        queues = [retrain_queue(settings, runtime.redis)] + (queues if burst else [])
        runtime.registry.sweep_temp_files()
        start_reaper(settings)
        if not burst:
            start_ranker(settings)
            start_ticker(settings, redis_for(settings))
    while True:
        worker = RetrainWorker(
            queues,
            connection=runtime.redis,
            serializer=JSONSerializer,
            name=f"backend-{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            worker_ttl=30,
            job_monitoring_interval=MONITORING_INTERVAL,
            maintenance_interval=30,
            work_horse_killed_handler=release_dead_horse_lock,
        )
        try:
            worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level)
        except RedisError:  # its teardown, with Redis still away
            pass
        if burst or worker.stopping:
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # RQ's handlers belong to the worker that quit
        if worker.horse_pid:
            worker.wait_for_horse()
        log.warning("worker %s quit on a Redis error; a new worker starts once Redis answers", worker.name)
        wait_for_redis(runtime.redis)


def wait_for_redis(redis: Redis, longest: float = 30.0) -> None:
    delay = 1.0
    while True:
        time.sleep(delay)
        try:
            if redis.ping():
                return
        except RedisError:
            delay = min(delay * 2, longest)
