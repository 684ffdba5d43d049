"""The model-family seam: what every kind of model implements for the controls it serves.

A family is a stateless object that knows one kind of model: which controls of a label config it
claims, how to fit a model for one control from texts and targets (with per-example weights and,
where it has them, committee members), how a fitted model predicts LS result regions and ranks
tasks, how predictions compare with targets for the gate, and how a model becomes an artifact of
plain, skops-safe values (no pickle) and back. The train job, the gate, the registry, serving,
ranking and monitoring only talk to this interface, so a new family plugs in without changing them.

A *target* is what one annotation says about one control, in the family's own form: for Choices
the sorted list of chosen labels. Targets of a family must be JSON-serialisable and comparable
with `==` (live accuracy compares the served prediction's target with the first annotation's);
the empty list is the target of a prediction of nothing.

`ChoicesFamily` does everything but fitting and scoring for families that classify a `Choices`
control from its text: a new classifier implements `fit`, `predict_proba`, `dump` and `load`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .. import strategy as strategies
from ..labelconfig import ChoicesControl
from ..rules import RulePrior


@dataclass(frozen=True)
class Prediction:
    """One task's prediction for one control: LS result regions (without `id`, which `Model.predict`
    adds in place: each prediction's regions are dicts of its own), the task-level
    score in [0, 1] (higher = surer; drift monitoring reads it as the model's confidence), the
    target it amounts to, and the share of the text the model never saw in training (drift; 0
    when the family cannot tell)."""

    regions: list[dict[str, Any]]
    score: float
    target: Any
    novelty: float = 0.0


@dataclass(frozen=True)
class Outcomes:
    """How predictions compare with targets, per example and label (examples x labels): true
    positives, false positives, false negatives, each example's accuracy, and the labels macro-F1
    averages over. The gate's metrics and its paired bootstrap are computed from these alone."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    correct: np.ndarray
    counted: np.ndarray
    labels: tuple[str, ...] = ()  # when given, `metrics` adds each label's F1 (`per_label`)

    @property
    def n(self) -> int:
        return int(self.correct.shape[0])

    def metrics(self, weights: np.ndarray | None = None) -> dict[str, Any]:
        """Macro-F1, micro-F1 and accuracy, or with `weights` (resamples x examples) one value per resample."""
        if weights is None:
            tp, fp, fn = self.tp.sum(0), self.fp.sum(0), self.fn.sum(0)
            out = {
                "macro_f1": float(self._f1(tp, fp, fn)),
                "micro_f1": float(_f1_scores(tp.sum(), fp.sum(), fn.sum())),
                "accuracy": float(self.correct.mean()) if self.n else 0.0,
                "n": self.n,
            }
            if self.labels:
                per_label = _f1_scores(tp, fp, fn)
                out["per_label"] = {label: round(float(f), 4) for label, f, c in zip(self.labels, per_label, self.counted) if c}
            return out
        tp, fp, fn = weights @ self.tp, weights @ self.fp, weights @ self.fn
        return {
            "macro_f1": self._f1(tp, fp, fn),
            "micro_f1": _f1_scores(tp.sum(-1), fp.sum(-1), fn.sum(-1)),
            "accuracy": weights @ self.correct / max(self.n, 1),
        }

    def _f1(self, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> Any:
        f1 = _f1_scores(tp, fp, fn)
        if not self.counted.any():
            return np.zeros(f1.shape[:-1]) if f1.ndim > 1 else 0.0
        return f1[..., self.counted].mean(axis=-1)


def _f1_scores(tp: Any, fp: Any, fn: Any) -> np.ndarray:
    """F1 from counts, element by element (0 where there is nothing to count): per label, or of
    summed counts for micro-F1."""
    denominator = 2 * np.asarray(tp) + fp + fn
    return np.divide(2 * np.asarray(tp), denominator, out=np.zeros_like(denominator, dtype=float), where=denominator > 0)


class Family(ABC):
    """A kind of model for some controls of a label config (see the module doc)."""

    name: ClassVar[str]  # the family's name in artifacts and version records
    f1: ClassVar[str] = "macro_f1"  # what the gate metric `macro_f1` reads of its `Outcomes.metrics` (`judged_by`)

    @abstractmethod
    def claims(self, control: Any) -> bool:
        """Does this family serve `control` (a parsed control of a label config)?"""

    def target(self, control: Any, stored: Any) -> Any:
        """The target of what the store keeps of one annotation for `control`."""
        return stored

    def example(self, control: Any, stored: Any, data: Mapping[str, Any], max_chars: int) -> tuple[Any, str | None, str | None]:
        """A training example from one task's consensus for `control` and its data: the target,
        the text to train on, and why there is none (None when there is)."""
        target = self.target(control, stored)
        problem = self.problem(control, target)
        if problem:
            return None, None, problem
        text = control.text_of(data, max_chars)
        return (target, text, None) if text is not None else (None, None, "no text")

    def judged_by(self, metric: str) -> str:
        """The key of `Outcomes.metrics` the gate reads for the project's gate `metric`: the gate's
        F1 is each family's own (`f1`)."""
        return self.f1 if metric == "macro_f1" else metric

    @abstractmethod
    def problem(self, control: Any, target: Any) -> str | None:
        """Why a target cannot train `control` (None when it can)."""

    @abstractmethod
    def fit(
        self, control: Any, texts: Sequence[str], targets: Sequence[Any], weights: np.ndarray | None = None, committee: int = 0
    ) -> Any | None:
        """A fitted model for `control` (None when the targets cannot support one); `weights`: one
        per example (None: all 1); `committee`: members to fit for the committee strategies."""

    @abstractmethod
    def predict(self, model: Any, control: Any, texts: Sequence[str], threshold: float) -> list[Prediction]:
        """One prediction per text, each with region dicts of its own (the caller adds their `id`)."""

    def uncertainty(self, model: Any, control: Any, texts: Sequence[str], strategy: str, pool: Any = None) -> np.ndarray:
        """Per text, how much labeling it would teach (higher first); `strategy` is a name of
        `strategy.STRATEGIES` or, when `committee(model)` has members, of `COMMITTEE_STRATEGIES`.
        The default: one minus the prediction's score."""
        return 1.0 - np.array([p.score for p in self.predict(model, control, texts, 0.5)], dtype=float)

    def committee(self, model: Any) -> int:
        """How many committee members the model carries (0: none)."""
        return 0

    def label_proba(self, model: Any, control: Any, texts: Sequence[str], pool: Any = None) -> np.ndarray | None:
        """Per text, the probability of each of `control.labels` (what class-aware batches read);
        None for a family whose predictions are not per-label probabilities."""
        return None

    def with_prior(self, model: Any, prior: RulePrior) -> Any | None:
        """`model` with the labeling rules of `prior` mixed into its `label_proba` (and so into its
        predictions); None for a family that cannot take them. `training.choose_prior` asks only
        families whose `label_proba` gives probabilities."""
        return None

    @abstractmethod
    def outcomes(self, control: Any, targets: Sequence[Any], predicted: Sequence[Any]) -> Outcomes:
        """Predicted targets against true ones, for the gate."""

    @abstractmethod
    def baseline(self, control: Any, targets: Sequence[Any], n: int) -> list[Any]:
        """The trivial model's `n` predicted targets, learned from training `targets`."""

    @abstractmethod
    def dump(self, model: Any) -> dict[str, Any]:
        """The model as plain values (dicts, lists, strings, numbers, numpy arrays): no pickle."""

    @abstractmethod
    def load(self, data: dict[str, Any]) -> Any:
        """A model from `dump`'s values (ValueError when they do not fit together)."""


class ChoicesFamily(Family):
    """A classifier of `Choices` controls over their text. Targets are sorted label lists; a
    subclass implements `fit`, `predict_proba` (probabilities over `control.labels`, in order),
    `dump` and `load`, and gets predictions, ranking, drift figures and the gate from here."""

    def claims(self, control: Any) -> bool:
        return isinstance(control, ChoicesControl)

    def target(self, control: ChoicesControl, stored: Any) -> list[str]:
        return sorted(stored)

    def problem(self, control: ChoicesControl, target: Any) -> str | None:
        return control.problem(list(target))

    @abstractmethod
    def predict_proba(self, model: Any, control: ChoicesControl, texts: Sequence[str]) -> np.ndarray:
        """Probabilities, one row per text, one column per label of `control.labels` (in [0, 1];
        rows of a single-choice control sum to 1)."""

    def predict(self, model: Any, control: ChoicesControl, texts: Sequence[str], threshold: float) -> list[Prediction]:
        return self.predictions(control, self.predict_proba(model, control, texts), threshold)

    def predictions(
        self, control: ChoicesControl, proba: np.ndarray, threshold: float, novelty: Sequence[float] | None = None
    ) -> list[Prediction]:
        """Predictions from probabilities over `control.labels`: the argmax, or every label at or above
        `threshold` (multi-label); the score is the confidence (the least certain label's, multi-label)."""
        scores = confidence(proba, control.multiple).tolist()
        novelty = [0.0] * len(scores) if novelty is None else novelty
        out = []
        for score, new, picked in zip(scores, novelty, choose(proba, control.labels, control.multiple, threshold)):
            regions = [choices_region(control, picked, score)] if picked else []
            out.append(Prediction(regions, round(score, 6), sorted(picked), float(new)))
        return out

    def uncertainty(self, model: Any, control: ChoicesControl, texts: Sequence[str], strategy: str, pool: Any = None) -> np.ndarray:
        return strategies.uncertainty(self.label_proba(model, control, texts, pool), strategy, control.multiple)

    def label_proba(self, model: Any, control: ChoicesControl, texts: Sequence[str], pool: Any = None) -> np.ndarray:
        return self.predict_proba(model, control, texts)

    def outcomes(self, control: ChoicesControl, targets: Sequence[Any], predicted: Sequence[Any]) -> Outcomes:
        y, p = indicators(targets, control.labels), indicators(predicted, control.labels)
        correct = (y == p).mean(axis=1) if control.multiple else (y == p).all(axis=1).astype(float)
        counted = np.ones(len(control.labels), dtype=bool) if control.multiple else y.sum(axis=0) > 0
        return Outcomes(y * p, (1 - y) * p, y * (1 - p), correct, counted)

    def baseline(self, control: ChoicesControl, targets: Sequence[Any], n: int) -> list[Any]:
        """Always the most frequent label (single choice), or every label most targets have."""
        if control.multiple:
            counts = Counter(label for t in targets for label in t)
            frequent = [label for label in control.labels if counts[label] * 2 > len(targets)]
            return [frequent for _ in range(n)]
        top = Counter(t[0] for t in targets).most_common(1)
        return [[top[0][0]] if top else [] for _ in range(n)]


def choices_region(control: ChoicesControl, picked: Sequence[str], score: float) -> dict[str, Any]:
    """One LS result region choosing `picked` in `control` (the caller adds its `id`)."""
    return {
        "from_name": control.from_name,
        "to_name": control.to_name,
        "type": "choices",
        "value": {"choices": list(picked)},
        "score": round(score, 6),
    }


def indicators(label_lists: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    """Examples x labels, 1.0 where the example's list has the label."""
    return np.array([[label in set(t) for label in labels] for t in label_lists], dtype=float).reshape(len(label_lists), len(labels))


def confidence(proba: np.ndarray, multiple: bool) -> np.ndarray:
    """Per row: the top probability, or for multi-label the least certain label's max(p, 1-p)."""
    if proba.size == 0:
        return np.zeros(proba.shape[0])
    if multiple:
        return np.min(np.maximum(proba, 1 - proba), axis=1)
    return proba.max(axis=1)


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


@dataclass
class ModelBundle:
    """The models of one project version: one per control (keyed by `from_name`), each with the
    name of the family that fitted it (the built-in text-choices family unless said otherwise)."""

    controls: dict[str, Any]
    families: dict[str, str] = field(default_factory=dict)

    def family_of(self, from_name: str) -> str:
        return self.families.get(from_name, DEFAULT_FAMILY)


DEFAULT_FAMILY = "text-choices"
