import numpy as np

from lab.annotators import TEAM, consensus_cost, simulate_votes


def test_the_simulated_team_labels_as_told(tweets):
    texts, labels = tweets.texts[:3000], tweets.labels[:3000]
    tasks = simulate_votes(texts, labels, overlap=0.6, seed=0)
    assert abs(np.mean([len(t.votes) == len(TEAM) for t in tasks]) - 0.6) < 0.03
    classes = sorted(set(labels))
    for annotator in TEAM:
        given = [(v.labels["sentiment"][0], labels[t.task - 1]) for t in tasks for v in t.votes if v.author == annotator.name]
        assert abs(np.mean([g == truth for g, truth in given]) - annotator.accuracy) < 0.03
        if annotator.systematic:  # each class mapped to the next one when wrong
            assert all(g == classes[(classes.index(truth) + 1) % 3] for g, truth in given if g != truth)


def test_the_cost_report_measures_both_methods():
    cost = consensus_cost(500)
    assert cost["tasks"] == 500 and cost["votes"] > 500
    assert cost["dawid_skene_seconds"] > 0 and cost["majority_seconds"] >= 0 and cost["import_crowd_kit_mb"] >= 0
