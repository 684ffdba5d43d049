"""Rank a project's unlabeled tasks by what they would teach the model: the queue.

Cold start (no model, or the cold-start rule not yet met): cluster round-robin over the pool's
features. Warm: the project's strategy over the served model's probabilities, several controls
combined. Either way the first `batch_size` tasks skip near-duplicates, every task gets a k-means
`cluster`, and the LS `score` is the task's position (ascending = served first).

Only cold-start predictions carry `cluster` into LS: LS's uncertainty sampling first serves the
annotator's least-covered cluster, which is the diversity we want at cold start but overrides
the uncertainty order afterwards (observed on LS 1.23.2: a lower-ranked task was served).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfTransformer

from . import strategy as strategies
from .estimator import ModelBundle, restrict
from .hashing import BLOCKS, hash_texts, word_counts
from .labelconfig import LabelConfig
from .policy import Policy


class Entry(NamedTuple):
    """One task's place in the queue (a tuple: a 100k-task queue builds 100k of them)."""

    task: int
    position: int
    score: float
    uncertainty: float
    cluster: int


@dataclass(frozen=True)
class Queue:
    version: str
    strategy: str
    reason: str
    entries: list[Entry]
    seconds: float

    def to_json(self, limit: int | None = None) -> dict[str, Any]:
        return {
            "version": self.version,
            "strategy": self.strategy,
            "reason": self.reason,
            "size": len(self.entries),
            "seconds": round(self.seconds, 4),
            "tasks": [e._asdict() for e in self.entries[:limit]],
        }


def features(texts: Sequence[str], counts: Any = None):
    """Unsupervised TF-IDF over the pool's hashed word 1-2-grams (for clusters and near-duplicates);
    `counts`: those word counts when the caller has hashed the texts already."""
    return TfidfTransformer(sublinear_tf=True).fit_transform(word_counts(texts) if counts is None else counts)


def task_text(config: LabelConfig, data: dict[str, Any], limit: int) -> str:
    parts = [c.text_of(data, limit) for c in config.controls]
    return "\n".join(p for p in parts if p)


def uncertainties(
    bundle: ModelBundle, config: LabelConfig, tasks: Sequence[dict[str, Any]], policy: Policy, limit: int,
    hashed: tuple[list[str], Any] | None = None,
) -> np.ndarray:
    """Combined uncertainty per task; a control without text or model contributes 0. `hashed`: texts
    with their `hash_texts` features, reused by a control that reads exactly those texts."""
    per_control = []
    for control in config.controls:
        model = bundle.controls.get(control.from_name)
        values = np.zeros(len(tasks))
        if model is not None:
            found = [control.text_of(t.get("data") or {}, limit) for t in tasks]
            rows = [i for i, text in enumerate(found) if text is not None]
            if rows:
                texts = [found[i] for i in rows]
                known = hashed is not None and texts == hashed[0]
                proba = model.predict_proba(features=hashed[1] if known else hash_texts(texts))  # type: ignore[index]
                proba = restrict(proba, model.labels, control.labels, control.multiple)
                values[rows] = strategies.uncertainty(proba, policy.strategy if policy.strategy in strategies.STRATEGIES else "margin", control.multiple)
        per_control.append(values)
    return strategies.combine(per_control)


def rank(
    tasks: Sequence[dict[str, Any]],
    config: LabelConfig,
    policy: Policy,
    bundle: ModelBundle | None,
    version: str,
    warm: bool,
    limit: int = 20_000,
    seed: int = 0,
) -> Queue:
    """The queue over `tasks` (each `{"id", "data"}`)."""
    started = time.perf_counter()
    texts_of = [task_text(config, t.get("data") or {}, limit) for t in tasks]
    tasks = [t for t, text in zip(tasks, texts_of) if text]
    texts = [text for text in texts_of if text]
    if not tasks:
        return Queue(version, policy.strategy, "no unlabeled tasks with text", [], time.perf_counter() - started)
    scored = bundle is not None and warm and policy.strategy != "random"
    hashed = hash_texts(texts) if scored else None  # the model's features; their word block serves clustering too
    matrix = features(texts, hashed[:, BLOCKS[0]] if hashed is not None else None)
    cluster_ids = strategies.clusters(matrix, policy.clusters, seed)
    if bundle is None or not warm:
        values = strategies.diversity(cluster_ids, seed)
        name = "diversity"
        reason = (f"cold start: cluster round-robin until every class has {policy.cold_start_per_class} labels "
                  f"and {policy.cold_start_total} tasks are labeled")
    elif policy.strategy == "random":
        values = np.random.default_rng(seed).random(len(tasks))
        name, reason = "random", "random order (control)"
    else:
        values = uncertainties(bundle, config, tasks, policy, limit, (texts, hashed))
        name = policy.strategy if policy.strategy in strategies.STRATEGIES else "margin"
        reason = f"{name} uncertainty of {version}"
    first = strategies.select_batch(values, matrix, policy.batch_size)
    chosen = set(first)
    rest = [i for i in strategies.order(values, seed).tolist() if i not in chosen]
    sequence = first + rest
    n = len(sequence)
    entries = [
        Entry(int(tasks[i]["id"]), position, round(position / n, 6), round(value, 6), cluster)
        for position, (i, value, cluster) in enumerate(zip(sequence, values[sequence].tolist(), cluster_ids[sequence].tolist()))
    ]
    return Queue(version, name, reason, entries, time.perf_counter() - started)
