"""Learning-curve simulator: the real train and ranking code, an oracle annotator, random as control.

    python -m lab simulate --dataset tweets --strategy default --budget 1500 --batch 20 --seeds 3

Each run starts from an empty labeled set, asks the strategy for the next batch of the pool
(stratified 80/20 pool/test split, seed 0), has the oracle label it, retrains from scratch and
scores the test set every round. `--strategy` takes a comma-separated list of variants (see
`Variant`), so one run compares them against the same random control. `default` is the product's
own policy (cluster round-robin until the cold-start rule holds, then margin, de-duplicated
batches); `random` is the control. The full-pool models of ours and of the official Label Studio
example (TF-IDF 1-3-grams + LogisticRegression C=10) are fitted side by side as references.
Writes a CSV of every point (accuracy, macro-F1 and each class's recall) and a PNG of the curves
(per-class recall in its second row); while it runs, finished runs are appended to
`simulation-<dataset>.partial.csv`.

Speed: pool and test features are hashed once and scored after each refit from their counts, as
the queue scores its cached pool (`pool.py`: sparse products, no weighed copy; 3-5x faster than
`predict_proba` on 30k tweets); the refit itself (the product's code) is the remaining cost.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.metrics import accuracy_score, f1_score, recall_score
from sklearn.preprocessing import normalize

from backend import families, rules, training
from backend import strategy as strategies
from backend.families import pool as pool_scoring
from backend.families.estimator import PRIOR, ControlModel, alpha_for
from backend.families.hashing import hash_texts
from backend.families.pool import Segment
from backend.families.pool import features as pool_features
from backend.labelconfig import ChoicesControl, parse_label_config
from backend.policy import Policy
from backend.ranking import LabelColumns, balanced

from . import badge, priors
from .datasets import load_dataset, stratified_split, with_class_shares


@dataclass
class Curve:
    strategy: str
    seed: int
    labels: list[int]
    accuracy: list[float]
    macro_f1: list[float]
    recall: dict[str, list[float]] = field(default_factory=dict)  # per class, at each point of `labels`

    def rows(self, classes: Sequence[str]) -> list[list[object]]:
        """CSV rows: strategy, seed, labels, accuracy, macro-F1 and each class's recall (`csv_columns`)."""
        recalls = [self.recall.get(c, []) for c in classes]
        return [
            [self.strategy, self.seed, n, accuracy, f1, *(r[i] for r in recalls)]
            for i, (n, accuracy, f1) in enumerate(zip(self.labels, self.accuracy, self.macro_f1))
        ]


def csv_columns(classes: Sequence[str]) -> list[str]:
    return ["strategy", "seed", "labels", "accuracy", "macro_f1", *(f"recall:{c}" for c in classes)]


@dataclass
class RulesOnData:
    """The labeling rules of `--rules` on the simulated data, used as the product uses them: their
    votes order the cold start (`ranking.rule_columns`) and, once a model exists, the train job's
    out-of-fold choice mixes them into it (`training.choose_prior`, `rules.blend`)."""

    ruleset: rules.RuleSet
    control: ChoicesControl
    pool_texts: Sequence[str]
    pool_votes: np.ndarray
    test_votes: np.ndarray
    metric: str

    @classmethod
    def load(cls, path: str, classes: list[str], pool_texts: Sequence[str], test_texts: Sequence[str], metric: str) -> RulesOnData:
        choices = "".join(f'<Choice value="{c}"/>' for c in classes)
        control = parse_label_config(
            f'<View><Text name="text" value="$text"/><Choices name="label" toName="text">{choices}</Choices></View>'
        ).controls[0]
        ruleset = rules.RuleSet(rules.parse_rules(Path(path).read_text()))
        pool_votes = ruleset.votes(control, list(pool_texts), only=True)
        return cls(ruleset, control, pool_texts, pool_votes, ruleset.votes(control, list(test_texts), only=True), metric)

    def shares(self, rows: np.ndarray) -> np.ndarray:
        """The label shares of the rules' votes on pool rows: the cold start's label likelihoods."""
        return rules.label_shares(self.pool_votes[rows])

    def weight(self, labeled: Sequence[int], pool_y: np.ndarray) -> float:
        """The weight the product's train job would mix the rules in at, trained on `labeled`."""
        family = families.family(families.DEFAULT_FAMILY)
        texts = [self.pool_texts[i] for i in labeled]
        data = training.ControlData(self.control, family, list(labeled), texts, [[y] for y in pool_y[labeled]], [1.0] * len(labeled))
        prior, _ = training.choose_prior(data, self.ruleset, True, self.metric, 0.5)
        return prior.weight if prior is not None else 0.0

    def summary(self, truth: np.ndarray) -> dict[str, object]:
        """How many pool tasks the rules cover and pre-annotate (no tie), and how often that
        pre-annotation is the true label."""
        picked, _ = rules.decide(self.pool_votes, multiple=False)
        decided = [i for i, p in enumerate(picked) if p]
        correct = sum(self.control.labels[picked[i][0]] == truth[i] for i in decided)
        return {
            "rules": len(self.ruleset.rules),
            "coverage": round(float((self.pool_votes.sum(axis=1) > 0).mean()), 4),
            "pre_annotated": round(len(decided) / len(truth), 4),
            "accuracy_on_pre_annotated": round(correct / len(decided), 4) if decided else None,
        }


