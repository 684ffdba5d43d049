"""Query strategies: pure functions over predicted probabilities (and features where needed).

Every strategy returns an *uncertainty* in [0, 1] per task, higher = more useful to label next.
Label Studio's uncertainty sampling serves the lowest prediction `score` first; `ranking` pushes
each task's queue position as its score. No Redis, no HTTP: unit tests call these directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

EPS = 1e-12
CLUSTER_SAMPLE = 10_000


def least_confidence(proba: np.ndarray) -> np.ndarray:
    """1 - max p, rescaled so a uniform prediction scores 1."""
    k = proba.shape[1]
    if k < 2:
        return np.zeros(proba.shape[0])
    return np.clip((1.0 - proba.max(axis=1)) * k / (k - 1), 0.0, 1.0)


def margin(proba: np.ndarray) -> np.ndarray:
    """1 - (p1 - p2): "breaking ties", the best default on our measurements."""
    if proba.shape[1] < 2:
        return np.zeros(proba.shape[0])
    top2 = -np.partition(-proba, 1, axis=1)[:, :2]
    return np.clip(1.0 - (top2[:, 0] - top2[:, 1]), 0.0, 1.0)


def entropy(proba: np.ndarray) -> np.ndarray:
    """Prediction entropy, normalised by log(k)."""
    k = proba.shape[1]
    if k < 2:
        return np.zeros(proba.shape[0])
    p = np.clip(proba, EPS, 1.0)
    return np.clip(-(p * np.log(p)).sum(axis=1) / np.log(k), 0.0, 1.0)


def multilabel(proba: np.ndarray) -> np.ndarray:
    """Independent yes/no decisions per label: mean of each decision's margin uncertainty."""
    if proba.shape[1] == 0:
        return np.zeros(proba.shape[0])
    return np.clip(1.0 - np.abs(2.0 * proba - 1.0), 0.0, 1.0).mean(axis=1)


def vote_entropy(committee: Sequence[np.ndarray]) -> np.ndarray:
    """Disagreement of the members' argmax votes (entropy of the vote shares, normalised)."""
    stacked = np.stack(committee)  # members x tasks x classes
    k = stacked.shape[2]
    votes = np.zeros(stacked.shape[1:])
    for member in stacked:
        votes[np.arange(member.shape[0]), member.argmax(axis=1)] += 1
    return entropy(votes / len(committee)) if k > 1 else np.zeros(stacked.shape[1])


def mean_kl(committee: Sequence[np.ndarray]) -> np.ndarray:
    """Mean KL divergence of each member from the consensus, squashed into [0, 1)."""
    stacked = np.clip(np.stack(committee), EPS, 1.0)
    consensus = stacked.mean(axis=0)
    kl = (stacked * np.log(stacked / consensus)).sum(axis=2).mean(axis=0)
    return 1.0 - np.exp(-kl)


STRATEGIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "margin": margin,
    "least_confidence": least_confidence,
    "entropy": entropy,
}
COMMITTEE_STRATEGIES = {"vote_entropy": vote_entropy, "mean_kl": mean_kl}


def uncertainty(proba: np.ndarray, strategy: str, multiple: bool = False) -> np.ndarray:
    """The named single-model strategy (multi-label controls always use `multilabel`)."""
    if multiple:
        return multilabel(proba)
    return STRATEGIES[strategy](proba)


def disagreement(committee: Sequence[np.ndarray], strategy: str, multiple: bool = False) -> np.ndarray:
    """The named committee strategy over the members' probabilities (tasks x labels each). A
    multi-label control is one yes/no decision per label: the mean disagreement over its labels.
    Ties among few voters are broken by the consensus' uncertainty, so equal votes still rank."""
    measure = COMMITTEE_STRATEGIES[strategy]
    stacked = np.stack([np.asarray(p, dtype=float) for p in committee])  # members x tasks x labels
    if multiple:
        if stacked.shape[2] == 0:
            return np.zeros(stacked.shape[1])
        per_label = [measure([np.stack([1.0 - m[:, j], m[:, j]], axis=1) for m in stacked]) for j in range(stacked.shape[2])]
        values = np.mean(per_label, axis=0)
        consensus = multilabel(stacked.mean(axis=0))
    else:
        values = measure(list(stacked))
        consensus = entropy(stacked.mean(axis=0))
    return np.clip(values + 1e-6 * consensus, 0.0, 1.0)


def combine(per_control: Sequence[np.ndarray]) -> np.ndarray:
    """Several controls: the mean uncertainty, so a task uncertain in any control rises."""
    if not per_control:
        return np.zeros(0)
    return np.mean(np.stack(per_control), axis=0)


