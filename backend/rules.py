"""Labeling rules (weak supervision): keyword, phrase and regular-expression rules per control and
label, kept as data. A rule votes for its label on every text it matches; the votes of a task give
pre-annotations before the first model and class-aware cold-start batches, and the annotations
measure each rule.

Patterns run on RE2 (google-re2): matching takes time linear in the text, so no pattern can
backtrack catastrophically and stall a web worker, and a pattern RE2 cannot run in linear time
(backreferences, lookaround) is refused when the rules are set. Nothing is evaluated as code.

The spec is a JSON list; each item names a `label`, optionally its `control` (needed only when the
config has several `Choices` controls), and exactly one of `keyword` (a whole word),
`phrase` (whole words in sequence), `regex` (RE2 syntax, searched anywhere), or their plural lists
(`keywords`, `phrases`, `regexes`), one rule per entry. Keywords and phrases ignore case.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from .payload import InvalidPayload

KINDS = ("keyword", "phrase", "regex")
PLURALS = ("keywords", "phrases", "regexes")
MAX_RULES = 500
MAX_PATTERN = 500  # characters of one pattern
MAX_PROGRAM = 1 << 20  # bytes RE2 may use for one compiled pattern
VERSION_PREFIX = "rules-"
PRIOR_WEIGHTS = (0.0, 0.25, 0.5)  # the rules' share in a trained model's probabilities the train job tries (`RulePrior`)


@dataclass(frozen=True)
class Rule:
    label: str
    kind: str  # one of KINDS
    pattern: str
    control: str = ""  # "" = the config's only Choices control

    @property
    def name(self) -> str:
        return f"{self.control + ':' if self.control else ''}{self.label} {self.kind} {self.pattern!r}"

    def to_json(self) -> dict[str, str]:
        out = {"label": self.label, self.kind: self.pattern}
        return {**out, "control": self.control} if self.control else out


def parse_rules(raw: Any) -> tuple[Rule, ...]:
    """Rules from their JSON spec (a list, or a JSON string of one); InvalidPayload (400) says what is wrong."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise InvalidPayload("rules must be a JSON list") from None
    if not isinstance(raw, list):
        raise InvalidPayload("rules must be a list of {label, keyword|phrase|regex} objects")
    rules: list[Rule] = []
    for number, item in enumerate(raw):
        where = f"rule {number}"
        if not isinstance(item, dict):
            raise InvalidPayload(f"{where} must be an object")
        unknown = set(item) - {"label", "control", *KINDS, *PLURALS}
        if unknown:
            raise InvalidPayload(f"{where}: unknown keys {sorted(unknown)}")
        label, control = item.get("label"), item.get("control", "")
        if not isinstance(label, str) or not label or not isinstance(control, str):
            raise InvalidPayload(f"{where}: label (and control, if given) must be non-empty strings")
        given = [(kind, [item[kind]]) for kind in KINDS if kind in item]
        given += [(kind, item[plural]) for kind, plural in zip(KINDS, PLURALS) if plural in item]
        if len(given) != 1:
            raise InvalidPayload(f"{where}: give exactly one of keyword, phrase, regex (or keywords, phrases, regexes)")
        kind, patterns = given[0]
        if not isinstance(patterns, list) or not patterns:
            raise InvalidPayload(f"{where}: {kind}s must be a non-empty list")
        for pattern in patterns:
            if not isinstance(pattern, str) or not pattern.strip() or len(pattern) > MAX_PATTERN:
                raise InvalidPayload(f"{where}: each {kind} must be a non-empty string of at most {MAX_PATTERN} characters")
            if kind == "keyword" and len(pattern.split()) != 1:
                raise InvalidPayload(f"{where}: a keyword is one word ({pattern!r}: make it a phrase)")
            rule = Rule(label, kind, " ".join(pattern.split()) if kind != "regex" else pattern, control)
            problem = compile_problem(rule)
            if problem:
                raise InvalidPayload(f"{where}: {problem}")
            rules.append(rule)
    if len(rules) > MAX_RULES:
        raise InvalidPayload(f"at most {MAX_RULES} rules")
    return tuple(dict.fromkeys(rules))


def expression(rule: Rule) -> str:
    """The RE2 pattern of a rule: keywords and phrases as whole words, ignoring case."""
    if rule.kind == "regex":
        return rule.pattern
    import re2

    words = rule.pattern.split()
    return r"(?i)(?:^|\W)" + r"\s+".join(re2.escape(w) for w in words) + r"(?:\W|$)"


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> Any:
    import re2

    options = re2.Options()
    options.log_errors = False
    options.max_mem = MAX_PROGRAM
    return re2.compile(pattern, options)


