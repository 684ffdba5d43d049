"""The objects one process works with, built once from the settings: store, registry, models."""

from __future__ import annotations

import os
from dataclasses import dataclass

from redis import Redis

from .config import Settings
from .connection import redis_for
from .model import TextClassifier
from .registry import Registry
from .serving import ModelCache
from .store import Store


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    store: Store
    registry: Registry
    cache: ModelCache
    model: TextClassifier

    @classmethod
    def build(cls, settings: Settings, redis: Redis | None = None, poll: bool = True) -> "Runtime":
        redis = redis if redis is not None else redis_for(settings)
        registry = Registry(settings.model_dir)
        cache = ModelCache(registry, settings.swap_poll_interval if poll else 0)
        return cls(settings, redis, Store(redis), registry, cache, TextClassifier(settings, cache))


_current: dict[int, Runtime] = {}


def for_job(redis: Redis) -> Runtime:
    """The runtime of a train job: settings from the environment, the job's own Redis connection."""
    runtime = _current.get(os.getpid())
    if runtime is None or runtime.redis is not redis:
        runtime = Runtime.build(Settings.from_env(), redis, poll=False)
        _current[os.getpid()] = runtime
    return runtime


def install(runtime: Runtime) -> None:
    """Make an in-process worker's jobs use this runtime (embedded mode shares one fakeredis)."""
    _current[os.getpid()] = runtime
