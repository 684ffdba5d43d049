"""The audit trail: an append-only event log per project (a Redis stream).

Every change that matters to a project's owners lands here with what caused it: label-config
changes, retrain triggers, trainings and their decision, rollbacks, settings changes, and disputed
tasks (annotators who do not agree) and how each was resolved. Entries
are never edited; the stream is capped at `keys.AUDIT_EVENTS` (oldest dropped first).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from . import keys

log = logging.getLogger(__name__)
KINDS = {"label_config", "trigger", "training", "promotion", "rejection", "rollback", "settings", "label_errors", "dispute", "resolution"}


def record(redis: Redis, project: int, kind: str, actor: str, message: str, **details: Any) -> None:
    """Append one event; never raises (an audit write must not fail the action it describes)."""
    if kind not in KINDS:
        raise ValueError(f"unknown audit event kind {kind!r}")
    fields = {
        "at": repr(time.time()),
        "kind": kind,
        "actor": actor[:200],
        "message": message[:1000],
        "details": json.dumps(details, sort_keys=True, default=str)[:10_000],
    }
    try:
        redis.xadd(keys.audit(project), fields, maxlen=keys.AUDIT_EVENTS, approximate=True)
    except RedisError:
        log.warning("project %s: could not record audit event %s (redis unavailable)", project, kind)


def events(redis: Redis, project: int, limit: int = 100, kind: str | None = None) -> list[dict[str, Any]]:
    """The newest events first (at most `limit`), optionally of one kind."""
    out = []
    for event_id, fields in redis.xrevrange(keys.audit(project), count=limit if kind is None else keys.AUDIT_EVENTS):
        decoded = {k.decode(): v.decode() for k, v in fields.items()}
        if kind is not None and decoded.get("kind") != kind:
            continue
        out.append(
            {
                "id": event_id.decode(),
                "at": float(decoded.get("at", 0)),
                "kind": decoded.get("kind"),
                "actor": decoded.get("actor"),
                "message": decoded.get("message"),
                "details": json.loads(decoded.get("details") or "{}"),
            }
        )
        if len(out) >= limit:
            break
    return out
