"""Rank a project's unlabeled tasks by what they would teach the model: the queue.

Cold start (no model, or the cold-start rule not yet met): cluster round-robin over the pool's
features; with labeling rules, class-aware batches read the rules' votes as the labels'
likelihood (`rule_columns`), so the first batches hold tasks the rules give each label. Warm:
the project's strategy over the served model's probabilities (a committee strategy over its
members' probabilities), several controls combined, with class-aware batches if `class_balance` asks. Either way the first
`batch_size` tasks skip near-duplicates, every task gets a k-means `cluster`, and the LS `score`
is the task's position (ascending = served first).

Only cold-start predictions carry `cluster` into LS: LS's uncertainty sampling first serves the
annotator's least-covered cluster, which is the diversity we want at cold start but overrides
the uncertainty order afterwards (observed on LS 1.23.2: a lower-ranked task was served).

What does not depend on the model (hashed counts, clusters) comes from the project's pool cache
(`pool.py`) when the caller passes one: after a promotion only the scoring is new work.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import families, rules
from . import strategy as strategies
from .families import ModelBundle
from .families.pool import Pool, PoolCache
from .labelconfig import LabelConfig
from .policy import Policy
from .rules import RuleSet

log = logging.getLogger(__name__)
FIRST_CANDIDATES = 1000  # tasks the near-duplicate check of the first batch starts from
BALANCED_BATCHES = 10  # batches of the queue's head that class-aware selection fills


class Entry(NamedTuple):
    """One task's place in the queue (a tuple: a 100k-task queue builds 100k of them)."""

    task: int
    position: int
    score: float
    uncertainty: float
    cluster: int


@dataclass(frozen=True)
class Queue:
    version: str
    strategy: str
    reason: str
    entries: list[Entry]
    seconds: float

    def summary(self) -> dict[str, Any]:
        """What `GET /queue` says about the ranking as a whole."""
        return {
            "version": self.version,
            "strategy": self.strategy,
            "reason": self.reason,
            "size": len(self.entries),
            "seconds": round(self.seconds, 4),
        }

    def order(self) -> list[tuple[int, float, int]]:
        """Every ranked task as (task, uncertainty, cluster), first to last (`Store.save_queue`)."""
        return [(e.task, e.uncertainty, e.cluster) for e in self.entries]


def effective_strategy(bundle: ModelBundle, policy: Policy) -> tuple[str, str]:
    """The strategy a ranking with `bundle` uses, and why when it is not the policy's: a committee
    strategy needs members in every control's model (they come with the next retrain)."""
    if policy.strategy in strategies.STRATEGIES:
        return policy.strategy, ""
    if policy.strategy in strategies.COMMITTEE_STRATEGIES:
        if bundle.controls and all(
            families.family(bundle.family_of(name)).committee(model) >= 2 for name, model in bundle.controls.items()
        ):
            return policy.strategy, ""
        return "margin", f"{policy.strategy} needs committee members, which the next retrain trains"
    return "margin", f"{policy.strategy} is not an uncertainty strategy"


def uncertainties(
    bundle: ModelBundle,
    config: LabelConfig,
    tasks: Sequence[dict[str, Any]],
    policy: Policy,
    limit: int,
    hashed: tuple[list[str], Pool] | None = None,
    texts_by_control: Sequence[Sequence[str | None]] | None = None,
) -> np.ndarray:
    """Combined uncertainty per task under `effective_strategy`; a control without text or model
    contributes 0. `hashed`: texts with their pool features, reused by a control that reads exactly
    those texts; `texts_by_control`: each control's `text_of` every task, when the caller has them."""
    name, _ = effective_strategy(bundle, policy)
    per_control = []
    for number, control in enumerate(config.controls):
        model = bundle.controls.get(control.from_name)
        family = families.family(bundle.family_of(control.from_name)) if model is not None else None
        values = np.zeros(len(tasks))
        if family is not None and family.claims(control):
            found = (
                texts_by_control[number] if texts_by_control is not None else [control.text_of(t.get("data") or {}, limit) for t in tasks]
            )
            rows = [i for i, text in enumerate(found) if text is not None]
            if rows:
                texts = [found[i] for i in rows]
                pool = hashed[1] if hashed is not None and texts == hashed[0] else None
                values[rows] = family.uncertainty(model, control, texts, name, pool)
        per_control.append(values)
    return strategies.combine(per_control)


