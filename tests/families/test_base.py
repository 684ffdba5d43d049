"""The family seam's shared parts: outcomes and metrics, Choices predictions, probabilities."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from backend.families.base import ChoicesFamily, confidence, restrict
from backend.labelconfig import ChoicesControl

SINGLE = ChoicesControl("c", "text", ("a", "b", "c"), False, (("text", False),))
MULTI = ChoicesControl("m", "text", ("x", "y"), True, (("text", False),))


class Fixed(ChoicesFamily):
    """A family that predicts fixed probabilities (only the shared parts are under test)."""

    name = "fixed"

    def fit(self, control, texts, targets, weights=None, committee=0):
        return None

    def predict_proba(self, model, control, texts):
        return np.asarray(model, dtype=float)

    def dump(self, model):
        return {}

    def load(self, data):
        return None


def test_confidence_of_single_and_multi_label_rows():
    single = np.array([[0.7, 0.2, 0.1], [0.34, 0.33, 0.33]])
    assert np.allclose(confidence(single, False), [0.7, 0.34])
    multi = np.array([[0.9, 0.4], [0.1, 0.95]])
    assert np.allclose(confidence(multi, True), [0.6, 0.9])


def test_outcomes_give_scikit_learns_metrics_and_their_resamples(tweets):
    rng = np.random.default_rng(0)
    targets = [[label] for label in rng.choice(["a", "b", "c"], 300)]
    predicted = [[label] for label in rng.choice(["a", "b"], 300)]
    outcomes = Fixed().outcomes(SINGLE, targets, predicted)
    y, p = [t[0] for t in targets], [t[0] for t in predicted]
    expected_f1 = f1_score(y, p, labels=sorted(set(y)), average="macro")
    assert outcomes.metrics()["macro_f1"] == pytest.approx(expected_f1)
    assert outcomes.metrics()["accuracy"] == pytest.approx(accuracy_score(y, p))
    unit = np.ones((2, 300))
    resampled = outcomes.metrics(unit)
    assert resampled["macro_f1"] == pytest.approx([expected_f1] * 2) and resampled["accuracy"] == pytest.approx([accuracy_score(y, p)] * 2)

    multi_targets, multi_predicted = [["x"], ["x", "y"], []], [["x"], ["y"], ["y"]]
    multi = Fixed().outcomes(MULTI, multi_targets, multi_predicted).metrics()
    indicator = lambda lists: np.array([[label in t for label in ("x", "y")] for t in lists], dtype=int)  # noqa: E731
    assert multi["macro_f1"] == pytest.approx(f1_score(indicator(multi_targets), indicator(multi_predicted), average="macro"))
    assert multi["accuracy"] == pytest.approx((indicator(multi_targets) == indicator(multi_predicted)).mean())


def test_choices_predictions_are_ls_regions_with_the_confidence_as_score():
    predictions = Fixed().predict([[0.2, 0.7, 0.1]], SINGLE, ["t"], 0.5)
    (only,) = predictions
    assert only.target == ["b"] and only.score == pytest.approx(0.7)
    assert only.regions == [{"from_name": "c", "to_name": "text", "type": "choices", "value": {"choices": ["b"]}, "score": 0.7}]
    nothing = Fixed().predict([[0.3, 0.2]], MULTI, ["t"], 0.5)[0]
    assert nothing.regions == [] and nothing.target == []
    assert Fixed().baseline(SINGLE, [["a"], ["a"], ["b"]], 2) == [["a"], ["a"]]
    assert Fixed().problem(SINGLE, ["a", "b"]) and Fixed().problem(SINGLE, ["z"]) and Fixed().problem(SINGLE, ["a"]) is None


def test_restrict_renormalises_single_choice_rows_over_the_config_labels():
    proba = np.array([[0.5, 0.3, 0.2]])
    out = restrict(proba, ["a", "b", "gone"], ["a", "b", "new"], False)
    assert np.allclose(out, [[0.625, 0.375, 0.0]])
    assert np.allclose(restrict(proba, ["a", "b", "gone"], ["a", "b"], True), [[0.5, 0.3]])
