"""Our ranking and training code in this process, on tweets: queue ranking time and retrain time."""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from backend.consensus import LabeledTask
from backend.families import ModelBundle
from backend.families.pool import cache_for, size_on_disk
from backend.labelconfig import parse_label_config
from backend.policy import Policy
from backend.ranking import rank
from backend.training import build_snapshot, train_and_judge
from lab.client import LABEL_CONFIG

CONFIG = parse_label_config(LABEL_CONFIG)


def resample(texts: Sequence[str], labels: Sequence[str], n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`n` examples: the data in order, then drawn again with replacement once it runs out."""
    if n <= len(texts):
        return list(texts[:n]), list(labels[:n])
    rng = random.Random(seed)
    extra = [rng.randrange(len(texts)) for _ in range(n - len(texts))]
    return list(texts) + [texts[i] for i in extra], list(labels) + [labels[i] for i in extra]


def snapshot(texts: Sequence[str], labels: Sequence[str], project: int = 1):
    tasks = [
        LabeledTask(i + 1, {"text": t}, {"sentiment": [label]}, {"sentiment": i + 1}) for i, (t, label) in enumerate(zip(texts, labels))
    ]
    return build_snapshot(project, tasks, CONFIG, len(tasks), 20_000)


def trained(texts: Sequence[str], labels: Sequence[str]) -> ModelBundle:
    result = train_and_judge(snapshot(texts, labels), None)
    assert result.bundle is not None
    return result.bundle


@dataclass(frozen=True)
class Ranking:
    """Wall and CPU seconds of a pool's first ranking (cache empty) and of the best later one (cache
    filled, a new model: what follows every promotion), and the cache's size on disk."""

    cold: tuple[float, float]
    warm: tuple[float, float]
    cache_bytes: int


def ranking_seconds(texts: Sequence[str], labels: Sequence[str], pool: int, labeled: int, repeat: int = 3) -> Ranking:
    """Rankings (margin, the default) of a `pool`-task pool resampled from the texts after the first
    `labeled`: the first by a model trained on half of those, with an empty pool cache; then the best
    of `repeat` by the model trained on all of them, with the cache that ranking filled."""
    before = trained(texts[: labeled // 2], labels[: labeled // 2])
    bundle = trained(texts[:labeled], labels[:labeled])
    rest = list(texts[labeled:])
    rng = random.Random(1)
    tasks = [{"id": i + 1, "data": {"text": rest[rng.randrange(len(rest))]}} for i in range(pool)]
    with tempfile.TemporaryDirectory() as directory:
        cache = cache_for(directory)

        def timed(model: ModelBundle) -> tuple[float, float]:
            cpu = time.process_time()
            queue = rank(tasks, CONFIG, Policy(), model, "bench", warm=True, cache=cache)
            assert len(queue.entries) == pool and queue.strategy == "margin"
            return queue.seconds, time.process_time() - cpu

        cold = timed(before)
        warm = min(timed(bundle) for _ in range(repeat))
        return Ranking(cold, warm, size_on_disk(cache.directory))


def retrain_seconds(texts: Sequence[str], labels: Sequence[str], size: int, champion: ModelBundle) -> tuple[float, float]:
    """Wall and CPU seconds of one retrain as a train job runs it: fit the challenger on `size` labels
    and judge it against a champion (resampling the tweets with replacement beyond their number)."""
    data = snapshot(*resample(texts, labels, size))
    started, cpu = time.perf_counter(), time.process_time()
    result = train_and_judge(data, champion)
    assert result.bundle is not None
    return time.perf_counter() - started, time.process_time() - cpu


def kernel_ms(texts: Sequence[str], labels: Sequence[str], labeled: int, batch: int = 1000, repeat: int = 20) -> dict[str, float]:
    """CPU milliseconds (best of `repeat`) to hash `batch` tweets and to score them with a model on
    `labeled` labels: compiled kernels against numpy (hashing twice: words not yet in the memo, then
    all in it)."""
    from backend.families import hashing
    from backend.families.hashing import WordGrams, hash_texts

    control = trained(texts[:labeled], labels[:labeled]).controls["sentiment"]
    unseen = list(texts[labeled : labeled + batch])
    features = hash_texts(unseen)

    def best(work, times: int = repeat) -> float:
        spent = []
        for _ in range(times):
            cpu = time.process_time()
            work()
            spent.append(time.process_time() - cpu)
        return min(spent) * 1000

    compiled, memo = hashing.compiled, hashing.WORD_GRAMS
    out = {}
    try:
        if compiled is not None:
            out["hash, compiled"] = best(lambda: hash_texts(unseen))
            out["score, compiled"] = best(lambda: control.linear.decision_function(features))
        hashing.compiled = None
        hashing.WORD_GRAMS = WordGrams(capacity=0)  # holds nothing: every word is new
        out["hash, numpy, new words"] = best(lambda: hash_texts(unseen))
        hashing.WORD_GRAMS = WordGrams(capacity=memo.capacity)
        out["hash, numpy, words in the memo"] = best(lambda: hash_texts(unseen))
        out["score, numpy"] = best(lambda: control.linear.decision_function(features))
    finally:
        hashing.compiled, hashing.WORD_GRAMS = compiled, memo
    return out
