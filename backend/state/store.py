"""Durable per-project state in Redis: annotations (every annotation's label set per control, its
annotator and ground-truth mark: `consensus` makes one label of them), the task texts they need,
tombstones of deleted annotations, and project metadata.

Every write is one Lua script, so duplicate deliveries are idempotent, an older update never wins
over a newer one, and a deletion beats a late update of the same annotation. Texts are stored with
the labels so training never depends on Label Studio being up.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from redis import Redis

from ..consensus import SUBMITTED, TaskVotes, Vote
from ..labelconfig import LabelConfig, LabelConfigError, parse_label_config
from . import keys

log = logging.getLogger(__name__)
MAX_DATA_FIELDS = 32
QUEUE_ENTRY = np.dtype([("task", "<i8"), ("uncertainty", "<f4"), ("cluster", "<i4")])  # 16 bytes a ranked task

# KEYS: annotations, annotation labels, annotation times, tombstones, texts, change sequence
# ARGV: annotation id, updated_at, record json, labels json, task id, task data json, vote json
# (what consensus reads of the record: author and ground truth), '1' when the labels can train a
# control ('0': a skip, or a submission without regions where no Labels control reads it as "none").
# Returns the new change sequence, or 0 when neither the labels nor (of a labeling one) the vote changed.
_UPSERT = """
if redis.call('HEXISTS', KEYS[4], ARGV[1]) == 1 then return 0 end
local old = redis.call('HGET', KEYS[3], ARGV[1])
if old and tonumber(old) > tonumber(ARGV[2]) then return 0 end
local old_labels = redis.call('HGET', KEYS[2], ARGV[1]) or '{}'
local old_record = redis.call('HGET', KEYS[1], ARGV[1]) or ''
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[5], ARGV[5], ARGV[6]) end
if ARGV[8] == '0' and (old_labels == '{}' or old_labels == ARGV[4]) then return 0 end
if old_labels == ARGV[4] and (ARGV[4] == '{}' or string.find(old_record, ARGV[7], 1, true)) then return 0 end
return redis.call('INCR', KEYS[6])
"""

# KEYS: as _UPSERT's (texts unused); ARGV: ids..., now
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
if changed > 0 then return redis.call('INCRBY', KEYS[6], changed) end
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


def _annotation_keys(project: int) -> list[str]:
    """The KEYS of the annotation scripts (`_UPSERT`, `_DELETE`), in their order."""
    return [
        keys.annotations(project),
        keys.annotation_labels(project),
        keys.annotation_times(project),
        keys.tombstones(project),
        keys.texts(project),
        keys.change_seq(project),
    ]


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


@dataclass(frozen=True)
class Annotation:
    """One annotation as the backend keeps it: labels per control (`from_name` -> choices, or
    spans in their stored form), and `SUBMITTED` when it was submitted rather than skipped."""

    id: int
    task: int
    updated_at: float
    labels: dict[str, list[str]]
    author: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    ground_truth: bool = False


def trains(labels: Mapping[str, Sequence[str]], spans: bool) -> bool:
    """Whether an annotation's labels can train a control: a choice or a span, or (`spans`: the
    project has a Labels control) a submission without regions, which says "no spans"."""
    return any(chosen for name, chosen in labels.items() if name != SUBMITTED) or (spans and SUBMITTED in labels)


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
        number = int(
            self._resolve(keys=[keys.instances(ls_project), keys.EXTRA_PROJECTS], args=[int(ls_project), int(created), EXTRA_PROJECTS])
        )
        if number != ls_project and self.redis.hsetnx(keys.meta(number), "ls_project", int(ls_project)):
            log.warning(
                "Label Studio project %s created at %s is not the project %s this backend knows (another or a "
                "re-created Label Studio): kept apart as backend project %s",
                ls_project,
                created,
                ls_project,
                number,
            )
        if len(self._resolved) < 100_000:
            self._resolved[(ls_project, created)] = number
        return number

    def ls_project(self, project: int) -> int:
        """The LS project id of a backend project (they differ only for `resolve_project`'s extras)."""
        raw = self.redis.hget(keys.meta(project), "ls_project")
        return int(raw) if raw else int(project)

    # -- annotations ---------------------------------------------------------------------------
    def upsert(self, project: int, annotation: Annotation) -> int:
        """Store an annotation; return the project's new change sequence, or 0 when nothing changed."""
        return self.upsert_many(project, [annotation])[0]

    def upsert_many(self, project: int, annotations: Sequence[Annotation], spans: bool = True) -> list[int]:
        """`upsert` of each annotation in order, in one round trip (a bulk webhook carries thousands).
        `spans`: the project has a Labels control, for which a submission without regions is a label
        ("no spans") and so a change (True when the config is not known)."""
        names = _annotation_keys(project)
        pipe = self.redis.pipeline(transaction=False)
        for annotation in annotations:
            vote = {"author": annotation.author, "ground_truth": annotation.ground_truth}
            record = {"task": annotation.task, "updated_at": annotation.updated_at, **vote}
            args = [
                str(annotation.id),
                repr(float(annotation.updated_at)),
                _dumps(record),
                _dumps(annotation.labels),
                str(annotation.task),
                _dumps(annotation.data) if annotation.data else "",
                _dumps(vote)[1:-1],  # the record (sorted keys) holds this text unless the vote changed
                "1" if trains(annotation.labels, spans) else "0",
            ]
            self._upsert(keys=names, args=args, client=pipe)
        return [int(changed) for changed in pipe.execute()] if annotations else []

    def delete(self, project: int, annotation_ids: Iterable[int]) -> int:
        ids = [str(int(i)) for i in annotation_ids]
        if not ids:
            return 0
        return int(self._delete(keys=_annotation_keys(project), args=[*ids, repr(time.time())]))

    def annotation_ids(self, project: int) -> set[int]:
        """The ids of every stored annotation of the project."""
        return {int(a) for a in self.redis.hkeys(keys.annotations(project))}

    def synced_at(self, project: int) -> float:
        """When the project's annotations were last reconciled with Label Studio (0: never)."""
        return float(self.redis.get(keys.synced_at(project)) or 0)

    def mark_synced(self, project: int, started: float) -> None:
        self.redis.set(keys.synced_at(project), started)

    def due(self, project: int, seq: int, threshold: int) -> bool:
        """True (once) when `seq` is `threshold` changes past the last retrain request."""
        return bool(self._due(keys=[keys.requested_seq(project)], args=[seq, max(1, threshold)]))

    def change_seq(self, project: int) -> int:
        return int(self.redis.get(keys.change_seq(project)) or 0)

    def raise_change_seq(self, project: int, floor: int) -> bool:
        """After Redis lost its data, keep the sequence above what the registry already trained on;
        True when it was below (Redis lost labels a model was trained on)."""
        if self.change_seq(project) < floor:
            self.redis.set(keys.change_seq(project), floor)
            return True
        return False

    def annotation_count(self, project: int) -> int:
        return int(self.redis.hlen(keys.annotations(project)))

    def task_votes(self, project: int) -> list[TaskVotes]:
        """Every labeled task with each stored annotation's vote (`consensus.resolve` makes them one)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(keys.annotations(project))
        pipe.hgetall(keys.annotation_labels(project))
        pipe.hgetall(keys.texts(project))
        pipe.smembers(keys.deleted_tasks(project))
        records, labels, texts, deleted = pipe.execute()
        gone = {int(t) for t in deleted}
        votes: dict[int, list[Vote]] = {}
        for raw_id, raw in records.items():
            record = json.loads(raw)
            if int(record["task"]) in gone:
                continue
            per_control = json.loads(labels.get(raw_id, b"{}"))
            if not any(per_control.values()) and SUBMITTED not in per_control:
                continue
            author = record.get("author")
            vote = Vote(
                int(raw_id),
                None if author is None else str(author),
                float(record["updated_at"]),
                per_control,
                bool(record.get("ground_truth")),
            )
            votes.setdefault(int(record["task"]), []).append(vote)
        return [
            TaskVotes(task, json.loads(texts.get(str(task).encode(), b"{}")), tuple(sorted(found, key=lambda v: v.annotation)))
            for task, found in sorted(votes.items())
        ]

    # -- quarantine: labeled tasks whose examples make training fail (`training.poisoned_tasks`) --
    def quarantine(self, project: int, digests: Mapping[int, str]) -> None:
        """Set tasks aside from training while their `training.example_digest` stays the same."""
        if digests:
            self.redis.hset(keys.quarantine(project), mapping={str(t): d for t, d in digests.items()})

    def quarantined(self, project: int) -> dict[int, str]:
        return {int(t): d.decode() for t, d in self.redis.hgetall(keys.quarantine(project)).items()}

    # -- tasks (the unlabeled pool seen through /predict and TASKS_CREATED) ---------------------
    def remember_tasks(self, project: int, tasks: Mapping[int, dict[str, str]]) -> None:
        if tasks:
            self.redis.hset(keys.pool(project), mapping={str(t): _dumps(d) for t, d in tasks.items()})

    def forget_tasks(self, project: int, task_ids: Iterable[int]) -> None:
        ids = [str(int(t)) for t in task_ids]
        if ids:
            self.redis.hdel(keys.pool(project), *ids)

    def delete_tasks(self, project: int, task_ids: Iterable[int]) -> None:
        """TASKS_DELETED: the tasks' texts, pool entries, predictions and reviews go at once; their
        annotations are marked for `purge_deleted_tasks` (a publish job) and left out of training
        from now on (`task_votes`)."""
        ids = [str(int(t)) for t in task_ids]
        if not ids:
            return
        pipe = self._dropping_tasks(project, ids)
        pipe.srem(keys.head_tasks(project), *ids)
        pipe.sadd(keys.deleted_tasks(project), *ids)
        pipe.execute()

    def deleted_tasks(self, project: int) -> set[int]:
        """The tasks LS deleted whose annotations are not purged yet."""
        return {int(t) for t in self.redis.smembers(keys.deleted_tasks(project))}

    def purge_deleted_tasks(self, project: int, task_ids: set[int]) -> None:
        """Delete the annotations of these deleted tasks (a change for the retrain threshold, like
        ANNOTATIONS_DELETED) and whatever of them came back meanwhile (a listing that ran before the
        webhook), then forget that they were deleted."""
        if not task_ids:
            return
        doomed = [
            int(raw_id)
            for raw_id, raw in self.redis.hscan_iter(keys.annotations(project), count=1000)
            if int(json.loads(raw).get("task", -1)) in task_ids
        ]
        self.delete(project, doomed)
        ids = [str(t) for t in task_ids]
        pipe = self._dropping_tasks(project, ids)
        pipe.srem(keys.deleted_tasks(project), *ids)
        pipe.execute()

    def _dropping_tasks(self, project: int, ids: list[str]) -> Any:
        """A transaction that removes the tasks' data, pool entries, predictions and review requests."""
        pipe = self.redis.pipeline(transaction=True)
        for name in (keys.pool, keys.texts, keys.predicted, keys.reviews):
            pipe.hdel(name(project), *ids)
        return pipe

    def pool(self, project: int) -> dict[int, dict[str, str]]:
        return {int(t): json.loads(d) for t, d in self.redis.hgetall(keys.pool(project)).items()}

    def replace_pool(self, project: int, tasks: Mapping[int, dict[str, str]]) -> int:
        """Make the pool exactly `tasks` (a full listing of LS's unlabeled tasks); returns how many
        stored tasks LS no longer lists (deleted or labeled meanwhile)."""
        gone = {int(t) for t in self.redis.hkeys(keys.pool(project))} - set(tasks)
        self.forget_tasks(project, gone)
        self.remember_tasks(project, tasks)
        return len(gone)

    def pool_listing(self, project: int) -> tuple[int, float]:
        """The highest LS task id listed into the pool so far, and when the last full listing was."""
        after, full_at = self.redis.hmget(keys.pool_listed(project), ["after", "full_at"])
        return int(after or 0), float(full_at or 0)

    def mark_listed(self, project: int, after: int, full_at: float | None = None) -> None:
        values: dict[str, Any] = {"after": int(after)}
        if full_at is not None:
            values["full_at"] = full_at
        self.redis.hset(keys.pool_listed(project), mapping=values)

    def pool_tasks(self, project: int, task_ids: Sequence[int]) -> dict[int, dict[str, str]]:
        """The data of the given pool tasks (those in the pool)."""
        if not task_ids:
            return {}
        found = self.redis.hmget(keys.pool(project), [int(t) for t in task_ids])
        return {int(t): json.loads(d) for t, d in zip(task_ids, found) if d is not None}

    def unlabeled_pool(self, project: int) -> list[dict[str, Any]]:
        """Tasks seen through /predict and TASKS_CREATED that have no stored annotation."""
        annotated = {int(t) for t in self.redis.hkeys(keys.texts(project))}
        return [{"id": t, "data": d} for t, d in sorted(self.pool(project).items()) if t not in annotated]

    def annotated(self, project: int, task_ids: list[int]) -> set[int]:
        if not task_ids:
            return set()
        found = self.redis.hmget(keys.texts(project), [str(t) for t in task_ids])
        return {t for t, value in zip(task_ids, found) if value is not None}

    # -- predictions handed to LS, for live accuracy (see `monitor`) ----------------------------
    def remember_predictions(self, project: int, version: str, predicted: Mapping[int, Mapping[str, list[str]]]) -> None:
        """What we predicted for each task (control -> choices), to compare with its first annotation."""
        if predicted:
            value = {str(task): _dumps({"v": version, "c": choices}) for task, choices in predicted.items()}
            self.redis.hset(keys.predicted(project), mapping=value)

    # -- labeling activity (annotation webhooks): how fast the project's tasks are taken ----------
    def record_activity(self, project: int, events: Sequence[tuple[int, Any]], now: float | None = None) -> None:
        """Annotation events as (annotation id, annotator); keeps `keys.ACTIVITY_WINDOW` seconds."""
        if not events:
            return
        now = time.time() if now is None else now
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(keys.activity(project), {str(int(a)): now for a, _ in events})
        pipe.zremrangebyscore(keys.activity(project), "-inf", now - keys.ACTIVITY_WINDOW)
        authors = {str(author): now for _, author in events if author is not None}
        if authors:
            pipe.zadd(keys.annotators(project), authors)
        pipe.zremrangebyscore(keys.annotators(project), "-inf", now - keys.ACTIVITY_WINDOW)
        pipe.execute()

    def labeling_rate(self, project: int, now: float | None = None) -> tuple[float, int]:
        """Annotation events per second over the recent window (measured from the first event in
        it when that is younger) and how many annotators were active in it."""
        now = time.time() if now is None else now
        since = now - keys.ACTIVITY_WINDOW
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcount(keys.activity(project), since, "+inf")
        pipe.zrangebyscore(keys.activity(project), since, "+inf", start=0, num=1, withscores=True)
        pipe.zcount(keys.annotators(project), since, "+inf")
        events, first, annotators = pipe.execute()
        if not events:
            return 0.0, int(annotators)
        span = max(now - float(first[0][1]), 60.0)
        return events / span, int(annotators)

    # -- the head of the queue pushed to LS as predictions of one version ---------------------------
    def head(self, project: int) -> tuple[str | None, int, int, int]:
        """The pushed head: its version, target size, tasks in it, and tasks of it taken since."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(keys.head(project), ["version", "target", "taken"])
        pipe.scard(keys.head_tasks(project))
        (version, target, taken), size = pipe.execute()
        return (version.decode() if version else None), int(target or 0), int(size), int(taken or 0)

    def head_tasks(self, project: int) -> set[int]:
        return {int(t) for t in self.redis.smembers(keys.head_tasks(project))}

    def start_head(self, project: int, version: str, target: int) -> None:
        """A new head for `version`: forget the tasks of the previous one."""
        pipe = self.redis.pipeline()
        pipe.delete(keys.head_tasks(project), keys.head(project))
        pipe.hset(keys.head(project), mapping={"version": version, "target": int(target), "taken": 0})
        pipe.execute()

    def grow_head(self, project: int, version: str, target: int, tasks: Iterable[int]) -> None:
        """Tasks now holding a prediction of `version`, pushed by us."""
        members = [int(t) for t in tasks]
        pipe = self.redis.pipeline()
        if members:
            pipe.sadd(keys.head_tasks(project), *members)
        pipe.hset(keys.head(project), mapping={"version": version, "target": int(target)})
        pipe.execute()

    def take_from_head(self, project: int, task_ids: Sequence[int]) -> tuple[int, int]:
        """Count the annotated tasks that were in the head; returns (tasks of the head left
        untaken, its target size)."""
        if not task_ids:
            return 0, 0
        pipe = self.redis.pipeline(transaction=False)
        pipe.smismember(keys.head_tasks(project), [int(t) for t in task_ids])
        pipe.scard(keys.head_tasks(project))
        pipe.hmget(keys.head(project), ["target", "taken"])
        found, size, (target, taken) = pipe.execute()
        hits = sum(map(bool, found))
        if hits:
            taken = self.redis.hincrby(keys.head(project), "taken", hits)
        return int(size) - int(taken or 0), int(target or 0)

    # -- the queue: its summary (JSON) and every ranked task in order, packed (`QUEUE_ENTRY`) ----------
    def request_ranking(self, project: int) -> int:
        """Count one more reason to rank the project again; a ranking that read this count (or a
        later one) before it started covers it (`save_queue`)."""
        return int(self.redis.incr(keys.rank_requested(project)))

    def ranking_requests(self, project: int) -> int:
        return int(self.redis.get(keys.rank_requested(project)) or 0)

    def save_queue(
        self,
        project: int,
        summary: dict[str, Any],
        order: Sequence[Sequence[Any]],
        stability: dict[str, Any] | None,
        covers: int,
    ) -> None:
        """Store a ranking: `summary` (version, strategy, reason, size...) and `order`, every task
        as (task, uncertainty, cluster) from first to last; `covers`: the `ranking_requests` count
        read before ranking started."""
        packed = np.array([tuple(e) for e in order], dtype=QUEUE_ENTRY).tobytes() if len(order) else b""
        n = len(order)
        pipe = self.redis.pipeline()
        pipe.set(keys.queue(project), _dumps({**summary, "size": n, "covers": covers, "generated_at": time.time()}))
        pipe.set(keys.queue_order(project), packed)
        if stability:
            pipe.rpush(keys.stability(project), _dumps(stability))
            pipe.ltrim(keys.stability(project), -keys.STABILITY_KEPT, -1)
        pipe.execute()

    def queue(self, project: int) -> dict[str, Any] | None:
        """The summary of the latest ranking (None before the first)."""
        raw = self.redis.get(keys.queue(project))
        return json.loads(raw) if raw else None

    def queue_entries(self, project: int, start: int, count: int) -> list[dict[str, Any]]:
        """Ranked tasks `start` to `start + count` (fewer at the end) of the latest ranking, with
        their position and LS `score` (position / size: ascending = served first)."""
        size = QUEUE_ENTRY.itemsize
        pipe = self.redis.pipeline(transaction=True)
        pipe.strlen(keys.queue_order(project))
        pipe.getrange(keys.queue_order(project), start * size, (start + count) * size - 1)
        total, raw = pipe.execute()
        n = total // size
        rows = np.frombuffer(raw[: len(raw) // size * size], dtype=QUEUE_ENTRY)
        return [
            {
                "task": int(task),
                "position": start + i,
                "score": queue_score(start + i, n),
                "uncertainty": round(float(uncertainty), 6),
                "cluster": int(cluster),
            }
            for i, (task, uncertainty, cluster) in enumerate(rows.tolist())
        ]

    def next_unlabeled(self, project: int, count: int, skip: Container[int] = ()) -> list[dict[str, Any]]:
        """The first `count` tasks of the stored ranking (`queue_entries`) that have no stored
        annotation and are not in `skip`, reading the ranking on in growing chunks as far as needed."""
        size = int((self.queue(project) or {}).get("size", 0))
        chosen: list[dict[str, Any]] = []
        start, chunk = 0, 2 * count + 50
        while len(chosen) < count and start < size:
            entries = self.queue_entries(project, start, chunk)
            if not entries:
                break
            candidates = [e for e in entries if e["task"] not in skip]
            done = self.annotated(project, [e["task"] for e in candidates])
            chosen += [e for e in candidates if e["task"] not in done]
            start, chunk = start + len(entries), min(chunk * 4, 20_000)
        return chosen[:count]

    def stability(self, project: int) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.redis.lrange(keys.stability(project), 0, -1)]

    # -- suspected label errors (see `mislabels`) ------------------------------------------------
    def save_mislabels(self, project: int, found: dict[str, Any]) -> None:
        self.redis.set(keys.mislabels(project), _dumps({**found, "generated_at": time.time()}))

    def mislabels(self, project: int) -> dict[str, Any] | None:
        raw = self.redis.get(keys.mislabels(project))
        return json.loads(raw) if raw else None

    def ask_reviews(self, project: int, asked: Mapping[int, Mapping[str, Any]]) -> None:
        """Disputed tasks to ask LS about (task -> overlap wanted and certainty), unless already asked."""
        pipe = self.redis.pipeline(transaction=False)
        for task, entry in asked.items():
            pipe.hsetnx(keys.reviews(project), str(task), _dumps({**entry, "version": None}))
        pipe.execute()

    def reviews(self, project: int) -> dict[int, dict[str, Any]]:
        return {int(t): json.loads(v) for t, v in self.redis.hgetall(keys.reviews(project)).items()}

    def mark_reviews(self, project: int, version: str, tasks: Iterable[int]) -> None:
        """`tasks` now carry a prediction of `version` in LS (their overlap raised)."""
        found = self.reviews(project)
        updates = {str(t): _dumps({**found[t], "version": version}) for t in tasks if t in found}
        if updates:
            self.redis.hset(keys.reviews(project), mapping=updates)

    def forget_reviews(self, project: int, tasks: Iterable[int]) -> None:
        ids = [str(t) for t in tasks]
        if ids:
            self.redis.hdel(keys.reviews(project), *ids)

    def swap_disputes(self, project: int, disputed: set[tuple[int, str]]) -> tuple[set[tuple[int, str]], set[tuple[int, str]]]:
        """Store the disputed (task, control) pairs; return those new since the last call and those
        no longer disputed."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.smembers(keys.disputes(project))
        pipe.delete(keys.disputes(project))
        if disputed:
            pipe.sadd(keys.disputes(project), *(f"{task}:{control}" for task, control in disputed))
        before = {(int(task), control) for task, _, control in (m.decode().partition(":") for m in pipe.execute()[0])}
        return disputed - before, before - disputed

    # -- project metadata ----------------------------------------------------------------------
    def set_meta(self, project: int, **values: Any) -> None:
        mapping = {k: (v if isinstance(v, str) else _dumps(v)) for k, v in values.items() if v is not None}
        if mapping:
            self.redis.hset(keys.meta(project), mapping=mapping)
            self.redis.sadd(keys.PROJECTS, int(project))

    def label_config(self, project: int) -> LabelConfig | None:
        """The project's stored label config, parsed; None while none usable is stored (every job
        that needs it gives up on None)."""
        try:
            return parse_label_config(self.meta(project).get("label_config", ""))
        except LabelConfigError:
            return None

    def input_keys(self, project: int, label_config: str | None = None) -> tuple[str, ...] | None:
        """The data keys the project's config reads (None when no config is known yet)."""
        if label_config is None:
            label_config = self.meta(project).get("label_config", "")
        try:
            return parse_label_config(label_config).data_keys or None
        except LabelConfigError:
            return None

    def meta(self, project: int) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.redis.hgetall(keys.meta(project)).items()}

    def known(self, project: int) -> bool:
        """Has the backend ever heard of this project (a /setup, a config, tasks or a ranking)?"""
        pipe = self.redis.pipeline(transaction=False)
        pipe.sismember(keys.PROJECTS, int(project))
        pipe.exists(keys.pool(project), keys.queue(project), keys.annotations(project))
        member, found = pipe.execute()
        return bool(member) or bool(found)

    def projects(self) -> list[int]:
        return sorted(int(p) for p in self.redis.smembers(keys.PROJECTS))


def queue_score(position: int, size: int) -> float:
    """A ranked task's LS `score`: its place in the queue, 0 first and below 1 for the last, so
    that LS's uncertainty sampling (lowest score first) serves our order."""
    return round(position / size, 6)


def texts_of(task: Mapping[str, Any], data_keys: tuple[str, ...] | None, limit: int) -> dict[str, str]:
    """The task's input fields training needs (all short string fields when no config is known)."""
    data = task.get("data")
    if not isinstance(data, dict):
        return {}
    picked = {}
    for name, value in data.items():
        if data_keys is not None and name not in data_keys:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            picked[str(name)[:200]] = value[:limit]
        if len(picked) >= MAX_DATA_FIELDS:
            break
    return picked
