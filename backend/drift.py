"""Drift measures as pure functions: has `/predict` traffic moved away from what a version was
trained on?

A version's *reference* is measured on the held-out part of its training snapshot (texts the model
did not fit, so its confidence there is honest): the model's confidence, text length and the share
of word n-grams never seen in training. Recent traffic is measured the same way at `/predict`.
Confidence is compared with the population stability index (PSI, the usual 0.1 / 0.25 reading:
small / large shift), length and unseen share with SciPy's two-sample Kolmogorov-Smirnov test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import ks_2samp

REFERENCE_SIZE = 1000
PSI_BINS = 10
_EPSILON = 1e-4


def reference(texts: Sequence[str], predictions: Sequence[Any], seed: int = 0) -> dict[str, list[float]]:
    """A version's reference sample (at most `REFERENCE_SIZE` texts) from its predictions of texts
    it did not fit (`families.Prediction`: score as confidence, novelty as unseen share), stored in
    its record."""
    rows = list(range(len(texts)))
    if len(rows) > REFERENCE_SIZE:
        rows = sorted(np.random.default_rng(seed).choice(len(rows), REFERENCE_SIZE, replace=False).tolist())
    measured = {
        "confidence": [predictions[i].score for i in rows],
        "length": [float(len(texts[i])) for i in rows],
        "unseen": [predictions[i].novelty for i in rows],
    }
    return {name: [round(float(v), 5) for v in values] for name, values in measured.items()}


def psi(expected: Sequence[float], actual: Sequence[float], bins: int = PSI_BINS) -> float:
    """Population stability index of `actual` against `expected`, over quantile bins of `expected`
    (fewer bins for small samples, about 25 values per bin, so noise does not read as drift)."""
    expected, actual = np.asarray(expected, dtype=float), np.asarray(actual, dtype=float)
    if expected.size == 0 or actual.size == 0:
        return 0.0
    bins = int(np.clip(min(expected.size, actual.size) // 25, 2, bins))
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    e = np.bincount(np.searchsorted(edges, expected, side="right"), minlength=len(edges) + 1) / expected.size
    a = np.bincount(np.searchsorted(edges, actual, side="right"), minlength=len(edges) + 1) / actual.size
    e, a = np.maximum(e, _EPSILON), np.maximum(a, _EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def compare(reference_sample: dict[str, Sequence[float]], recent: dict[str, Sequence[float]]) -> dict[str, Any]:
    """Drift figures of recent traffic against a reference: PSI of confidence, KS of the others."""
    out: dict[str, Any] = {"samples": len(recent.get("confidence", []))}
    out["confidence_psi"] = round(psi(reference_sample.get("confidence", []), recent.get("confidence", [])), 4)
    for name in ("confidence", "length", "unseen"):
        ref, now = reference_sample.get(name, []), recent.get(name, [])
        out[f"{name}_mean"] = {"reference": _mean(ref), "recent": _mean(now)}
        if name != "confidence" and len(ref) >= 2 and len(now) >= 2:
            test = ks_2samp(ref, now)
            out[f"{name}_ks"] = {"statistic": round(float(test.statistic), 4), "p_value": float(test.pvalue)}
    return out


def _mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None
