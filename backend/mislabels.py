"""Suspected label errors: cleanlab's confident learning over out-of-fold probabilities.

Every labeled task of a single-choice control is scored by a model that did not see it (k-fold;
the built-in text model, whichever family serves the control: the check is about the labels),
and cleanlab flags the tasks whose given label disagrees with what the rest of the data implies.
Nothing here changes a label: suspects are listed for reviewers (API, status page, and LS's
`mislabeling` field of a prediction), highest suspicion first.
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


def find(snapshot: Snapshot) -> list[Suspect]:
    """Suspects of every single-choice control with enough labels, most suspicious first."""
    return check(snapshot)[0]


def check(snapshot: Snapshot) -> tuple[list[Suspect], dict[str, dict[int, list[str]]]]:
    """`find`'s suspects, and the out-of-fold prediction of every checked task (control -> task ->
    choices), which `agreement` compares each annotator with."""
    suspects: list[Suspect] = []
    predicted: dict[str, dict[int, list[str]]] = {}
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
    suspects.sort(key=lambda s: s.quality)
    return suspects[:MAX_SUSPECTS], predicted


def to_json(suspects: list[Suspect]) -> list[dict[str, Any]]:
    return [asdict(s) for s in suspects]
