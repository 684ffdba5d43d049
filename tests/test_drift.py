"""Drift measures on hand-made samples and on a real model: no Redis, no HTTP."""

import numpy as np

from backend import drift
from backend.estimator import ControlModel
from backend.hashing import hash_texts


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    reference = rng.beta(5, 2, 2000)
    assert drift.psi(reference, rng.beta(5, 2, 2000)) < 0.05
    assert drift.psi(reference, rng.beta(2, 5, 2000)) > 0.25
    assert drift.psi([], [0.5]) == 0.0 and drift.psi([0.5], []) == 0.0


def test_psi_handles_constant_references():
    assert drift.psi([1.0] * 100, [1.0] * 50) < 1e-6
    assert drift.psi([1.0] * 100, [0.2] * 50) > 1


def test_confidence_of_single_and_multi_label_rows():
    single = np.array([[0.7, 0.2, 0.1], [0.34, 0.33, 0.33]])
    assert np.allclose(drift.confidence(single, False), [0.7, 0.34])
    multi = np.array([[0.9, 0.4], [0.1, 0.95]])
    assert np.allclose(drift.confidence(multi, True), [0.6, 0.9])


def test_unseen_share_counts_word_ngrams_no_training_text_had(tweets):
    model = ControlModel.fit(tweets.texts[:300], [[y] for y in tweets.labels[:300]], sorted(set(tweets.labels)), False)
    seen = drift.unseen_share(model, hash_texts([tweets.texts[0]]))[0]
    nonsense = "zyxqv plorkish wubbalubba frobnicated quuxle gribbet snorfle vazzik trundlewump blarfen xoqqa mimsyborogove"
    novel = drift.unseen_share(model, hash_texts([nonsense]))[0]
    empty = drift.unseen_share(model, hash_texts([""]))[0]
    assert seen == 0.0 and novel > 0.8 and empty == 0.0


def test_reference_is_capped_and_compare_reports_every_measure(tweets):
    model = ControlModel.fit(tweets.texts[:300], [[y] for y in tweets.labels[:300]], sorted(set(tweets.labels)), False)
    reference = drift.reference(model, tweets.texts[300:1600])
    assert len(reference["confidence"]) == drift.REFERENCE_SIZE
    same = drift.compare(reference, drift.observe(model, tweets.texts[2000:2500]))
    other = drift.compare(reference, drift.observe(model, ["#" + "x" * 200 + f" {i} qqq zzz" for i in range(300)]))
    assert same["samples"] == 500 and same["confidence_psi"] < 0.1
    assert other["unseen_mean"]["recent"] > same["unseen_mean"]["recent"]
    assert other["length_ks"]["p_value"] < 1e-6 < same["length_ks"]["p_value"]
