"""Turn a snapshot of stored labels into a challenger, judge it against the champion, and decide.

Pure functions over data and models: no Redis, no HTTP, no files. The train job wires them to the
store and the registry. Every control is trained, predicted and scored by its model family
(`families`): nothing here knows what kind of model a family fits.

Evaluation data: a task belongs to the held-out set when a stable hash of (project, task) falls
below `holdout_rate(n)`; that rate only shrinks as a project grows, so today's held-out tasks were
held out from every earlier model too and champion and challenger are judged on data neither saw.
Every model, served or judged, trains on the other tasks only. While a control has fewer than
`MIN_HOLDOUT` held-out examples, the gate instead cross-validates the challenger on its training
tasks and promotes it when it beats a trivial baseline (too few examples to tell two models apart).

The gate: a challenger is promoted unless its metric is more than `margin` below the champion's
and a paired bootstrap over the held-out tasks says so with 95% confidence; a difference the
held-out set cannot resolve is not a reason to keep serving a model trained on fewer labels.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from . import drift, families
from .consensus import LabeledTask
from .families import Family, ModelBundle, Outcomes
from .families.base import choose
from .labelconfig import ChoicesControl, LabelConfig
from .rules import PRIOR_WEIGHTS, RulePrior, RuleSet, blend

MIN_HOLDOUT = 200
MAX_HOLDOUT = 1000
HOLDOUT_FRACTION = 0.2
MIN_REFERENCE = 20  # held-out texts needed for an honest drift reference (else the training texts)
METRICS = ("macro_f1", "accuracy")
BOOTSTRAP = 300
CONFIDENCE = 0.95  # a challenger is rejected only when it is worse with at least this confidence


@dataclass
class ControlData:
    """Training examples of one control, for the family that serves it."""

    control: Any
    family: Family
    tasks: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    targets: list[Any] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Examples per label (of spans: spans per label)."""
        return dict(Counter(str(self.control.label_of(item)) for target in self.targets for item in target))

    def subset(self, rows: Sequence[int]) -> ControlData:
        return ControlData(
            self.control,
            self.family,
            [self.tasks[i] for i in rows],
            [self.texts[i] for i in rows],
            [self.targets[i] for i in rows],
            [self.weights[i] for i in rows],
        )

    def fit(self, committee: int = 0) -> Any | None:
        """The family's model of these examples (weights passed only when some differ from 1)."""
        weights = np.asarray(self.weights, dtype=float) if any(w != 1.0 for w in self.weights) else None
        return self.family.fit(self.control, self.texts, self.targets, weights, committee)

    def predicted(self, model: Any | None, rows: Sequence[int], threshold: float) -> list[Any]:
        """The targets `model` predicts for the texts at `rows` (nothing, `[]`, without a model)."""
        return predicted_targets(self.family, model, self.control, [self.texts[i] for i in rows], threshold)


def predicted_targets(family: Family, model: Any | None, control: Any, texts: Sequence[str], threshold: float) -> list[Any]:
    if model is None:
        return [[] for _ in texts]
    return [p.target for p in family.predict(model, control, texts, threshold)]


@dataclass
class Snapshot:
    """Everything a train job trains on, with a fingerprint that identifies the data."""

    project: int
    controls: dict[str, ControlData]
    set_aside: dict[str, int]
    fingerprint: str
    watermark: int
    gold: dict[str, ControlData] = field(default_factory=dict)  # examples never trained on, judged on (`consensus.gold_tasks`)
    consensus: dict[str, dict[str, int]] = field(default_factory=dict)  # tasks per control and outcome (`consensus.OUTCOMES`)
    champion_saw_gold: bool = False  # the champion was trained before these gold tasks were held out: not judged on them

    @property
    def size(self) -> int:
        return len({t for data in self.controls.values() for t in data.tasks})


