"""Per-project settings: environment defaults, overridden by LS's `extra_params`, then by the admin API.

The cold-start rule lives here: a project is ordered by diversity (cluster round-robin) until
every class of every Choices control has `cold_start_per_class` labels and the project has
`cold_start_total` labeled tasks; from then on by the uncertainty strategy. Our measurements on
tweets showed uncertainty sampling losing to random order while the model is that weak. Span
types are not waited for (`LabelConfig.classes` says why).

So does what a `retrain_every` value may be and when it next comes due (`schedule_problem`,
`next_due`); `jobs.trigger` keeps the schedule and fires it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from croniter import croniter

from .config import Settings
from .consensus import METHODS
from .families.estimator import COMMITTEE_SIZE
from .payload import InvalidPayload
from .rules import RuleSet, parse_rules
from .strategy import BALANCES, COMMITTEE_STRATEGIES, STRATEGIES

log = logging.getLogger(__name__)
STRATEGY_NAMES = tuple(sorted({*STRATEGIES, *COMMITTEE_STRATEGIES, "random"}))
QUEUE_SETTINGS = (
    "strategy",
    "batch_size",
    "cold_start_per_class",
    "cold_start_total",
    "class_balance",
    "clusters",
    "uncertainty_sampling",
    "rules",
)
LABEL_SETTINGS = ("consensus", "dispute_confidence", "gold_set", "gold_min")  # change what a model trains on
GATE_METRICS = ("macro_f1", "accuracy")


@dataclass(frozen=True)
class Policy:
    strategy: str = "margin"
    batch_size: int = 20
    retrain_threshold: int = Settings.retrain_threshold
    gate_metric: str = Settings.gate_metric
    gate_margin: float = Settings.gate_margin
    cold_start_per_class: int = 5
    cold_start_total: int = 50
    class_balance: str = "off"  # places in each batch for labels short of their share (`strategy.BALANCES`)
    clusters: int = 20
    uncertainty_sampling: bool = False
    live_accuracy_drop: float = 0.10  # retrain when live accuracy is this far below the offline estimate
    live_min_samples: int = 30  # ... over at least this many annotations of the serving version
    drift_threshold: float = 0.25  # retrain when the confidence PSI of recent traffic reaches this
    drift_min_samples: int = 200  # ... over at least this many predictions of the serving version
    retrain_every: int | str = 0  # also retrain on a schedule: seconds, or a cron string (UTC); 0 = off
    push_top: int = 0  # tasks of the queue's head pushed to LS as predictions; 0 = adapt to the labeling rate (`head`)
    consensus: str = "majority"  # how several annotators' votes become one label (`consensus.METHODS`)
    dispute_confidence: float = 0.6  # dawid_skene: a task whose estimate is less certain than this is disputed
    gold_set: bool = False  # hold tasks with ground truth out of training and judge every challenger on them too
    gold_min: int = 30  # ... once at least this many exist
    kappa_min_shared: int = 20  # agreement: Cohen's kappa only for pairs of annotators sharing this many tasks
    annotator_trend: int = 100  # agreement: each annotator's recent agreement over their last this many labels
    review_extra_annotation: bool = False  # ask LS for one more annotation of each disputed task (`publish.ask_for_reviews`)
    rules: tuple[dict[str, str], ...] = ()  # labeling rules, their JSON spec (`rules.parse_rules`)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))  # the spec as stored (a JSON list) compares equal to the default

    @property
    def rule_set(self) -> RuleSet:
        """The compiled labeling rules."""
        return _rule_set(json.dumps(list(self.rules), sort_keys=True))

    def warm(self, counts: Mapping[str, Mapping[str, int]], labels: Mapping[str, tuple[str, ...]], total: int) -> bool:
        """True once uncertainty may replace diversity (the cold-start rule in the module doc)."""
        if total < self.cold_start_total:
            return False
        return all(
            counts.get(control, {}).get(label, 0) >= self.cold_start_per_class for control, names in labels.items() for label in names
        )

    @property
    def committee(self) -> int:
        """Committee members each control's model needs for this strategy (0: none)."""
        return COMMITTEE_SIZE if self.strategy in COMMITTEE_STRATEGIES else 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rules": list(self.rules)}


