"""Workers that run the train jobs: RQ worker processes, or one thread in embedded mode.

Both run the same job code from the same RQ queue; the thread exists so a new user needs no Redis
and no second process.
"""

from __future__ import annotations

import logging
import os
import threading

from rq import SimpleWorker, Worker
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty

from . import runtime as runtime_module
from .config import Settings
from .runtime import Runtime
from .trigger import retrain_queue

log = logging.getLogger(__name__)


class ThreadWorker(SimpleWorker):
    """An RQ worker that runs inside a thread of the web process (no fork, no signals)."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:  # signals belong to the main thread
        pass


_started: dict[tuple[int, int], threading.Thread] = {}


def start_embedded_worker(runtime: Runtime) -> threading.Thread:
    """Start (once per process) the thread that works the retrain queue on the in-memory Redis."""
    slot = (os.getpid(), id(runtime.redis))
    thread = _started.get(slot)
    if thread is not None and thread.is_alive():
        return thread
    runtime_module.install(runtime)
    queue = retrain_queue(runtime.settings, runtime.redis)
    worker = ThreadWorker([queue], connection=runtime.redis, serializer=JSONSerializer)

    def work() -> None:
        while True:
            try:
                worker.work(burst=False, with_scheduler=False, logging_level=runtime.settings.log_level)
            except Exception:
                log.exception("embedded worker stopped; restarting")

    thread = threading.Thread(target=work, name="embedded-worker", daemon=True)
    thread.start()
    _started[slot] = thread
    return thread


def run_worker(settings: Settings, burst: bool = False) -> None:
    """A forking RQ worker with the scheduler (for retry intervals) and short liveness intervals."""
    runtime = Runtime.build(settings, poll=False)
    queue = retrain_queue(settings, runtime.redis)
    runtime.registry.sweep_temp_files()
    worker = Worker(
        [queue],
        connection=runtime.redis,
        serializer=JSONSerializer,
        name=f"backend-{os.uname().nodename}-{os.getpid()}",
        worker_ttl=60,
        job_monitoring_interval=10,
        maintenance_interval=30,
    )
    worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level)
