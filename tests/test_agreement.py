import time

import numpy as np

from backend.agreement import control_agreement, per_class_agreement, report
from backend.consensus import TaskVotes, Vote, resolve, votes_by_voter
from lab.annotators import CONTROL, simulate_votes

C = CONTROL


def votes(task_id: int, **chosen: str) -> TaskVotes:
    return TaskVotes(
        task_id, {}, tuple(Vote(task_id * 100 + i, who, float(i), {C: [label]}) for i, (who, label) in enumerate(chosen.items()))
    )


def test_perfect_agreement_and_none():
    same = [votes(i, a="x" if i % 2 else "y", b="x" if i % 2 else "y") for i in range(1, 41)]
    figures = control_agreement(same, C, min_shared=20)
    assert figures["alpha"] == 1.0
    assert figures["kappa"] == [{"annotators": ["a", "b"], "shared": 40, "kappa": 1.0}]
    assert figures["per_class"] == {"x": 1.0, "y": 1.0}
    assert figures["per_annotator"]["a"] == {"labels": 40, "compared": 40, "agreement": 1.0, "recent_agreement": 1.0}
    opposite = [votes(i, a="x" if i % 2 else "y", b="y" if i % 2 else "x") for i in range(1, 41)]
    figures = control_agreement(opposite, C, min_shared=20)
    assert figures["alpha"] < 0 and figures["kappa"][0]["kappa"] == -1.0
    assert figures["per_class"] == {"x": 0.0, "y": 0.0}


def test_kappa_needs_kappa_min_shared_tasks():
    tasks = [votes(i, a="x" if i % 3 else "y", b="x") for i in range(1, 11)]
    assert control_agreement(tasks, C, min_shared=10)["kappa"][0]["shared"] == 10
    assert control_agreement(tasks, C, min_shared=11)["kappa"] == []


def test_the_trend_window_shows_an_annotator_who_drifts():
    tasks = [votes(i, a="x", b="x", c="x" if i <= 80 else "y") for i in range(1, 101)]
    whole = control_agreement(tasks, C, trend_window=100)["per_annotator"]["c"]
    recent = control_agreement(tasks, C, trend_window=20)["per_annotator"]["c"]
    assert whole["agreement"] == 0.8 and whole["recent_agreement"] == 0.8
    assert recent["recent_agreement"] == 0.0


def test_a_thousand_annotators_on_one_task_are_counted_not_paired():
    crowd = TaskVotes(1, {}, tuple(Vote(i, f"u{i}", float(i), {C: ["x" if i % 4 else "y"]}) for i in range(1, 1001)))
    started = time.perf_counter()
    figures = control_agreement([crowd, votes(2, a="x", b="x")], C)
    assert time.perf_counter() - started < 5
    assert figures["annotators"] == 1002 and figures["kappa"] == []
    assert 0.6 < figures["per_class"]["x"] < 0.8
    assert per_class_agreement([(1, votes_by_voter(crowd, C))], C)["y"] == round(2 * 31125 / (2 * 31125 + 187500), 4)


def test_the_poor_annotator_scores_lowest_in_the_simulation(tweets):
    order = np.random.default_rng(0).permutation(len(tweets.texts))[:2000]
    tasks = simulate_votes([tweets.texts[i] for i in order], [tweets.labels[i] for i in order], seed=0)
    found = resolve(tasks, "dawid_skene")
    model = {t.task: [tweets.labels[order[t.task - 1]]] for t in tasks}  # a model that is always right
    figures = report(tasks, found, set(), min_shared=20, trend_window=100, predicted={C: model})[C]
    people = figures["per_annotator"]
    for score in ("agreement", "recent_agreement", "estimated_accuracy", "model_agreement"):
        assert min(people, key=lambda p: people[p][score]) == "ann-poor", (score, people)
    assert people["ann-a"]["model_agreement"] > 0.85 and people["ann-poor"]["model_agreement"] < 0.3
    assert 0 < figures["alpha"] < 0.6
    assert len(figures["kappa"]) == 3
    assert figures["consensus"] == found.counts[C]
