"""The model class, in label-studio-ml's habit: `predict(tasks, context)` and `fit(event, data)`.

`predict` answers LS's `/predict` from the served version; `fit` trains and judges a challenger and
runs only inside a train job (never in a web request). Subclass and override either to change the
model while keeping the protocol, the queue and the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from . import drift
from .config import Settings
from .estimator import ModelBundle, choose, restrict
from .hashing import hash_texts
from .labelconfig import LabelConfig
from .serving import ModelCache
from .training import Snapshot, TrainResult, train_and_judge

UNTRAINED = "untrained"


@dataclass
class Observation:
    """What monitoring keeps of one prediction request: our choices per task and control (for live
    accuracy) and, for the first control, each text's confidence, length and unseen share (drift)."""

    version: str
    predicted: dict[int, dict[str, list[str]]] = field(default_factory=dict)
    traffic: list[tuple[float, float, float]] = field(default_factory=list)


class TextClassifier:
    """TF-IDF + logistic regression per Choices control, one model per project."""

    def __init__(self, settings: Settings, cache: ModelCache):
        self.settings = settings
        self.cache = cache

    def model_version(self, project: int) -> str:
        """The version LS should believe we serve: the project's current pointer, read from disk."""
        pointer = self.cache.pointer(project)
        return pointer.version if pointer else UNTRAINED

    def predict(
        self, tasks: Sequence[dict[str, Any]], context: Any = None, *, project: int, config: LabelConfig
    ) -> list[dict[str, Any] | list[Any]]:
        """One entry per task, in order: a prediction, or `[]` when the task cannot be predicted."""
        return self.predict_observed(tasks, project=project, config=config)[0]

    def predict_observed(
        self, tasks: Sequence[dict[str, Any]], *, project: int, config: LabelConfig
    ) -> tuple[list[dict[str, Any] | list[Any]], Observation | None]:
        """`predict`, plus what monitoring keeps of it (None while untrained)."""
        served = self.cache.get(project)
        limit = self.settings.max_text_chars
        datas = [_data(t) for t in tasks]
        texts_of = {c.from_name: [c.text_of(data, limit) for data in datas] for c in config.controls}
        if served is None:
            untrained = {"result": [], "score": 0.0, "model_version": UNTRAINED}
            readable = [any(texts[i] is not None for texts in texts_of.values()) for i in range(len(tasks))]
            return [dict(untrained) if r else [] for r in readable], None
        observation = Observation(served.version)
        regions: list[list[dict[str, Any]]] = [[] for _ in tasks]
        for control in config.controls:
            model = served.bundle.controls.get(control.from_name)
            if model is None:
                continue
            control_texts = texts_of[control.from_name]
            rows = [i for i, text in enumerate(control_texts) if text is not None]
            if not rows:
                continue
            texts = [control_texts[i] for i in rows]
            features = hash_texts(texts)
            proba = restrict(model.predict_proba(features=features), model.labels, control.labels, control.multiple)
            threshold = self.settings.multilabel_threshold
            confidences = np.asarray(drift.confidence(proba, control.multiple), dtype=float).tolist()
            if not observation.traffic:
                unseen = np.asarray(drift.unseen_share(model, features), dtype=float).tolist()
                observation.traffic = list(zip(confidences, map(float, map(len, texts)), unseen))
            from_name, to_name = control.from_name, control.to_name
            predicted = observation.predicted
            for i, confidence, picked in zip(rows, confidences, choose(proba, control.labels, control.multiple, threshold)):
                task_id = tasks[i].get("id")
                if isinstance(task_id, int) and not isinstance(task_id, bool):
                    predicted.setdefault(task_id, {})[from_name] = picked
                if picked:
                    regions[i].append(
                        {
                            "id": f"{from_name}-{i}",
                            "from_name": from_name,
                            "to_name": to_name,
                            "type": "choices",
                            "value": {"choices": picked},
                            "score": round(confidence, 6),
                        }
                    )
        version = served.version
        results = [
            {"result": r, "score": r[0]["score"] if len(r) == 1 else min(x["score"] for x in r), "model_version": version} if r else []
            for r in regions
        ]
        return results, observation

    def fit(
        self, event: str, data: Snapshot, champion: ModelBundle | None = None, *, metric: str | None = None,
        margin: float | None = None, committee: int = 0,
    ) -> TrainResult:
        """Train a challenger on a snapshot of the labels (with `committee` members per control)
        and judge it against the champion."""
        return train_and_judge(
            data,
            champion,
            metric=metric or self.settings.gate_metric,
            margin=self.settings.gate_margin if margin is None else margin,
            threshold=self.settings.multilabel_threshold,
            committee=committee,
        )


def _data(task: dict[str, Any]) -> dict[str, Any]:
    data = task.get("data")
    return data if isinstance(data, dict) else {}
