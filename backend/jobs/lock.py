"""A project's locks: one training and one ranking at a time per project, across every worker.

A lock is a Redis key holding its holder's token, kept alive by a heartbeat thread and lapsing
`keys.LOCK_TTL_MS` after its holder dies; it is released only by its holder (compare-and-delete).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from redis import Redis

from ..state import keys

log = logging.getLogger(__name__)

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_EXTEND = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"


class LockTimeout(Exception):
    """Another job of the project held the lock for longer than this job may wait."""


@contextmanager
def project_lock(redis: Redis, project: int, wait: float, token: str, lock: Callable[[int], str] = keys.train_lock) -> Iterator[None]:
    """Hold one of the project's locks (`keys.train_lock`, `keys.publish_lock`), kept alive by a
    heartbeat; expires if the holder dies.

    The train lock's token is the job id, so the worker whose work-horse died can release it at once.
    """
    name = lock(project)
    deadline = time.monotonic() + wait
    while not redis.set(name, token, nx=True, px=keys.LOCK_TTL_MS):
        if time.monotonic() > deadline:
            raise LockTimeout(f"project {project}: {name} is held by another job")
        time.sleep(0.1)
    stop = threading.Event()
    extend = redis.register_script(_EXTEND)

    def heartbeat() -> None:
        while not stop.wait(keys.LOCK_TTL_MS / 3000):
            try:
                extend(keys=[name], args=[token, keys.LOCK_TTL_MS])
            except Exception:
                log.warning("project %s: could not extend %s", project, name)

    thread = threading.Thread(target=heartbeat, name="train-lock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        release(redis, name, token)


def release(redis: Redis, key: str, token: str) -> bool:
    """Delete `key` if it still holds `token` (compare-and-delete): a lock or flag is cleared only
    by the one it names, never after someone else took it."""
    return bool(redis.register_script(_RELEASE)(keys=[key], args=[token]))


def release_lock_of(redis: Redis, project: int, job_id: str) -> bool:
    """Release a project's train lock held by `job_id` (whose process is known to be dead)."""
    return release(redis, keys.train_lock(project), job_id)
