"""Learning-curve simulator: the real train and ranking code, an oracle annotator, random as control.

    python -m backend simulate --dataset tweets --strategy default --budget 1500 --batch 20 --seeds 3

Each run starts from an empty labeled set, asks the strategy for the next batch of the pool
(stratified 80/20 pool/test split, seed 0), has the oracle label it, retrains from scratch and
scores the test set. `default` is the product's own policy (cluster round-robin until the
cold-start rule holds, then margin, de-duplicated batches); `random` is the control. The full-pool
models of ours and of the official Label Studio example (TF-IDF 1-3-grams + LogisticRegression
C=10) are fitted side by side as references. Writes a CSV of every point and a PNG of the curves.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import normalize

from . import strategy as strategies
from .datasets import load_dataset, stratified_split
from .estimator import ControlModel
from .hashing import hash_texts
from .policy import Policy
from .ranking import features as pool_features


@dataclass
class Curve:
    strategy: str
    seed: int
    labels: list[int]
    accuracy: list[float]
    macro_f1: list[float]


def official_baseline(train_texts: Sequence[str], train_labels: Sequence[str], test_texts: Sequence[str]) -> list[str]:
    """The official example's pipeline, fitted on the whole pool."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 3)), LogisticRegression(C=10, max_iter=1000))
    model.fit(list(train_texts), list(train_labels))
    return list(model.predict(list(test_texts)))


def run(
    name: str,
    seed: int,
    pool_x,
    pool_y: np.ndarray,
    test_x,
    test_y: np.ndarray,
    classes: list[str],
    cluster_ids: np.ndarray,
    unit_features,
    budget: int,
    batch: int,
    policy: Policy,
) -> Curve:
    rng = np.random.default_rng(seed)
    labeled: list[int] = []
    is_labeled = np.zeros(len(pool_y), dtype=bool)
    curve = Curve(name, seed, [], [], [])
    diversity = strategies.diversity(cluster_ids, seed)
    while True:
        model = None
        if labeled and len(set(pool_y[labeled])) >= 2:
            model = ControlModel.fit(None, [[y] for y in pool_y[labeled]], classes, False, features=pool_x[labeled])
        if labeled:
            predicted = (
                np.array(classes)[model.predict_proba(features=test_x).argmax(axis=1)]
                if model
                else np.full(len(test_y), pool_y[labeled][0])
            )
            curve.labels.append(len(labeled))
            curve.accuracy.append(float(accuracy_score(test_y, predicted)))
            curve.macro_f1.append(float(f1_score(test_y, predicted, average="macro")))
        if len(labeled) >= budget:
            return curve
        candidates = np.flatnonzero(~is_labeled)
        size = min(batch, budget - len(labeled))
        if name == "random":
            chosen = list(rng.choice(candidates, size, replace=False))
        else:
            counts = {c: int((pool_y[labeled] == c).sum()) for c in classes}
            warm = model is not None and policy.warm({"c": counts}, {"c": tuple(classes)}, len(labeled))
            if warm:
                values = strategies.uncertainty(model.predict_proba(features=pool_x[candidates]), policy.strategy)
            else:
                values = diversity[candidates]
            picked = strategies.select_batch(values, unit_features[candidates], size)
            chosen = [int(candidates[i]) for i in picked]
        labeled += chosen
        is_labeled[chosen] = True


def labels_to_reach(curve_labels: list[int], mean_accuracy: np.ndarray, target: float) -> int | None:
    for n, value in zip(curve_labels, mean_accuracy):
        if value >= target:
            return n
    return None


_shared: dict[str, object] = {}  # the data of one simulation, inherited by forked runs


