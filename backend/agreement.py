"""How much annotators agree, per control and per annotator. Pure functions over the stored votes.

Per control: Krippendorff's alpha (nominal; each distinct choice set is one value), Cohen's kappa
of every pair of annotators with at least `min_shared` tasks in common, and per-class specific
agreement (over pairs of votes on one task where either chose the class, the share where both did).
Per annotator: labels given; agreement with the consensus of the *other* annotators of the same
tasks (leave-one-out majority, ties skipped); agreement with the model's out-of-fold predictions
when the label-error check has them; the estimated accuracy where Dawid–Skene runs; and the same
leave-one-out agreement over their last `trend_window` labels, which shows who is drifting.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from .consensus import Consensus, TaskVotes, Vote, majority, votes_by_voter

MAX_PAIRED_VOTERS = 100


def control_agreement(
    tasks: Sequence[TaskVotes], control: str, multiple: bool = False, min_shared: int = 20, trend_window: int = 100
) -> dict[str, Any]:
    """Agreement figures of one control (see the module doc)."""
    voted = [(t.task, votes_by_voter(t, control)) for t in tasks]
    voted = [(task, by) for task, by in voted if by]
    annotators = sorted({voter for _, by in voted for voter in by})
    overlapping = [(task, by) for task, by in voted if len(by) > 1]
    return {
        "tasks": len(voted),
        "overlapping_tasks": len(overlapping),
        "annotators": len(annotators),
        "alpha": krippendorff_alpha(overlapping, control),
        "kappa": pairwise_kappa(overlapping, control, min_shared),
        "per_class": per_class_agreement(overlapping, control),
        "per_annotator": per_annotator(voted, control, multiple, trend_window),
    }


def alphas(tasks: Sequence[TaskVotes]) -> dict[str, float | None]:
    """Krippendorff's alpha of every control (what each version's record keeps, and `/metrics` shows)."""
    controls = sorted({c for t in tasks for v in t.votes for c, chosen in v.labels.items() if chosen})
    out = {}
    for control in controls:
        overlapping = [(t.task, by) for t in tasks if len(by := votes_by_voter(t, control)) > 1]
        out[control] = krippendorff_alpha(overlapping, control)
    return out


def key(vote: Vote, control: str) -> str:
    return "\x1f".join(sorted(vote.labels[control]))


def krippendorff_alpha(overlapping: Sequence[tuple[int, Mapping[str, Vote]]], control: str) -> float | None:
    """Nominal alpha over the tasks with two or more voters (None: too few to say)."""
    import krippendorff

    values = sorted({key(v, control) for _, by in overlapping for v in by.values()})
    if len(overlapping) < 2 or len(values) < 2:
        return None
    code = {v: i for i, v in enumerate(values)}
    row = {a: i for i, a in enumerate(sorted({voter for _, by in overlapping for voter in by}))}
    data = np.full((len(row), len(overlapping)), np.nan)
    for column, (_, by) in enumerate(overlapping):
        for voter, vote in by.items():
            data[row[voter], column] = code[key(vote, control)]
    alpha = float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
    return None if math.isnan(alpha) else round(alpha, 4)


def pairwise_kappa(overlapping: Sequence[tuple[int, Mapping[str, Vote]]], control: str, min_shared: int) -> list[dict[str, Any]]:
    """Cohen's kappa of each pair of annotators sharing at least `min_shared` tasks (tasks with more
    than `MAX_PAIRED_VOTERS` voters are left out: their pairs grow with the square)."""
    from sklearn.metrics import cohen_kappa_score

    shared: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for _, by in overlapping:
        if len(by) > MAX_PAIRED_VOTERS:
            continue
        for a, b in combinations(sorted(by), 2):
            shared.setdefault((a, b), []).append((key(by[a], control), key(by[b], control)))
    out = []
    for (a, b), pairs in sorted(shared.items()):
        if len(pairs) < max(min_shared, 2):
            continue
        first, second = zip(*pairs)
        kappa = float(cohen_kappa_score(first, second)) if len(set(first) | set(second)) > 1 else 1.0
        out.append({"annotators": [a, b], "shared": len(pairs), "kappa": None if math.isnan(kappa) else round(kappa, 4)})
    return out


def per_class_agreement(overlapping: Sequence[tuple[int, Mapping[str, Vote]]], control: str) -> dict[str, float]:
    """Specific agreement per class: 2·both / (2·both + one only), over pairs of votes on a task
    (counted per task from how many of its n voters chose the class: k·(k-1)/2 pairs agree on it,
    k·(n-k) do not, so a task with a thousand voters costs no more than one with two)."""
    both: Counter[str] = Counter()
    one: Counter[str] = Counter()
    for _, by in overlapping:
        n = len(by)
        chosen = Counter(label for vote in by.values() for label in set(vote.labels[control]))
        for label, k in chosen.items():
            both[label] += k * (k - 1) // 2
            one[label] += k * (n - k)
    return {
        label: round(2 * both[label] / (2 * both[label] + one[label]), 4)
        for label in sorted(set(both) | set(one))
        if both[label] + one[label]
    }


def per_annotator(
    voted: Sequence[tuple[int, Mapping[str, Vote]]], control: str, multiple: bool, trend_window: int
) -> dict[str, dict[str, Any]]:
    """Labels given and leave-one-out agreement of each annotator, overall and over their last
    `trend_window` labels."""
    history: dict[str, list[tuple[float, bool | None]]] = {}
    for _, by in voted:
        for voter, vote in by.items():
            others = [sorted(v.labels[control]) for other, v in by.items() if other != voter]
            agreed = None
            if others:
                consensus = majority(others, multiple)
                agreed = None if consensus is None else sorted(vote.labels[control]) == consensus
            history.setdefault(voter, []).append((vote.updated_at, agreed))
    out = {}
    for voter, entries in sorted(history.items()):
        entries.sort(key=lambda entry: entry[0])
        judged = [a for _, a in entries if a is not None]
        recent = [a for _, a in entries[-trend_window:] if a is not None]
        out[voter] = {
            "labels": len(entries),
            "compared": len(judged),
            "agreement": round(float(np.mean(judged)), 4) if judged else None,
            "recent_agreement": round(float(np.mean(recent)), 4) if recent else None,
        }
    return out


def report(
    tasks: Sequence[TaskVotes],
    found: Consensus,
    multiple: set[str],
    min_shared: int,
    trend_window: int,
    predicted: Mapping[str, Mapping[int, list[str]]] | None = None,
) -> dict[str, Any]:
    """Every control's agreement, with each annotator's Dawid–Skene accuracy (when estimated) and
    agreement with the model's out-of-fold predictions `predicted` (control -> task -> choices)."""
    controls = sorted({c for t in tasks for v in t.votes for c, chosen in v.labels.items() if chosen})
    out: dict[str, Any] = {}
    for control in controls:
        figures = control_agreement(tasks, control, control in multiple, min_shared, trend_window)
        model = (predicted or {}).get(control) or {}
        matches: dict[str, list[bool]] = {}
        for t in tasks:
            if t.task in model:
                for voter, vote in votes_by_voter(t, control).items():
                    matches.setdefault(voter, []).append(sorted(vote.labels[control]) == sorted(model[t.task]))
        for voter, row in figures["per_annotator"].items():
            estimated = found.accuracy.get(control, {}).get(voter)
            row["estimated_accuracy"] = None if estimated is None else round(estimated, 4)
            row["model_agreement"] = round(float(np.mean(matches[voter])), 4) if matches.get(voter) else None
        figures["consensus"] = found.counts.get(control, {})
        out[control] = figures
    return out
