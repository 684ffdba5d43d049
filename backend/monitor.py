"""Live signals per project, kept in Redis: live accuracy and recent traffic for drift. This module
only measures; whether the figures call for a retrain is `trigger.check_quality`'s decision.

Live accuracy: every prediction we hand to LS (through `/predict` or the queue push) is remembered
per task (`Store.remember_predictions`); when the task's first annotation arrives, the human's choices are compared with ours,
once, and counted per version, control and class (lifetime) and in a rolling window. Of a Labels
control, agreement is an exact match of every span (as the gate's `accuracy`), each span type's
recall is counted per type, and the exact-boundary span F1 is kept beside (`span_f1`).
Traffic: `/predict` adds each task's confidence, length and unseen share (see `drift`) to a capped
list; drift compares it with the serving version's reference from its record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Any

from redis import Redis

from . import drift, spans
from .consensus import SUBMITTED
from .state import keys
from .state.registry import Registry
from .state.store import Store


def record_traffic(redis: Redis, project: int, version: str, observations: Iterable[tuple[float, float, float]]) -> None:
    """Confidence, length and unseen share of tasks just predicted by `version`."""
    rows = [json.dumps([version, round(c, 5), round(n, 1), round(u, 5)]) for c, n, u in observations]
    if rows:
        pipe = redis.pipeline()
        pipe.lpush(keys.traffic(project), *rows)
        pipe.ltrim(keys.traffic(project), 0, keys.TRAFFIC_KEPT - 1)
        pipe.execute()


def observe_annotations(
    redis: Redis, project: int, annotations: Sequence[tuple[int, Mapping[str, list[str]]]], span_controls: Container[str] = ()
) -> list[dict[str, Any]]:
    """Compare annotations (task, labels per control) with our predictions for their tasks, once
    per task, in two round trips whatever their number; returns the outcomes. `span_controls`: the
    Labels controls, whose submissions without a span say "no spans"."""
    if not annotations:
        return []
    predicted = keys.predicted(project)
    pipe = redis.pipeline(transaction=True)
    for task, _ in annotations:
        pipe.hget(predicted, str(task))
        pipe.hdel(predicted, str(task))
    replies = pipe.execute()
    outcomes = []
    counters = keys.live(project)
    pipe = redis.pipeline()
    for (task, labels), raw, removed in zip(annotations, replies[::2], replies[1::2]):
        if not raw or not removed:
            continue
        prediction = json.loads(raw)
        version, ours = prediction["v"], prediction["c"]
        for control in [*labels, *(c for c in span_controls if c not in labels and SUBMITTED in labels)]:
            human = labels.get(control, [])
            of_spans = control in span_controls
            if control not in ours or not (human or of_spans):
                continue
            agree = sorted(ours[control]) == sorted(human)
            outcome = {
                "at": time.time(),
                "task": task,
                "version": version,
                "control": control,
                "agree": agree,
                "human": sorted(human),
                "predicted": sorted(ours[control]),
            }
            outcomes.append(outcome)
            pipe.hincrby(counters, f"{version}|{control}|n", 1)
            pipe.hincrby(counters, f"{version}|{control}|agree", int(agree))
            if of_spans:
                outcome["span_f1"] = round(spans.f1(human, ours[control]), 4)
                pipe.hincrbyfloat(counters, f"{version}|{control}|f1", outcome["span_f1"])
            for item in human:
                label = spans.label_of(item) if of_spans else item
                pipe.hincrby(counters, f"{version}|{control}|class:{label}|n", 1)
                pipe.hincrby(counters, f"{version}|{control}|class:{label}|agree", int(item in ours[control]))
            pipe.lpush(keys.live_recent(project), json.dumps(outcome))
    if outcomes:
        pipe.ltrim(keys.live_recent(project), 0, keys.LIVE_WINDOW - 1)
        pipe.execute()
    return outcomes


def live_accuracy(redis: Redis, project: int) -> dict[str, Any]:
    """Lifetime agreement per version and control (with per-class recall) and the rolling window."""
    lifetime: dict[str, dict[str, dict[str, Any]]] = {}
    for field, value in redis.hgetall(keys.live(project)).items():
        version, control, *rest = field.decode().split("|")
        slot = lifetime.setdefault(version, {}).setdefault(control, {"n": 0, "agree": 0, "classes": {}})
        if len(rest) == 1:
            slot[rest[0]] = float(value) if rest[0] == "f1" else int(value)
        else:
            label = rest[0].removeprefix("class:")
            slot["classes"].setdefault(label, {"n": 0, "agree": 0})[rest[1]] = int(value)
    for controls in lifetime.values():
        for slot in controls.values():
            slot["accuracy"] = round(slot["agree"] / slot["n"], 4) if slot["n"] else None
            if "f1" in slot:
                slot["span_f1"] = round(slot.pop("f1") / slot["n"], 4) if slot["n"] else None
            for c in slot["classes"].values():
                c["recall"] = round(c["agree"] / c["n"], 4) if c["n"] else None
    recent = [json.loads(x) for x in redis.lrange(keys.live_recent(project), 0, keys.LIVE_WINDOW - 1)]
    window = {"n": len(recent), "accuracy": round(sum(o["agree"] for o in recent) / len(recent), 4) if recent else None}
    by_version: dict[str, list[bool]] = {}
    for o in recent:
        by_version.setdefault(o["version"], []).append(o["agree"])
    window["versions"] = {v: {"n": len(a), "accuracy": round(sum(a) / len(a), 4)} for v, a in by_version.items()}
    return {"lifetime": lifetime, "window": window, "recent": recent[:20]}


def offline_accuracy(record: Mapping[str, Any] | None) -> float | None:
    """The gate's estimate of a version's accuracy (mean over controls), if it had one."""
    figures = ((record or {}).get("evaluation") or {}).get("challenger") or {}
    values = [m["accuracy"] for m in figures.values() if m.get("n")]
    return round(sum(values) / len(values), 4) if values else None


def traffic(redis: Redis, project: int, version: str) -> dict[str, list[float]]:
    rows = [json.loads(x) for x in redis.lrange(keys.traffic(project), 0, keys.TRAFFIC_KEPT - 1)]
    mine = [r for r in rows if r[0] == version]
    return {"confidence": [r[1] for r in mine], "length": [r[2] for r in mine], "unseen": [r[3] for r in mine]}


def status(redis: Redis, registry: Registry, project: int) -> dict[str, Any]:
    """Live accuracy and drift of the serving version, with the gaps the triggers look at."""
    pointer = registry.pointer(project)
    record = registry.record(project, pointer.version) if pointer else None
    live = live_accuracy(redis, project)
    out: dict[str, Any] = {
        "version": pointer.version if pointer else None,
        "live": live,
        "offline_accuracy": None,
        "live_window": None,
        "live_gap": None,
        "drift": None,
    }
    if pointer is None:
        return out
    offline = offline_accuracy(record)
    window = live["window"]["versions"].get(pointer.version, {"n": 0, "accuracy": None})
    out["offline_accuracy"] = offline
    out["live_window"] = window
    out["live_gap"] = round(offline - window["accuracy"], 4) if offline is not None and window["accuracy"] is not None else None
    reference = (record or {}).get("reference")
    out["drift"] = drift.compare(reference, traffic(redis, project, pointer.version)) if reference else None
    return out


def observe_predictions(store: Store, project: int, observation: Any) -> None:
    """Keep what a `/predict` answered (see `model.Observation`): its predictions per task, for live
    accuracy, and its traffic, for drift."""
    store.remember_predictions(project, observation.version, observation.predicted)
    record_traffic(store.redis, project, observation.version, observation.traffic)
