"""Durable per-project state in Redis: annotations (latest usable label set per task and control),
the task texts they need, tombstones of deleted annotations, and project metadata.

Every write is one Lua script, so duplicate deliveries are idempotent, an older update never wins
over a newer one, and a deletion beats a late update of the same annotation. Texts are stored with
the labels so training never depends on Label Studio being up.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from redis import Redis

from .labelconfig import LabelConfigError, parse_label_config

log = logging.getLogger(__name__)
PREFIX = "lsb"
MAX_DATA_FIELDS = 32
QUEUE_ENTRY = np.dtype([("task", "<i8"), ("uncertainty", "<f4"), ("cluster", "<i4")])  # 16 bytes a ranked task

# KEYS: annotations, annotation labels, annotation times, tombstones, texts, change sequence
# ARGV: annotation id, updated_at, record json, labels json, task id, task data json
# Returns the new change sequence, or 0 when nothing changed.
_UPSERT = """
if redis.call('HEXISTS', KEYS[4], ARGV[1]) == 1 then return 0 end
local old = redis.call('HGET', KEYS[3], ARGV[1])
if old and tonumber(old) > tonumber(ARGV[2]) then return 0 end
local old_labels = redis.call('HGET', KEYS[2], ARGV[1]) or '{}'
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[5], ARGV[5], ARGV[6]) end
if old_labels == ARGV[4] then return 0 end
return redis.call('INCR', KEYS[6])
"""

# KEYS: annotations, annotation labels, annotation times, tombstones, change sequence; ARGV: ids..., now
_DELETE = """
local changed = 0
local now = ARGV[#ARGV]
for i = 1, #ARGV - 1 do
  local id = ARGV[i]
  redis.call('HSET', KEYS[4], id, now)
  local labels = redis.call('HGET', KEYS[2], id)
  if redis.call('HDEL', KEYS[1], id) == 1 and labels and labels ~= '{}' then changed = changed + 1 end
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
if changed > 0 then return redis.call('INCRBY', KEYS[5], changed) end
return 0
"""


# KEYS: last requested sequence; ARGV: new sequence, threshold. Returns 1 when a retrain is due.
_DUE = """
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) - last < tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


# KEYS: the LS id's instances (hash: creation stamp -> backend project), the counter of extra numbers
# ARGV: LS project id, creation stamp, first extra number. Returns the backend project number.
_RESOLVE = """
local found = redis.call('HGET', KEYS[1], ARGV[2])
if found then return tonumber(found) end
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[1])
  return tonumber(ARGV[1])
end
local number = tonumber(ARGV[3]) + redis.call('INCR', KEYS[2]) - 1
redis.call('HSET', KEYS[1], ARGV[2], number)
return number
"""
EXTRA_PROJECTS = 10**12 + 1  # the first backend project number of another LS's project with a taken id


def key(project: int, name: str) -> str:
    return f"{PREFIX}:{int(project)}:{name}"


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


@dataclass(frozen=True)
class Annotation:
    """One annotation as the backend keeps it: labels per control (`from_name` -> choices)."""

    id: int
    task: int
    updated_at: float
    labels: dict[str, list[str]]
    author: Any = None
    data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LabeledTask:
    """A task's training example: its texts and, per control, the choices of its latest annotation."""

    task: int
    data: dict[str, str]
    labels: dict[str, list[str]]
    annotations: dict[str, int]


