"""Our ranking and training code in this process, on tweets: queue ranking time and retrain time."""

from __future__ import annotations

import random
import time
from typing import Sequence

from backend.estimator import ModelBundle
from backend.labelconfig import parse_label_config
from backend.policy import Policy
from backend.ranking import rank
from backend.store import LabeledTask
from backend.training import build_snapshot, train_and_judge

from .client import LABEL_CONFIG

CONFIG = parse_label_config(LABEL_CONFIG)


def resample(texts: Sequence[str], labels: Sequence[str], n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`n` examples: the data in order, then drawn again with replacement once it runs out."""
    if n <= len(texts):
        return list(texts[:n]), list(labels[:n])
    rng = random.Random(seed)
    extra = [rng.randrange(len(texts)) for _ in range(n - len(texts))]
    return list(texts) + [texts[i] for i in extra], list(labels) + [labels[i] for i in extra]


def snapshot(texts: Sequence[str], labels: Sequence[str], project: int = 1):
    tasks = [LabeledTask(i + 1, {"text": t}, {"sentiment": [label]}, {"sentiment": i + 1}) for i, (t, label) in enumerate(zip(texts, labels))]
    return build_snapshot(project, tasks, CONFIG, len(tasks), 20_000)


def trained(texts: Sequence[str], labels: Sequence[str]) -> ModelBundle:
    result = train_and_judge(snapshot(texts, labels), None)
    assert result.bundle is not None
    return result.bundle


def ranking_seconds(texts: Sequence[str], labels: Sequence[str], pool: int, labeled: int, repeat: int = 3) -> tuple[float, float]:
    """Wall and CPU seconds of the best of `repeat` warm rankings (margin, the default) of a
    `pool`-task pool resampled from the texts after the first `labeled`, by a model trained on those."""
    bundle = trained(texts[:labeled], labels[:labeled])
    rest = list(texts[labeled:])
    rng = random.Random(1)
    tasks = [{"id": i + 1, "data": {"text": rest[rng.randrange(len(rest))]}} for i in range(pool)]
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        cpu = time.process_time()
        queue = rank(tasks, CONFIG, Policy(), bundle, "bench", warm=True)
        assert len(queue.entries) == pool and queue.strategy == "margin"
        best = min(best, (queue.seconds, time.process_time() - cpu))
    return best


def retrain_seconds(texts: Sequence[str], labels: Sequence[str], size: int, champion: ModelBundle) -> tuple[float, float]:
    """Wall and CPU seconds of one retrain as a train job runs it: fit the challenger on `size` labels
    and judge it against a champion (resampling the tweets with replacement beyond their number)."""
    data = snapshot(*resample(texts, labels, size))
    started, cpu = time.perf_counter(), time.process_time()
    result = train_and_judge(data, champion)
    assert result.bundle is not None
    return time.perf_counter() - started, time.process_time() - cpu