class LabelColumns(NamedTuple):
    """Every control's label probabilities side by side (tasks x labels), for class-aware batches."""

    proba: np.ndarray
    labels: list[tuple[str, str]]  # (control, label) of each column
    groups: list[int]  # each column's control number


def label_columns(
    bundle: ModelBundle,
    config: LabelConfig,
    texts_by_control: Sequence[Sequence[str | None]],
    hashed: tuple[list[str], Pool] | None = None,
) -> LabelColumns | None:
    """The label probabilities of every control whose family gives them (a task without the
    control's text: zeros); None when no control's does."""
    n = len(texts_by_control[0]) if texts_by_control else 0
    blocks, labels, groups = [], [], []
    for number, control in enumerate(config.controls):
        model = bundle.controls.get(control.from_name)
        family = families.family(bundle.family_of(control.from_name)) if model is not None else None
        if family is None or not family.claims(control):
            continue
        found = texts_by_control[number]
        rows = [i for i, text in enumerate(found) if text is not None]
        texts = [found[i] for i in rows]
        pool = hashed[1] if hashed is not None and texts == hashed[0] else None
        proba = family.label_proba(model, control, texts, pool) if rows else None
        if proba is None and rows:
            continue
        block = np.zeros((n, len(control.labels)))
        if rows:
            block[rows] = proba
        blocks.append(block)
        labels += [(control.from_name, label) for label in control.labels]
        groups += [len(blocks) - 1] * len(control.labels)
    return LabelColumns(np.hstack(blocks), labels, groups) if blocks else None


def rule_columns(ruleset: RuleSet, config: LabelConfig, texts_by_control: Sequence[Sequence[str | None]]) -> LabelColumns:
    """The labeling rules' vote shares of every Choices control's labels (`rules.label_shares`),
    side by side: the label likelihoods of class-aware batches before the first model."""
    n = len(texts_by_control[0]) if texts_by_control else 0
    voted = ruleset.votes_in(config, {c.from_name: texts for c, texts in zip(config.controls, texts_by_control)})
    blocks = [rules.label_shares(votes) for _, votes in voted]
    labels = [(c.from_name, label) for c, _ in voted for label in c.labels]
    groups = [number for number, (c, _) in enumerate(voted) for _ in c.labels]
    return LabelColumns(np.hstack(blocks) if blocks else np.zeros((n, 0)), labels, groups)


def balanced(
    values: np.ndarray,
    columns: LabelColumns,
    counts: Mapping[str, Mapping[str, int]],
    labeled: int,
    policy: Policy,
    warm: bool,
) -> np.ndarray:
    """`values` with class-aware batches (`strategy.class_balanced`) over the first BALANCED_BATCHES
    batches: before the project is warm, every label is wanted at the cold-start rule's count."""
    if not columns.labels:
        return values
    known = np.array([counts.get(control, {}).get(label, 0) for control, label in columns.labels], dtype=float)
    targets = strategies.uniform_targets(columns.groups)
    floor = 0 if warm else policy.cold_start_per_class
    return strategies.class_balanced(values, columns.proba, known, targets, labeled, policy.batch_size, BALANCED_BATCHES, floor)