def _run_shared(run_key: tuple[str, int]) -> Curve:
    name, seed = run_key
    d = _shared
    started = time.perf_counter()
    curve = run(name, seed, d["pool_x"], d["pool_y"], d["test_x"], d["test_y"], d["classes"], d["cluster_ids"],  # type: ignore[arg-type]
                d["unit"], d["budget"], d["batch"], d["policy"])  # type: ignore[arg-type]
    print(f"{name} seed {seed}: accuracy {curve.accuracy[-1]:.4f} at {curve.labels[-1]} labels "
          f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    return curve


def simulate(
    dataset: str, strategy: str, budget: int, batch: int, seeds: int, out: Path, policy: Policy | None = None,
    jobs: int = os.cpu_count() or 1,
) -> dict[str, object]:
    """Runs every (strategy, seed) pair, `jobs` at a time in forked processes."""
    started = time.perf_counter()
    policy = policy or Policy(batch_size=batch)
    data = load_dataset(dataset)
    pool, test = stratified_split(data)
    classes = sorted(set(data.labels))
    pool_x, test_x = hash_texts(pool.texts), hash_texts(test.texts)
    pool_y, test_y = np.array(pool.labels), np.array(test.labels)
    unit = normalize(pool_features(pool.texts))
    cluster_ids = strategies.clusters(unit, policy.clusters, 0)
    full = ControlModel.fit(None, [[y] for y in pool_y], classes, False, features=pool_x)
    full_predicted = np.array(classes)[full.predict_proba(features=test_x).argmax(axis=1)]
    full_accuracy = float(accuracy_score(test_y, full_predicted))
    official_predicted = official_baseline(pool.texts, pool.labels, test.texts)
    official_accuracy = float(accuracy_score(test_y, official_predicted))
    names = [strategy, "random"] if strategy != "random" else ["random"]
    _shared.update(
        pool_x=pool_x, pool_y=pool_y, test_x=test_x, test_y=test_y, classes=classes,
        cluster_ids=cluster_ids, unit=unit, budget=budget, batch=batch, policy=policy,
    )
    runs = [(name, seed) for name in names for seed in range(seeds)]
    with ProcessPoolExecutor(max(1, min(jobs, len(runs))), mp_context=multiprocessing.get_context("fork")) as pool_:
        curves = list(pool_.map(_run_shared, runs))
    _shared.clear()
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / f"simulation-{Path(dataset).stem}.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["strategy", "seed", "labels", "accuracy", "macro_f1"])
        for curve in curves:
            for row in zip(curve.labels, curve.accuracy, curve.macro_f1):
                writer.writerow([curve.strategy, curve.seed, *row])
    summary: dict[str, object] = {
        "dataset": dataset, "pool": len(pool_y), "test": len(test_y), "budget": budget, "batch": batch, "seeds": seeds,
        "full_data_accuracy": round(full_accuracy, 4),
        "full_data_macro_f1": round(float(f1_score(test_y, full_predicted, average="macro")), 4),
        "official_example_accuracy": round(official_accuracy, 4),
        "strategies": {},
    }
    for name in names:
        mine = [c for c in curves if c.strategy == name]
        labels = mine[0].labels
        accuracy = np.mean([c.accuracy for c in mine], axis=0)
        f1 = np.mean([c.macro_f1 for c in mine], axis=0)
        summary["strategies"][name] = {  # type: ignore[index]
            "aulc_accuracy": round(float(accuracy.mean()), 4),
            "aulc_macro_f1": round(float(f1.mean()), 4),
            "final_accuracy": round(float(accuracy[-1]), 4),
            "labels_to_90": labels_to_reach(labels, accuracy, 0.9 * full_accuracy),
            "labels_to_95": labels_to_reach(labels, accuracy, 0.95 * full_accuracy),
        }
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["plot"] = str(plot(curves, names, full_accuracy, official_accuracy, out / f"learning-curve-{Path(dataset).stem}.png"))
    summary["csv"] = str(csv_path)
    return summary


def plot(curves: list[Curve], names: list[str], full: float, official: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
    for metric, axis in zip(("accuracy", "macro_f1"), axes):
        for name in names:
            mine = [c for c in curves if c.strategy == name]
            values = np.array([getattr(c, metric) for c in mine])
            axis.plot(mine[0].labels, values.mean(axis=0), label=name)
            axis.fill_between(mine[0].labels, values.min(axis=0), values.max(axis=0), alpha=0.2)
        if metric == "accuracy":
            axis.axhline(full, color="grey", linestyle="--", linewidth=1, label=f"full data {full:.3f}")
            axis.axhline(0.95 * full, color="grey", linestyle=":", linewidth=1, label="95% of full data")
            axis.axhline(official, color="tab:red", linestyle="--", linewidth=1, label=f"official example, full data {official:.3f}")
        axis.set_xlabel("labels")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right", fontsize=8)
    fig.suptitle("Learning curves (mean of seeds, band = min..max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
