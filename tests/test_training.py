import numpy as np
import pytest

from backend import families
from backend.consensus import LabeledTask
from backend.families import ModelBundle
from backend.families.base import choose
from backend.families.estimator import ControlModel
from backend.labelconfig import parse_label_config
from backend.rules import RuleSet, parse_rules
from backend.training import MIN_HOLDOUT, build_snapshot, holdout_mask, holdout_rate, in_holdout, train_and_judge
from tests.conftest import LABEL_CONFIG

CONFIG = parse_label_config(LABEL_CONFIG)


def snapshot_of(tweets, start, stop, flip=False, project=1):
    labels = ["positive", "negative", "neutral"]
    rate = holdout_rate(stop - start)
    tasks = []
    for i in range(start, stop):
        label = tweets.labels[i]
        if flip and not in_holdout(project, i + 1, rate):
            label = labels[(labels.index(label) + 1) % 3]
        tasks.append(LabeledTask(i + 1, {"text": tweets.texts[i]}, {"sentiment": [label]}, {"sentiment": i + 1}))
    return build_snapshot(project, tasks, CONFIG, stop, 1000)


def test_holdout_shrinks_as_a_project_grows_so_old_holdouts_stay_unseen():
    small = holdout_mask(1, list(range(1, 2001)))
    large = holdout_mask(1, list(range(1, 20001)))
    assert 0.15 < small.mean() < 0.25
    assert large.sum() < 1300
    assert not np.any(large[:2000] & ~small)  # held out now => held out before


def test_first_model_must_beat_the_trivial_baseline(tweets):
    result = train_and_judge(snapshot_of(tweets, 0, 300), None)
    assert result.judgement.promote and "first model" in result.judgement.reason
    assert result.judgement.method == "cross-validation"


def test_a_challenger_trained_on_corrupted_labels_is_rejected(tweets):
    n = 1200
    champion = train_and_judge(snapshot_of(tweets, 0, n), None).bundle
    result = train_and_judge(snapshot_of(tweets, 0, n, flip=True), champion)
    assert result.judgement.method == "holdout"
    assert not result.judgement.promote and "worse" in result.judgement.reason
    assert result.judgement.champion["sentiment"]["n"] >= MIN_HOLDOUT


def test_a_better_challenger_is_promoted(tweets):
    champion = train_and_judge(snapshot_of(tweets, 0, 300), None).bundle
    result = train_and_judge(snapshot_of(tweets, 0, 3000), champion)
    assert result.judgement.promote and result.judgement.method == "holdout"


def test_one_class_is_not_enough():
    tasks = [LabeledTask(i, {"text": f"t {i}"}, {"sentiment": ["positive"]}, {}) for i in range(1, 30)]
    result = train_and_judge(build_snapshot(1, tasks, CONFIG, 29, 100), None)
    assert result.bundle is None and not result.judgement.promote


def test_snapshot_sets_aside_what_the_config_does_not_allow():
    tasks = [
        LabeledTask(1, {"text": "a"}, {"sentiment": ["Bogus"]}, {}),
        LabeledTask(2, {"text": "b"}, {"gone": ["x"]}, {}),
        LabeledTask(3, {}, {"sentiment": ["positive"]}, {}),
        LabeledTask(4, {"text": "c"}, {"sentiment": ["positive", "negative"]}, {}),
        LabeledTask(5, {"text": "d"}, {"sentiment": ["positive"]}, {}),
    ]
    snapshot = build_snapshot(1, tasks, CONFIG, 5, 100)
    assert snapshot.size == 1
    assert snapshot.set_aside == {
        "label not in config": 1,
        "control not in config": 1,
        "no text": 1,
        "several choices for a single-choice control": 1,
    }
    assert snapshot.fingerprint == build_snapshot(1, tasks, CONFIG, 9, 100).fingerprint


