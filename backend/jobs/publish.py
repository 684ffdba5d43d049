"""Publishing the queue: rank the unlabeled pool with the served model (or for cold start), store
the ranking for `GET /queue`, push it to Label Studio as predictions of the current version, and
measure whether more labels still change the model (the stopping signal)."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import families, labelstudio
from ..families.pool import cache_for
from ..labelconfig import LabelConfig
from ..model import UNTRAINED
from ..policy import Policy, policy_for
from ..ranking import Queue, rank, uncertainties
from ..runtime import Runtime
from ..serving import Served
from ..state import keys
from ..state.registry import Pointer, RegistryError
from ..state.store import texts_of
from ..training import predicted_targets
from .lock import project_lock

log = logging.getLogger(__name__)

STABILITY_SAMPLE = 5000


@dataclass
class Ranked:
    """A stored ranking and what it was made with."""

    queue: Queue
    pool: list[dict[str, Any]]
    config: LabelConfig
    policy: Policy
    pointer: Pointer | None
    served: Served | None


def rank_pool(runtime: Runtime, project: int, ls: labelstudio.Connection | None, stability: bool) -> Ranked | None:
    """Rank the unlabeled pool (listed in LS when `ls` is given, else the stored one) with the
    current model, or for cold start, and store the queue; None without a usable config or pool.
    One ranking of a project at a time; a ranking whose model was replaced meanwhile is not stored."""
    store, registry = runtime.store, runtime.registry
    config = store.label_config(project)
    if config is None:
        return None
    policy = policy_for(runtime.settings, store.meta(project))
    with project_lock(runtime.redis, project, wait=runtime.settings.job_timeout, token=uuid.uuid4().hex, lock=keys.rank_lock):
        covers = store.ranking_requests(project)
        pointer = registry.pointer(project)
        runtime.cache.refresh(project)
        served = runtime.cache.get(project) if pointer else None
        version = served.version if served else UNTRAINED
        if ls is not None:
            try:
                pool = labelstudio.unlabeled(ls)
            except Exception as exc:
                log.warning("project %s: could not list tasks in Label Studio (%s)", project, type(exc).__name__)
                return None
            data_keys, limit = config.data_keys or None, runtime.settings.max_text_chars
            store.remember_tasks(project, {int(t["id"]): texts_of(t, data_keys, limit) for t in pool})
        else:
            pool = store.unlabeled_pool(project)
        labeled = store.labeled_tasks(project)
        counts, total = label_counts(labeled, config)
        warm = policy.warm(counts, {c.from_name: c.labels for c in config.controls}, total)
        queue = rank(
            pool,
            config,
            policy,
            served.bundle if served else None,
            version,
            warm,
            runtime.settings.max_text_chars,
            cache=cache_for(registry.project_dir(project)),
        )
        signal = stopping_signal(runtime, project, served, config, pool, policy) if served and stability else None
        if registry.pointer(project) != pointer:
            return None  # a newer version was promoted meanwhile: its own ranking follows
        store.save_queue(project, queue.summary(), queue.order(), signal, covers)
    return Ranked(queue, pool, config, policy, pointer, served)


def publish_queue(runtime: Runtime, ls: labelstudio.Connection | None, project: int) -> dict[str, Any]:
    """Rank the unlabeled pool with the current model (or for cold start), store the queue, and
    push it to LS as predictions of the current version, then set the project's model version."""
    store, registry = runtime.store, runtime.registry
    ranked = rank_pool(runtime, project, ls, stability=True)
    if ranked is None:
        return {"queue": 0}
    queue, pool, config, policy, pointer, served = ranked.queue, ranked.pool, ranked.config, ranked.policy, ranked.pointer, ranked.served
    version = queue.version
    pushed = 0
    if ls is not None and queue.entries and store.redis.get(keys.pushed_version(project)) != version.encode():
        by_id = {int(t["id"]): t for t in pool}
        entries = {e.task: e for e in queue.entries}
        tasks = [by_id[e.task] for e in queue.entries]
        results = runtime.model.predict(tasks, project=project, config=config) if served else [None] * len(tasks)
        observation = getattr(results, "observation", None)
        predictions = []
        for task, result in zip(tasks, results):
            entry = entries[int(task["id"])]
            regions = result["result"] if isinstance(result, dict) else []
            predictions.append(
                {
                    "task": entry.task,
                    "result": regions,
                    "score": entry.score,
                    "model_version": version,
                    "cluster": entry.cluster if queue.strategy == "diversity" else None,
                }
            )
        if registry.pointer(project) != pointer:
            return {"queue": len(queue.entries), "pushed": 0}  # a newer version was promoted meanwhile
        try:
            pushed = labelstudio.push_predictions(ls, version, predictions, policy.uncertainty_sampling)
        except Exception as exc:
            log.warning("project %s: could not push predictions to Label Studio (%s); retried by the next job", project, type(exc).__name__)
            return {"queue": len(queue.entries), "pushed": 0}
        store.redis.set(keys.pushed_version(project), version)
        if observation is not None:
            store.remember_predictions(project, version, observation.predicted)
        log.info("project %s: pushed %s predictions of %s (%s)", project, pushed, version, queue.strategy)
    return {"queue": len(queue.entries), "pushed": pushed, "strategy": queue.strategy}


