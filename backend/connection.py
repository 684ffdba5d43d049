"""Redis connections: a real server from REDIS_URL, else one in-memory fakeredis per process.

Timeouts are short on purpose: a webhook must answer 503 quickly when Redis is unreachable
instead of hanging past LS's 1 s webhook timeout.
"""

from __future__ import annotations

import threading

from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .config import Settings

_embedded: Redis | None = None
_lock = threading.Lock()


def redis_for(settings: Settings, blocking: bool = False) -> Redis:
    """The Redis client for these settings (RQ needs bytes, so responses are not decoded).

    `blocking` is for RQ workers, whose dequeue waits up to 15 s on the socket.
    """
    global _embedded
    if settings.redis_url:
        return Redis.from_url(
            settings.redis_url,
            socket_timeout=30.0 if blocking else settings.redis_timeout,
            socket_connect_timeout=settings.redis_timeout,
            health_check_interval=30,
            retry=Retry(NoBackoff(), 0),
        )
    with _lock:
        if _embedded is None:
            import fakeredis

            _embedded = fakeredis.FakeRedis()
        return _embedded
