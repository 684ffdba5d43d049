"""Text classifiers for one Choices control, in scikit-learn's `fit` / `predict_proba` shape.

Artifacts hold only plain scikit-learn objects, lists and dicts, so `skops.io` loads them with no
trusted types beyond its safe defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import SGDClassifier
from sklearn.multiclass import OneVsRestClassifier

from .hashing import BLOCKS, hash_texts

MIN_CLASSES = 2
FORMAT = 2  # artifact layout: 2 = TF-IDF weightings + a classifier over `hash_texts` features
ALPHA = 1e-5


def build_classifier(multiple: bool = False, alpha: float = ALPHA) -> Any:
    """Logistic regression fitted by SGD (one-vs-rest for multi-label)."""
    classifier: Any = SGDClassifier(loss="log_loss", alpha=alpha, max_iter=100, tol=1e-4, random_state=0)
    return OneVsRestClassifier(classifier) if multiple else classifier


def fit_weighting(features: sp.csr_matrix) -> np.ndarray:
    """Inverse document frequencies of every column of `hash_texts` features (scikit-learn's
    smoothed idf), fitted per block."""
    return np.concatenate(
        [TfidfTransformer(sublinear_tf=True).fit(features[:, block]).idf_ for block in BLOCKS]
    ).astype(np.float32)


def weigh(idf: np.ndarray, features: sp.csr_matrix) -> sp.csr_matrix:
    """Sublinear TF-IDF with each block (words, characters) scaled to unit length, so both weigh
    the same. The same arithmetic as `TfidfTransformer` per block, without slicing columns.

    This model scores 0.771 accuracy on the full tweets pool (word 1-2-grams alone: 0.760; the
    official example's pipeline: 0.757) and fits it in about 4 s. Hashing keeps no vocabulary, so
    artifacts stay a few MB (a fitted TfidfVectorizer made 100 MB artifacts at 10k tweets).
    """
    features = sp.csr_matrix(features, dtype=np.float32)  # the counts are read, never changed
    data = np.log(features.data)
    data += 1.0
    data *= idf[features.indices]
    cell = np.repeat(np.arange(0, 2 * features.shape[0], 2), np.diff(features.indptr))  # (row, block)
    cell += features.indices >= BLOCKS[1].start
    norms = np.sqrt(np.bincount(cell, weights=data * data, minlength=2 * features.shape[0]))
    np.divide(data, norms[cell], out=data, casting="same_kind")
    weighed = sp.csr_matrix((data, features.indices, features.indptr), shape=features.shape)
    weighed.has_sorted_indices = features.has_sorted_indices
    return weighed


def _with_fast_weights(classifier: Any) -> Any:
    """Store coefficients column-major: scikit-learn multiplies by `coef_.T`, which scipy copies
    (12 MB per call) unless it is contiguous."""
    for model in getattr(classifier, "estimators_", [classifier]):
        model.coef_ = np.asfortranarray(model.coef_)
    return classifier


@dataclass
class ControlModel:
    """A fitted model for one control, returning probabilities over `labels` in that order."""

    labels: list[str]
    multiple: bool
    idf: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    classifier: Any = None
    columns: list[str] = field(default_factory=list)  # labels the classifier models, in its output order
    constant: dict[str, float] = field(default_factory=dict)  # multi-label: labels always on / off

    @classmethod
    def fit(
        cls,
        texts: Sequence[str] | None,
        targets: Sequence[Sequence[str]],
        labels: Sequence[str],
        multiple: bool,
        alpha: float = ALPHA,
        features: Any = None,
    ) -> "ControlModel | None":
        """Fit on texts (or their `hash_texts` features) and their label lists; None when the
        data cannot support a model."""
        labels = list(labels)
        if multiple:
            matrix = np.array([[label in set(t) for label in labels] for t in targets], dtype=int)
            if len(targets) < MIN_CLASSES:
                return None
            varying = [i for i in range(len(labels)) if 0 < matrix[:, i].sum() < len(targets)]
            constant = {labels[i]: float(matrix[0, i]) for i in range(len(labels)) if i not in varying}
            if not varying:
                return None
            y: Any = matrix[:, varying]
            columns = [labels[i] for i in varying]
        else:
            y = [t[0] for t in targets]
            if len(set(y)) < MIN_CLASSES:
                return None
            constant, columns = {}, []
        features = features if features is not None else hash_texts(texts or [])
        idf = fit_weighting(features)
        classifier = _with_fast_weights(build_classifier(multiple, alpha).fit(weigh(idf, features), y))
        if not multiple:
            columns = [str(c) for c in classifier.classes_]
        return cls(labels, multiple, idf, classifier, columns, constant)

    def predict_proba(self, texts: Sequence[str] | None = None, features: Any = None) -> np.ndarray:
        """Probabilities, one row per text, one column per label in `labels` (0 for unseen labels)."""
        n = features.shape[0] if features is not None else len(texts or [])
        out = np.zeros((n, len(self.labels)), dtype=float)
        if not n:
            return out
        index = {label: i for i, label in enumerate(self.labels)}
        if self.classifier is not None:
            features = features if features is not None else hash_texts(texts or [])
            proba = np.asarray(self.classifier.predict_proba(weigh(self.idf, features)), dtype=float)
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
            "idf": self.idf,
            "classifier": self.classifier,
            "columns": list(self.columns),
            "constant": {k: float(v) for k, v in self.constant.items()},
        }

    @classmethod
    def from_artifact(cls, data: dict[str, Any]) -> "ControlModel":
        return cls(
            labels=[str(x) for x in data["labels"]],
            multiple=bool(data["multiple"]),
            idf=np.asarray(data["idf"], dtype=np.float32),
            classifier=_with_fast_weights(data["classifier"]),
            columns=[str(x) for x in data["columns"]],
            constant={str(k): float(v) for k, v in data["constant"].items()},
        )


@dataclass
class ModelBundle:
    """The models of one project version: one per control, keyed by the control's `from_name`."""

    controls: dict[str, ControlModel]

    def to_artifact(self) -> dict[str, Any]:
        return {"format": FORMAT, "controls": {name: model.to_artifact() for name, model in self.controls.items()}}

    @classmethod
    def from_artifact(cls, data: Any) -> "ModelBundle":
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("controls"), dict):
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
