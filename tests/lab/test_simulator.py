import csv
import json

import numpy as np
import pytest
from scipy import sparse
from sklearn.preprocessing import normalize

from backend.families import pool as pool_scoring
from backend.families.estimator import ALPHA, ControlModel, alpha_for
from backend.families.hashing import hash_texts
from lab.__main__ import main
from lab.simulator import Variant, parse_strategies, pseudo_labeled, representativeness, shifted


def labeled_csv(path, tweets, n):
    """The first `n` tweets as a `text,label` CSV file (a data set the simulator accepts)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(zip(tweets.texts[:n], tweets.labels[:n]))
    return path


def test_simulate_writes_curves_a_plot_and_a_summary(tmp_path, tweets, capsys):
    path = labeled_csv(tmp_path / "small.csv", tweets, 1500)
    out = tmp_path / "out"
    assert main(["simulate", "--dataset", str(path), "--budget", "120", "--batch", "20", "--seeds", "2", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["strategies"]) == {"default", "random"}
    assert 0 < summary["full_data_accuracy"] <= 1 and 0 < summary["official_example_accuracy"] <= 1
    rows = list(csv.DictReader(open(summary["csv"])))
    assert {r["strategy"] for r in rows} == {"default", "random"}
    assert max(int(r["labels"]) for r in rows) == 120 and min(int(r["labels"]) for r in rows) == 20
    classes = sorted(set(tweets.labels[:1500]))
    assert all(0 <= float(r[f"recall:{c}"]) <= 1 for r in rows for c in classes)
    last = [r for r in rows if r["strategy"] == "default" and r["labels"] == "120"]
    assert summary["strategies"]["default"]["final_recall"] == {
        c: pytest.approx(sum(float(r[f"recall:{c}"]) for r in last) / len(last), abs=1e-4) for c in classes
    }
    assert (out / "learning-curve-small.png").stat().st_size > 10_000
    assert not list(out.glob("*.partial.csv"))  # finished runs are kept there only while the simulation runs


def test_a_list_of_variants_runs_in_one_simulation(tmp_path, tweets, capsys):
    path = labeled_csv(tmp_path / "small.csv", tweets, 1000)
    strategies = (
        "margin:cold=2/20:spread=2:skip=5,vote_entropy:members=2:cold=2/20,margin:cold=2/20:shift=em,"
        "margin:cold=2/20:shift=cold:pseudo=0.5,random:alpha=1e-4,random:shift=cold:pseudo=0.5"
    )
    assert (
        main(
            [
                "simulate",
                "--dataset",
                str(path),
                "--strategy",
                strategies,
                "--budget",
                "80",
                "--batch",
                "20",
                "--seeds",
                "1",
                "--jobs",
                "1",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert list(summary["strategies"]) == strategies.split(",")  # a random variant is listed: none is added
    rows = list(csv.DictReader(open(summary["csv"])))
    assert [r["labels"] for r in rows if r["strategy"] == "vote_entropy:members=2:cold=2/20"] == ["20", "40", "60", "80"]


def test_bad_strategy_lists_are_refused_before_any_work(capsys):
    for bad in ("marginal", "margin:cold=5", "margin:colour=1", "random:spread=2", "margin,margin", "", "margin:shift=up"):
        with pytest.raises(SystemExit) as exit_:
            main(["simulate", "--strategy", bad])
        assert exit_.value.code == 2
    assert "unknown strategy 'marginal'" in capsys.readouterr().err


def test_variants_parse_their_options_and_random_is_added_as_the_control():
    first, control = parse_strategies("margin:cold=10/200:alpha=1e-4:density=0.5:spread=3:skip=40")
    assert first.skip == 40
    assert (first.base, first.cold, first.alpha, first.density, first.spread) == ("margin", (10, 200), 1e-4, 0.5, 3.0)
    assert control == Variant.parse("random") and control.alpha is None
    assert [v.spec for v in parse_strategies("random:alpha=1e-4,default")] == ["random:alpha=1e-4", "default"]
    assert (Variant.parse("random:prior=0.1:shift=em").shift, Variant.parse("default:shift=cold").shift) == ("em", "cold")


def test_representativeness_is_highest_at_the_cluster_centre():
    unit = normalize(sparse.csr_matrix(np.array([[1.0, 0.0], [1.0, 0.2], [1.0, 0.9], [0.0, 1.0], [0.1, 1.0]])))
    values = representativeness(unit, np.array([0, 0, 0, 1, 1]))
    assert values.min() >= 0 and values.max() <= 1
    assert values[1] > values[0] and values[1] > values[2]  # the middle of cluster 0
    assert values[3] == pytest.approx(values[4])  # two members: both equally far from their centroid


def test_prior_shrinks_alpha_as_labels_grow_within_its_bounds():
    variant = Variant.parse("margin:prior=0.1")
    assert variant.alpha_at(100) == 1e-4  # capped
    assert abs(variant.alpha_at(4000) - 2.5e-5) < 1e-12
    assert variant.alpha_at(100_000) == ALPHA  # never below the model's own alpha
    assert Variant.parse("random:prior=0.1").alpha_at(4000) == variant.alpha_at(4000)
    assert Variant.parse("margin:prior=0.1:alpha=2e-5").alpha_at(100_000) == 2e-5
    for labels in (100, 4000, 100_000):  # no option: the product's own schedule; alpha alone or prior=0: fixed
        assert Variant.parse("default").alpha_at(labels) == Variant.parse("random").alpha_at(labels) == alpha_for(labels)
        assert Variant.parse("margin:alpha=1e-4").alpha_at(labels) == 1e-4 and Variant.parse("margin:prior=0").alpha_at(labels) == ALPHA


def test_shifted_moves_the_intercepts_by_the_prior_ratio(tweets):
    texts, labels = tweets.texts[:300], tweets.labels[:300]
    features = hash_texts(texts)
    model = ControlModel.fit(None, [[y] for y in labels], sorted(set(labels)), False, features=features)
    pool = pool_scoring.Segment.of(hash_texts(tweets.texts[300:500]))
    decision = pool_scoring.decision_values(model.linear, pool)
    unlabeled = np.ones(pool.rows, dtype=bool)
    train = np.array([labels.count(c) for c in model.columns]) / len(labels)
    same, proba = shifted(model, decision.copy(), np.array(labels), np.array(labels), unlabeled, train)
    assert same.linear.intercept == pytest.approx(model.linear.intercept)
    assert proba == pytest.approx(pool_scoring.predict_proba(model, [pool], [np.arange(pool.rows)]))
    target = np.array([0.2, 0.3, 0.5])
    moved, proba = shifted(model, decision.copy(), np.array(labels), np.array(labels), unlabeled, target)
    assert moved.linear.intercept - model.linear.intercept == pytest.approx(np.log(target / train))
    assert proba == pytest.approx(pool_scoring.predict_proba(moved, [pool], [np.arange(pool.rows)]))
    estimated, _ = shifted(model, decision.copy(), np.array(labels), np.array(labels), unlabeled, None)  # EM: the pool's estimate
    assert np.isfinite(estimated.linear.intercept).all()


def test_pseudo_labels_are_the_surest_unlabeled_rows_in_the_labeled_class_shares():
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.95, 0.05], [0.2, 0.8], [0.3, 0.7], [0.99, 0.01]])
    unlabeled = np.array([True, True, True, True, True, False])  # row 5 is labeled
    rows, labels = pseudo_labeled(proba, np.array(["a", "a", "b"]), unlabeled, ["a", "b"], share=1.0)
    assert list(rows) == [2, 0, 3] and list(labels) == ["a", "a", "b"]


def test_class_shares_rules_class_balance_and_badge_in_one_simulation(tmp_path, tweets, capsys):
    from pathlib import Path

    path = labeled_csv(tmp_path / "small.csv", tweets, 1500)
    rules = Path(__file__).parents[2] / "lab" / "rules" / "tweets.json"
    strategies = "default:balance=uniform:rules,badge:cold=2/20"
    argv = ["simulate", "--dataset", str(path), "--strategy", strategies, "--class-share", "positive=0.08", "--rules", str(rules)]
    assert main([*argv, "--budget", "80", "--batch", "20", "--seeds", "1", "--jobs", "1", "--out", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["class_share"] == {"positive": 0.08} and list(summary["strategies"]) == [*strategies.split(","), "random"]
    assert summary["rules"]["rules"] == 10 and 0 < summary["rules"]["coverage"] < 1
    assert 0 < summary["rules"]["accuracy_on_pre_annotated"] <= 1
    assert set(summary["worst_gap_vs_random"]) == set(strategies.split(","))
    with pytest.raises(SystemExit):
        main(["simulate", "--class-share", "positive=2"])


def test_with_class_shares_thins_only_the_named_classes(tweets):
    from lab.datasets import LabeledTexts, with_class_shares

    data = LabeledTexts(tweets.texts[:3000], tweets.labels[:3000])
    thinned = with_class_shares(data, {"positive": 0.08})
    assert thinned.labels.count("positive") / len(thinned) == pytest.approx(0.08, abs=0.001)
    assert thinned.labels.count("negative") == data.labels.count("negative")
    with pytest.raises(ValueError):
        with_class_shares(data, {"happy": 0.1})
