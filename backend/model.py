"""The model class, in label-studio-ml's habit: `predict(tasks, context)` and `fit(event, data)`.

`predict` answers LS's `/predict` from the served version; `fit` trains and judges a challenger and
runs only inside a train job (never in a web request). Subclass and override either to change the
model while keeping the protocol, the queue and the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

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
        texts_of = [{c.from_name: c.text_of(_data(t), limit) for c in config.controls} for t in tasks]
        if served is None:
            untrained = {"result": [], "score": 0.0, "model_version": UNTRAINED}
            return [dict(untrained) if any(x is not None for x in texts.values()) else [] for texts in texts_of], None
        observation = Observation(served.version)
        regions: list[list[dict[str, Any]]] = [[] for _ in tasks]
        for control in config.controls:
            model = served.bundle.controls.get(control.from_name)
            if model is None:
                continue
            rows = [i for i, texts in enumerate(texts_of) if texts[control.from_name] is not None]
            if not rows:
                continue
            texts = [texts_of[i][control.from_name] for i in rows]
            features = hash_texts(texts)
            proba = restrict(model.predict_proba(features=features), model.labels, control.labels, control.multiple)
            threshold = self.settings.multilabel_threshold
            confidences = drift.confidence(proba, control.multiple)
            if not observation.traffic:
                unseen = drift.unseen_share(model, features)
                observation.traffic = [(float(c), float(len(t)), float(u)) for c, t, u in zip(confidences, texts, unseen)]
            for i, confidence, picked in zip(rows, confidences, choose(proba, control.labels, control.multiple, threshold)):
                task_id = tasks[i].get("id")
                if isinstance(task_id, int) and not isinstance(task_id, bool):
                    observation.predicted.setdefault(task_id, {})[control.from_name] = picked
                if not picked:
                    continue
                regions[i].append(
                    {
                        "id": f"{control.from_name}-{i}",
                        "from_name": control.from_name,
                        "to_name": control.to_name,
                        "type": "choices",
                        "value": {"choices": picked},
                        "score": round(float(confidence), 6),
                    }
                )
        results = [
            {"result": r, "score": min(x["score"] for x in r), "model_version": served.version} if r else []
            for r in regions
        ]
        return results, observation

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