def build_snapshot(
    project: int,
    tasks: Sequence[LabeledTask],
    config: LabelConfig,
    watermark: int,
    max_chars: int,
    quarantined: Mapping[int, str] | None = None,
    gold: Container[int] = (),
    consensus: Mapping[str, Mapping[str, int]] | None = None,
) -> Snapshot:
    """Keep the labels valid under the current config for the family of each control; count the
    others as set aside, and the quarantined tasks (task -> `example_digest`) as long as they are
    unchanged. Tasks in `gold` become the gold examples instead of training ones. The fingerprint
    covers the config, each control's family, and every example with its weight."""
    assigned = families.assign(config)
    controls = {c.from_name: ControlData(c, assigned[c.from_name]) for c in config.controls if c.from_name in assigned}
    gold_data = {name: ControlData(data.control, data.family) for name, data in controls.items()}
    set_aside: Counter[str] = Counter()
    digest = hashlib.sha256(config.digest.encode())
    digest.update(json.dumps({name: data.family.name for name, data in sorted(controls.items())}).encode())
    for task in tasks:
        if quarantined and quarantined.get(task.task) == example_digest(task):
            set_aside["quarantined"] += len(task.labels)
            continue
        in_gold = task.task in gold
        for from_name, stored in task.labels.items():
            data = (gold_data if in_gold else controls).get(from_name)
            if data is None:
                set_aside["control not in config"] += 1
                continue
            target, text, problem = data.family.example(data.control, stored, task.data, max_chars)
            if problem or text is None:
                set_aside[problem or "no text"] += 1
                continue
            weight = float(task.weights.get(from_name, 1.0))
            data.tasks.append(task.task)
            data.texts.append(text)
            data.targets.append(target)
            data.weights.append(weight)
            kind = "gold" if in_gold else "train"
            digest.update(f"{kind}\x1f{from_name}\x1f{task.task}\x1f{json.dumps(target, sort_keys=True)}\x1f{weight:.4f}\x1f".encode())
            digest.update(hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest())
    gold_data = {name: data for name, data in gold_data.items() if data.tasks}
    counts = {name: dict(c) for name, c in (consensus or {}).items()}
    set_aside["disputed"] += sum(c.get("disputed", 0) for c in counts.values())
    set_aside = +set_aside  # drops the zero counts
    return Snapshot(project, controls, dict(set_aside), digest.hexdigest()[:20], watermark, gold_data, counts)


def example_digest(task: LabeledTask) -> str:
    """Identifies a task's texts and labels: a quarantined task is tried again once either changes."""
    return hashlib.sha256(json.dumps([task.data, task.labels], sort_keys=True).encode("utf-8", "surrogatepass")).hexdigest()[:20]


