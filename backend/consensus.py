"""One training label per task and control from every annotator's vote: consensus, ground truth and
the gold set. Pure functions over the stored votes; no Redis, no HTTP.

A **vote** is an annotator's latest annotation of the task that labels the control (by
`updated_at`, then annotation id); an annotation without `completed_by` is a voter of its own.
Annotations without a region of a `Choices` control (skips, partial submits) are no vote for it.
Of a `Labels` control every submitted annotation is a vote, one without its regions for "no
spans"; each span (its offsets and label) is voted on as a label of a multi-label control is, so
`majority` keeps the spans more than half the voters marked, and `dawid_skene` resolves spans by
`majority`.

Methods (`Policy.consensus`):
- `latest`: the most recently updated vote wins (the behaviour before consensus existed);
- `majority` (default): one vote per annotator; single-label controls take the most frequent
  choice, multi-label controls take each label more than half of the voters chose; a tie on the
  choice (or on any label) leaves the task out of training as **disputed**;
- `dawid_skene`: per-annotator confusion matrices estimated by EM over all the control's votes
  (crowd-kit's `DawidSkene`; multi-label controls per label, as yes/no), so an annotator found
  unreliable weighs less, also on tasks only they labeled. The estimate's posterior is the
  example's training weight; below `dispute_confidence` the task is disputed.

**Ground truth** (LS's star, `ground_truth: true`) overrides the votes, except on annotations
imported with their task: LS 1.23.2 marks those ground truth by default, and a project that imported
its labels would otherwise lose them all to the gold set. They count once re-marked in LS.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

METHODS = ("latest", "majority", "dawid_skene")
# how a task's label for a control was found; `disputed` tasks are not trained on
OUTCOMES = ("single", "unanimous", "latest", "vote", "estimate", "ground_truth", "disputed")
IMPORT_WINDOW = 5.0  # seconds between a task's and an annotation's creation that mark an import
SUBMITTED = "\x00"  # the labels key of a submitted (not skipped) annotation; XML names cannot hold it


@dataclass(frozen=True)
class Vote:
    """One stored annotation: its choices per control (`from_name` -> sorted choices)."""

    annotation: int
    author: str | None
    updated_at: float
    labels: Mapping[str, Sequence[str]]
    ground_truth: bool = False

    @property
    def voter(self) -> str:
        return self.author if self.author is not None else f"annotation:{self.annotation}"


@dataclass(frozen=True)
class TaskVotes:
    """A labeled task as stored: its texts and every annotation's vote."""

    task: int
    data: Mapping[str, str]
    votes: tuple[Vote, ...]


@dataclass(frozen=True)
class LabeledTask:
    """A task's training example: per control, the consensus choices, the annotation they came from
    (the latest agreeing vote), how they were found and the example's weight."""

    task: int
    data: dict[str, str]
    labels: dict[str, list[str]]
    annotations: dict[str, int]
    outcomes: dict[str, str] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)


@dataclass
class Consensus:
    """What `resolve` found: the examples to train on (disputed ones left out), the disputed tasks
    per control, the gold set (tasks with ground truth), counts per control and outcome, and, under
    `dawid_skene`, each annotator's estimated accuracy per control."""

    tasks: list[LabeledTask]
    disputed: dict[str, list[int]]
    gold: set[int]
    counts: dict[str, dict[str, int]]
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    disputes: list[Dispute] = field(default_factory=list)
    votes: Sequence[TaskVotes] = ()  # what it was resolved from


@dataclass(frozen=True)
class Dispute:
    """A task its annotators did not settle: the votes per choice set, and how close the decision
    was (0: a tie; the estimate's posterior under `dawid_skene`), lowest first in the review queue."""

    task: int
    control: str
    reason: str
    votes: dict[str, int]
    certainty: float


def votes_by_voter(task: TaskVotes, control: str, spans: bool = False) -> dict[str, Vote]:
    """Each voter's latest vote on `control` (one vote per annotator); of a span control (`spans`)
    every submitted annotation votes, one without its regions for "no spans"."""
    latest: dict[str, Vote] = {}
    for vote in task.votes:
        if not vote.labels.get(control) and not (spans and SUBMITTED in vote.labels):
            continue
        held = latest.get(vote.voter)
        if held is None or (vote.updated_at, vote.annotation) > (held.updated_at, held.annotation):
            latest[vote.voter] = vote
    return latest


