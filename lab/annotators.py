"""Simulated annotators over a labeled corpus: several people of given accuracies, a share of the
tasks labeled by all of them (in random order) and the rest by one, as votes the backend stores.

An annotator with a `systematic` confusion maps each class to one fixed other class when wrong (the
next class in sorted order); the others pick a wrong class uniformly. `consensus_report` measures
how often each consensus method recovers the true label and how good a model trained on it is,
which the tests and `python -m lab consensus` use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.consensus import METHODS, Consensus, TaskVotes, Vote, resolve

CONTROL = "sentiment"


@dataclass(frozen=True)
class Annotator:
    name: str
    accuracy: float
    systematic: bool = False


TEAM = (Annotator("ann-a", 0.92), Annotator("ann-b", 0.85), Annotator("ann-poor", 0.2, systematic=True))


def answer(annotator: Annotator, truth: str, classes: Sequence[str], rng: np.random.Generator) -> str:
    if rng.random() < annotator.accuracy:
        return truth
    if annotator.systematic:
        return classes[(classes.index(truth) + 1) % len(classes)]
    return str(rng.choice([c for c in classes if c != truth]))


def simulate_votes(
    texts: Sequence[str],
    labels: Sequence[str],
    team: Sequence[Annotator] = TEAM,
    overlap: float = 0.6,
    seed: int = 0,
) -> list[TaskVotes]:
    """One `TaskVotes` per text (task ids from 1): a share `overlap` labeled by the whole team in a
    random order, each other task by one annotator drawn at random."""
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels))
    out = []
    annotation = 0
    for i, (text, truth) in enumerate(zip(texts, labels)):
        who = list(rng.permutation(len(team))) if rng.random() < overlap else [int(rng.integers(len(team)))]
        votes = []
        for order, index in enumerate(who):
            annotation += 1
            chosen = answer(team[index], truth, classes, rng)
            votes.append(Vote(annotation, team[index].name, 1_000.0 + i * 10 + order, {CONTROL: [chosen]}))
        out.append(TaskVotes(i + 1, {"text": text}, tuple(votes)))
    return out


def label_accuracy(found: Consensus, truth: Mapping[int, str]) -> float:
    """Share of all tasks whose consensus is the true label (disputed tasks count as wrong)."""
    return sum(1 for t in found.tasks if t.labels[CONTROL] == [truth[t.task]]) / max(len(truth), 1)


def model_accuracy(found: Consensus, held_texts: Sequence[str], held_labels: Sequence[str]) -> float:
    """Accuracy on clean held-out texts of the built-in model trained on the consensus (with its weights)."""
    from backend import families
    from backend.labelconfig import parse_label_config
    from lab.client import LABEL_CONFIG

    config = parse_label_config(LABEL_CONFIG)
    control, family = config.controls[0], families.assign(config)[CONTROL]
    weights = np.array([t.weights.get(CONTROL, 1.0) for t in found.tasks])
    texts, targets = [t.data["text"] for t in found.tasks], [t.labels[CONTROL] for t in found.tasks]
    model = family.fit(control, texts, targets, weights if np.any(weights != 1.0) else None)
    predicted = [p.target for p in family.predict(model, control, held_texts, 0.5)]
    return float(np.mean([p == [truth] for p, truth in zip(predicted, held_labels)]))


def consensus_report(tasks: int = 3000, held: int = 2000, seeds: Sequence[int] = (0, 1)) -> dict[str, Any]:
    """The simulation of `TEAM` on tweets: per consensus method and seed, label and model accuracy;
    agreement figures of seed 0 (`python -m lab consensus`)."""
    from backend.agreement import report

    from .datasets import load_tweets

    data = load_tweets()
    order = np.random.default_rng(0).permutation(len(data.texts))
    texts, labels = [data.texts[i] for i in order[:tasks]], [data.labels[i] for i in order[:tasks]]
    held_texts = [data.texts[i] for i in order[tasks : tasks + held]]
    held_labels = [data.labels[i] for i in order[tasks : tasks + held]]
    truth = {i + 1: label for i, label in enumerate(labels)}
    out: dict[str, Any] = {"tasks": tasks, "held_out": held, "team": [vars(a) for a in TEAM], "methods": {}}
    for method in METHODS:
        rows = []
        for seed in seeds:
            found = resolve(simulate_votes(texts, labels, seed=seed), method)
            rows.append(
                {
                    "seed": seed,
                    "label_accuracy": round(label_accuracy(found, truth), 4),
                    "disputed": sum(map(len, found.disputed.values())),
                    "model_accuracy": round(model_accuracy(found, held_texts, held_labels), 4),
                    "outcomes": found.counts.get(CONTROL, {}),
                }
            )
        out["methods"][method] = rows
    votes = simulate_votes(texts, labels, seed=seeds[0])
    found = resolve(votes, "dawid_skene")
    figures = report(votes, found, set(), 20, 100)[CONTROL]
    out["agreement"] = {k: figures[k] for k in ("alpha", "kappa", "per_class", "per_annotator")}
    return out


def consensus_cost(tasks: int = 30_000) -> dict[str, Any]:
    """Seconds and peak memory of `dawid_skene` and `majority` over `tasks` simulated tasks, and
    what importing crowd-kit adds to a web process (the embedded mode runs train jobs in it) that
    has run a label-error check (cleanlab and pandas), and what that check's imports added."""
    import resource
    import time

    import backend.web.app  # noqa: F401 - the web process's modules, loaded before crowd-kit

    from .datasets import load_tweets

    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    loaded = rss_mb()
    import backend.mislabels  # noqa: F401 - the label-error check's cleanlab and pandas, loaded after the first promotion

    checked = rss_mb()
    from crowdkit.aggregation import DawidSkene  # noqa: F401

    imported = rss_mb()
    data = load_tweets()
    order = np.random.default_rng(0).permutation(len(data.texts))[:tasks]  # the file is grouped by label
    votes = simulate_votes([data.texts[i] for i in order], [data.labels[i] for i in order], seed=0)
    before = rss_mb()
    started = time.perf_counter()
    resolve(votes, "dawid_skene")
    estimate = time.perf_counter() - started
    peak = rss_mb()
    started = time.perf_counter()
    resolve(votes, "majority")
    return {
        "tasks": len(votes),
        "votes": sum(len(t.votes) for t in votes),
        "import_label_error_check_mb": round(checked - loaded),
        "import_crowd_kit_mb": round(imported - checked),
        "dawid_skene_seconds": round(estimate, 2),
        "dawid_skene_peak_mb": round(peak - before),
        "majority_seconds": round(time.perf_counter() - started, 2),
    }
