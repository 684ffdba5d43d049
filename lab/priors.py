"""Class-prior correction of a fitted classifier: pure functions over probability arrays.

Uncertainty sampling skews the class distribution of the labeled set, so a model fitted on it
carries that skewed prior in its intercepts. Saerens, Latinne & Decaestecker (2002, "Adjusting the
outputs of a classifier to new a priori probabilities") estimate the prior of unlabeled data by EM
over the model's own posteriors, and adjust them: p'(y|x) ∝ p(y|x) · p_new(y) / p_train(y). For a
logistic model the adjustment is a shift of the intercepts by log(p_new / p_train) (exact for a
binary model, close for normalised one-vs-rest sigmoids), so a corrected model keeps its shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FLOOR = 1e-6  # a prior is never taken as exactly 0: its log would be infinite
EM_ITERATIONS = 10
EM_TOLERANCE = 1e-5


def frequencies(labels: Sequence[str] | np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """The share of each class among `labels`, in `classes` order (0 when there are no labels)."""
    labels = np.asarray(labels)
    counts = np.array([(labels == c).sum() for c in classes], dtype=float)
    return counts / counts.sum() if counts.sum() else counts


def adjust(proba: np.ndarray, train_prior: np.ndarray, new_prior: np.ndarray) -> np.ndarray:
    """Posteriors under `new_prior` of a model fitted under `train_prior` (rows renormalised)."""
    weighted = proba * (np.maximum(new_prior, FLOOR) / np.maximum(train_prior, FLOOR))
    total = weighted.sum(axis=1, keepdims=True)
    return np.divide(weighted, total, out=np.full_like(weighted, 1.0 / max(proba.shape[1], 1)), where=total > 0)


def em_prior(proba: np.ndarray, train_prior: np.ndarray, iterations: int = EM_ITERATIONS, tolerance: float = EM_TOLERANCE) -> np.ndarray:
    """The class prior of the rows of `proba` by Saerens' EM: start from `train_prior`, then
    alternately adjust the posteriors to the current estimate and average them, until the estimate
    moves less than `tolerance` or after `iterations` rounds."""
    prior = np.asarray(train_prior, dtype=float)
    if not len(proba):
        return prior
    for _ in range(iterations):
        updated = adjust(proba, train_prior, prior).mean(axis=0)
        moved = np.abs(updated - prior).max()
        prior = updated
        if moved < tolerance:
            break
    return prior


def pooled_prior(labeled_counts: np.ndarray, unlabeled_prior: np.ndarray, unlabeled: int) -> np.ndarray:
    """The prior of a whole pool: the known labels' counts plus the estimate for the unlabeled rest."""
    total = np.asarray(labeled_counts, dtype=float) + unlabeled * np.asarray(unlabeled_prior, dtype=float)
    return total / total.sum() if total.sum() else total


def intercept_shift(train_prior: np.ndarray, new_prior: np.ndarray, outputs: int) -> np.ndarray:
    """What to add to the intercepts of a logistic model with `outputs` decision columns (1: a
    binary model whose column is the second class) to move it from `train_prior` to `new_prior`."""
    log_ratio = np.log(np.maximum(new_prior, FLOOR)) - np.log(np.maximum(train_prior, FLOOR))
    if outputs == 1:
        return np.array([log_ratio[1] - log_ratio[0]])
    return log_ratio