class Store:
    """Redis-backed state of every project. Safe to share between threads and processes."""

    def __init__(self, redis: Redis):
        self.redis = redis
        self._upsert = redis.register_script(_UPSERT)
        self._delete = redis.register_script(_DELETE)
        self._due = redis.register_script(_DUE)
        self._resolve = redis.register_script(_RESOLVE)
        self._resolved: dict[tuple[int, int], int] = {}  # never changes once given: asked again only after a restart

    # -- projects of several Label Studio instances ------------------------------------------------
    def resolve_project(self, ls_project: int, created: int | None) -> int:
        """The backend's number for LS project `ls_project` created at `created` (epoch seconds).

        State is kept per backend project. The first LS project seen with an id keeps that id as its
        number; a project with the same id and another creation time (a second or re-created LS)
        gets a number of its own from EXTRA_PROJECTS on, so it never sees the first one's labels or
        models. A call without a creation time (a bare id) is the id's first project."""
        if created is None:
            return ls_project
        known = self._resolved.get((ls_project, created))
        if known is not None:
            return known
        number = int(self._resolve(keys=[f"{PREFIX}:instances:{int(ls_project)}", f"{PREFIX}:extra_projects"],
                                   args=[int(ls_project), int(created), EXTRA_PROJECTS]))
        if number != ls_project and self.redis.hsetnx(key(number, "meta"), "ls_project", int(ls_project)):
            log.warning("Label Studio project %s created at %s is not the project %s this backend knows (another or a "
                        "re-created Label Studio): kept apart as backend project %s", ls_project, created, ls_project, number)
        if len(self._resolved) < 100_000:
            self._resolved[(ls_project, created)] = number
        return number

    def ls_project(self, project: int) -> int:
        """The LS project id of a backend project (they differ only for `resolve_project`'s extras)."""
        raw = self.redis.hget(key(project, "meta"), "ls_project")
        return int(raw) if raw else int(project)

    # -- annotations ---------------------------------------------------------------------------
    def upsert(self, project: int, annotation: Annotation) -> int:
        """Store an annotation; return the project's new change sequence, or 0 when nothing changed."""
        return self.upsert_many(project, [annotation])[0]

    def upsert_many(self, project: int, annotations: Sequence[Annotation]) -> list[int]:
        """`upsert` of each annotation in order, in one round trip (a bulk webhook carries thousands)."""
        keys = [key(project, n) for n in ("ann", "ann_labels", "ann_ts", "tombstones", "texts", "seq")]
        pipe = self.redis.pipeline(transaction=False)
        for annotation in annotations:
            record = {"task": annotation.task, "author": annotation.author, "updated_at": annotation.updated_at}
            args = [
                str(annotation.id),
                repr(float(annotation.updated_at)),
                _dumps(record),
                _dumps(annotation.labels),
                str(annotation.task),
                _dumps(annotation.data) if annotation.data else "",
            ]
            self._upsert(keys=keys, args=args, client=pipe)
        return [int(changed) for changed in pipe.execute()] if annotations else []

    def delete(self, project: int, annotation_ids: Iterable[int]) -> int:
        ids = [str(int(i)) for i in annotation_ids]
        if not ids:
            return 0
        return int(
            self._delete(
                keys=[key(project, n) for n in ("ann", "ann_labels", "ann_ts", "tombstones", "seq")],
                args=[*ids, repr(time.time())],
            )
        )

    def due(self, project: int, seq: int, threshold: int) -> bool:
        """True (once) when `seq` is `threshold` changes past the last retrain request."""
        return bool(self._due(keys=[key(project, "requested_seq")], args=[seq, max(1, threshold)]))

    def change_seq(self, project: int) -> int:
        return int(self.redis.get(key(project, "seq")) or 0)

    def raise_change_seq(self, project: int, floor: int) -> bool:
        """After Redis lost its data, keep the sequence above what the registry already trained on;
        True when it was below (Redis lost labels a model was trained on)."""
        if self.change_seq(project) < floor:
            self.redis.set(key(project, "seq"), floor)
            return True
        return False

    def annotation_count(self, project: int) -> int:
        return int(self.redis.hlen(key(project, "ann")))

    def labeled_tasks(self, project: int) -> list[LabeledTask]:
        """Per task and control, the choices of the most recently updated annotation that has them."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(key(project, "ann"))
        pipe.hgetall(key(project, "ann_labels"))
        pipe.hgetall(key(project, "texts"))
        records, labels, texts = pipe.execute()
        best: dict[int, dict[str, tuple[float, int, list[str]]]] = {}
        for raw_id, raw in records.items():
            ann_id = int(raw_id)
            record = json.loads(raw)
            per_control = json.loads(labels.get(raw_id, b"{}"))
            stamp = float(record["updated_at"])
            slots = best.setdefault(int(record["task"]), {})
            for control, choices in per_control.items():
                if choices and (control not in slots or (stamp, ann_id) > slots[control][:2]):
                    slots[control] = (stamp, ann_id, choices)
        out = []
        for task, slots in sorted(best.items()):
            if not slots:
                continue
            data = json.loads(texts.get(str(task).encode(), b"{}"))
            out.append(
                LabeledTask(
                    task=task,
                    data=data,
                    labels={c: v[2] for c, v in slots.items()},
                    annotations={c: v[1] for c, v in slots.items()},
                )
            )
        return out

    # -- quarantine: labeled tasks whose examples make training fail (`training.poisoned_tasks`) --
    def quarantine(self, project: int, digests: Mapping[int, str]) -> None:
        """Set tasks aside from training while their `training.example_digest` stays the same."""
        if digests:
            self.redis.hset(key(project, "quarantine"), mapping={str(t): d for t, d in digests.items()})

    def quarantined(self, project: int) -> dict[int, str]:
        return {int(t): d.decode() for t, d in self.redis.hgetall(key(project, "quarantine")).items()}

    # -- tasks (the unlabeled pool seen through /predict and TASKS_CREATED) ---------------------
    def remember_tasks(self, project: int, tasks: Mapping[int, dict[str, str]]) -> None:
        if tasks:
            self.redis.hset(key(project, "pool"), mapping={str(t): _dumps(d) for t, d in tasks.items()})

    def forget_tasks(self, project: int, task_ids: Iterable[int]) -> None:
        ids = [str(int(t)) for t in task_ids]
        if ids:
            self.redis.hdel(key(project, "pool"), *ids)

    def pool(self, project: int) -> dict[int, dict[str, str]]:
        return {int(t): json.loads(d) for t, d in self.redis.hgetall(key(project, "pool")).items()}

    def unlabeled_pool(self, project: int) -> list[dict[str, Any]]:
        """Tasks seen through /predict and TASKS_CREATED that have no stored annotation."""
        annotated = {int(t) for t in self.redis.hkeys(key(project, "texts"))}
        return [{"id": t, "data": d} for t, d in sorted(self.pool(project).items()) if t not in annotated]

    def annotated(self, project: int, task_ids: list[int]) -> set[int]:
        if not task_ids:
            return set()
        found = self.redis.hmget(key(project, "texts"), [str(t) for t in task_ids])
        return {t for t, value in zip(task_ids, found) if value is not None}

    # -- predictions handed to LS, for live accuracy (see `monitor`) ----------------------------
    def remember_predictions(self, project: int, version: str, predicted: Mapping[int, Mapping[str, list[str]]]) -> None:
        """What we predicted for each task (control -> choices), to compare with its first annotation."""
        if predicted:
            value = {str(task): _dumps({"v": version, "c": choices}) for task, choices in predicted.items()}
            self.redis.hset(key(project, "predicted"), mapping=value)

    # -- the queue: its summary (JSON) and every ranked task in order, packed (`QUEUE_ENTRY`) ----------
    def request_ranking(self, project: int) -> int:
        """Count one more reason to rank the project again; a ranking that read this count (or a
        later one) before it started covers it (`save_queue`)."""
        return int(self.redis.incr(key(project, "rank_requested")))

    def ranking_requests(self, project: int) -> int:
        return int(self.redis.get(key(project, "rank_requested")) or 0)

    def save_queue(
        self, project: int, summary: dict[str, Any], order: Sequence[Sequence[Any]], stability: dict[str, Any] | None,
        covers: int,
    ) -> None:
        """Store a ranking: `summary` (version, strategy, reason, size...) and `order`, every task
        as (task, uncertainty, cluster) from first to last; `covers`: the `ranking_requests` count
        read before ranking started."""
        packed = np.array([tuple(e) for e in order], dtype=QUEUE_ENTRY).tobytes() if len(order) else b""
        pipe = self.redis.pipeline()
        pipe.set(key(project, "queue"), _dumps({**summary, "size": len(order), "covers": covers, "generated_at": time.time()}))
        pipe.set(key(project, "queue_order"), packed)
        if stability:
            pipe.rpush(key(project, "stability"), _dumps(stability))
            pipe.ltrim(key(project, "stability"), -50, -1)
        pipe.execute()

    def queue(self, project: int) -> dict[str, Any] | None:
        """The summary of the latest ranking (None before the first)."""
        raw = self.redis.get(key(project, "queue"))
        return json.loads(raw) if raw else None

    def queue_entries(self, project: int, start: int, count: int) -> list[dict[str, Any]]:
        """Ranked tasks `start` to `start + count` (fewer at the end) of the latest ranking, with
        their position and LS `score` (position / size: ascending = served first)."""
        size = QUEUE_ENTRY.itemsize
        pipe = self.redis.pipeline(transaction=True)
        pipe.strlen(key(project, "queue_order"))
        pipe.getrange(key(project, "queue_order"), start * size, (start + count) * size - 1)
        total, raw = pipe.execute()
        n = total // size
        rows = np.frombuffer(raw[: len(raw) // size * size], dtype=QUEUE_ENTRY)
        return [
            {"task": int(task), "position": start + i, "score": round((start + i) / n, 6),
             "uncertainty": round(float(uncertainty), 6), "cluster": int(cluster)}
            for i, (task, uncertainty, cluster) in enumerate(rows.tolist())
        ]

    def stability(self, project: int) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.redis.lrange(key(project, "stability"), 0, -1)]

    # -- suspected label errors (see `mislabels`) ------------------------------------------------
    def save_mislabels(self, project: int, found: dict[str, Any]) -> None:
        self.redis.set(key(project, "mislabels"), _dumps({**found, "generated_at": time.time()}))

    def mislabels(self, project: int) -> dict[str, Any] | None:
        raw = self.redis.get(key(project, "mislabels"))
        return json.loads(raw) if raw else None

    # -- project metadata ----------------------------------------------------------------------
    def set_meta(self, project: int, **values: Any) -> None:
        mapping = {k: (v if isinstance(v, str) else _dumps(v)) for k, v in values.items() if v is not None}
        if mapping:
            self.redis.hset(key(project, "meta"), mapping=mapping)
            self.redis.sadd(f"{PREFIX}:projects", int(project))

    def input_keys(self, project: int, label_config: str | None = None) -> tuple[str, ...] | None:
        """The data keys the project's config reads (None when no config is known yet)."""
        if label_config is None:
            label_config = self.meta(project).get("label_config", "")
        try:
            return parse_label_config(label_config).data_keys or None
        except LabelConfigError:
            return None

    def meta(self, project: int) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.redis.hgetall(key(project, "meta")).items()}

    def known(self, project: int) -> bool:
        """Has the backend ever heard of this project (a /setup, a config, tasks or a ranking)?"""
        pipe = self.redis.pipeline(transaction=False)
        pipe.sismember(f"{PREFIX}:projects", int(project))
        pipe.exists(key(project, "pool"), key(project, "queue"), key(project, "ann"))
        member, found = pipe.execute()
        return bool(member) or bool(found)

    def projects(self) -> list[int]:
        return sorted(int(p) for p in self.redis.smembers(f"{PREFIX}:projects"))


def texts_of(task: Mapping[str, Any], keys: tuple[str, ...] | None, limit: int) -> dict[str, str]:
    """The task's input fields training needs (all short string fields when no config is known)."""
    data = task.get("data")
    if not isinstance(data, dict):
        return {}
    picked = {}
    for name, value in data.items():
        if keys is not None and name not in keys:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            picked[str(name)[:200]] = value[:limit]
        if len(picked) >= MAX_DATA_FIELDS:
            break
    return picked

