"""Turn a snapshot of stored labels into a challenger, judge it against the champion, and decide.

Pure functions over data and models: no Redis, no HTTP, no files. The train job wires them to the
store and the registry.

Evaluation data: a task belongs to the held-out set when a stable hash of (project, task) falls
below `holdout_rate(n)`; that rate only shrinks as a project grows, so today's held-out tasks were
held out from every earlier model too and champion and challenger are judged on data neither saw.
Every model, served or judged, trains on the other tasks only. While a control has fewer than
`MIN_HOLDOUT` held-out examples, the gate instead cross-validates the challenger on its training
tasks and promotes it when it beats a trivial baseline (too few examples to tell two models apart).

The gate: a challenger is promoted unless its metric is more than `margin` below the champion's
and a paired bootstrap over the held-out tasks says so with 95% confidence; a difference the
held-out set cannot resolve is not a reason to keep serving a model trained on fewer labels.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from . import drift, faults
from .estimator import ControlModel, ModelBundle, choose, restrict
from .hashing import hash_texts
from .labelconfig import ChoicesControl, LabelConfig
from .store import LabeledTask

MIN_HOLDOUT = 200
MAX_HOLDOUT = 1000
HOLDOUT_FRACTION = 0.2
MIN_REFERENCE = 20  # held-out texts needed for an honest drift reference (else the training texts)
METRICS = ("macro_f1", "accuracy")
BOOTSTRAP = 300
CONFIDENCE = 0.95  # a challenger is rejected only when it is worse with at least this confidence


@dataclass
class ControlData:
    """Training examples of one control."""

    control: ChoicesControl
    tasks: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    targets: list[list[str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return dict(Counter(label for target in self.targets for label in target))


@dataclass
class Snapshot:
    """Everything a train job trains on, with a fingerprint that identifies the data."""

    project: int
    controls: dict[str, ControlData]
    set_aside: dict[str, int]
    fingerprint: str
    watermark: int

    @property
    def size(self) -> int:
        return len({t for data in self.controls.values() for t in data.tasks})


def build_snapshot(
    project: int,
    tasks: Sequence[LabeledTask],
    config: LabelConfig,
    watermark: int,
    max_chars: int,
    quarantined: Mapping[int, str] | None = None,
) -> Snapshot:
    """Keep the labels valid under the current config; count the others as set aside, and the
    quarantined tasks (task -> `example_digest`) as long as they are unchanged."""
    controls = {c.from_name: ControlData(c) for c in config.controls}
    set_aside: Counter[str] = Counter()
    digest = hashlib.sha256(config.digest.encode())
    for task in tasks:
        if quarantined and quarantined.get(task.task) == example_digest(task):
            set_aside["quarantined"] += len(task.labels)
            continue
        for from_name, choices in task.labels.items():
            data = controls.get(from_name)
            if data is None:
                set_aside["control not in config"] += 1
                continue
            problem = data.control.problem(choices)
            if problem:
                set_aside[problem] += 1
                continue
            text = data.control.text_of(task.data, max_chars)
            if text is None:
                set_aside["no text"] += 1
                continue
            data.tasks.append(task.task)
            data.texts.append(text)
            data.targets.append(sorted(choices))
            digest.update(f"{from_name}\x1f{task.task}\x1f{'|'.join(sorted(choices))}\x1f".encode())
            digest.update(hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest())
    return Snapshot(project, controls, dict(set_aside), digest.hexdigest()[:20], watermark)


def example_digest(task: LabeledTask) -> str:
    """Identifies a task's texts and labels: a quarantined task is tried again once either changes."""
    return hashlib.sha256(json.dumps([task.data, task.labels], sort_keys=True).encode("utf-8", "surrogatepass")).hexdigest()[:20]


def fit_control(
    texts: Sequence[str], targets: Sequence[Sequence[str]], control: ChoicesControl, committee: int = 0
) -> ControlModel | None:
    """Fit one control's model (None when the targets cannot support one), with `committee`
    members when asked; features are computed even then, so `poisoned_tasks` finds texts that
    break them."""
    faults.poison(texts)
    features = hash_texts(texts)
    model = ControlModel.fit(None, targets, control.labels, control.multiple, features=features)
    return model.with_committee(targets, features, committee) if model is not None and committee else model


