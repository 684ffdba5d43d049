"""The model class, in label-studio-ml's habit: `predict(tasks, context)` and `fit(event, data)`.

`predict` answers LS's `/predict` from the served version; `fit` trains and judges a challenger and
runs only inside a train job (never in a web request). Subclass and override either to change the
model while keeping the protocol, the queue and the registry.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .config import Settings
from .estimator import ModelBundle, choose, restrict
from .labelconfig import LabelConfig
from .serving import ModelCache
from .training import Snapshot, TrainResult, train_and_judge

UNTRAINED = "untrained"


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
        served = self.cache.get(project)
        limit = self.settings.max_text_chars
        texts_of = [{c.from_name: c.text_of(_data(t), limit) for c in config.controls} for t in tasks]
        if served is None:
            return [
                {"result": [], "score": 0.0, "model_version": UNTRAINED} if any(x is not None for x in texts.values()) else []
                for texts in texts_of
            ]
        regions: list[list[dict[str, Any]]] = [[] for _ in tasks]
        for control in config.controls:
            model = served.bundle.controls.get(control.from_name)
            if model is None:
                continue
            rows = [i for i, texts in enumerate(texts_of) if texts[control.from_name] is not None]
            if not rows:
                continue
            proba = restrict(
                model.predict_proba([texts_of[i][control.from_name] for i in rows]),
                model.labels,
                control.labels,
                control.multiple,
            )
            threshold = self.settings.multilabel_threshold
            for i, row, picked in zip(rows, proba, choose(proba, control.labels, control.multiple, threshold)):
                if not picked:
                    continue
                confidence = float(np.min(np.maximum(row, 1 - row))) if control.multiple else float(row.max())
                regions[i].append(
                    {
                        "id": f"{control.from_name}-{i}",
                        "from_name": control.from_name,
                        "to_name": control.to_name,
                        "type": "choices",
                        "value": {"choices": picked},
                        "score": round(confidence, 6),
                    }
                )
        return [
            {"result": r, "score": min(x["score"] for x in r), "model_version": served.version} if r else []
            for r in regions
        ]

    def fit(
        self, event: str, data: Snapshot, champion: ModelBundle | None = None, *, metric: str | None = None, margin: float | None = None
    ) -> TrainResult:
        """Train a challenger on a snapshot of the labels and judge it against the champion."""
        return train_and_judge(
            data,
            champion,
            metric=metric or self.settings.gate_metric,
            margin=self.settings.gate_margin if margin is None else margin,
            threshold=self.settings.multilabel_threshold,
        )


def _data(task: dict[str, Any]) -> dict[str, Any]:
    data = task.get("data")
    return data if isinstance(data, dict) else {}