def official_baseline(train_texts: Sequence[str], train_labels: Sequence[str], test_texts: Sequence[str]) -> list[str]:
    """The official example's pipeline, fitted on the whole pool."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 3)), LogisticRegression(C=10, max_iter=1000))
    model.fit(list(train_texts), list(train_labels))
    return list(model.predict(list(test_texts)))


BASES = ("default", "random", *strategies.STRATEGIES, *strategies.COMMITTEE_STRATEGIES, "badge")
SHIFTS = ("em", "cold", "oracle")  # the `shift` option's targets
MODEL_OPTIONS = {"alpha", "prior", "shift", "pseudo"}  # options of the model, not the order: random takes them too


@dataclass(frozen=True)
class Variant:
    """One strategy to simulate, spelled `base[:key=value...]`, e.g. `margin:cold=10/200:density=1`.

    base: `default` (the product's policy), `random` (the control), a single-model measure
    (`margin`, `entropy`, `least_confidence`: the default pipeline with that measure) or a
    committee measure (`vote_entropy`, `mean_kl`: `members` models fitted on bootstrap resamples).
    Keys: `cold=K/N` the cold-start rule (K labels per class and N in all before uncertainty takes
    over; default: the policy's), `alpha` a fixed regularisation of the model (random takes it too, so a
    control with the same model exists), `density=B` uncertainty x representativeness^B
    (cosine similarity to the task's cluster centroid), `spread=F` pick the batch round-robin over
    clusters among the F x batch most uncertain tasks, `members` committee size (3), `prior=L`
    regularisation that shrinks as labels grow, `estimator.alpha_for(labels, L)` with `alpha` as its
    floor (without `alpha` or `prior`: the product's, prior `estimator.PRIOR`; `prior=0`: fixed
    `estimator.ALPHA`), a fixed prior over the summed loss instead of the mean (random takes it
    too), `shift=em|cold` class-prior correction after every fit (`priors`; random takes it too): the intercepts move
    from the labeled set's class frequencies to the pool's prior, estimated by EM over the model's
    posteriors on the unlabeled pool (`em`), taken from the labels of the cold-start phase (`cold`)
    or, as a ceiling no product has, the pool's true class shares (`oracle`),
    `skip=N` pass over the N most uncertain tasks (`strategy.skip_most_uncertain`),
    `pseudo=S` self-training once warm: refit with S x labels of the surest pool tasks under their
    predicted class, in the labeled class shares (`pseudo_labeled`; random takes it too),
    `balance=uniform|off` the class-aware batch (`strategy.class_balanced`; default: the policy's),
    `rules` a project with the labeling rules of `--rules` (`RulesOnData`): its cold start reads the
    rules' votes as the labels' likelihood in class-aware batches (`ranking.rule_columns`), and its
    models mix the rules in at the weight the train job picks out of fold (`training.choose_prior`).
    """

    spec: str
    base: str
    cold: tuple[int, int] | None = None
    alpha: float | None = None
    density: float = 0.0
    spread: float = 0.0
    members: int = 3
    prior: float | None = None
    shift: str = ""
    pseudo: float = 0.0
    skip: int = 0
    balance: str = ""
    rules: bool = False

    def alpha_at(self, labels: int) -> float:
        """The model's alpha when `labels` tasks are labeled."""
        if self.alpha is None:
            return alpha_for(labels, PRIOR if self.prior is None else self.prior)
        return alpha_for(labels, self.prior or 0.0, self.alpha)

    @classmethod
    def parse(cls, spec: str) -> Variant:
        base, *options = spec.strip().split(":")
        if base not in BASES:
            raise ValueError(f"unknown strategy {base!r}: expected one of {list(BASES)}")
        values: dict[str, object] = {}
        for option in options:
            key, _, value = option.partition("=")
            try:
                if key == "cold":
                    per_class, total = value.split("/")
                    values["cold"] = (int(per_class), int(total))
                elif key in ("alpha", "density", "spread", "prior", "pseudo"):
                    values[key] = float(value)
                elif key in ("members", "skip"):
                    values[key] = int(value)
                elif key == "rules":
                    if value not in ("", "1"):
                        raise ValueError("rules takes no value")
                    values[key] = True
                elif key == "balance":
                    if value not in strategies.BALANCES:
                        raise ValueError(f"expected one of {list(strategies.BALANCES)}")
                    values[key] = value
                elif key == "shift":
                    if value not in SHIFTS:
                        raise ValueError(f"expected one of {list(SHIFTS)}")
                    values[key] = value
                else:
                    raise ValueError(f"unknown option {key!r} in {spec!r}")
            except (TypeError, ValueError) as error:
                raise ValueError(f"bad option {option!r} in {spec!r}: {error}") from None
        if base == "random" and set(values) - MODEL_OPTIONS:
            raise ValueError(f"random takes only {', '.join(sorted(MODEL_OPTIONS))}: {spec!r}")
        return cls(spec.strip(), base, **values)  # type: ignore[arg-type]


def parse_strategies(text: str) -> list[Variant]:
    """A comma-separated list of variants; random order (with the default model) is always added
    as the control when no random variant is listed."""
    variants = [Variant.parse(part) for part in text.split(",") if part.strip()]
    if not variants:
        raise ValueError("no strategy given")
    if len({v.spec for v in variants}) < len(variants):
        raise ValueError("a strategy is listed twice")
    if not any(v.base == "random" for v in variants):
        variants.append(Variant.parse("random"))
    return variants


def probabilities(model: ControlModel, features: Segment) -> np.ndarray:
    """`model.predict_proba` of every row, from counts hashed once (the queue's scoring: `pool.py`)."""
    return pool_scoring.predict_proba(model, [features], [np.arange(features.rows)])


def shifted(
    model: ControlModel,
    pool_decision: np.ndarray,
    fitted_y: np.ndarray,
    labeled_y: np.ndarray,
    unlabeled: np.ndarray,
    target: np.ndarray | None,
) -> tuple[ControlModel, np.ndarray]:
    """The model with its intercepts moved from the class frequencies of what it was fitted on
    (`fitted_y`) to the pool's prior, and its probabilities of every pool row. `pool_decision`: the
    model's decision values of the pool; `target`: the prior to move to, in `model.columns` order,
    or None to estimate it by EM over the unlabeled rows (`unlabeled`, a mask) and count the
    labeled ones (`labeled_y`) as they are."""
    linear = model.linear
    train = priors.frequencies(fitted_y, model.columns)
    if target is None:
        estimate = priors.em_prior(linear.probabilities(pool_decision[unlabeled]), train)
        known = priors.frequencies(labeled_y, model.columns) * len(labeled_y)
        target = priors.pooled_prior(known, estimate, int(unlabeled.sum()))
    shift = priors.intercept_shift(train, target, linear.coef.shape[1])
    model = replace(model, linear=replace(linear, intercept=linear.intercept + shift), fitted=None)
    return model, model.by_label(linear.probabilities(pool_decision + shift))


def shift_target(shift: str, pool_y: np.ndarray, columns: Sequence[str], cold_prior: dict[str, float] | None) -> np.ndarray | None:
    """The prior a `shift=` variant moves the intercepts to, in `columns` order (None for `em`:
    `shifted` estimates it)."""
    if shift == "oracle":
        return priors.frequencies(pool_y, columns)
    if shift == "cold" and cold_prior is not None:
        return np.array([cold_prior[c] for c in columns])
    return None


def pseudo_labeled(
    pool_proba: np.ndarray, labeled_y: np.ndarray, unlabeled: np.ndarray, classes: list[str], share: float
) -> tuple[np.ndarray, np.ndarray]:
    """Self-training (CEAL, Wang et al. 2017): the unlabeled pool rows the model is surest of, with
    its predicted class as label. Each class gets `share` x its labeled count of the rows predicted
    as it, most probable first, so pseudo-labels keep the labeled set's class shares.
    Returns (pool rows, labels)."""
    predicted = pool_proba.argmax(axis=1)
    rows, labels = [], []
    for k, label in enumerate(classes):
        wanted = int(round(share * int((labeled_y == label).sum())))
        mine = np.flatnonzero(unlabeled & (predicted == k))
        best = mine[np.argsort(-pool_proba[mine, k], kind="stable")[:wanted]]
        rows.append(best)
        labels += [label] * len(best)
    return np.concatenate(rows).astype(int), np.array(labels, dtype=object)


def representativeness(unit_features, cluster_ids: np.ndarray) -> np.ndarray:
    """Cosine similarity of each task to its cluster's centroid, in [0, 1]."""
    clusters_ = np.unique(cluster_ids)
    member = sp.csr_matrix((np.ones(len(cluster_ids)), (np.searchsorted(clusters_, cluster_ids), np.arange(len(cluster_ids)))))
    centroids = normalize(member @ unit_features)
    similarity = np.asarray((unit_features @ centroids.T).toarray() if sp.issparse(centroids) else unit_features @ centroids.T)
    own = similarity[np.arange(len(cluster_ids)), np.searchsorted(clusters_, cluster_ids)]
    return np.clip(own, 0.0, 1.0)


def _committee(
    variant: Variant, labeled: list[int], pool_x, pool_y: np.ndarray, classes: list[str], pool_scorable: Segment, rng: np.random.Generator
) -> np.ndarray | None:
    members = []
    for _ in range(variant.members):
        sample = rng.choice(labeled, len(labeled), replace=True)
        member = ControlModel.fit(
            None, [[y] for y in pool_y[sample]], classes, False, variant.alpha_at(len(labeled)), features=pool_x[sample]
        )
        if member is not None:
            members.append(probabilities(member, pool_scorable))
    if len(members) < 2:
        return None
    measure = strategies.COMMITTEE_STRATEGIES[variant.base](members)
    return measure + 1e-6 * strategies.entropy(np.mean(members, axis=0))  # ties (few voters): consensus entropy


def run(
    variant: Variant | str,
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
    pool_scorable: Segment | None = None,
    test_scorable: Segment | None = None,
    represent: np.ndarray | None = None,
    rules_on: RulesOnData | None = None,
) -> Curve:
    """One learning curve: label `batch` tasks per round, refit from scratch, score the test set
    every round. The pool and test set are scored from their counts (`Segment`s, built here when not given)."""
    variant = Variant.parse(variant) if isinstance(variant, str) else variant
    pool_scorable = pool_scorable or Segment.of(pool_x)
    test_scorable = test_scorable or Segment.of(test_x)
    if variant.cold is not None:
        policy = replace(policy, cold_start_per_class=variant.cold[0], cold_start_total=variant.cold[1])
    measure = policy.strategy if variant.base in ("default", *strategies.COMMITTEE_STRATEGIES) else variant.base
    measure = "margin" if measure == "badge" else measure  # BADGE picks the batch; margin orders the rest
    if variant.density and represent is None:
        represent = representativeness(unit_features, cluster_ids)
    rng = np.random.default_rng(seed)
    committee_rng = np.random.default_rng([seed, 1])
    labeled: list[int] = []
    is_labeled = np.zeros(len(pool_y), dtype=bool)
    curve = Curve(variant.spec, seed, [], [], [], {c: [] for c in classes})
    if variant.rules and rules_on is None:
        raise ValueError(f"{variant.spec} needs --rules")
    diversity = strategies.diversity(cluster_ids, seed)
    cold_prior: dict[str, float] | None = None  # `shift=cold`: class shares of the labels taken before warm
    while True:
        model = None
        pool_proba = None
        if labeled and len(set(pool_y[labeled])) >= 2:
            model = ControlModel.fit(
                None, [[y] for y in pool_y[labeled]], classes, False, variant.alpha_at(len(labeled)), features=pool_x[labeled]
            )
        counts = {c: int((pool_y[labeled] == c).sum()) for c in classes}
        warm = model is not None and policy.warm({"c": counts}, {"c": tuple(classes)}, len(labeled))
        if warm and cold_prior is None:
            cold_prior = dict(zip(classes, priors.frequencies(pool_y[labeled], classes)))
        fitted_y = pool_y[labeled]
        if model and warm and variant.pseudo:
            extra, extra_y = pseudo_labeled(probabilities(model, pool_scorable), pool_y[labeled], ~is_labeled, classes, variant.pseudo)
            fitted_y = np.concatenate([pool_y[labeled], extra_y]).astype(pool_y.dtype)
            model = ControlModel.fit(
                None,
                [[y] for y in fitted_y],
                classes,
                False,
                variant.alpha_at(len(labeled)),
                features=pool_x[np.concatenate([labeled, extra]).astype(int)],
            )
        if model and variant.shift and (variant.shift != "cold" or cold_prior is not None):
            decision = pool_scoring.decision_values(model.linear, pool_scorable)  # type: ignore[arg-type]
            target = shift_target(variant.shift, pool_y, model.columns, cold_prior)
            model, pool_proba = shifted(model, decision, fitted_y, pool_y[labeled], ~is_labeled, target)
        weight = rules_on.weight(labeled, pool_y) if model is not None and variant.rules else 0.0  # type: ignore[union-attr]
        if weight:
            pool_proba = rules.blend(
                pool_proba if pool_proba is not None else probabilities(model, pool_scorable), rules_on.pool_votes, weight, False
            )  # type: ignore[arg-type,union-attr]
        if labeled:
            if model:
                test_proba = probabilities(model, test_scorable)
                test_proba = rules.blend(test_proba, rules_on.test_votes, weight, False) if weight else test_proba  # type: ignore[union-attr]
                predicted = np.array(classes)[test_proba.argmax(axis=1)]
            else:
                predicted = np.full(len(test_y), pool_y[labeled][0])
            curve.labels.append(len(labeled))
            curve.accuracy.append(float(accuracy_score(test_y, predicted)))
            curve.macro_f1.append(float(f1_score(test_y, predicted, average="macro")))
            for c, value in zip(classes, recall_score(test_y, predicted, labels=classes, average=None, zero_division=0)):
                curve.recall[c].append(float(value))
        if len(labeled) >= budget:
            return curve
        candidates = np.flatnonzero(~is_labeled)
        size = min(batch, budget - len(labeled))
        if variant.base == "random":
            chosen = list(rng.choice(candidates, size, replace=False))
        else:
            values = None
            if warm and variant.base in strategies.COMMITTEE_STRATEGIES:
                values = _committee(variant, labeled, pool_x, pool_y, classes, pool_scorable, committee_rng)
            elif warm:
                proba = pool_proba if pool_proba is not None else probabilities(model, pool_scorable)  # type: ignore[arg-type]
                values = strategies.uncertainty(proba, measure)  # type: ignore[arg-type]
            if values is None:
                values = diversity
            elif variant.density:
                values = values * represent**variant.density  # type: ignore[operator]
            values = values[candidates]
            if warm and variant.skip:
                values = strategies.skip_most_uncertain(values, variant.skip)
            if warm and variant.spread:
                values = strategies.spread_over_clusters(values, cluster_ids[candidates], int(variant.spread * size))
            if warm and (variant.base == "badge" or (variant.base == "default" and policy.strategy == "badge")):
                proba = pool_proba if pool_proba is not None else probabilities(model, pool_scorable)  # type: ignore[arg-type]
                picked = badge.gradient_embedding_batch(proba[candidates], unit_features[candidates], size)
                values = badge.lead_with(values, picked)
            balance = variant.balance or policy.class_balance
            likely = None  # each candidate's label likelihoods for class-aware batches
            if not warm and variant.rules:  # the product's cold start with rules (`ranking.rule_columns`)
                likely = rules_on.shares(candidates)  # type: ignore[union-attr]
            elif model is not None and balance != "off":
                likely = (pool_proba if pool_proba is not None else probabilities(model, pool_scorable))[candidates]
            if likely is not None:  # the product's class-aware batches
                columns = LabelColumns(likely, [("c", c) for c in classes], [0] * len(classes))
                values = balanced(values, columns, {"c": counts}, len(labeled), replace(policy, batch_size=size), warm)
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


def _run_shared(run_key: tuple[Variant, int]) -> Curve:
    variant, seed = run_key
    d = _shared
    started = time.perf_counter()
    cpu = time.process_time()
    curve = run(
        variant,
        seed,
        d["pool_x"],
        d["pool_y"],
        d["test_x"],
        d["test_y"],
        d["classes"],
        d["cluster_ids"],  # type: ignore[arg-type]
        d["unit"],
        d["budget"],
        d["batch"],
        d["policy"],
        d["pool_scorable"],
        d["test_scorable"],
        d["represent"],
        d["rules_on"],
    )  # type: ignore[arg-type]
    with open(d["partial"], "a", newline="") as handle:  # type: ignore[arg-type]  # finished runs survive a stopped simulation
        csv.writer(handle).writerows(curve.rows(d["classes"]))  # type: ignore[arg-type]
    print(
        f"{variant.spec} seed {seed}: accuracy {curve.accuracy[-1]:.4f} at {curve.labels[-1]} labels "
        f"({time.perf_counter() - started:.0f} s, {time.process_time() - cpu:.0f} s CPU)",
        file=sys.stderr,
        flush=True,
    )
    return curve


def simulate(
    dataset: str,
    strategy: str,
    budget: int,
    batch: int,
    seeds: int,
    out: Path,
    policy: Policy | None = None,
    jobs: int = os.cpu_count() or 1,
    class_share: dict[str, float] | None = None,
    rules_file: str | None = None,
) -> dict[str, object]:
    """Runs every (strategy, seed) pair, `jobs` at a time in forked processes. `strategy`: one
    variant or a comma-separated list (see `Variant`); random is added when missing."""
    started = time.perf_counter()
    variants = parse_strategies(strategy)
    policy = policy or Policy(batch_size=batch)
    data = load_dataset(dataset)
    if class_share:
        data = with_class_shares(data, class_share)
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
    names = [v.spec for v in variants]
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / f"simulation-{Path(dataset).stem}.csv"
    partial = csv_path.with_suffix(".partial.csv")
    partial.unlink(missing_ok=True)
    _shared.update(
        partial=partial,
        pool_x=pool_x,
        pool_y=pool_y,
        test_x=test_x,
        test_y=test_y,
        classes=classes,
        cluster_ids=cluster_ids,
        unit=unit,
        budget=budget,
        batch=batch,
        policy=policy,
        pool_scorable=Segment.of(pool_x),
        test_scorable=Segment.of(test_x),
        represent=representativeness(unit, cluster_ids) if any(v.density for v in variants) else None,
        rules_on=RulesOnData.load(rules_file, classes, pool.texts, test.texts, policy.gate_metric) if rules_file else None,
    )
    rules_summary = _shared["rules_on"].summary(pool_y) if rules_file else None  # type: ignore[union-attr]
    runs = [(variant, seed) for variant in variants for seed in range(seeds)]
    runs.sort(key=lambda r: r[0].base not in strategies.COMMITTEE_STRATEGIES)  # the slowest first
    with ProcessPoolExecutor(max(1, min(jobs, len(runs))), mp_context=multiprocessing.get_context("fork")) as pool_:
        curves = list(pool_.map(_run_shared, runs))
    _shared.clear()
    partial.unlink()
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(csv_columns(classes))
        for curve in sorted(curves, key=lambda c: (names.index(c.strategy), c.seed)):
            writer.writerows(curve.rows(classes))
    summary: dict[str, object] = {
        "dataset": dataset,
        "class_share": class_share or {},
        "pool": len(pool_y),
        "test": len(test_y),
        "budget": budget,
        "batch": batch,
        "seeds": seeds,
        "full_data_accuracy": round(full_accuracy, 4),
        "full_data_macro_f1": round(float(f1_score(test_y, full_predicted, average="macro")), 4),
        "official_example_accuracy": round(official_accuracy, 4),
        "strategies": {},
    }
    for name in names:
        mine = sorted((c for c in curves if c.strategy == name), key=lambda c: c.seed)
        labels = mine[0].labels
        accuracy = np.mean([c.accuracy for c in mine], axis=0)
        f1 = np.mean([c.macro_f1 for c in mine], axis=0)
        summary["strategies"][name] = {  # type: ignore[index]
            "aulc_accuracy": round(float(accuracy.mean()), 4),
            "aulc_macro_f1": round(float(f1.mean()), 4),
            "final_accuracy": round(float(accuracy[-1]), 4),
            "final_recall": {c: round(float(np.mean([m.recall[c][-1] for m in mine])), 4) for c in classes},
            "labels_to_90": labels_to_reach(labels, accuracy, 0.9 * full_accuracy),
            "labels_to_95": labels_to_reach(labels, accuracy, 0.95 * full_accuracy),
            "labels_to_95_per_seed": [labels_to_reach(labels, np.array(c.accuracy), 0.95 * full_accuracy) for c in mine],
        }
    if rules_summary is not None:
        summary["rules"] = rules_summary
    control = next(v.spec for v in variants if v.base == "random")
    summary["worst_gap_vs_random"] = {name: worst_gaps(curves, name, control) for name in names if name != control}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["plot"] = str(plot(curves, names, full_accuracy, official_accuracy, out / f"learning-curve-{Path(dataset).stem}.png"))
    summary["csv"] = str(csv_path)
    return summary


GAPS_FROM = 100  # labels from which the worst gap against random order is read


def worst_gaps(curves: list[Curve], name: str, control: str) -> dict[str, list[float | int]]:
    """Per metric, the seed-mean of `name` minus that of `control` where it is lowest from GAPS_FROM
    labels on, and at how many labels: [gap, labels]."""
    out: dict[str, list[float | int]] = {}
    for metric in ("accuracy", "macro_f1"):
        mine = np.mean([getattr(c, metric) for c in curves if c.strategy == name], axis=0)
        theirs = np.mean([getattr(c, metric) for c in curves if c.strategy == control], axis=0)
        labels = np.array(next(c for c in curves if c.strategy == name).labels)
        counted = labels >= GAPS_FROM
        if not counted.any():
            continue
        gaps = (mine - theirs)[counted]
        worst = int(np.argmin(gaps))
        out[metric] = [round(float(gaps[worst]), 4), int(labels[counted][worst])]
    return out


def plot(curves: list[Curve], names: list[str], full: float, official: float, path: Path) -> Path:
    """Accuracy and macro-F1 in the first row, each class's recall in the second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def bands(axis: Any, values_of: Callable[[Curve], list[float]], ylabel: str) -> None:
        """Each strategy's seed-mean, with its min..max band."""
        for name in names:
            mine = [curve for curve in curves if curve.strategy == name]
            values = np.array([values_of(curve) for curve in mine])
            axis.plot(mine[0].labels, values.mean(axis=0), label=name)
            axis.fill_between(mine[0].labels, values.min(axis=0), values.max(axis=0), alpha=0.2)
        if ylabel == "accuracy":
            axis.axhline(full, color="grey", linestyle="--", linewidth=1, label=f"full data {full:.3f}")
            axis.axhline(0.95 * full, color="grey", linestyle=":", linewidth=1, label="95% of full data")
            axis.axhline(official, color="tab:red", linestyle="--", linewidth=1, label=f"official example, full data {official:.3f}")
        axis.set_xlabel("labels")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right", fontsize=8)

    classes = list(curves[0].recall)
    fig, grid = plt.subplots(2, max(2, len(classes)), figsize=(6 * max(2, len(classes)), 9), sharex=True, squeeze=False)
    for metric, axis in zip(("accuracy", "macro_f1"), grid[0]):
        bands(axis, lambda curve, metric=metric: getattr(curve, metric), metric)
    for c, axis in zip(classes, grid[1]):
        bands(axis, lambda curve, c=c: curve.recall[c], f"recall of {c}")
    for axis in [*grid[0][2:], *grid[1][len(classes) :]]:
        axis.set_visible(False)
    fig.suptitle("Learning curves (mean of seeds, band = min..max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
