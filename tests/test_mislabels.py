"""Suspected label errors: cleanlab finds labels we corrupted, and the job stores and reports them."""

from __future__ import annotations

import numpy as np

from backend import mislabels
from backend.consensus import LabeledTask
from backend.labelconfig import parse_label_config
from backend.training import build_snapshot
from tests.conftest import LABEL_CONFIG, wait_for
from tests.web.test_api import train

CLASSES = ("negative", "neutral", "positive")


def snapshot_with_flips(tweets, n=1500, flips=100, seed=0):
    rng = np.random.default_rng(seed)
    flipped = set(rng.choice(n, flips, replace=False).tolist())
    tasks = []
    for i in range(n):
        label = tweets.labels[i]
        if i in flipped:
            label = CLASSES[(CLASSES.index(label) + 1 + int(rng.integers(2))) % 3]
        tasks.append(
            LabeledTask(task=i + 1, data={"text": tweets.texts[i]}, labels={"sentiment": [label]}, annotations={"sentiment": i + 1})
        )
    return build_snapshot(1, tasks, parse_label_config(LABEL_CONFIG), n, 10_000), {i + 1 for i in flipped}


def test_corrupted_labels_are_found_far_above_chance(tweets):
    snapshot, flipped = snapshot_with_flips(tweets)
    suspects = mislabels.find(snapshot)
    found = {s.task for s in suspects}
    precision = len(found & flipped) / len(found)
    recall = len(found & flipped) / len(flipped)
    top = len({s.task for s in suspects[:100]} & flipped) / 100
    # chance precision is 100/1500 = 0.067; the crowd labels are noisy themselves, so real errors are found too
    # (measured: precision 0.16, recall 0.70, precision of the 100 most suspicious 0.34)
    assert precision > 2 * 0.067 and recall > 0.5 and top > 3 * 0.067, (precision, recall, top)
    assert [s.quality for s in suspects] == sorted(s.quality for s in suspects)
    for s in suspects:
        assert s.given != s.suggested or s.quality < 0.5
        assert abs(s.mislabeling - (1 - s.quality)) < 1e-3


def test_too_few_labels_per_class_gives_no_suspects(tweets):
    snapshot, _ = snapshot_with_flips(tweets, n=12, flips=0)
    assert mislabels.find(snapshot) == []


def test_after_a_promotion_suspects_are_listed_and_audited(client, tweets):
    train(client, tweets, n=200)
    body = wait_for(lambda: (b := client.get("/projects/1/mislabels").json)["version"] and b, timeout=60)
    assert body["checked"] == 200 and isinstance(body["suspects"], list)
    for s in body["suspects"]:
        assert set(s) == {"task", "control", "given", "suggested", "quality", "mislabeling"} and s["control"] == "sentiment"
    events = client.get("/projects/1/audit?kind=label_errors").json["events"]
    assert events and "suspected label errors" in events[0]["message"]


def test_a_model_no_better_than_the_largest_class_flags_nothing(tweets):
    rng = np.random.default_rng(1)
    tasks = [
        LabeledTask(task=i + 1, data={"text": tweets.texts[i]}, labels={"sentiment": [str(rng.choice(CLASSES))]}, annotations={})
        for i in range(300)
    ]  # labels that have nothing to do with the texts
    snapshot = build_snapshot(1, tasks, parse_label_config(LABEL_CONFIG), 300, 10_000)
    suspects, predicted, figures = mislabels.check(snapshot)
    assert suspects == [] and len(predicted["sentiment"]) == 300
    assert figures["sentiment"]["flagged"] is False and "not 0.1 above" in figures["sentiment"]["reason"]
    assert mislabels.check(snapshot, min_lift=-1.0)[0]  # what the gate holds back


def test_flagged_suspects_come_with_their_expected_precision(tweets):
    snapshot, flipped = snapshot_with_flips(tweets)
    suspects, _, figures = mislabels.check(snapshot)
    shown = figures["sentiment"]
    assert shown["flagged"] and shown["suspects"] == len(suspects)
    assert shown["out_of_fold_accuracy"] > shown["largest_class_share"] + mislabels.MIN_LIFT
    # calibrated: below the raw mean of the model's overconfident probabilities that the label is wrong
    assert 0.3 < shown["expected_precision"] < float(np.mean([s.mislabeling for s in suspects]))