def poisoned_tasks(snapshot: Snapshot) -> set[int]:
    """Tasks whose examples make fitting raise, found by splitting the failing examples in halves
    until single ones remain (group testing: a few fits per poisoned task). Empty when fitting
    each control on all its examples does not raise: the failure is not in the data."""
    found: set[int] = set()
    for data in snapshot.controls.values():
        rows = list(range(len(data.tasks)))
        suspects = [rows] if rows and _fit_raises(data, rows) else []
        while suspects:
            rows = suspects.pop()
            if len(rows) == 1:
                found.add(data.tasks[rows[0]])
                continue
            suspects += [half for half in (rows[: len(rows) // 2], rows[len(rows) // 2 :]) if _fit_raises(data, half)]
    return found


def _fit_raises(data: ControlData, rows: list[int]) -> bool:
    try:
        data.subset(rows).fit()
    except Exception:  # any error the family raises on these examples
        return True
    return False


def holdout_rate(n: int) -> float:
    return min(HOLDOUT_FRACTION, MAX_HOLDOUT / max(n, 1))


def in_holdout(project: int, task: int, rate: float) -> bool:
    h = hashlib.sha256(f"{project}:{task}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < rate


def holdout_mask(project: int, tasks: Sequence[int]) -> np.ndarray:
    rate = holdout_rate(len(tasks))
    return np.array([in_holdout(project, t, rate) for t in tasks], dtype=bool)


@dataclass
class Judgement:
    """What the gate decided and why, with the figures behind it."""

    promote: bool
    reason: str
    challenger: dict[str, dict[str, float]]
    champion: dict[str, dict[str, float]]
    baseline: dict[str, dict[str, float]]
    method: str
    gold: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # "challenger"/"champion" -> control -> metrics
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)  # control -> the labeling rules' prior (`choose_prior`)

    def to_json(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "reason": self.reason,
            "method": self.method,
            "challenger": self.challenger,
            "champion": self.champion,
            "baseline": self.baseline,
            "gold": self.gold,
            "rules": self.rules,
        }


def mean_metric(per_control: dict[str, dict[str, float]], metric: str, snapshot: Snapshot | None = None) -> float:
    """The mean over controls of `metric`, each control's as its family reads it (`Family.judged_by`)."""
    values = [m[judged_by(snapshot, name, metric)] for name, m in per_control.items() if m.get("n")]
    return float(np.mean(values)) if values else 0.0


def judged_by(snapshot: Snapshot | None, control: str, metric: str) -> str:
    data = snapshot.controls.get(control) if snapshot is not None else None
    return data.family.judged_by(metric) if data is not None else metric


@dataclass
class TrainResult:
    bundle: ModelBundle | None
    judgement: Judgement
    seconds: float
    reference: dict[str, list[float]] | None = None  # drift reference of the first control (see `drift`)
    event: str = ""  # what asked for the training (`Model.fit`)


def train_and_judge(
    snapshot: Snapshot,
    champion: ModelBundle | None,
    *,
    metric: str = "macro_f1",
    margin: float = 0.0,
    threshold: float = 0.5,
    committee: int = 0,
    rules: RuleSet | None = None,
) -> TrainResult:
    """Train a challenger on the snapshot (with `committee` members per control when asked: the
    committee strategies rank with them) and decide whether it may replace the champion. Where
    labeling `rules` vote in a control, the challenger mixes them in at the weight that scores
    best out of fold on its training tasks (`choose_prior`; none when no weight beats leaving
    them out), and the gate judges it with them."""
    if metric not in METRICS:
        raise ValueError(f"unknown gate metric {metric!r}")
    started = time.perf_counter()
    models: dict[str, Any] = {}
    challenger_m: dict[str, dict[str, float]] = {}
    champion_m: dict[str, dict[str, float]] = {}
    baseline_m: dict[str, dict[str, float]] = {}
    methods = set()
    paired: dict[str, tuple[Outcomes, Outcomes]] = {}
    reference: dict[str, list[float]] | None = None
    priors: dict[str, dict[str, Any]] = {}
    only = sum(isinstance(data.control, ChoicesControl) for data in snapshot.controls.values()) == 1  # as `rules.choice_controls`
    for name, data in snapshot.controls.items():
        if len(data.texts) < 2:
            continue
        mask = holdout_mask(snapshot.project, data.tasks)
        held = [i for i in range(len(data.tasks)) if mask[i]]
        train = [i for i in range(len(data.tasks)) if not mask[i]]
        family, control = data.family, data.control
        train_part = data.subset(train)
        model = train_part.fit(committee)
        fitted: list[Fold] | None = None  # fold models of the training tasks, fitted once for the prior and the gate
        prior: RulePrior | None = None
        if model is not None and rules:
            fitted = fold_models(train_part)
            prior, scores = choose_prior(train_part, rules, only, metric, threshold, fitted)
            if scores:
                priors[name] = {"version": rules.version, "weight": prior.weight if prior else 0.0, "out_of_fold": scores}
            if prior is not None:
                model = family.with_prior(model, prior) or model
        if len(held) >= MIN_HOLDOUT:
            methods.add("holdout")
            targets = [data.targets[i] for i in held]
            same_family = champion is not None and champion.family_of(name) == family.name
            old = champion.controls.get(name) if same_family else None
            new_outcomes = family.outcomes(control, targets, data.predicted(model, held, threshold))
            old_outcomes = family.outcomes(control, targets, data.predicted(old, held, threshold))
            challenger_m[name], champion_m[name] = new_outcomes.metrics(), old_outcomes.metrics()
            paired[name] = (new_outcomes, old_outcomes)
            trivial = family.baseline(control, [data.targets[i] for i in train], len(held))
            baseline_m[name] = family.outcomes(control, targets, trivial).metrics()
        else:
            methods.add("cross-validation")
            predicted, baseline = _cross_validate(train_part, threshold, fitted or fold_models(train_part), prior)
            challenger_m[name] = family.outcomes(control, train_part.targets, predicted).metrics()
            baseline_m[name] = family.outcomes(control, train_part.targets, baseline).metrics()
        if model is not None:
            models[name] = model
            if reference is None:
                unseen_by_model = held if len(held) >= MIN_REFERENCE else train
                texts = [data.texts[i] for i in unseen_by_model]
                reference = drift.reference(texts, family.predict(model, control, texts, threshold))
    method = "+".join(sorted(methods)) or "none"
    if not models:
        judgement = Judgement(False, "not enough labels: every control needs two classes", challenger_m, champion_m, baseline_m, method)
        return TrainResult(None, judgement, time.perf_counter() - started)
    named = "/".join(sorted({judged_by(snapshot, name, metric) for name in models}))  # the F1 of each family (`Family.f1`)
    new = mean_metric(challenger_m, metric, snapshot)
    base = mean_metric(baseline_m, metric, snapshot)
    if champion_m:
        old = mean_metric(champion_m, metric, snapshot)
        worse = worse_probability(paired, metric, margin, snapshot)
        promote = new >= old - margin or worse < CONFIDENCE
        verdict = "not worse" if new >= old - margin else ("within noise" if promote else "worse")
        reason = f"{named} {new:.4f} vs champion {old:.4f} (margin {margin}): {verdict}; P(worse by more than the margin) = {worse:.2f}"
    else:
        promote = new > base
        context = "first model" if champion is None else "too few held-out labels to compare models, cross-validated"
        reason = f"{context}: {named} {new:.4f} {'beats' if promote else 'does not beat'} the trivial baseline {base:.4f}"
    gold = gold_metrics(snapshot, models, champion, threshold)
    if gold.get("champion") and promote:
        new_gold, old_gold = mean_metric(gold["challenger"], metric, snapshot), mean_metric(gold["champion"], metric, snapshot)
        if new_gold < old_gold - margin:
            promote = False
            reason += f"; but worse on the gold set: {named} {new_gold:.4f} vs champion {old_gold:.4f} (margin {margin})"
        else:
            reason += f"; gold set {named} {new_gold:.4f} vs champion {old_gold:.4f}"
    elif gold.get("challenger"):
        reason += f"; gold set {named} {mean_metric(gold['challenger'], metric, snapshot):.4f}"
    judgement = Judgement(promote, reason, challenger_m, champion_m, baseline_m, method, gold, priors)
    names = {name: snapshot.controls[name].family.name for name in models}
    return TrainResult(ModelBundle(models, names), judgement, time.perf_counter() - started, reference)


def gold_metrics(
    snapshot: Snapshot, models: Mapping[str, Any], champion: ModelBundle | None, threshold: float
) -> dict[str, dict[str, dict[str, float]]]:
    """Challenger's and champion's metrics per control on the gold set (neither trained on it)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, data in snapshot.gold.items():
        if name not in models:
            continue
        rows = list(range(len(data.tasks)))
        family, control = data.family, data.control
        out.setdefault("challenger", {})[name] = family.outcomes(
            control, data.targets, data.predicted(models[name], rows, threshold)
        ).metrics()
        if (
            not snapshot.champion_saw_gold
            and champion is not None
            and champion.family_of(name) == family.name
            and name in champion.controls
        ):
            old = data.predicted(champion.controls[name], rows, threshold)
            out.setdefault("champion", {})[name] = family.outcomes(control, data.targets, old).metrics()
    return out


def worse_probability(paired: dict[str, tuple[Outcomes, Outcomes]], metric: str, margin: float, snapshot: Snapshot | None = None) -> float:
    """Share of paired bootstrap resamples of the held-out tasks in which the challenger's mean
    metric is more than `margin` below the champion's (resamples fixed by seed: deterministic)."""
    rng = np.random.default_rng(0)
    total = np.zeros(BOOTSTRAP)
    for name, (new, old) in paired.items():
        n = new.n
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=BOOTSTRAP).astype(float)
        key = judged_by(snapshot, name, metric)
        total += new.metrics(weights)[key] - old.metrics(weights)[key]
    return float(np.mean(total / max(len(paired), 1) < -margin))


class Fold(NamedTuple):
    """One cross-validation fold of a control's examples, with the model fitted on its `train` rows."""

    train: np.ndarray
    test: np.ndarray
    model: Any | None


def fold_models(data: ControlData) -> list[Fold]:
    """A model per fold of `folds(data)` (folds with an empty side are left out)."""
    return [Fold(train, test, data.subset(train).fit()) for train, test in folds(data) if len(train) and len(test)]


def choose_prior(
    data: ControlData, rules: RuleSet, only: bool, metric: str, threshold: float, fitted: Sequence[Fold] | None = None
) -> tuple[RulePrior | None, dict[str, float]]:
    """The labeling rules' prior for one control: each weight of `PRIOR_WEIGHTS` scored by `metric`
    over out-of-fold predictions of `data` (the tasks the challenger trains on; `fitted`: its
    `fold_models`, when the caller has them), the best kept (a tie goes to the smaller weight, so
    rules that do not help stay out: None). Also the score of each weight; empty (and None) when
    no rule votes in the control, the family gives no probabilities, or the examples are too few
    to fold."""
    family, control = data.family, data.control
    voting = rules.voting(control, only)
    n = len(data.texts)
    if not voting or n < 4:
        return None, {}
    proba = np.zeros((n, len(control.labels)))
    scored = np.zeros(n, dtype=bool)
    for _, test, model in fold_models(data) if fitted is None else fitted:
        if model is None:
            continue
        part = family.label_proba(model, control, [data.texts[i] for i in test])
        if part is None:
            return None, {}
        proba[test], scored[test] = part, True
    if not scored.any():
        return None, {}
    rows = np.flatnonzero(scored)
    votes = rules.votes(control, [data.texts[i] for i in rows], only)
    targets = [data.targets[i] for i in rows]
    scores: dict[str, float] = {}
    best, best_score = 0.0, -1.0
    for weight in PRIOR_WEIGHTS:
        mixed = blend(proba[rows], votes, weight, control.multiple)
        predicted = [sorted(picked) for picked in choose(mixed, control.labels, control.multiple, threshold)]
        score = family.outcomes(control, targets, predicted).metrics()[metric]
        scores[str(weight)] = round(score, 4)
        if score > best_score:
            best, best_score = weight, score
    prior = RulePrior(tuple(rules.rules[j] for j in voting), best, rules.version) if best > 0 else None
    return prior, scores


def folds(data: ControlData) -> list[tuple[np.ndarray, np.ndarray]]:
    """Deterministic cross-validation folds (train rows, test rows) over `data`: stratified by
    target when every target occurs at least twice, else by row number."""
    n = len(data.texts)
    strata = [json.dumps(t, sort_keys=True) for t in data.targets]
    smallest = min(Counter(strata).values())
    count = max(2, min(5, smallest))
    if smallest < 2:
        return [
            (np.array([j for j in range(n) if j % count != k]), np.array([j for j in range(n) if j % count == k])) for k in range(count)
        ]
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(count, shuffle=True, random_state=0).split(np.zeros(n), strata))


def _cross_validate(data: ControlData, threshold: float, fitted: Sequence[Fold], prior: RulePrior | None) -> tuple[list[Any], list[Any]]:
    """Out-of-fold predictions of the challenger (its fold models, with the rules' `prior` mixed in
    as the challenger has it) and of the baseline."""
    n = len(data.texts)
    predicted: list[Any] = [[] for _ in range(n)]
    baseline: list[Any] = [[] for _ in range(n)]
    for train, test, model in fitted:
        if model is not None and prior is not None:
            model = data.family.with_prior(model, prior) or model
        for i, target in zip(test, data.predicted(model, test, threshold)):
            predicted[i] = target
        for i, target in zip(test, data.family.baseline(data.control, [data.targets[j] for j in train], len(test))):
            baseline[i] = target
    return predicted, baseline
