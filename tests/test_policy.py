import json

import pytest

from backend.config import Settings
from backend.payload import InvalidPayload
from backend.policy import Policy, next_due, policy_for, validated


def test_cold_start_rule_needs_every_class_and_a_total():
    policy = Policy(cold_start_per_class=2, cold_start_total=6)
    labels = {"sentiment": ("pos", "neg", "neu")}
    assert not policy.warm({"sentiment": {"pos": 5, "neg": 5}}, labels, 10)
    assert not policy.warm({"sentiment": {"pos": 2, "neg": 2, "neu": 1}}, labels, 10)
    assert not policy.warm({"sentiment": {"pos": 2, "neg": 2, "neu": 2}}, labels, 5)
    assert policy.warm({"sentiment": {"pos": 2, "neg": 2, "neu": 2}}, labels, 6)


def test_admin_overrides_beat_extra_params_which_beat_the_environment():
    settings = Settings.from_env({"RETRAIN_THRESHOLD": "9"})
    assert policy_for(settings, {}).retrain_threshold == 9
    meta = {"extra_params": json.dumps({"retrain_threshold": 3, "strategy": "entropy", "bogus": 1})}
    assert (policy_for(settings, meta).retrain_threshold, policy_for(settings, meta).strategy) == (3, "entropy")
    meta["settings"] = json.dumps({"retrain_threshold": 7})
    assert (policy_for(settings, meta).retrain_threshold, policy_for(settings, meta).strategy) == (7, "entropy")


@pytest.mark.parametrize(
    "bad",
    [
        {"strategy": "psychic"},
        {"batch_size": -1},
        {"gate_margin": 3},
        {"nope": 1},
        {"uncertainty_sampling": "yes"},
        {"gate_metric": "auc"},
        {"clusters": True},
        {"class_balance": "always"},
        {"consensus": "loudest"},
    ],
)
def test_admin_settings_are_validated(bad):
    with pytest.raises(InvalidPayload):
        validated(bad, strict=True)
    assert validated(bad, strict=False) == {}


def test_next_due_of_an_interval_and_of_a_cron_string():
    assert next_due(0, 100.0) is None
    assert next_due(60, 100.0) == 160.0
    assert next_due("0 * * * *", 3600 * 5 + 1) == 3600 * 6