def majority(choices: Sequence[Sequence[str]], multiple: bool) -> list[str] | None:
    """The majority of several voters' choices (None: a tie). Single-label: the most frequent
    choice set; multi-label: each label more than half the voters chose, None if any label has
    exactly half."""
    if not multiple:
        ranked = Counter(tuple(sorted(c)) for c in choices).most_common()
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            return None
        return list(ranked[0][0])
    voters = len(choices)
    per_label = Counter(label for c in choices for label in set(c))
    if any(2 * n == voters for n in per_label.values()):
        return None
    return sorted(label for label, n in per_label.items() if 2 * n > voters)


def resolve(
    tasks: Sequence[TaskVotes],
    method: str = "majority",
    multiple: Container[str] = (),
    dispute_confidence: float = 0.0,
    spans: Collection[str] = (),
) -> Consensus:
    """The consensus of every task and control (`multiple`: the multi-label controls; `spans`: the
    span controls, whose spans vote one by one as labels of a multi-label control do, and which
    `dawid_skene` resolves by `majority`)."""
    if method not in METHODS:
        raise ValueError(f"consensus method must be one of {METHODS}")
    submitted = any(SUBMITTED in v.labels for t in tasks for v in t.votes)
    controls = sorted(
        {c for t in tasks for v in t.votes for c, chosen in v.labels.items() if chosen} | (set(spans) if submitted else set())
    )
    found: dict[int, dict[str, tuple[list[str], int, str, float]]] = {}
    disputed: dict[str, list[int]] = {}
    disputes: list[Dispute] = []
    counts: dict[str, dict[str, int]] = {}
    accuracy: dict[str, dict[str, float]] = {}
    gold: set[int] = set()
    for control in controls:
        of_spans = control in spans
        voted = [(t, votes_by_voter(t, control, of_spans)) for t in tasks]
        voted = [(t, v) for t, v in voted if v]
        estimate = None
        if method == "dawid_skene" and not of_spans:
            estimate, accuracy[control] = dawid_skene(voted, control, control in multiple)
        tally: Counter[str] = Counter()
        for task, by_voter in voted:
            ordered = sorted(by_voter.values(), key=lambda v: (v.updated_at, v.annotation))
            truth = [v for v in ordered if v.ground_truth]
            choices = [sorted(v.labels.get(control, ())) for v in ordered]
            unanimous = all(c == choices[0] for c in choices)
            weight = 1.0
            if truth:
                label, outcome = sorted(truth[-1].labels.get(control, ())), "ground_truth"
                gold.add(task.task)
            elif method == "dawid_skene" and estimate is not None:
                label, weight = estimate[task.task]
                outcome = ("single" if len(ordered) == 1 else "unanimous") if unanimous and label == choices[0] else "estimate"
                if weight < dispute_confidence:
                    outcome = "disputed"
            elif len(ordered) == 1 or unanimous:
                label, outcome = choices[-1], "single" if len(ordered) == 1 else "unanimous"
            elif method == "latest":
                label, outcome = choices[-1], "latest"
            else:
                voted_label = majority(choices, control in multiple)
                label, outcome = (voted_label, "vote") if voted_label is not None else ([], "disputed")
            tally[outcome] += 1
            if outcome == "disputed":
                disputed.setdefault(control, []).append(task.task)
                tally_votes = dict(Counter(", ".join(c) for c in choices))
                reason = "uncertain estimate" if method == "dawid_skene" else "tie"
                disputes.append(Dispute(task.task, control, reason, tally_votes, round(weight if reason != "tie" else 0.0, 4)))
                continue
            source = next((v.annotation for v in reversed(ordered) if sorted(v.labels.get(control, ())) == label), ordered[-1].annotation)
            found.setdefault(task.task, {})[control] = (label, source, outcome, weight)
        counts[control] = dict(tally)
    by_id = {t.task: t for t in tasks}
    labeled = [
        LabeledTask(
            task=task,
            data=dict(by_id[task].data),
            labels={c: v[0] for c, v in slots.items()},
            annotations={c: v[1] for c, v in slots.items()},
            outcomes={c: v[2] for c, v in slots.items()},
            weights={c: v[3] for c, v in slots.items()},
        )
        for task, slots in sorted(found.items())
    ]
    disputes.sort(key=lambda d: (d.certainty, -sum(d.votes.values()), d.task))
    return Consensus(labeled, disputed, gold, counts, accuracy, disputes, tasks)