def rank(
    tasks: Sequence[dict[str, Any]],
    config: LabelConfig,
    policy: Policy,
    bundle: ModelBundle | None,
    version: str,
    warm: bool,
    limit: int = 20_000,
    seed: int = 0,
    cache: PoolCache | None = None,
    counts: Mapping[str, Mapping[str, int]] | None = None,
    labeled: int = 0,
) -> Queue:
    """The queue over `tasks` (each `{"id", "data"}`). `cache`: the project's pool cache, which keeps
    what does not depend on the model (hashed counts, clusters) for the next ranking; `counts`:
    labeled tasks per control and label and `labeled` in all, for class-aware batches (none without)."""
    started = time.perf_counter()
    data = [t.get("data") or {} for t in tasks]
    by_control = [[control.text_of(d, limit) for d in data] for control in config.controls]
    texts = (
        [text or "" for text in by_control[0]] if len(by_control) == 1 else ["\n".join(p for p in parts if p) for parts in zip(*by_control)]
    )  # every control's text
    kept = [i for i, text in enumerate(texts) if text]
    if len(kept) < len(tasks):
        tasks, texts = [tasks[i] for i in kept], [texts[i] for i in kept]
        by_control = [[found[i] for i in kept] for found in by_control]
    if not tasks:
        return Queue(version, policy.strategy, "no unlabeled tasks with text", [], time.perf_counter() - started)
    pool = pool_of(tasks, texts, policy, seed, cache)
    cluster_ids = pool.clusters
    columns, likelihood = None, ""  # each task's label likelihoods for class-aware batches, and whose
    if bundle is None or not warm:
        values = strategies.diversity(cluster_ids, seed)
        name = "diversity"
        reason = (
            f"cold start: cluster round-robin until every class has {policy.cold_start_per_class} labels "
            f"and {policy.cold_start_total} tasks are labeled"
        )
        if policy.rules and counts is not None:  # the rules' votes, not a model that has not seen every label a few times
            columns, likelihood = rule_columns(policy.rule_set, config, by_control), "the labeling rules' votes"
    elif policy.strategy == "random":
        values = np.random.default_rng(seed).random(len(tasks))
        name, reason = "random", "random order (control)"
    else:
        values = uncertainties(bundle, config, tasks, policy, limit, (texts, pool), by_control)
        name, fallback = effective_strategy(bundle, policy)
        kind = "committee disagreement" if name in strategies.COMMITTEE_STRATEGIES else "uncertainty"
        reason = f"{name} {kind} of {version}" + (f" ({fallback})" if fallback else "")
    if columns is None and counts is not None and bundle is not None and policy.class_balance != "off" and name != "random":
        columns, likelihood = label_columns(bundle, config, by_control, (texts, pool)), "the model"
    if columns is not None and counts is not None:
        values = balanced(values, columns, counts, labeled, policy, warm)
        reason += f"; class-aware batches from {likelihood}"
    first = first_batch(values, pool, policy.batch_size)
    chosen = set(first)
    rest = [i for i in strategies.order(values, seed).tolist() if i not in chosen]
    sequence = first + rest
    n = len(sequence)
    ids = [int(tasks[i]["id"]) for i in sequence]
    with _no_gc():  # 100k new tuples set off collections that rescan every live object: 4x slower
        entries = list(
            map(
                Entry._make,
                zip(
                    ids,
                    range(n),
                    np.round(np.arange(n) / n, 6).tolist(),
                    np.round(values[sequence], 6).tolist(),
                    cluster_ids[sequence].tolist(),
                ),
            )
        )
    return Queue(version, name, reason, entries, time.perf_counter() - started)


def pool_of(tasks: Sequence[dict[str, Any]], texts: list[str], policy: Policy, seed: int, cache: PoolCache | None) -> Pool:
    """The pool's features from the cache (filled as needed), or computed here without one or
    when the cache cannot be written."""
    if cache is not None:
        try:
            return cache.sync([int(t["id"]) for t in tasks], texts, policy.clusters, seed)
        except OSError as exc:
            log.warning("pool cache %s unusable (%s); ranking without it", cache.directory, exc)
    return Pool.build(texts, policy.clusters, seed)


def first_batch(values: np.ndarray, pool: Pool, size: int) -> list[int]:
    """`strategies.select_batch` over the pool's unsupervised TF-IDF, computing it only for the
    most uncertain tasks: rows left empty are never near-duplicates, so a choice among the
    computed rows alone is the same choice; otherwise the check runs again over more rows."""
    ranked = strategies.order(values)
    candidates = max(FIRST_CANDIDATES, 50 * size)
    while True:
        head = ranked[:candidates]
        chosen = strategies.select_batch(values, pool.tfidf(head), size)
        if candidates >= len(values) or np.isin(chosen, head).all():
            return chosen
        candidates *= 4


@contextmanager
def _no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
