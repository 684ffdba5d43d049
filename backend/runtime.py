"""The objects one process works with, built once from the settings: store, registry, models."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from redis import Redis

from . import families
from .config import Settings
from .model import Model, Observation
from .serving import ModelCache
from .state.connection import redis_for
from .state.registry import Registry
from .state.store import Store

log = logging.getLogger(__name__)


def merged(first: Any, second: Any) -> Any:
    """One payload that does the work of `first` then `second`, or None when they do not merge:
    task maps (`Store.remember_tasks`) and observations of one version (`trigger.after_predict`)."""
    if isinstance(first, dict) and isinstance(second, dict):
        return {**first, **second}
    if isinstance(first, Observation) and isinstance(second, Observation) and first.version == second.version:
        return replace(first, predicted={**first.predicted, **second.predicted}, traffic=first.traffic + second.traffic)
    return None


class BackgroundWriter:
    """Runs best-effort Redis writes of web requests (the pool seen through /predict, monitoring)
    on a background thread, so a slow or unreachable Redis never delays a prediction; work is
    dropped when the buffer is full or Redis fails.

    The thread wakes at most every `linger` seconds and then does all the work submitted since, the
    calls of many requests merged into one where their last argument merges (`merged`): one
    `remember_tasks` and one `after_predict` per project and batch instead of five Redis round trips
    per request, so the thread takes the GIL from request threads a few times a second, not
    hundreds of times.
    """

    def __init__(self, capacity: int = 1024, linger: float = 0.05):
        self._pending: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue(capacity)
        self._linger = linger
        self._pid = 0
        self._lock = threading.Lock()

    def submit(self, work: Callable[..., Any], *args: Any) -> None:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():  # first use in this process (gunicorn forks after building it)
                    self._pid = os.getpid()
                    threading.Thread(target=self._drain, name="background-writer", daemon=True).start()
        try:
            self._pending.put_nowait((work, args))
        except queue.Full:
            pass

    def _drain(self) -> None:
        while True:
            batch = [self._pending.get()]
            time.sleep(self._linger)
            while True:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            for work, args in self.coalesced(batch):
                try:
                    work(*args)
                except Exception:  # noqa: BLE001 - best effort by design; LS's API and webhooks are the sources
                    log.debug("background write %s failed", getattr(work, "__name__", work), exc_info=True)

    @staticmethod
    def coalesced(batch: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
        """The calls of `batch` in order, each merged into the earlier call of the same work with the
        same other arguments (the same objects) when their last arguments merge."""
        out: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        slot: dict[Any, int] = {}
        for work, args in batch:
            if not args:
                out.append((work, args))
                continue
            same = (work, tuple(a if isinstance(a, (int, str)) else id(a) for a in args[:-1]))
            index = slot.get(same)
            payload = merged(out[index][1][-1], args[-1]) if index is not None else None
            if payload is None:
                slot[same] = len(out)
                out.append((work, args))
            else:
                out[index] = (work, (*args[:-1], payload))
        return out


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    store: Store
    registry: Registry
    cache: ModelCache
    model: Model
    writer: BackgroundWriter
    stoppers: list[Callable[[], None]] = field(default_factory=list)  # run by `stop` (`on_stop`)

    @classmethod
    def build(cls, settings: Settings, redis: Redis | None = None, poll: bool = True) -> Runtime:
        redis = redis if redis is not None else redis_for(settings)
        registry = Registry(settings.model_dir)
        cache = ModelCache(registry, settings.swap_poll_interval if poll else 0)
        store = Store(redis)
        families.install(settings.model_families)
        return cls(settings, redis, store, registry, cache, Model(settings, cache), BackgroundWriter())

    def on_stop(self, stop: Callable[[], None]) -> None:
        """Have `stop` also call `stop` (the embedded worker registers its threads' stop here)."""
        self.stoppers.append(stop)

    def stop(self) -> None:
        """Stop this runtime's background threads: the model cache's poller and what registered
        with `on_stop`. A process that builds many runtimes (tests, benchmarks) stops each one."""
        self.cache.stop()
        while self.stoppers:
            self.stoppers.pop()()

    def forget_project(self, project: int) -> None:
        """After an erasure: stop serving what this process held of the project whose files are gone
        (others follow within a poll)."""
        self.cache.refresh(project)
        self.cache.refresh_scores(project)

    def keep_rules(self, project: int, spec: Sequence[dict[str, str]]) -> None:
        """Store the project's labeling rules where `/predict` reads them without Redis, and serve
        them from this process at once (others follow within a poll)."""
        self.registry.save_rules(project, spec)
        self.cache.refresh_rules(project)


_installed: dict[int, Runtime] = {}


def for_job(redis: Redis) -> Runtime:
    """The runtime of a train job: the one installed for its Redis connection, else from the env."""
    runtime = _installed.get(id(redis))
    if runtime is None or runtime.redis is not redis:
        runtime = Runtime.build(Settings.from_env(), redis, poll=False)
        install(runtime)
    return runtime


def install(runtime: Runtime) -> None:
    """Make jobs that run on this Redis connection use this runtime (the embedded worker's case)."""
    _installed[id(runtime.redis)] = runtime