def defaults(settings: Settings) -> Policy:
    return Policy(
        retrain_threshold=settings.retrain_threshold,
        gate_metric=settings.gate_metric,
        gate_margin=settings.gate_margin,
        rules=file_rules(settings.labeling_rules_file),
    )


def file_rules(path: str) -> tuple[dict[str, str], ...]:
    """The rules of LABELING_RULES_FILE (a JSON list, `rules.parse_rules`), read again when the file
    changes; ValueError says why a file cannot be used (checked when a process starts)."""
    if not path:
        return ()
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ValueError(f"LABELING_RULES_FILE {path}: {exc.strerror}") from None
    return _file_rules(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _file_rules(path: str, mtime: int, size: int) -> tuple[dict[str, str], ...]:
    try:
        with open(path, encoding="utf-8") as handle:
            return tuple(r.to_json() for r in parse_rules(handle.read()))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"LABELING_RULES_FILE {path}: {exc}") from None
    except InvalidPayload as exc:
        raise ValueError(f"LABELING_RULES_FILE {path}: {exc.message}") from None


@lru_cache(maxsize=64)
def _rule_set(spec: str) -> RuleSet:
    return RuleSet(parse_rules(spec))


def validated(overrides: Mapping[str, Any], strict: bool) -> dict[str, Any]:
    """Type-checked overrides; unknown or bad keys raise (admin API) or are dropped (extra_params)."""
    known = {f.name: f for f in fields(Policy)}
    clean: dict[str, Any] = {}
    for name, value in overrides.items():
        field = known.get(name)
        problem = None
        if field is None:
            problem = f"unknown setting {name!r}"
        elif name == "retrain_every":
            problem = schedule_problem(value)
        elif isinstance(field.default, bool):
            problem = None if isinstance(value, bool) else f"{name} must be true or false"
        elif isinstance(field.default, int):
            problem = (
                None
                if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**6
                else f"{name} must be an integer >= 0"
            )
        elif isinstance(field.default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1
            problem = None if ok else f"{name} must be a number in [0, 1]"
            value = float(value) if ok else value
        elif name == "strategy":
            problem = None if value in STRATEGY_NAMES else f"strategy must be one of {list(STRATEGY_NAMES)}"
        elif name == "gate_metric":
            problem = None if value in GATE_METRICS else "gate_metric must be macro_f1 or accuracy"
        elif name == "consensus":
            problem = None if value in METHODS else f"consensus must be one of {list(METHODS)}"
        elif name == "rules":
            try:
                value = [r.to_json() for r in parse_rules(value)]
            except InvalidPayload as exc:
                problem = str(exc)
        elif name == "class_balance":
            problem = None if value in BALANCES else f"class_balance must be one of {list(BALANCES)}"
        if problem:
            if strict:
                raise InvalidPayload(problem)
            log.info("ignoring project setting: %s", problem)
            continue
        clean[name] = value
    return clean


def policy_for(settings: Settings, meta: Mapping[str, str]) -> Policy:
    """The effective policy of a project from its stored metadata."""
    policy = defaults(settings)
    for source in ("extra_params", "settings"):
        raw = meta.get(source)
        if not raw:
            continue
        try:
            values = json.loads(raw)
        except ValueError:
            continue
        if isinstance(values, dict):
            policy = replace(policy, **validated(values, strict=False))
    return policy


MAX_INTERVAL = 366 * 24 * 3600  # the longest `retrain_every` in seconds


def schedule_problem(spec: object) -> str | None:
    """Why `spec` is not a `retrain_every` value (None when it is): seconds as an integer (0 = off)
    or a five-field cron string."""
    if isinstance(spec, bool):
        return "retrain_every must be seconds as an integer or a cron string"
    if isinstance(spec, int):
        return None if 0 <= spec <= MAX_INTERVAL else f"retrain_every must be 0 (off) to {MAX_INTERVAL} seconds"
    if isinstance(spec, str):
        fields = spec.split()
        return (
            None
            if spec == "" or (len(fields) == 5 and croniter.is_valid(spec))
            else f"retrain_every {spec!r} is not a five-field cron string"
        )
    return "retrain_every must be seconds as an integer or a cron string"


def next_due(spec: int | str, after: float) -> float | None:
    """The first due time of `spec` after `after` (None: no schedule)."""
    if not spec:
        return None
    if isinstance(spec, int):
        return after + spec
    return float(croniter(spec, datetime.fromtimestamp(after, UTC)).get_next(float))