def test_multi_label_models_handle_constant_labels():
    texts = ["red apple", "green apple", "red car", "blue car"] * 5
    targets = [["fruit", "red"], ["fruit"], ["red"], []] * 5
    model = ControlModel.fit(texts, targets, ["fruit", "red", "always"], True)
    proba = model.predict_proba(["red apple"])
    assert proba.shape == (1, 3) and proba[0, 2] == 0.0
    assert set(choose(proba, model.labels, True, 0.5)[0]) <= {"fruit", "red"}


def test_bundle_round_trips_through_the_artifact_layout(tweets):
    model = ControlModel.fit(tweets.texts[:100], [[y] for y in tweets.labels[:100]], ["negative", "neutral", "positive"], False)
    bundle = families.from_artifact(families.to_artifact(ModelBundle({"sentiment": model})))
    assert np.allclose(bundle.controls["sentiment"].predict_proba(["x y"]), model.predict_proba(["x y"]))
    assert bundle.family_of("sentiment") == "text-choices"
    with pytest.raises(ValueError):
        families.from_artifact({"format": 2})
    with pytest.raises(ValueError, match="no model family named"):
        families.from_artifact({"format": 4, "controls": {"sentiment": {"family": "nobody", "model": {}}}})


def test_group_testing_finds_exactly_the_tasks_that_make_fitting_raise(tweets, monkeypatch):
    from backend.training import example_digest, poisoned_tasks

    monkeypatch.setenv("POISON_TEXT", "zz-poison")
    tasks = [LabeledTask(i + 1, {"text": tweets.texts[i]}, {"sentiment": [tweets.labels[i]]}, {"sentiment": i + 1}) for i in range(120)]
    for i in (17, 90):
        tasks[i] = LabeledTask(i + 1, {"text": "zz-poison " + tweets.texts[i]}, tasks[i].labels, tasks[i].annotations)
    snapshot = build_snapshot(1, tasks, CONFIG, 120, 1000)
    with pytest.raises(ValueError):
        train_and_judge(snapshot, None)
    assert poisoned_tasks(snapshot) == {18, 91}
    assert poisoned_tasks(snapshot_of(tweets, 0, 120)) == set()
    quarantined = {18: example_digest(tasks[17]), 91: example_digest(tasks[90]), 5: "an older version of task 5"}
    kept = build_snapshot(1, tasks, CONFIG, 120, 1000, quarantined)
    assert kept.size == 118 and kept.set_aside == {"quarantined": 2}  # task 5 changed since: trained on again
    assert train_and_judge(kept, None).bundle is not None


def test_gold_tasks_are_never_trained_on_and_a_challenger_worse_on_gold_is_rejected(tweets):
    labels = ["positive", "negative", "neutral"]
    clean = [LabeledTask(i + 1, {"text": tweets.texts[i]}, {"sentiment": [tweets.labels[i]]}, {}) for i in range(400)]
    gold = set(range(301, 401))  # 100 tasks with ground truth
    champion = train_and_judge(build_snapshot(1, clean, CONFIG, 400, 1000, gold=gold), None)
    assert champion.judgement.gold["challenger"]["sentiment"]["n"] == 100 and "champion" not in champion.judgement.gold
    # relabeled consistently (every class shifted): cross-validation still finds a pattern, the gold set does not
    shifted = [
        LabeledTask(t.task, t.data, {"sentiment": [labels[(labels.index(t.labels["sentiment"][0]) + 1) % 3]]}, {})
        if t.task not in gold
        else t
        for t in clean
    ]
    snapshot = build_snapshot(1, shifted, CONFIG, 401, 1000, gold=gold)
    assert {t for data in snapshot.controls.values() for t in data.tasks}.isdisjoint(gold)
    result = train_and_judge(snapshot, champion.bundle)
    assert result.judgement.method == "cross-validation"  # too few held-out labels to compare with the champion
    assert not result.judgement.promote and "worse on the gold set" in result.judgement.reason, result.judgement.reason
    snapshot.champion_saw_gold = True  # a champion trained on these tasks is not judged on them
    assert "champion" not in train_and_judge(snapshot, champion.bundle).judgement.gold


