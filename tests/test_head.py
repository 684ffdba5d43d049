"""The head's size and refill rule, without Redis or HTTP."""

from __future__ import annotations

from backend.head import MAX_HEAD, MIN_HEAD, head_size, promotion_cycle, refill_due


def test_a_fixed_push_top_is_the_head_size():
    assert head_size(37, retrain_threshold=5, rate=10.0, annotators=9, cycle=(600, 500)) == 37


def test_the_adaptive_head_grows_with_the_labeling_rate_and_the_annotators():
    slow = head_size(0, retrain_threshold=5, rate=0.1, annotators=1, cycle=(600, 0))
    fast = head_size(0, retrain_threshold=5, rate=2.0, annotators=1, cycle=(600, 0))
    crowded = head_size(0, retrain_threshold=5, rate=2.0, annotators=20, cycle=(600, 0))
    assert slow == 2 * 60 + 2  # 0.1 labels/s for 600 s between promotions, twice over, and what 1 annotator draws
    assert fast == 2 * 1200 + 2 and crowded == 2 * 1200 + 21 * 20
    assert head_size(0, retrain_threshold=5, rate=0.5, annotators=1, cycle=(600, 0)) == 2 * 300 + 2
    assert head_size(0, retrain_threshold=5, rate=0.5, annotators=20, cycle=(600, 0)) == 2 * 300 + 21 * 20
    assert slow < fast < crowded


def test_the_head_covers_the_labels_between_promotions_and_stays_within_bounds():
    assert head_size(0, retrain_threshold=200, rate=0.0, annotators=0, cycle=(0, 0)) == 2 * 200 + 1
    assert head_size(0, retrain_threshold=5, rate=0.0, annotators=0, cycle=(0, 300)) == 2 * 300 + 1
    assert head_size(0, retrain_threshold=5, rate=0.0, annotators=0) == MIN_HEAD
    assert head_size(0, retrain_threshold=5, rate=100.0, annotators=3, cycle=(3600, 0)) == MAX_HEAD


def test_promotion_cycle_is_the_median_gap_between_promotions():
    history = [
        {"decision": "promoted", "created_at": 0, "watermark": 0},
        {"decision": "rejected", "created_at": 50, "watermark": 10},
        {"decision": "promoted", "created_at": 100, "watermark": 20},
        {"decision": "promoted", "created_at": 400, "watermark": 50},
        {"decision": "promoted", "created_at": 500, "watermark": 90},
    ]
    assert promotion_cycle(history) == (100.0, 30.0)
    assert promotion_cycle(history[:2]) == (0.0, 0.0)


def test_a_head_is_refilled_once_half_of_it_is_taken():
    assert not refill_due(left=60, target=100)
    assert not refill_due(left=50, target=100)
    assert refill_due(left=49, target=100)
    assert not refill_due(left=0, target=0)  # no head pushed yet
