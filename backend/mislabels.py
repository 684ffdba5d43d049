"""Suspected label errors: cleanlab's confident learning over out-of-fold probabilities.

Every labeled task of a single-choice control is scored by a model that did not see it (k-fold;
the built-in text model, whichever family serves the control: the check is about the labels),
and cleanlab flags the tasks whose given label disagrees with what the rest of the data implies.
Nothing here changes a label: suspects are listed for reviewers (API, status page, and LS's
`mislabeling` field of a prediction), highest suspicion first.

A weak model's disagreement is noise, not evidence: a control is checked only when its out-of-fold
accuracy beats always answering the largest class by `MIN_LIFT`. Each control's figures say so, with
the list's expected precision: the mean probability that a suspect's label is wrong, after the
out-of-fold probabilities are calibrated against the given labels (one temperature fitted by
likelihood: the hashed linear model is overconfident).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.model_selection import StratifiedKFold

from .families.estimator import ControlModel
from .families.hashing import hash_texts
from .labelconfig import ChoicesControl
from .training import Snapshot

FOLDS = 5
MIN_PER_CLASS = FOLDS  # every class needs a member in every fold
MAX_SUSPECTS = 500
MIN_LIFT = 0.10  # suspects are flagged only when out-of-fold accuracy beats the largest class's share by this much


@dataclass(frozen=True)
class Suspect:
    task: int
    control: str
    given: str
    suggested: str
    quality: float  # cleanlab's self-confidence label quality: low = likely wrong
    mislabeling: float  # 1 - quality, what LS stores on the prediction


def out_of_fold_probabilities(texts: list[str], labels: np.ndarray, classes: list[str], seed: int = 0) -> np.ndarray:
    """Each row's class probabilities from a model trained on the other folds."""
    features = hash_texts(texts)
    proba = np.zeros((len(texts), len(classes)))
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    for train, held in folds.split(np.zeros(len(labels)), labels):
        model = ControlModel.fit(None, [[classes[i]] for i in labels[train]], classes, False, features=features[train])
        if model is not None:
            proba[held] = model.predict_proba(features=features[held])
    return proba


def calibrate(proba: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`proba` rescaled by the temperature that makes the given labels most likely."""
    from scipy.optimize import minimize_scalar

    logits = np.log(np.clip(proba, 1e-9, 1.0))

    def scaled(temperature: float) -> np.ndarray:
        z = logits / temperature
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def loss(temperature: float) -> float:
        return float(-np.mean(np.log(scaled(temperature)[np.arange(len(labels)), labels] + 1e-12)))

    return scaled(float(minimize_scalar(loss, bounds=(0.05, 20.0), method="bounded").x))


def find(snapshot: Snapshot) -> list[Suspect]:
    """Suspects of every single-choice control with enough labels, most suspicious first."""
    return check(snapshot)[0]


def check(snapshot: Snapshot, min_lift: float = MIN_LIFT) -> tuple[list[Suspect], dict[str, dict[int, list[str]]], dict[str, Any]]:
    """`find`'s suspects; the out-of-fold prediction of every checked task (control -> task ->
    choices), which `agreement` compares each annotator with; and per control the out-of-fold
    accuracy, the largest class's share, whether suspects were flagged, and their expected precision."""
    suspects: list[Suspect] = []
    predicted: dict[str, dict[int, list[str]]] = {}
    figures: dict[str, Any] = {}
    for name, data in snapshot.controls.items():
        if not isinstance(data.control, ChoicesControl) or data.control.multiple:
            continue  # cleanlab's confident learning is for one class per task
        given = [t[0] for t in data.targets]
        classes = sorted(set(given))
        counts = {c: given.count(c) for c in classes}
        if len(classes) < 2 or min(counts.values()) < MIN_PER_CLASS:
            continue
        labels = np.array([classes.index(g) for g in given])
        proba = out_of_fold_probabilities(list(data.texts), labels, classes)
        predicted[name] = {int(task): [classes[int(row.argmax())]] for task, row in zip(data.tasks, proba)}
        accuracy, prior = float(np.mean(proba.argmax(axis=1) == labels)), max(counts.values()) / len(given)
        figures[name] = {"out_of_fold_accuracy": round(accuracy, 4), "largest_class_share": round(prior, 4), "flagged": False}
        if accuracy < prior + min_lift:
            figures[name]["reason"] = f"out-of-fold accuracy {accuracy:.3f} is not {min_lift} above the largest class's share {prior:.3f}"
            continue
        figures[name]["flagged"] = True
        found_before = len(suspects)
        # n_jobs=1: cleanlab otherwise forks a multiprocessing pool, which deadlocks when forked from
        # a threaded process (the embedded worker runs inside gunicorn); results do not depend on it
        issues = find_label_issues(labels, proba, filter_by="prune_by_noise_rate", n_jobs=1)
        quality = get_label_quality_scores(labels, proba, method="self_confidence")
        for i in np.flatnonzero(issues):
            suspects.append(
                Suspect(
                    task=int(data.tasks[i]),
                    control=name,
                    given=given[i],
                    suggested=classes[int(proba[i].argmax())],
                    quality=round(float(quality[i]), 4),
                    mislabeling=round(1.0 - float(quality[i]), 4),
                )
            )
        flagged = suspects[found_before:]
        figures[name]["suspects"] = len(flagged)
        if flagged:
            calibrated = calibrate(proba, labels)
            row = {int(task): i for i, task in enumerate(data.tasks)}
            wrong = [1.0 - calibrated[row[s.task], labels[row[s.task]]] for s in flagged]
            figures[name]["expected_precision"] = round(float(np.mean(wrong)), 4)
    suspects.sort(key=lambda s: s.quality)
    return suspects[:MAX_SUSPECTS], predicted, figures


def to_json(suspects: list[Suspect]) -> list[dict[str, Any]]:
    return [asdict(s) for s in suspects]
