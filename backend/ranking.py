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
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfTransformer

from . import strategy as strategies
from .estimator import ModelBundle, restrict, word_counts
from .labelconfig import LabelConfig
from .policy import Policy


@dataclass(frozen=True)
class Entry:
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
            "tasks": [asdict(e) for e in self.entries[:limit]],
        }


def features(texts: Sequence[str]):
    """Unsupervised TF-IDF over the pool's hashed word 1-2-grams (for clusters and near-duplicates)."""
    return TfidfTransformer(sublinear_tf=True).fit_transform(word_counts(texts))


def task_text(config: LabelConfig, data: dict[str, Any], limit: int) -> str:
    parts = [c.text_of(data, limit) for c in config.controls]
    return "\n".join(p for p in parts if p)


def uncertainties(bundle: ModelBundle, config: LabelConfig, tasks: Sequence[dict[str, Any]], policy: Policy, limit: int) -> np.ndarray:
    """Combined uncertainty per task; a control without text or model contributes 0."""
    per_control = []
    for control in config.controls:
        model = bundle.controls.get(control.from_name)
        values = np.zeros(len(tasks))
        if model is not None:
            rows = [i for i, t in enumerate(tasks) if control.text_of(t.get("data") or {}, limit) is not None]
            if rows:
                texts = [control.text_of(tasks[i]["data"], limit) for i in rows]
                proba = restrict(model.predict_proba(texts), model.labels, control.labels, control.multiple)
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
    tasks = [t for t in tasks if task_text(config, t.get("data") or {}, limit)]
    if not tasks:
        return Queue(version, policy.strategy, "no unlabeled tasks with text", [], time.perf_counter() - started)
    matrix = features([task_text(config, t["data"], limit) for t in tasks])
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
        values = uncertainties(bundle, config, tasks, policy, limit)
        name = policy.strategy if policy.strategy in strategies.STRATEGIES else "margin"
        reason = f"{name} uncertainty of {version}"
    first = strategies.select_batch(values, matrix, policy.batch_size)
    chosen = set(first)
    rest = [int(i) for i in strategies.order(values, seed) if int(i) not in chosen]
    sequence = first + rest
    n = len(sequence)
    entries = [
        Entry(int(tasks[i]["id"]), position, round(position / n, 6), round(float(values[i]), 6), int(cluster_ids[i]))
        for position, i in enumerate(sequence)
    ]
    return Queue(version, name, reason, entries, time.perf_counter() - started)
