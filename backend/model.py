"""The model, in label-studio-ml's habit: `predict(tasks, context)` and `fit(event, data)`.

The web process answers LS's `/predict` with `predict`, and the train job trains with `fit` (never
inside a web request). Both work through the model families (`families`): each control of the
request's label config is served by the family that claims it (the built-in text-choices family,
or a family named in MODEL_FAMILIES), and one prediction carries the regions of every control.
To change the model, write a family; this class wires families to the served versions.

A prediction's `score` is the task's place in the project's stored queue (0 first, 1 last or not
ranked), the same number the publish job pushes with the queue's head: LS's uncertainty sampling
sorts pushed and fetched predictions together. Each region keeps the model's confidence as its own
`score`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import families
from .config import Settings
from .families import ModelBundle
from .families.base import choices_region
from .labelconfig import LabelConfig
from .rules import RuleSet, decide
from .serving import ModelCache
from .training import Snapshot, TrainResult, train_and_judge

UNTRAINED = "untrained"


@dataclass
class Observation:
    """What monitoring keeps of one prediction request: our targets per task and control (for live
    accuracy) and, for the first control with a model, each text's confidence, length and unseen
    share (drift)."""

    version: str
    predicted: dict[int, dict[str, Any]] = field(default_factory=dict)
    traffic: list[tuple[float, float, float]] = field(default_factory=list)


class Predictions(list):  # type: ignore[type-arg]
    """`predict`'s answer: one entry per task, plus what monitoring keeps of it (None while untrained)."""

    observation: Observation | None = None


class Model:
    """Serves and trains every project through the model families of its label config."""

    def __init__(self, settings: Settings, cache: ModelCache):
        self.settings = settings
        self.cache = cache

    def model_version(self, project: int) -> str:
        """The version LS should believe we serve: the project's current pointer, read from disk;
        before the first model, the version of the project's labeling rules, if any."""
        pointer = self.cache.pointer(project)
        if pointer:
            return pointer.version
        rules = self.cache.rules(project)
        return rules.version if rules else UNTRAINED

    def predict(self, tasks: Sequence[dict[str, Any]], context: Any = None, *, project: int, config: LabelConfig) -> Predictions:
        """One entry per task, in order: a prediction, or `[]` when the task cannot be predicted.
        `context` (LS's interactive regions) is accepted and not used: predictions are of the text."""
        served = self.cache.get(project)
        limit = self.settings.max_text_chars
        datas = [_data(t) for t in tasks]
        texts_of = {c.from_name: [c.text_of(data, limit) for data in datas] for c in config.controls}
        if served is None:
            return self.before_training(tasks, project, config, texts_of)
        observation = Observation(served.version)
        regions: dict[int, list[dict[str, Any]]] = {}  # tasks with a region only: a request is mostly one control
        for control in config.controls:
            model = served.bundle.controls.get(control.from_name)
            if model is None:
                continue
            family = families.family(served.bundle.family_of(control.from_name))
            if not family.claims(control):
                continue  # the config changed the control's kind since this version
            control_texts = texts_of[control.from_name]
            rows = [i for i, text in enumerate(control_texts) if text is not None]
            if not rows:
                continue
            texts = [control_texts[i] for i in rows]
            predicted = family.predict(model, control, texts, self.settings.multilabel_threshold)
            if not observation.traffic:
                observation.traffic = [(p.score, float(len(t)), p.novelty) for p, t in zip(predicted, texts)]
            name, targets = control.from_name, observation.predicted
            for i, prediction in zip(rows, predicted):
                task_id = tasks[i].get("id")
                if isinstance(task_id, int) and not isinstance(task_id, bool):
                    targets.setdefault(task_id, {})[name] = prediction.target
                if not prediction.regions:
                    continue
                for n, region in enumerate(prediction.regions):  # the family's own fresh dicts: given an id in place
                    region["id"] = f"{name}-{i}-{n}" if n else f"{name}-{i}"
                if i in regions:
                    regions[i] += prediction.regions
                else:
                    regions[i] = prediction.regions
        version = served.version
        placed = self.scores(project, tasks, [i in regions for i in range(len(tasks))])
        results = Predictions(
            {"result": regions[i], "score": placed[i], "model_version": version} if i in regions else [] for i in range(len(tasks))
        )
        results.observation = observation
        return results

    def before_training(
        self, tasks: Sequence[dict[str, Any]], project: int, config: LabelConfig, texts_of: dict[str, list[str | None]]
    ) -> Predictions:
        """No model yet: the labeling rules' pre-annotations (`rules.decide`) under the rules'
        version, and an empty result for a task no rule covers, each with its queue score."""
        readable = [any(texts[i] is not None for texts in texts_of.values()) for i in range(len(tasks))]
        placed = self.scores(project, tasks, readable)
        ruleset = self.cache.rules(project)
        if not ruleset:
            return Predictions({"result": [], "score": placed[i], "model_version": UNTRAINED} if r else [] for i, r in enumerate(readable))
        regions: dict[int, list[dict[str, Any]]] = {}
        for control, votes in ruleset.votes_in(config, texts_of):
            picked, scores = decide(votes, control.multiple)
            for i, (labels, score) in enumerate(zip(picked, scores.tolist())):
                if labels:
                    region = choices_region(control, [control.labels[k] for k in labels], score)
                    regions.setdefault(i, []).append({"id": f"{control.from_name}-{i}", **region})
        return Predictions(
            {"result": regions.get(i, []), "score": placed[i], "model_version": ruleset.version} if r else []
            for i, r in enumerate(readable)
        )

    def scores(self, project: int, tasks: Sequence[dict[str, Any]], wanted: Sequence[bool]) -> list[float]:
        """Each wanted task's place in the project's stored queue (`ModelCache.queue_scores`, read
        from disk: `/predict` needs no Redis); 1.0 for a task the queue does not hold (labeled, or
        new since the ranking)."""
        ids = [t.get("id") if w and type(t.get("id")) is int else None for t, w in zip(tasks, wanted)]
        asked = [i for i in ids if i is not None]
        held = self.cache.queue_scores(project) if asked else None
        found = dict(zip(asked, held.lookup(asked))) if held is not None else {}
        return [1.0 if (score := found.get(i)) is None else score for i in ids]

    def fit(
        self,
        event: str,
        data: Snapshot,
        champion: ModelBundle | None = None,
        *,
        metric: str | None = None,
        margin: float | None = None,
        committee: int = 0,
        rules: RuleSet | None = None,
    ) -> TrainResult:
        """Train a challenger on a snapshot of the labels (with `committee` members per control, and
        the labeling `rules` as a prior where they help) and judge it against the champion; `event`
        is what asked for it (a webhook action, `schedule`, the admin API), kept on the result for
        the version's record."""
        result = train_and_judge(
            data,
            champion,
            metric=metric or self.settings.gate_metric,
            margin=self.settings.gate_margin if margin is None else margin,
            threshold=self.settings.multilabel_threshold,
            committee=committee,
            rules=rules,
        )
        result.event = event
        return result


def _data(task: dict[str, Any]) -> dict[str, Any]:
    data = task.get("data")
    return data if isinstance(data, dict) else {}