def order(uncertainties: np.ndarray, seed: int = 0) -> np.ndarray:
    """Task indices, most uncertain first; ties broken at random but reproducibly."""
    rng = np.random.default_rng(seed)
    jitter = rng.random(len(uncertainties))
    return np.lexsort((jitter, -np.asarray(uncertainties)))


def clusters(features, n_clusters: int, seed: int = 0, sample: int = CLUSTER_SAMPLE, projection: bool = False):
    """k-means cluster ids over task features (sparse TF-IDF is reduced with SVD first).

    SVD and k-means are fitted on at most `sample` tasks (and the columns two of them share), then
    every task is projected and assigned: a 100k-task pool costs little more than a 10k one. They run on one
    thread: their steps are small, and on a machine shared with web workers BLAS and OpenMP threads
    spin against each other (5x slower under load in our measurements).

    `projection=True` returns `(ids, Projection | None)`: what assigns later tasks to the same
    clusters (None when every task is in cluster 0).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        ids, fitted = _clusters(features, n_clusters, seed, sample)
    return (ids, fitted) if projection else ids


class Projection(NamedTuple):
    """A fitted clustering: TF-IDF columns kept (None: dense features used as they are), their SVD
    components, and the k-means centres in the normalised reduced space."""

    used: np.ndarray | None
    components: np.ndarray | None
    centers: np.ndarray

    def assign(self, features) -> np.ndarray:
        """Cluster ids of more tasks (rows of the same kind of features), as `clusters` assigned its own."""
        from sklearn.preprocessing import normalize

        if self.used is not None:
            features = features.tocsr()[:, self.used] @ self.components.T
        reduced = normalize(np.asarray(features, dtype=float))
        distances = (reduced**2).sum(axis=1)[:, None] - 2 * reduced @ self.centers.T + (self.centers**2).sum(axis=1)[None, :]
        return distances.argmin(axis=1).astype(int) if len(reduced) else np.zeros(0, dtype=int)


def _clusters(features, n_clusters: int, seed: int, sample: int) -> tuple[np.ndarray, Projection | None]:
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize

    n = features.shape[0]
    k = max(1, min(n_clusters, n))
    if k == 1:
        return np.zeros(n, dtype=int), None
    fit = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False)) if n > sample else np.arange(n)
    used = components = None
    if hasattr(features, "tocsr"):
        features = features.tocsr()
        used = np.flatnonzero(np.bincount(features[fit].indices, minlength=features.shape[1]) >= 2)
        if len(used) < 2:  # a column fewer than two fitted tasks share cannot group them, only cost
            return np.zeros(n, dtype=int), None
        features = features[:, used]
        dims = min(50, len(used) - 1, max(2, len(fit) - 1))
        svd = TruncatedSVD(dims, random_state=seed).fit(features[fit])
        reduced = svd.transform(features)
        components = svd.components_
    else:
        reduced = features
    reduced = normalize(reduced)
    model = MiniBatchKMeans(k, random_state=seed, n_init=3, batch_size=2048).fit(reduced[fit])
    return model.predict(reduced).astype(int), Projection(used, components, model.cluster_centers_)


def diversity(cluster_ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """Cold start: an uncertainty-like value that interleaves clusters round-robin.

    Task i of its cluster's shuffled list gets rank i; across clusters, equal ranks alternate. The
    result is in [0, 1], decreasing along that interleaved order.
    """
    rng = np.random.default_rng(seed)
    n = len(cluster_ids)
    rank_in_cluster = np.zeros(n)
    for c in np.unique(cluster_ids):
        members = np.flatnonzero(cluster_ids == c)
        rng.shuffle(members)
        rank_in_cluster[members] = np.arange(len(members))
    sequence = np.lexsort((rng.random(n), rank_in_cluster))
    values = np.empty(n)
    values[sequence] = 1.0 - np.arange(n) / max(n, 1)
    return values


def spread_over_clusters(uncertainties: np.ndarray, cluster_ids: np.ndarray, top: int) -> np.ndarray:
    """Batch diversity: among the `top` most uncertain tasks, each cluster's most uncertain first,
    then each cluster's second, and so on; the other tasks follow in their own order. Returns
    values in [0, 1] that `order` and `select_batch` read in that sequence."""
    n = len(uncertainties)
    sequence = order(uncertainties)
    head = sequence[: max(0, top)]
    rank_in_cluster = np.zeros(len(head))
    seen: dict[int, int] = {}
    for i, task in enumerate(head):
        cluster = int(cluster_ids[task])
        rank_in_cluster[i] = seen.get(cluster, 0)
        seen[cluster] = int(rank_in_cluster[i]) + 1
    head = head[np.lexsort((np.arange(len(head)), rank_in_cluster))]
    values = np.empty(n)
    values[np.concatenate([head, sequence[len(head) :]])] = 1.0 - np.arange(n) / max(n, 1)
    return values


BALANCES = ("uniform", "off")  # class_balance: places for labels short of 1/k of their control's labels, or none
MAX_RESERVED = 0.5  # at most this share of a batch goes to starved labels; the rest follows the strategy


def uniform_targets(groups: Sequence[int]) -> np.ndarray:
    """Each label's wanted share of the labeled tasks: 1/k of its control's k labels (`groups`:
    each label's control number). Measured against the labels' estimated share of the project
    (what random order gives each label), which lost accuracy and macro-F1 on tweets."""
    groups = np.asarray(groups)
    return 1.0 / np.bincount(groups)[groups]


def class_balanced(
    values: np.ndarray,
    proba: np.ndarray,
    counts: np.ndarray,
    targets: np.ndarray,
    labeled: int,
    size: int,
    batches: int = 1,
    floor: int = 0,
) -> np.ndarray:
    """`values` (higher first) reordered so that no label starves. In each of the first `batches`
    batches of `size`, a label whose expected labeled count after the strategy's own batch (each
    chosen task adds its probabilities) still falls short of its target (`targets[j]` x the labeled
    tasks after the batch, and at least `floor`: the cold-start rule's labels per class) gets
    places for the tasks most likely to carry it (highest `proba[:, j]`), as many as it falls
    short, at most MAX_RESERVED of the batch in all; the other places follow `values`. A label that
    catches up loses its places; a label never predicted (a column of zeros) gets none. Returns
    values in [0, 1] decreasing along the new order."""
    n = len(values)
    taken = np.zeros(n, dtype=bool)
    by_value = order(values)
    expected = np.asarray(counts, dtype=float).copy()
    sequence: list[int] = []
    cursor = 0
    for batch in range(batches):
        room = min(size, n - len(sequence))
        if room <= 0:
            break
        plain = by_value[cursor:][~taken[by_value[cursor:]]][:room]  # what the strategy alone would choose
        after = expected + proba[plain].sum(axis=0)
        short = np.maximum(np.maximum(targets * (labeled + size * (batch + 1)), floor) - after, 0.0)
        short[proba.max(axis=0) <= 0] = 0.0
        reserved = min(int(np.floor(short.sum())), int(room * MAX_RESERVED))
        places = np.zeros(len(short), dtype=int)
        if reserved:
            share = short / short.sum() * reserved
            places = np.floor(share).astype(int)
            for j in np.argsort(-(share - places))[: reserved - places.sum()]:
                places[j] += 1
        chosen: list[int] = []
        for j in np.flatnonzero(places):
            likely = np.where(taken, -np.inf, proba[:, j])
            best = np.argpartition(-likely, places[j] - 1)[: places[j]]
            best = best[np.argsort(-likely[best], kind="stable")]
            taken[best] = True
            chosen += best.tolist()
        while len(chosen) < room and cursor < n:
            task = int(by_value[cursor])
            cursor += 1
            if not taken[task]:
                taken[task] = True
                chosen.append(task)
        expected += proba[chosen].sum(axis=0)
        sequence += chosen
    rest = by_value[~taken[by_value]]
    full = np.concatenate([np.asarray(sequence, dtype=int), rest]).astype(int)
    result = np.empty(n)
    result[full] = 1.0 - np.arange(n) / max(n, 1)
    return result


def skip_most_uncertain(uncertainties: np.ndarray, count: int) -> np.ndarray:
    """The same values with the `count` most uncertain tasks moved behind all others (their
    order kept). Measures whether the very top of an uncertainty ranking is label noise that
    costs more than it teaches (on tweets it was not: README, simulator)."""
    values = np.array(uncertainties, dtype=float)
    if count <= 0 or not len(values):
        return values
    top = order(values)[:count]
    values[top] -= values.max() - values.min() + 1.0
    return values


def select_batch(uncertainties: np.ndarray, features, size: int, max_similarity: float = 0.9) -> list[int]:
    """The `size` most uncertain tasks, skipping near-duplicates (cosine > max_similarity) of one
    already chosen, so one batch does not hand out the same text several times."""
    from sklearn.preprocessing import normalize

    chosen: list[int] = []
    vectors = normalize(features)
    for index in order(uncertainties):
        if len(chosen) >= size:
            break
        if chosen:
            similarity = vectors[chosen] @ vectors[index].T
            similarity = similarity.toarray() if hasattr(similarity, "toarray") else np.asarray(similarity)
            if similarity.max() > max_similarity:
                continue
        chosen.append(int(index))
    return chosen
