"""Drift measures on hand-made samples and on a real model: no Redis, no HTTP."""

import numpy as np

from backend import drift
from backend.families.text_choices import TextChoices
from backend.labelconfig import parse_label_config
from tests.conftest import LABEL_CONFIG

CONTROL = parse_label_config(LABEL_CONFIG).controls[0]


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    reference = rng.beta(5, 2, 2000)
    assert drift.psi(reference, rng.beta(5, 2, 2000)) < 0.05
    assert drift.psi(reference, rng.beta(2, 5, 2000)) > 0.25
    assert drift.psi([], [0.5]) == 0.0 and drift.psi([0.5], []) == 0.0


def test_psi_handles_constant_references():
    assert drift.psi([1.0] * 100, [1.0] * 50) < 1e-6
    assert drift.psi([1.0] * 100, [0.2] * 50) > 1


def observed(model, texts):
    """What /predict traffic records of `texts` (see `model.Observation`), as columns."""
    predictions = TextChoices().predict(model, CONTROL, texts, 0.5)
    return {
        "confidence": [p.score for p in predictions],
        "length": [float(len(t)) for t in texts],
        "unseen": [p.novelty for p in predictions],
    }


def test_reference_is_capped_and_compare_reports_every_measure(tweets):
    model = TextChoices().fit(CONTROL, tweets.texts[:300], [[y] for y in tweets.labels[:300]])
    texts = tweets.texts[300:1600]
    reference = drift.reference(texts, TextChoices().predict(model, CONTROL, texts, 0.5))
    assert len(reference["confidence"]) == drift.REFERENCE_SIZE
    same = drift.compare(reference, observed(model, tweets.texts[2000:2500]))
    other = drift.compare(reference, observed(model, ["#" + "x" * 200 + f" {i} qqq zzz" for i in range(300)]))
    assert same["samples"] == 500 and same["confidence_psi"] < 0.1
    assert other["unseen_mean"]["recent"] > same["unseen_mean"]["recent"]
    assert other["length_ks"]["p_value"] < 1e-6 < same["length_ks"]["p_value"]