def test_consensus_weights_reach_the_fingerprint_and_disputed_tasks_are_set_aside():
    tasks = [LabeledTask(i, {"text": f"t {i}"}, {"sentiment": ["positive"]}, {}, weights={"sentiment": 0.5}) for i in range(1, 5)]
    half = build_snapshot(1, tasks, CONFIG, 4, 100, consensus={"sentiment": {"vote": 4, "disputed": 3}})
    full = build_snapshot(1, [LabeledTask(t.task, t.data, t.labels, {}) for t in tasks], CONFIG, 4, 100)
    assert half.controls["sentiment"].weights == [0.5] * 4 and half.fingerprint != full.fingerprint
    assert half.set_aside == {"disputed": 3} and half.consensus == {"sentiment": {"vote": 4, "disputed": 3}}


def marker_snapshot(n: int, seed: int = 0):
    """Texts whose label only a rare word tells: 150 marker words per label, each text one of them
    among common filler, so a model of a thousand labels has seen each marker twice or so."""
    rng = np.random.default_rng(seed)
    labels = ["positive", "negative", "neutral"]
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, 7)) for _ in range(480)]  # no label in their spelling
    markers = {label: words[150 * k : 150 * (k + 1)] for k, label in enumerate(labels)}
    filler = words[450:]
    tasks = []
    for i in range(1, n + 1):
        label = labels[int(rng.integers(3))]
        words = [*rng.choice(filler, 6), str(rng.choice(markers[label]))]
        rng.shuffle(words)
        tasks.append(LabeledTask(i, {"text": " ".join(words)}, {"sentiment": [label]}, {"sentiment": i}))
    return build_snapshot(1, tasks, CONFIG, n, 1000), markers


def test_rules_that_tell_the_truth_become_the_models_prior_and_lying_ones_stay_out():
    snapshot, markers = marker_snapshot(1500)
    truthful = RuleSet(parse_rules([{"label": label, "keywords": words} for label, words in markers.items()]))
    swapped = dict(zip(markers, [markers["negative"], markers["neutral"], markers["positive"]]))
    lying = RuleSet(parse_rules([{"label": label, "keywords": words} for label, words in swapped.items()]))
    plain = train_and_judge(snapshot, None)
    helped = train_and_judge(snapshot, None, rules=truthful)
    misled = train_and_judge(snapshot, None, rules=lying)

    chosen = helped.judgement.rules["sentiment"]
    assert chosen["version"] == truthful.version and chosen["weight"] > 0
    assert chosen["out_of_fold"][str(chosen["weight"])] > chosen["out_of_fold"]["0.0"] + 0.05
    assert helped.bundle.controls["sentiment"].prior.weight == chosen["weight"]
    assert helped.judgement.challenger["sentiment"]["macro_f1"] > plain.judgement.challenger["sentiment"]["macro_f1"]  # held out

    assert misled.judgement.rules["sentiment"]["weight"] == 0.0
    assert misled.bundle.controls["sentiment"].prior is None
    assert misled.judgement.challenger == plain.judgement.challenger
    assert "sentiment" not in plain.judgement.rules

    small, _ = marker_snapshot(300)  # too few held-out tasks: the gate cross-validates, the folds with the prior too
    cv_plain, cv_helped = train_and_judge(small, None), train_and_judge(small, None, rules=truthful)
    assert cv_helped.judgement.method == "cross-validation" and cv_helped.judgement.rules["sentiment"]["weight"] > 0
    assert cv_helped.judgement.challenger["sentiment"]["macro_f1"] > cv_plain.judgement.challenger["sentiment"]["macro_f1"] + 0.05

    bundle = families.from_artifact(families.to_artifact(helped.bundle))  # the prior travels with the artifact
    family = families.family("text-choices")
    texts = [snapshot.controls["sentiment"].texts[0]]
    control = snapshot.controls["sentiment"].control
    assert np.allclose(
        family.label_proba(bundle.controls["sentiment"], control, texts),
        family.label_proba(helped.bundle.controls["sentiment"], control, texts),
    )
