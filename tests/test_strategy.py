import numpy as np
import pytest
from scipy import sparse

from backend import strategy as s

P = np.array(
    [
        [0.98, 0.01, 0.01],  # confident
        [0.40, 0.35, 0.25],  # small margin, high entropy
        [0.50, 0.495, 0.005],  # smallest margin
        [0.34, 0.33, 0.33],  # nearly uniform
    ]
)


def test_least_confidence_margin_and_entropy_orderings():
    assert list(s.order(s.least_confidence(P))) == [3, 1, 2, 0]
    assert list(s.order(s.margin(P))) == [2, 3, 1, 0]
    assert list(s.order(s.entropy(P))) == [3, 1, 2, 0]
    for f in (s.least_confidence, s.margin, s.entropy):
        values = f(P)
        assert values.min() >= 0 and values.max() <= 1
    assert s.least_confidence(np.array([[1 / 3] * 3]))[0] == pytest.approx(1.0)
    assert s.entropy(np.array([[0.5, 0.5]]))[0] == pytest.approx(1.0)
    assert s.margin(np.array([[1.0, 0.0]]))[0] == pytest.approx(0.0)


def test_ties_are_broken_reproducibly():
    ties = np.array([0.5, 0.5, 0.5, 0.9])
    first = s.order(ties, seed=1)
    assert first[0] == 3 and list(first) == list(s.order(ties, seed=1))
    assert sorted(first[1:]) == [0, 1, 2]


def test_multi_label_uncertainty_is_highest_near_one_half():
    proba = np.array([[0.5, 0.5], [0.9, 0.1], [0.5, 0.99]])
    values = s.multilabel(proba)
    assert values[0] == pytest.approx(1.0) and values[1] == pytest.approx(0.2) and values[2] == pytest.approx(0.51)
    assert np.allclose(s.uncertainty(proba, "entropy", multiple=True), values)


def test_committee_disagreement():
    agree = [np.array([[0.9, 0.1]]), np.array([[0.8, 0.2]]), np.array([[0.7, 0.3]])]
    split = [np.array([[0.9, 0.1]]), np.array([[0.1, 0.9]]), np.array([[0.6, 0.4]])]
    assert s.vote_entropy(agree)[0] == pytest.approx(0.0, abs=1e-9)
    assert s.vote_entropy(split)[0] > 0.9
    assert s.mean_kl(split)[0] > s.mean_kl(agree)[0] >= 0


def test_disagreement_ranks_by_the_committee_not_by_the_consensus_margin():
    # task 0: every member unsure the same way (consensus margin 0, no disagreement);
    # task 1: members confidently disagree (the consensus looks sure of class 0)
    committee = [
        np.array([[0.5, 0.5, 0.0], [0.9, 0.1, 0.0]]),
        np.array([[0.5, 0.5, 0.0], [0.9, 0.1, 0.0]]),
        np.array([[0.5, 0.5, 0.0], [0.05, 0.95, 0.0]]),
    ]
    consensus = np.mean(committee, axis=0)
    assert s.margin(consensus)[0] > s.margin(consensus)[1]
    for name in s.COMMITTEE_STRATEGIES:
        values = s.disagreement(committee, name)
        assert values[1] > values[0], name
        assert ((values >= 0) & (values <= 1)).all()


def test_disagreement_of_a_multilabel_committee_is_per_label():
    agree = [np.array([[0.9, 0.1]]), np.array([[0.8, 0.2]])]
    split = [np.array([[0.9, 0.1]]), np.array([[0.1, 0.2]])]
    for name in s.COMMITTEE_STRATEGIES:
        assert s.disagreement(split, name, multiple=True)[0] > s.disagreement(agree, name, multiple=True)[0]


def test_several_controls_combine_and_order_puts_the_most_uncertain_first():
    combined = s.combine([np.array([0.1, 0.9]), np.array([0.5, 0.3])])
    assert np.allclose(combined, [0.3, 0.6])
    values = np.array([0.2, 0.9, 0.5])
    assert list(s.order(values)) == [1, 2, 0]


def test_diversity_interleaves_clusters():
    clusters = np.array([0] * 6 + [1] * 3 + [2] * 1)
    first_ten = s.order(s.diversity(clusters, seed=0))
    assert sorted(clusters[first_ten[:3]]) == [0, 1, 2]
    assert sorted(clusters[first_ten[3:5]]) == [0, 1]


def test_clusters_separate_obvious_groups():
    texts = ["cats purr softly"] * 20 + ["rockets launch into orbit"] * 20
    from backend.families.pool import features

    ids = s.clusters(features(texts), 2)
    assert len(set(ids[:20])) == 1 and len(set(ids[20:])) == 1 and ids[0] != ids[-1]