def label_counts(labeled: list[Any], config: LabelConfig) -> tuple[dict[str, dict[str, int]], int]:
    """Labels per control and label among `labeled`, and how many tasks have any (the cold-start rule)."""
    counts: dict[str, dict[str, int]] = {}
    total = 0
    for task in labeled:
        counted = False
        for control in config.controls:
            for label in task.labels.get(control.from_name, []):
                if label in control.labels:
                    counts.setdefault(control.from_name, {}).setdefault(label, 0)
                    counts[control.from_name][label] += 1
                    counted = True
        total += counted
    return counts, total


def stopping_signal(
    runtime: Runtime, project: int, served: Served, config: LabelConfig, pool: list[dict[str, Any]], policy: Policy
) -> dict[str, Any] | None:
    """Do more labels still change the model? Agreement (Cohen's kappa) of the served version and
    its parent on the unlabeled pool, and the pool's mean uncertainty (small-text's ideas)."""
    from sklearn.metrics import cohen_kappa_score

    record = runtime.registry.record(project, served.version) or {}
    parent = record.get("parent")
    sample = pool[:STABILITY_SAMPLE]
    signal: dict[str, Any] = {"version": served.version, "parent": parent, "pool": len(pool)}
    if sample:
        signal["mean_uncertainty"] = round(
            float(uncertainties(served.bundle, config, sample, policy, runtime.settings.max_text_chars).mean()), 4
        )
    parent_record = runtime.registry.record(project, parent) if parent else None
    if sample and parent_record and parent_record.get("sha256"):
        try:
            old = runtime.registry.load(project, parent, parent_record["sha256"])
        except RegistryError:
            return signal
        kappas = []
        for control in config.controls:
            texts = [t for t in (control.text_of(task.get("data") or {}, runtime.settings.max_text_chars) for task in sample) if t]
            name = served.bundle.family_of(control.from_name)
            family = families.family(name)
            if not texts or control.from_name not in served.bundle.controls or not family.claims(control):
                continue
            same = old.family_of(control.from_name) == name
            new = [json.dumps(t) for t in predicted_targets(family, served.bundle.controls[control.from_name], control, texts, 0.5)]
            before = [
                json.dumps(t) for t in predicted_targets(family, old.controls.get(control.from_name) if same else None, control, texts, 0.5)
            ]
            kappas.append(1.0 if new == before else float(cohen_kappa_score(new, before)))
        if kappas:
            signal["agreement_kappa"] = round(float(np.mean(kappas)), 4)
    return signal