def dawid_skene(
    voted: Sequence[tuple[TaskVotes, Mapping[str, Vote]]], control: str, multiple: bool
) -> tuple[dict[int, tuple[list[str], float]], dict[str, float]]:
    """Dawid–Skene over one control's votes: per task the estimated choices and their posterior
    (multi-label: each label decided yes/no on its own, the posterior of the least certain), and
    per annotator the estimated accuracy (the diagonal of their confusion matrix, weighted by the
    estimated class priors; multi-label: averaged over labels)."""
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    if not voted:
        return {}, {}
    if not multiple:
        rows = [(t.task, voter, "\x1f".join(sorted(v.labels[control]))) for t, by in voted for voter, v in by.items()]
        posterior, skill = _fit(pd, DawidSkene, rows)
        estimate = {}
        for task, _ in voted:
            probs = posterior.loc[task.task]
            best = str(probs.idxmax())
            estimate[task.task] = (best.split("\x1f") if best else [], float(probs.max()))
        return estimate, skill
    labels = sorted({label for _, by in voted for v in by.values() for label in v.labels[control]})
    chosen: dict[int, list[str]] = {t.task: [] for t, _ in voted}
    certainty: dict[int, float] = {t.task: 1.0 for t, _ in voted}
    skills: dict[str, list[float]] = {}
    for label in labels:
        rows = [(t.task, voter, "yes" if label in v.labels[control] else "no") for t, by in voted for voter, v in by.items()]
        posterior, skill = _fit(pd, DawidSkene, rows)
        yes = posterior["yes"] if "yes" in posterior.columns else pd.Series(0.0, index=posterior.index)
        for task, _ in voted:
            p = float(yes.loc[task.task])
            if p > 0.5:
                chosen[task.task].append(label)
            certainty[task.task] = min(certainty[task.task], max(p, 1.0 - p))
        for voter, value in skill.items():
            skills.setdefault(voter, []).append(value)
    return {t: (sorted(chosen[t]), certainty[t]) for t in chosen}, {v: float(np.mean(s)) for v, s in skills.items()}


def _fit(pd: Any, model: Any, rows: list[tuple[int, str, str]]) -> tuple[Any, dict[str, float]]:
    frame = pd.DataFrame(rows, columns=["task", "worker", "label"])
    ds = model(n_iter=100, tol=1e-5)
    posterior = ds.fit_predict_proba(frame)
    priors = ds.priors_
    skill = {}
    for worker in frame["worker"].unique():
        errors = ds.errors_.loc[worker]  # rows: the label given, columns: the true label
        skill[str(worker)] = float(sum(priors[c] * errors.loc[c, c] for c in priors.index if c in errors.index))
    return posterior, skill


def imported(annotation_created: float | None, task_created: float | None) -> bool:
    """True when an annotation was created with its task (an import), not by an annotator later."""
    if annotation_created is None or task_created is None:
        return False
    return abs(annotation_created - task_created) < IMPORT_WINDOW


def multi_label(config: Any) -> set[str]:
    """The multi-label controls of a label config (none without one)."""
    return {c.from_name for c in config.controls if getattr(c, "multiple", False)} if config is not None else set()


def for_policy(tasks: Sequence[TaskVotes], policy: Any, config: Any) -> Consensus:
    """`resolve` with a project's `Policy` (method, dispute confidence) and its label config (which
    controls are multi-label)."""
    spans = config.span_controls if config is not None else frozenset()
    return resolve(tasks, policy.consensus, multi_label(config), policy.dispute_confidence, spans)


def gold_tasks(consensus: Consensus, policy: Any) -> set[int]:
    """The gold set: tasks with ground truth, once the admin turned it on and `gold_min` exist."""
    return set(consensus.gold) if policy.gold_set and len(consensus.gold) >= policy.gold_min else set()


def review_queue(found: Consensus, suspects: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """Tasks to send back to people, most useful first: those their annotators did not settle
    (`found.disputes`) and those a confident model disagrees with (label-error `suspects`, with
    cleanlab's label quality as their certainty), ordered by how close the decision is."""
    entries = [
        {"task": d.task, "control": d.control, "reason": d.reason, "votes": d.votes, "certainty": d.certainty} for d in found.disputes
    ]
    seen = {(d.task, d.control) for d in found.disputes}
    for s in suspects:
        if (s.get("task"), s.get("control")) in seen:
            continue
        entries.append(
            {
                "task": s["task"],
                "control": s["control"],
                "reason": "model disagrees",
                "votes": {s["given"]: 1},
                "certainty": s["quality"],
                "suggested": s["suggested"],
            }
        )
    entries.sort(key=lambda e: (e["certainty"], e["task"]))
    return entries
