"""The span simulator runs the product's queue and training on WNUT-16 and takes its options."""

import pytest

from lab.datasets import load_wnut
from lab.span_simulator import policy_of, run


def test_a_short_run_of_each_strategy_gives_a_point_per_batch():
    data = load_wnut()
    for strategy in ("default", "default:cold=0/20", "random"):
        curve = run(data, strategy, seed=0, budget=60, batch=20)
        assert curve.labels == [20, 40, 60] and all(0.0 <= f1 <= 1.0 for f1 in curve.micro_f1)


def test_the_cold_start_option_sets_the_policy_and_nonsense_is_refused():
    assert policy_of("default", 20).cold_start_per_class == 5
    policy = policy_of("default:cold=0/40", 10)
    assert (policy.cold_start_per_class, policy.cold_start_total, policy.batch_size, policy.strategy) == (0, 40, 10, "margin")
    with pytest.raises(ValueError):
        policy_of("entropy", 20)
