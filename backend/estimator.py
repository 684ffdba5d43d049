"""Text classifiers for one Choices control, in scikit-learn's `fit` / `predict_proba` shape.

Artifacts hold only plain scikit-learn objects, lists and dicts, so `skops.io` loads them with no
trusted types beyond its safe defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import SGDClassifier
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline

MIN_CLASSES = 2


N_FEATURES = 2**18
# words of one character or more, runs of ! and ?, and simple emoticons: sentiment lives there
TOKEN_PATTERN = r"(?u)\b\w+\b|[!?]+|[:;=]-?[()dDpP/\\]"


def build_pipeline(multiple: bool = False, alpha: float = 1e-5) -> Pipeline:
    """Hashed 1-2-grams of words, `!`/`?` runs and emoticons, TF-IDF weighted, + logistic
    regression fitted by SGD (0.760 accuracy on the full tweets pool, about 1 s to fit it).

    Hashing keeps no vocabulary, so artifacts stay a few MB and save or load in milliseconds
    (a fitted TfidfVectorizer's vocabulary made skops artifacts of 100 MB at 10k tweets).
    """
    classifier: Any = SGDClassifier(loss="log_loss", alpha=alpha, max_iter=50, tol=1e-4, random_state=0)
    if multiple:
        classifier = OneVsRestClassifier(classifier)
    return Pipeline(
        [
            (
                "hashing",
                HashingVectorizer(
                    ngram_range=(1, 2),
                    n_features=N_FEATURES,
                    token_pattern=TOKEN_PATTERN,
                    alternate_sign=False,
                    norm=None,
                    dtype=np.float32,
                ),
            ),
            ("tfidf", TfidfTransformer(sublinear_tf=True)),
            ("classifier", classifier),
        ]
    )


@dataclass
class ControlModel:
    """A fitted model for one control, returning probabilities over `labels` in that order."""

    labels: list[str]
    multiple: bool
    pipeline: Pipeline | None = None
    columns: list[str] = field(default_factory=list)  # labels the pipeline models, in its output order
    constant: dict[str, float] = field(default_factory=dict)  # multi-label: labels always on / off

    @classmethod
    def fit(
        cls,
        texts: Sequence[str] | None,
        targets: Sequence[Sequence[str]],
        labels: Sequence[str],
        multiple: bool,
        alpha: float = 1e-5,
        features: Any = None,
    ) -> "ControlModel | None":
        """Fit on texts (or their pre-hashed `features`, see `hash_texts`) and their label lists;
        None when the data cannot support a model."""
        labels = list(labels)
        if multiple:
            matrix = np.array([[label in set(t) for label in labels] for t in targets], dtype=int)
            if len(targets) < MIN_CLASSES:
                return None
            varying = [i for i in range(len(labels)) if 0 < matrix[:, i].sum() < len(targets)]
            constant = {labels[i]: float(matrix[0, i]) for i in range(len(labels)) if i not in varying}
            if not varying:
                return None
            pipeline = build_pipeline(multiple=True, alpha=alpha)
            _fit(pipeline, texts, features, matrix[:, varying])
            return cls(labels, True, pipeline, [labels[i] for i in varying], constant)
        y = [t[0] for t in targets]
        present = sorted(set(y))
        if len(present) < MIN_CLASSES:
            return None
        pipeline = build_pipeline(multiple=False, alpha=alpha)
        _fit(pipeline, texts, features, y)
        return cls(labels, False, pipeline, [str(c) for c in pipeline.classes_])

    def predict_proba(self, texts: Sequence[str] | None = None, features: Any = None) -> np.ndarray:
        """Probabilities, one row per text, one column per label in `labels` (0 for unseen labels)."""
        n = features.shape[0] if features is not None else len(texts or [])
        out = np.zeros((n, len(self.labels)), dtype=float)
        if not n:
            return out
        index = {label: i for i, label in enumerate(self.labels)}
        if self.pipeline is not None:
            if features is not None:
                proba = np.asarray(self.pipeline[1:].predict_proba(features), dtype=float)
            else:
                proba = np.asarray(self.pipeline.predict_proba(list(texts or [])), dtype=float)
            for j, label in enumerate(self.columns):
                if label in index:
                    out[:, index[label]] = proba[:, j]
        for label, value in self.constant.items():
            if label in index:
                out[:, index[label]] = value
        return out

    def to_artifact(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "multiple": self.multiple,
            "pipeline": self.pipeline,
            "columns": list(self.columns),
            "constant": {k: float(v) for k, v in self.constant.items()},
        }

    @classmethod
    def from_artifact(cls, data: dict[str, Any]) -> "ControlModel":
        return cls(
            labels=[str(x) for x in data["labels"]],
            multiple=bool(data["multiple"]),
            pipeline=data["pipeline"],
            columns=[str(x) for x in data["columns"]],
            constant={str(k): float(v) for k, v in data["constant"].items()},
        )


def hash_texts(texts: Sequence[str]) -> Any:
    """The stateless first step of `build_pipeline`, for callers that reuse features across fits."""
    return build_pipeline()[0].transform(list(texts))


def _fit(pipeline: Pipeline, texts: Sequence[str] | None, features: Any, y: Any) -> None:
    if features is not None:
        pipeline[1:].fit(features, y)  # the hashing step is stateless: nothing to fit
    else:
        pipeline.fit(list(texts or []), y)


@dataclass
class ModelBundle:
    """The models of one project version: one per control, keyed by the control's `from_name`."""

    controls: dict[str, ControlModel]

    def to_artifact(self) -> dict[str, Any]:
        return {"format": 1, "controls": {name: model.to_artifact() for name, model in self.controls.items()}}

    @classmethod
    def from_artifact(cls, data: Any) -> "ModelBundle":
        if not isinstance(data, dict) or data.get("format") != 1 or not isinstance(data.get("controls"), dict):
            raise ValueError("artifact has an unknown layout")
        return cls({str(k): ControlModel.from_artifact(v) for k, v in data["controls"].items()})


def choose(proba: np.ndarray, labels: Sequence[str], multiple: bool, threshold: float) -> list[list[str]]:
    """The labels predicted for each row: the argmax, or every label at or above `threshold`."""
    if proba.size == 0:
        return [[] for _ in range(proba.shape[0])]
    if multiple:
        return [[labels[j] for j in np.flatnonzero(row >= threshold)] for row in proba]
    return [[labels[j]] for j in proba.argmax(axis=1)]


def restrict(proba: np.ndarray, model_labels: Sequence[str], allowed: Sequence[str], multiple: bool) -> np.ndarray:
    """Columns for the labels of the config in use (a label the model never saw gets 0).

    Single-choice rows are renormalised so a label removed from the config cannot be predicted.
    """
    index = {label: i for i, label in enumerate(model_labels)}
    out = np.zeros((proba.shape[0], len(allowed)), dtype=float)
    for j, label in enumerate(allowed):
        if label in index:
            out[:, j] = proba[:, index[label]]
    if not multiple and out.size:
        total = out.sum(axis=1, keepdims=True)
        uniform = np.full_like(out, 1.0 / out.shape[1])
        out = np.where(total > 0, out / np.where(total > 0, total, 1.0), uniform)
    return np.clip(out, 0.0, 1.0)
