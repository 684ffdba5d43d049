"""The objects one process works with, built once from the settings: store, registry, models."""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from .config import Settings
from .connection import redis_for
from .model import TextClassifier
from .registry import Registry
from .serving import ModelCache
from .store import BackgroundWriter, Store


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    store: Store
    registry: Registry
    cache: ModelCache
    model: TextClassifier
    writer: BackgroundWriter

    @classmethod
    def build(cls, settings: Settings, redis: Redis | None = None, poll: bool = True) -> "Runtime":
        redis = redis if redis is not None else redis_for(settings)
        registry = Registry(settings.model_dir)
        cache = ModelCache(registry, settings.swap_poll_interval if poll else 0)
        store = Store(redis)
        return cls(settings, redis, store, registry, cache, TextClassifier(settings, cache), BackgroundWriter())


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