def poisoned_tasks(snapshot: Snapshot) -> set[int]:
    """Tasks whose examples make fitting raise, found by splitting the failing examples in halves
    until single ones remain (group testing: a few fits per poisoned task). Empty when fitting
    each control on all its examples does not raise: the failure is not in the data."""
    found: set[int] = set()
    for data in snapshot.controls.values():
        rows = list(range(len(data.tasks)))
        suspects = [rows] if rows and _fit_raises(data, rows) else []
        while suspects:
            rows = suspects.pop()
            if len(rows) == 1:
                found.add(data.tasks[rows[0]])
                continue
            suspects += [half for half in (rows[: len(rows) // 2], rows[len(rows) // 2 :]) if _fit_raises(data, half)]
    return found


def _fit_raises(data: ControlData, rows: list[int]) -> bool:
    try:
        fit_control([data.texts[i] for i in rows], [data.targets[i] for i in rows], data.control)
    except Exception:  # any error the estimator raises on these examples
        return True
    return False


def holdout_rate(n: int) -> float:
    return min(HOLDOUT_FRACTION, MAX_HOLDOUT / max(n, 1))


def in_holdout(project: int, task: int, rate: float) -> bool:
    h = hashlib.sha256(f"{project}:{task}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < rate


def holdout_mask(project: int, tasks: Sequence[int]) -> np.ndarray:
    rate = holdout_rate(len(tasks))
    return np.array([in_holdout(project, t, rate) for t in tasks], dtype=bool)


def score(targets: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], control: ChoicesControl) -> dict[str, float]:
    """Macro-F1 and accuracy (1 - Hamming loss for multi-label) of predictions against targets."""
    from sklearn.metrics import accuracy_score, f1_score  # train jobs only: web workers import this module

    if not targets:
        return {"macro_f1": 0.0, "accuracy": 0.0, "n": 0}
    if control.multiple:
        labels = list(control.labels)
        y = np.array([[label in t for label in labels] for t in targets], dtype=int)
        p = np.array([[label in t for label in labels] for t in predicted], dtype=int)
        return {
            "macro_f1": float(f1_score(y, p, average="macro", zero_division=0)),
            "accuracy": float((y == p).mean()),
            "n": len(targets),
        }
    y1 = [t[0] for t in targets]
    p1 = [t[0] if t else "" for t in predicted]
    return {
        "macro_f1": float(f1_score(y1, p1, labels=sorted(set(y1)), average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y1, p1)),
        "n": len(targets),
    }


def predict_labels(model: ControlModel | None, texts: Sequence[str], control: ChoicesControl, threshold: float) -> list[list[str]]:
    if model is None:
        return [[] for _ in texts]
    proba = restrict(model.predict_proba(texts), model.labels, control.labels, control.multiple)
    return choose(proba, control.labels, control.multiple, threshold)


def baseline_labels(targets: Sequence[Sequence[str]], n: int, control: ChoicesControl) -> list[list[str]]:
    """The trivial model: always the most frequent label set of the training targets."""
    if control.multiple:
        counts = Counter(label for t in targets for label in t)
        frequent = [label for label in control.labels if counts[label] * 2 > len(targets)]
        return [frequent for _ in range(n)]
    top = Counter(t[0] for t in targets).most_common(1)
    return [[top[0][0]] if top else [] for _ in range(n)]


@dataclass
class Judgement:
    """What the gate decided and why, with the figures behind it."""

    promote: bool
    reason: str
    challenger: dict[str, dict[str, float]]
    champion: dict[str, dict[str, float]]
    baseline: dict[str, dict[str, float]]
    method: str

    def to_json(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "reason": self.reason,
            "method": self.method,
            "challenger": self.challenger,
            "champion": self.champion,
            "baseline": self.baseline,
        }


def mean_metric(per_control: dict[str, dict[str, float]], metric: str) -> float:
    values = [m[metric] for m in per_control.values() if m.get("n")]
    return float(np.mean(values)) if values else 0.0


@dataclass
class TrainResult:
    bundle: ModelBundle | None
    judgement: Judgement
    seconds: float
    reference: dict[str, list[float]] | None = None  # drift reference of the first control (see `drift`)


def train_and_judge(
    snapshot: Snapshot,
    champion: ModelBundle | None,
    *,
    metric: str = "macro_f1",
    margin: float = 0.0,
    threshold: float = 0.5,
    committee: int = 0,
) -> TrainResult:
    """Train a challenger on the snapshot (with `committee` members per control when asked: the
    committee strategies rank with them) and decide whether it may replace the champion."""
    if metric not in METRICS:
        raise ValueError(f"unknown gate metric {metric!r}")
    started = time.perf_counter()
    models: dict[str, ControlModel] = {}
    challenger_m: dict[str, dict[str, float]] = {}
    champion_m: dict[str, dict[str, float]] = {}
    baseline_m: dict[str, dict[str, float]] = {}
    methods = set()
    paired: dict[str, tuple[Any, Any, Any, ChoicesControl]] = {}
    reference: dict[str, list[float]] | None = None
    for name, data in snapshot.controls.items():
        if len(data.texts) < 2:
            continue
        mask = holdout_mask(snapshot.project, data.tasks)
        held = [i for i in range(len(data.tasks)) if mask[i]]
        train = [i for i in range(len(data.tasks)) if not mask[i]]
        control = data.control
        model = fit_control([data.texts[i] for i in train], [data.targets[i] for i in train], control, committee)
        if len(held) >= MIN_HOLDOUT:
            methods.add("holdout")
            texts = [data.texts[i] for i in held]
            targets = [data.targets[i] for i in held]
            new_labels = predict_labels(model, texts, control, threshold)
            old = champion.controls.get(name) if champion else None
            old_labels = predict_labels(old, texts, control, threshold)
            challenger_m[name] = score(targets, new_labels, control)
            champion_m[name] = score(targets, old_labels, control)
            paired[name] = (targets, new_labels, old_labels, control)
            baseline_m[name] = score(
                targets, baseline_labels([data.targets[i] for i in train], len(held), control), control
            )
        else:
            methods.add("cross-validation")
            train_part = ControlData(control, [data.tasks[i] for i in train], [data.texts[i] for i in train], [data.targets[i] for i in train])
            predicted, baseline = _cross_validate(train_part, threshold)
            challenger_m[name] = score(train_part.targets, predicted, control)
            baseline_m[name] = score(train_part.targets, baseline, control)
        if model is not None:
            models[name] = model
            if reference is None:
                unseen_by_model = [data.texts[i] for i in held] if len(held) >= MIN_REFERENCE else [data.texts[i] for i in train]
                reference = drift.reference(model, unseen_by_model)
    method = "+".join(sorted(methods)) or "none"
    if not models:
        judgement = Judgement(False, "not enough labels: every control needs two classes", challenger_m, champion_m, baseline_m, method)
        return TrainResult(None, judgement, time.perf_counter() - started)
    new = mean_metric(challenger_m, metric)
    base = mean_metric(baseline_m, metric)
    if champion_m:
        old = mean_metric(champion_m, metric)
        worse = worse_probability(paired, metric, margin)
        promote = new >= old - margin or worse < CONFIDENCE
        verdict = "not worse" if new >= old - margin else ("within noise" if promote else "worse")
        reason = (f"{metric} {new:.4f} vs champion {old:.4f} (margin {margin}): {verdict}; "
                  f"P(worse by more than the margin) = {worse:.2f}")
    else:
        promote = new > base
        context = "first model" if champion is None else "too few held-out labels to compare models, cross-validated"
        reason = f"{context}: {metric} {new:.4f} {'beats' if promote else 'does not beat'} the trivial baseline {base:.4f}"
    judgement = Judgement(promote, reason, challenger_m, champion_m, baseline_m, method)
    return TrainResult(ModelBundle(models), judgement, time.perf_counter() - started, reference)


def worse_probability(paired: dict[str, tuple[Any, Any, Any, ChoicesControl]], metric: str, margin: float) -> float:
    """Share of paired bootstrap resamples of the held-out tasks in which the challenger's mean
    metric is more than `margin` below the champion's (resamples fixed by seed: deterministic)."""
    rng = np.random.default_rng(0)
    total = np.zeros(BOOTSTRAP)
    for targets, new, old, control in paired.values():
        n = len(targets)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=BOOTSTRAP).astype(float)
        y = _indicators(targets, control)
        total += _resampled(y, _indicators(new, control), weights, metric, control.multiple)
        total -= _resampled(y, _indicators(old, control), weights, metric, control.multiple)
    return float(np.mean(total / max(len(paired), 1) < -margin))


def _indicators(label_lists: Sequence[Sequence[str]], control: ChoicesControl) -> np.ndarray:
    return np.array([[label in set(t) for label in control.labels] for t in label_lists], dtype=float)


def _resampled(y: np.ndarray, p: np.ndarray, weights: np.ndarray, metric: str, multiple: bool) -> np.ndarray:
    """The metric on each resample (rows of `weights` count how often each task is drawn)."""
    if metric == "accuracy":
        per_task = (y == p).mean(axis=1) if multiple else (y == p).all(axis=1).astype(float)
        return weights @ per_task / y.shape[0]
    tp, fp, fn = weights @ (y * p), weights @ ((1 - y) * p), weights @ (y * (1 - p))
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    columns = np.ones(y.shape[1], dtype=bool) if multiple else y.sum(axis=0) > 0
    return f1[:, columns].mean(axis=1)


def _cross_validate(data: ControlData, threshold: float) -> tuple[list[list[str]], list[list[str]]]:
    """Out-of-fold predictions of the challenger and of the baseline (deterministic folds)."""
    n = len(data.texts)
    strata = ["|".join(t) for t in data.targets]
    smallest = min(Counter(strata).values())
    folds = max(2, min(5, smallest))
    predicted: list[list[str]] = [[] for _ in range(n)]
    baseline: list[list[str]] = [[] for _ in range(n)]
    if smallest < 2:
        splitter = [(np.array([j for j in range(n) if j % folds != k]), np.array([j for j in range(n) if j % folds == k])) for k in range(folds)]
    else:
        from sklearn.model_selection import StratifiedKFold

        splitter = list(StratifiedKFold(folds, shuffle=True, random_state=0).split(np.zeros(n), strata))
    control = data.control
    for train, test in splitter:
        if len(test) == 0 or len(train) == 0:
            continue
        model = fit_control([data.texts[i] for i in train], [data.targets[i] for i in train], control)
        for i, labels in zip(test, predict_labels(model, [data.texts[i] for i in test], control, threshold)):
            predicted[i] = labels
        for i, labels in zip(test, baseline_labels([data.targets[j] for j in train], len(test), control)):
            baseline[i] = labels
    return predicted, baseline
