"""Span learning curves on WNUT-16: the product's queue against random order.

    python -m lab spans --budget 400 --batch 20 --seeds 3

Each run starts from an empty labeled set of the 80% pool (the other 20% of WNUT-16's 2,394
tweets, seed 0, is the test set). Every round the product's code decides: `ranking.rank` orders the
pool under the default `Policy` (cluster round-robin until the cold-start rule holds, then the CRF's
margin, de-duplicated batches); `default:cold=K/N` sets the cold-start rule (K labels of every
Choices class, which a span project has none of, and N labeled tasks); `random` is the control,
a random order from the first label. The oracle labels the next
batch; `training.build_snapshot` applies the span rules and the family fits a new CRF from scratch
(`ControlData.fit`, as the train job does); the test set's exact-boundary span micro-F1 is recorded.
Writes a CSV of every point and prints the mean curve of each strategy.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend import spans
from backend.consensus import LabeledTask
from backend.families import ModelBundle
from backend.labelconfig import parse_label_config
from backend.policy import Policy
from backend.ranking import rank
from backend.training import build_snapshot

from .client import ner_config
from .datasets import SpanTexts, load_wnut

STRATEGIES = ("default", "random")


def policy_of(strategy: str, batch: int) -> Policy:
    """The product's policy for `default[:cold=K/N]`."""
    base, _, option = strategy.partition(":")
    if base != "default" or (option and not option.startswith("cold=")):
        raise ValueError(f"unknown span strategy {strategy!r} (default, default:cold=K/N, random)")
    if not option:
        return Policy(strategy="margin", batch_size=batch)
    per_type, _, total = option.removeprefix("cold=").partition("/")
    return Policy(strategy="margin", batch_size=batch, cold_start_per_class=int(per_type), cold_start_total=int(total))


@dataclass
class Curve:
    """One run: (labeled tweets, test span micro-F1) after each round."""

    strategy: str
    seed: int
    points: list[tuple[int, float]] = field(default_factory=list)

    @property
    def labels(self) -> list[int]:
        return [n for n, _ in self.points]

    @property
    def micro_f1(self) -> list[float]:
        return [f1 for _, f1 in self.points]


def split(data: SpanTexts, seed: int = 0) -> tuple[list[int], list[int]]:
    order = np.random.default_rng(seed).permutation(len(data))
    cut = int(0.8 * len(data))
    return sorted(order[:cut].tolist()), sorted(order[cut:].tolist())


def stored(data: SpanTexts, i: int) -> list[str]:
    return sorted(spans.Span(*s).encode() for s in data.spans[i])


def run(data: SpanTexts, strategy: str, seed: int, budget: int, batch: int) -> Curve:
    config = ner_config(data.labels)
    parsed = parse_label_config(config)
    control = parsed.controls[0]
    pool, test = split(data)
    test_texts, test_targets = [data.texts[i] for i in test], [stored(data, i) for i in test]
    policy = policy_of(strategy, batch) if strategy != "random" else None
    shuffled = np.random.default_rng(seed).permutation(pool).tolist()
    labeled: list[int] = []
    bundle: ModelBundle | None = None
    curve = Curve(strategy, seed)
    while len(labeled) < budget:
        chosen = set(labeled)
        tasks = [{"id": i + 1, "data": {"text": data.texts[i]}} for i in pool if i not in chosen]
        counts: dict[str, dict[str, int]] = {"ner": {}}
        for i in labeled:
            for _, _, label in data.spans[i]:
                counts["ner"][label] = counts["ner"].get(label, 0) + 1
        if policy is None:
            labeled += shuffled[len(labeled) : len(labeled) + batch]
        else:
            warm = bundle is not None and policy.warm(counts, parsed.classes, len(labeled))
            queue = rank(tasks, parsed, policy, bundle, "sim", warm, seed=seed, counts=counts, labeled=len(labeled))
            labeled += [e.task - 1 for e in queue.entries[:batch]]
        examples = [LabeledTask(i + 1, {"text": data.texts[i]}, {"ner": stored(data, i)}, {"ner": i + 1}) for i in labeled]
        snapshot = build_snapshot(1, examples, parsed, len(labeled), 20_000)
        model = snapshot.controls["ner"].fit()
        bundle = ModelBundle({"ner": model}, {"ner": "crf-spans"}) if model is not None else None
        f1 = 0.0
        if model is not None:
            family = snapshot.controls["ner"].family
            predicted = [p.target for p in family.predict(model, control, test_texts, 0.5)]
            f1 = family.outcomes(control, test_targets, predicted).metrics()["micro_f1"]
        curve.points.append((len(labeled), round(f1, 4)))
    return curve


def simulate(
    budget: int = 400, batch: int = 20, seeds: int = 3, out: str = "simulation-spans", strategies: Sequence[str] = STRATEGIES
) -> dict[str, object]:
    strategies = list(dict.fromkeys([*strategies, "random"]))
    data = load_wnut()
    started = time.perf_counter()
    curves = [run(data, strategy, seed, budget, batch) for seed in range(seeds) for strategy in strategies]
    path = Path(f"{out}.csv")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["strategy", "seed", "labels", "micro_f1"])
        for curve in curves:
            writer.writerows([curve.strategy, curve.seed, n, f1] for n, f1 in curve.points)
    means = {strategy: np.mean([c.micro_f1 for c in curves if c.strategy == strategy], axis=0).round(4).tolist() for strategy in strategies}
    labels = curves[0].labels
    # full-data reference: the whole pool
    pool, test = split(data)
    parsed = parse_label_config(ner_config(data.labels))
    snapshot = build_snapshot(
        1, [LabeledTask(i + 1, {"text": data.texts[i]}, {"ner": stored(data, i)}, {"ner": i + 1}) for i in pool], parsed, 0, 20_000
    )
    full = snapshot.controls["ner"].fit()
    family, control = snapshot.controls["ner"].family, parsed.controls[0]
    predicted = [p.target for p in family.predict(full, control, [data.texts[i] for i in test], 0.5)]
    full_f1 = family.outcomes(control, [stored(data, i) for i in test], predicted).metrics()
    return {
        "labels": labels,
        "mean_micro_f1": means,
        "gap_to_random": {s: (np.array(means[s]) - np.array(means["random"])).round(4).tolist() for s in strategies if s != "random"},
        "full_pool": {"labels": len(pool), "micro_f1": round(full_f1["micro_f1"], 4), "per_label": full_f1["per_label"]},
        "seeds": seeds,
        "seconds": round(time.perf_counter() - started, 1),
        "csv": str(path),
    }