def compile_problem(rule: Rule) -> str | None:
    """Why RE2 refuses the rule's pattern (None when it compiles)."""
    import re2

    try:
        _compiled(expression(rule))
    except re2.error as error:
        reason = error.args[0] if error.args else error
        reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        return f"{rule.kind} {rule.pattern!r} is not an RE2 pattern ({reason})"
    return None


class RuleSet:
    """Compiled rules of one project, applied to a label config's controls."""

    def __init__(self, rules: Sequence[Rule]):
        self.rules = tuple(rules)
        self.patterns = [_compiled(expression(r)) for r in self.rules]
        digest = hashlib.sha256(json.dumps([r.to_json() for r in self.rules], sort_keys=True).encode()).hexdigest()
        self.version = VERSION_PREFIX + digest[:8]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def applies(self, rule: Rule, control: Any, only: bool) -> bool:
        """Does `rule` vote in `control` (a Choices control; `only`: the config's only one)?"""
        return (rule.control == control.from_name or (not rule.control and only)) and rule.label in control.labels

    def matches(self, texts: Sequence[str | None], which: Sequence[int] | None = None) -> np.ndarray:
        """texts x rules (those numbered in `which`, else all): which rule matches which text (None:
        no text, no match)."""
        which = range(len(self.rules)) if which is None else which
        out = np.zeros((len(texts), len(which)), dtype=bool)
        for column, j in enumerate(which):
            pattern = self.patterns[j]
            for i, text in enumerate(texts):
                if text is not None and pattern.search(text) is not None:
                    out[i, column] = True
        return out

    def voting(self, control: Any, only: bool) -> list[int]:
        """The numbers of the rules that vote in `control` (`only`: the config's only Choices control)."""
        return [j for j, rule in enumerate(self.rules) if self.applies(rule, control, only)]

    def votes(self, control: Any, texts: Sequence[str | None], only: bool) -> np.ndarray:
        """texts x control.labels: how many rules vote for each label of `control`."""
        out = np.zeros((len(texts), len(control.labels)), dtype=int)
        mine = self.voting(control, only)
        hits = self.matches(texts, mine)
        for column, j in enumerate(mine):
            out[:, control.labels.index(self.rules[j].label)] += hits[:, column]
        return out

    def votes_in(self, config: Any, texts_by_name: Mapping[str, Sequence[str | None]]) -> list[tuple[Any, np.ndarray]]:
        """Each Choices control of `config` with the rules' votes over its texts (`texts_by_name`:
        each control's text of every task, by the control's name)."""
        choices = choice_controls(config)
        return [(c, self.votes(c, texts_by_name[c.from_name], only=len(choices) == 1)) for c in choices]


def choice_controls(config: Any) -> list[Any]:
    """The `Choices` controls of a label config, the only controls rules vote in (none without a config)."""
    from .labelconfig import ChoicesControl

    return [c for c in config.controls if isinstance(c, ChoicesControl)] if config is not None else []


def label_shares(votes: np.ndarray) -> np.ndarray:
    """Per task, each label's share of the rules' votes in one control (tasks x labels; an
    uncovered task: zeros): what the cold start's class-aware batches read as the labels' likelihood."""
    totals = votes.sum(axis=1, keepdims=True)
    return np.divide(votes, totals, out=np.zeros(votes.shape, dtype=float), where=totals > 0)


def decide(votes: np.ndarray, multiple: bool) -> tuple[list[list[int]], np.ndarray]:
    """Per text, from its rule votes over a control's labels: the label indices the rules give
    (single choice: the label with the most votes, none on a tie; multi-label: every label voted
    for) and a score in [0, 1], the agreeing votes' share times 1 - 2^-agreeing (one rule alone
    0.5, two agreeing 0.75, ...); uncovered texts score 0."""
    n = votes.shape[0]
    picked: list[list[int]] = [[] for _ in range(n)]
    scores = np.zeros(n)
    totals = votes.sum(axis=1)
    for i in np.flatnonzero(totals):
        row = votes[i]
        if multiple:
            picked[i] = np.flatnonzero(row).tolist()
            agreeing = int(row[row > 0].min())
        else:
            best = np.flatnonzero(row == row.max())
            if len(best) > 1:
                continue
            picked[i] = [int(best[0])]
            agreeing = int(row.max())
        scores[i] = agreeing / totals[i] * (1 - 0.5**agreeing)
    return picked, scores


