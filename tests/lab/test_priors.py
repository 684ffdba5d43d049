import numpy as np
import pytest
from scipy.special import expit

from lab import priors


def test_frequencies_follow_the_given_class_order():
    assert list(priors.frequencies(["b", "a", "b", "b"], ["a", "b", "c"])) == [0.25, 0.75, 0.0]
    assert list(priors.frequencies([], ["a", "b"])) == [0.0, 0.0]


def test_adjust_reweighs_each_row_by_the_prior_ratio():
    proba = np.array([[0.5, 0.5], [0.8, 0.2]])
    adjusted = priors.adjust(proba, np.array([0.5, 0.5]), np.array([0.8, 0.2]))
    assert adjusted[0] == pytest.approx([0.8, 0.2])
    assert adjusted[1] == pytest.approx([0.64 / 0.68, 0.04 / 0.68])
    assert priors.adjust(proba, np.array([0.3, 0.7]), np.array([0.3, 0.7])) == pytest.approx(proba)  # same prior: no-op


def test_em_recovers_a_shifted_prior_from_calibrated_posteriors():
    likelihood = np.array([[0.9, 0.1], [0.2, 0.8]])  # p(kind of row | class), one row per class
    posterior_at_half = (likelihood / likelihood.sum(axis=0)).T  # p(class | kind) of a model fitted under 50/50
    kinds = np.array([0] * 76 + [1] * 24)  # the kinds' shares under the prior 0.8/0.2: 0.8*0.9 + 0.2*0.2 = 0.76
    estimate = priors.em_prior(posterior_at_half[kinds], np.array([0.5, 0.5]), iterations=1000, tolerance=1e-12)
    assert estimate == pytest.approx([0.8, 0.2], abs=1e-4)
    assert priors.em_prior(posterior_at_half[kinds], np.array([0.5, 0.5]), iterations=1)[0] < 0.8  # a few rounds: part way


def test_em_stays_at_the_training_prior_when_the_pool_matches_it():
    proba = np.array([[0.9, 0.1], [0.1, 0.9]])
    assert priors.em_prior(proba, np.array([0.5, 0.5])) == pytest.approx([0.5, 0.5])
    assert priors.em_prior(np.zeros((0, 2)), np.array([0.3, 0.7])) == pytest.approx([0.3, 0.7])


def test_pooled_prior_adds_the_known_labels_to_the_estimate():
    assert priors.pooled_prior(np.array([10, 0]), np.array([0.5, 0.5]), 10) == pytest.approx([0.75, 0.25])


def test_an_intercept_shift_is_the_exact_adjustment_of_a_binary_logistic_model():
    decision = np.array([-2.0, 0.0, 1.5])
    train, new = np.array([0.5, 0.5]), np.array([0.2, 0.8])
    shift = priors.intercept_shift(train, new, outputs=1)
    p = expit(decision)
    assert expit(decision + shift[0]) == pytest.approx(priors.adjust(np.column_stack([1 - p, p]), train, new)[:, 1])


def test_a_multiclass_shift_is_the_log_ratio_and_zero_for_an_unchanged_prior():
    train, new = np.array([0.2, 0.3, 0.5]), np.array([0.4, 0.3, 0.3])
    assert priors.intercept_shift(train, new, outputs=3) == pytest.approx(np.log(new / train))
    assert priors.intercept_shift(train, train, outputs=3) == pytest.approx([0, 0, 0])
    assert np.isfinite(priors.intercept_shift(np.array([0.0, 1.0]), np.array([0.5, 0.5]), outputs=2)).all()  # floored