def test_batch_selection_skips_near_duplicates():
    features = sparse.csr_matrix(np.array([[1, 0, 0], [1, 0, 0.01], [0, 1, 0], [0, 0, 1]], dtype=float))
    values = np.array([0.9, 0.89, 0.5, 0.4])
    assert s.select_batch(values, features, 3) == [0, 2, 3]
    assert s.select_batch(values, features, 3, max_similarity=1.01) == [0, 1, 2]


def test_spread_over_clusters_takes_each_clusters_most_uncertain_first():
    uncertainties = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1])
    cluster_ids = np.array([0, 0, 0, 1, 2, 2])
    values = s.spread_over_clusters(uncertainties, cluster_ids, top=5)
    assert list(s.order(values)) == [0, 3, 4, 1, 2, 5]  # round 1: clusters 0, 1, 2; round 2: cluster 0; the rest after
    assert values.min() >= 0 and values.max() <= 1
    assert list(s.order(s.spread_over_clusters(uncertainties, cluster_ids, top=0))) == list(s.order(uncertainties))
    assert list(s.order(s.spread_over_clusters(uncertainties, cluster_ids, top=2))) == [0, 1, 2, 3, 4, 5]


def test_skip_most_uncertain_moves_the_top_behind_the_rest_in_their_order():
    uncertainties = np.array([0.2, 0.9, 0.5, 0.95, 0.1])
    assert list(s.order(s.skip_most_uncertain(uncertainties, 2))) == [2, 0, 4, 3, 1]
    assert list(s.order(s.skip_most_uncertain(uncertainties, 0))) == list(s.order(uncertainties))
    assert list(s.order(s.skip_most_uncertain(uncertainties, 9))) == list(s.order(uncertainties))
    assert s.skip_most_uncertain(np.zeros(0), 3).shape == (0,)
    assert list(uncertainties) == [0.2, 0.9, 0.5, 0.95, 0.1]  # the input is left alone


def test_class_balanced_gives_a_starved_label_places_until_it_catches_up():
    rng = np.random.default_rng(0)
    n = 1000
    proba = rng.dirichlet([1, 1, 0.2], n)  # label 2 is rare and seldom likely
    values = s.margin(proba)
    counts = np.array([40.0, 40.0, 0.0])
    targets = np.array([0.45, 0.45, 0.10])
    plain = s.order(values)[:20]
    first = s.order(s.class_balanced(values, proba, counts, targets, 80, 20))[:20]
    # after the batch, 100 labels: label 2 wants 10 and expects what the strategy's own batch brings
    places = int(10 - proba[plain, 2].sum())
    likely_rare = set(np.argsort(-proba[:, 2])[:places].tolist())
    assert 5 <= places <= 10 and likely_rare <= set(first.tolist()) and not likely_rare <= set(plain.tolist())
    assert set(first.tolist()) - likely_rare <= set(plain.tolist())  # the other places follow the strategy
    caught_up = s.class_balanced(values, proba, np.array([45.0, 45.0, 10.0]), targets, 80, 20)
    assert list(s.order(caught_up)[:20]) == list(plain)  # no label short: the strategy's order
    floor = s.class_balanced(values, proba, np.array([50.0, 50.0, 0.0]), np.array([0.4, 0.4, 0.0]), 100, 20, floor=5)
    places = int(5 - proba[plain, 2].sum())  # cold start: 5 of every label
    assert places >= 1 and set(np.argsort(-proba[:, 2])[:places].tolist()) <= set(s.order(floor)[:20].tolist())
    unknown = np.column_stack([proba[:, :2] / proba[:, :2].sum(axis=1, keepdims=True), np.zeros(n)])
    assert list(s.order(s.class_balanced(values, unknown, counts, targets, 80, 20))[:20]) == list(plain)  # never predicted: no places


def test_class_balanced_fills_later_batches_from_expected_counts():
    proba = np.array([[0.9, 0.1]] * 50 + [[0.2, 0.8]] * 50)
    values = np.linspace(1, 0, 100)  # the strategy prefers the frequent label's tasks
    ranked = s.order(s.class_balanced(values, proba, np.zeros(2), np.array([0.5, 0.5]), 0, 10, batches=3))
    for batch in range(3):
        chosen = ranked[batch * 10 : (batch + 1) * 10]
        assert (chosen >= 50).sum() >= 4  # every batch keeps places for the label the strategy passes over
    assert sorted(ranked.tolist()) == list(range(100))


def test_uniform_targets_share_each_control_among_its_labels():
    assert s.uniform_targets([0, 0, 1, 1, 1]) == pytest.approx([0.5, 0.5, 1 / 3, 1 / 3, 1 / 3])