def blend(proba: np.ndarray, votes: np.ndarray, weight: float, multiple: bool) -> np.ndarray:
    """A model's probabilities (tasks x labels) with the rules' votes mixed in at `weight` on the
    tasks some rule covers: single choice moves each row towards the labels' share of the votes,
    multi-label moves each voted label towards 1. Uncovered tasks keep the model's probabilities."""
    if weight <= 0 or not votes.any():
        return proba
    if multiple:
        return np.where(votes > 0, (1 - weight) * proba + weight, proba)
    covered = votes.sum(axis=1, keepdims=True) > 0
    return np.where(covered, (1 - weight) * proba + weight * label_shares(votes), proba)


@dataclass(frozen=True)
class RulePrior:
    """The labeling rules of one control as a prior of its trained model: `blend` at `weight` over
    the votes of `rules` (those the train job found voting in the control, by `RuleSet.voting`).
    The train job picks the weight out of fold and records it with the version (`training.choose_prior`)."""

    rules: tuple[Rule, ...]
    weight: float
    version: str = ""  # the project's rules version the prior was taken from
    compiled: RuleSet = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", RuleSet(self.rules))

    def apply(self, proba: np.ndarray, control: Any, texts: Sequence[str | None]) -> np.ndarray:
        """`proba` over `control.labels` for `texts` with the rules mixed in."""
        return blend(proba, self.compiled.votes(control, texts, only=True), self.weight, control.multiple)

    def to_json(self) -> dict[str, Any]:
        return {"rules": [r.to_json() for r in self.rules], "weight": float(self.weight), "version": self.version}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RulePrior:
        """A prior from `to_json`'s values (ValueError, as `parse_rules` raises, when they are not rules)."""
        return cls(parse_rules(list(data["rules"])), float(data["weight"]), str(data.get("version", "")))


def report(
    ruleset: RuleSet,
    config: Any,
    labeled: Sequence[tuple[dict[str, Any], dict[str, list[str]]]],
    pool: Sequence[dict[str, Any]],
    limit: int,
) -> dict[str, Any]:
    """How each rule does on the project: `labeled` holds (task data, consensus labels per control),
    `pool` the unlabeled tasks' data. Per rule: `matched` tasks and `coverage` (their share of all
    tasks), `conflicts` (matched tasks where a rule of the same single-choice control votes
    another label), and among the matched labeled tasks how many carry the rule's label
    (`correct`, `accuracy`). A rule whose control or label the config lacks says so in `problem`."""
    choices = choice_controls(config)
    datas = [data for data, _ in labeled] + list(pool)
    n, known = len(datas), len(labeled)
    rows = [
        {
            "rule": rule.to_json(),
            "name": rule.name,
            "control": None,
            "problem": None,
            "matched": 0,
            "coverage": 0.0,
            "conflicts": 0,
            "labeled": 0,
            "correct": 0,
            "accuracy": None,
        }
        for rule in ruleset.rules
    ]
    covered = np.zeros(n, dtype=bool)
    for control in choices:
        mine = ruleset.voting(control, len(choices) == 1)
        if not mine:
            continue
        hits = ruleset.matches([control.text_of(d, limit) for d in datas], mine)
        covered |= hits.any(axis=1)
        labels = np.array([control.labels.index(ruleset.rules[j].label) for j in mine])
        for column, j in enumerate(mine):
            rule, row = ruleset.rules[j], rows[j]
            matched = hits[:, column]
            others = hits[:, labels != labels[column]].any(axis=1) if not control.multiple else np.zeros(n, dtype=bool)
            truth = [rule.label in labeled[i][1].get(control.from_name, []) for i in np.flatnonzero(matched[:known])]
            row.update(
                control=control.from_name,
                matched=int(matched.sum()),
                coverage=round(float(matched.mean()), 4) if n else 0.0,
                conflicts=int((matched & others).sum()),
                labeled=len(truth),
                correct=int(sum(truth)),
                accuracy=round(sum(truth) / len(truth), 4) if truth else None,
            )
    for rule, row in zip(ruleset.rules, rows):
        if row["control"] is None:
            row["problem"] = (
                "no Choices control has this label"
                if not rule.control
                else f"the label config has no Choices control {rule.control!r} with label {rule.label!r}"
            )
            if not rule.control and len(choices) > 1 and any(rule.label in c.labels for c in choices):
                row["problem"] = "several Choices controls: name the rule's control"
    return {
        "version": ruleset.version,
        "tasks": n,
        "labeled": known,
        "covered": round(float(covered.mean()), 4) if n else 0.0,
        "rules": rows,
    }
