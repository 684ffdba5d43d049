"""Publishing the queue: keep the project's pool in step with Label Studio, rank it with the
served model (or for cold start), store the ranking for `GET /queue` and `/predict`, push its head
to LS as predictions of the served version (and the label-error check's `mislabeling` scores), and
measure whether more labels still change the model (the stopping signal). Every write into LS is
made here.

One publish job of a project runs at a time (its lock), beside the train jobs and never in them:
a slow or unreachable LS delays only the next publish, and a push for a version that is no longer
served stops between two batches.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import numpy as np

from .. import consensus, families, labelstudio
from ..erasure import check_not_erased
from ..families.pool import cache_for
from ..head import head_size, promotion_cycle
from ..labelconfig import LabelConfig, LabelsControl
from ..model import UNTRAINED
from ..policy import Policy, policy_for
from ..ranking import Queue, rank, uncertainties
from ..runtime import Runtime
from ..serving import Served
from ..state import keys
from ..state.registry import RegistryError
from ..state.store import queue_score, texts_of
from ..training import predicted_targets
from .lock import project_lock

log = logging.getLogger(__name__)

STABILITY_SAMPLE = 5000
MISLABELS_PUSHED = 300  # the most suspicious tasks of a label-error check pushed to LS


def publish(runtime: Runtime, project: int, ls: labelstudio.Connection | None, generation: int | None = None) -> dict[str, Any]:
    """List LS's new tasks into the pool, rank the pool when the ranking is out of date, and keep
    LS's head of the current version full; what happened, as a summary. With the erasure
    `generation` the job started with, it stops (`erasure.ProjectErased`) before each write once
    the project was erased since."""
    store = runtime.store
    config = store.label_config(project)
    if config is None:
        return {"queue": 0}
    with project_lock(runtime.redis, project, wait=runtime.settings.job_timeout, token=uuid.uuid4().hex, lock=keys.publish_lock):
        _check(runtime, project, generation)  # it may have waited for the lock an erasure held
        summary: dict[str, Any] = {}
        if ls is not None:
            try:
                summary["listed"] = refresh_pool(runtime, ls, project, config)
            except Exception as exc:  # the SDK and httpx raise errors of many types
                log.warning("project %s: could not list tasks in Label Studio (%s); ranking the stored pool", project, type(exc).__name__)
        _check(runtime, project, generation)
        ranked = rank_pool(runtime, project, config, generation) if ranking_due(runtime, project) else None
        _check(runtime, project, generation)
        stored = store.queue(project)
        summary["queue"] = int(stored["size"]) if stored else 0
        if ranked is not None:
            summary["strategy"] = ranked.strategy
        if ls is not None and stored is not None and stored["version"] == served_version(runtime, project):
            try:
                summary.update(push_head(runtime, ls, project, config, stored["version"]))
                summary["mislabels"] = push_mislabels(runtime, ls, project, config, stored["version"])
                summary["reviews"] = ask_for_reviews(runtime, ls, project, config, stored["version"])
            except Exception as exc:
                log.warning(
                    "project %s: could not push the head to Label Studio (%s); the next publish (training, new tasks, refill) retries",
                    project,
                    type(exc).__name__,
                )
        return summary


def _check(runtime: Runtime, project: int, generation: int | None) -> None:
    if generation is not None:
        check_not_erased(runtime.redis, project, generation)


def served_version(runtime: Runtime, project: int) -> str:
    """The promoted version; before the first, the labeling rules' version, else `untrained`."""
    pointer = runtime.registry.pointer(project)
    if pointer:
        return pointer.version
    runtime.cache.refresh_rules(project)
    rules = runtime.cache.rules(project)
    return rules.version if rules else UNTRAINED


def refresh_pool(runtime: Runtime, ls: labelstudio.Connection, project: int, config: LabelConfig) -> dict[str, int]:
    """Add LS's unlabeled tasks past the highest task id listed so far to the pool; every
    `keys.POOL_RECONCILE` seconds (or when `full_at` was reset) list them all instead, which also
    drops tasks LS no longer has unlabeled. A pool that changed asks for a new ranking."""
    store = runtime.store
    after, full_at = store.pool_listing(project)
    started = time.time()
    full = started - full_at >= keys.POOL_RECONCILE
    data_keys, limit = config.data_keys or None, runtime.settings.max_text_chars
    tasks = {int(t["id"]): texts_of(t, data_keys, limit) for t in labelstudio.unlabeled_tasks(ls, 0 if full else after)}
    highest = max([after, *tasks])
    if full:
        known = {int(t) for t in store.redis.hkeys(keys.pool(project))}
        added, gone = len(set(tasks) - known), store.replace_pool(project, tasks)
        store.mark_listed(project, highest, full_at=started)
    else:
        store.remember_tasks(project, tasks)
        added, gone = len(tasks), 0
        store.mark_listed(project, highest)
    if added or gone:
        store.request_ranking(project)
    return {"full": int(full), "listed": len(tasks), "added": added, "removed": gone}


def ranking_due(runtime: Runtime, project: int) -> bool:
    """Is the stored ranking missing, of another version than the served one, or older than a
    request for a new one (new tasks)?"""
    stored = runtime.store.queue(project)
    return (
        stored is None
        or stored.get("version") != served_version(runtime, project)
        or runtime.store.ranking_requests(project) > int(stored.get("covers", 0))
    )


def rank_pool(runtime: Runtime, project: int, config: LabelConfig, generation: int | None = None) -> Queue | None:
    """Rank the stored unlabeled pool with the current model, or for cold start, and store the
    queue (with a stopping signal when the version is new); None when the model was replaced
    meanwhile (its own ranking follows)."""
    store, registry = runtime.store, runtime.registry
    deleted = store.deleted_tasks(project)
    if deleted:  # their texts went with the webhook; their features go from the cache, then their annotations
        cache_for(registry.project_dir(project)).forget(deleted)
        store.purge_deleted_tasks(project, deleted)
    policy = policy_for(runtime.settings, store.meta(project))
    covers = store.ranking_requests(project)
    runtime.keep_rules(project, policy.rules)
    pointer = registry.pointer(project)
    runtime.cache.refresh(project)
    served = runtime.cache.get(project) if pointer else None
    version = served.version if served else served_version(runtime, project)
    previous = store.queue(project)
    pool = store.unlabeled_pool(project)
    counts, total = label_counts(consensus.for_policy(store.task_votes(project), policy, config).tasks, config)
    warm = policy.warm(counts, config.classes, total)
    queue = rank(
        pool,
        config,
        policy,
        served.bundle if served else None,
        version,
        warm,
        runtime.settings.max_text_chars,
        cache=cache_for(registry.project_dir(project)),
        counts=counts,
        labeled=total,
    )
    new_version = previous is None or previous.get("version") != version
    signal = stopping_signal(runtime, project, served, config, pool, policy) if served and new_version else None
    if registry.pointer(project) != pointer:
        return None
    _check(runtime, project, generation)
    store.save_queue(project, queue.summary(), queue.order(), signal, covers)
    n = len(queue.entries)
    registry.save_queue_scores(project, [e.task for e in queue.entries], [queue_score(i, n) for i in range(n)])
    return queue


def push_head(runtime: Runtime, ls: labelstudio.Connection, project: int, config: LabelConfig, version: str) -> dict[str, Any]:
    """Keep LS's head of `version` at its size (`head.head_size`): push predictions for the first
    ranked tasks that are neither labeled nor already in it, in batches recorded as they are
    stored (paced, but for a batch annotators are waiting for: the first of a new version). Once the
    first batch of a new version is stored, the project's model version is set to it (LS refuses a
    version without predictions, and serves in random order while its version has none); once the
    head is stored, our other versions' predictions are deleted."""
    store, registry = runtime.store, runtime.registry
    policy = policy_for(runtime.settings, store.meta(project))
    rate, annotators = store.labeling_rate(project)
    target = head_size(policy.push_top, policy.retrain_threshold, rate, annotators, promotion_cycle(registry.history(project)))
    head_version = store.head(project)[0]
    if head_version != version:
        store.start_head(project, version, target)
    in_head = store.head_tasks(project)
    open_ = in_head - store.annotated(project, sorted(in_head))
    tasks = next_for_head(runtime, project, target - len(open_), in_head) if len(open_) < target else []
    summary: dict[str, Any] = {"head": target, "pushed": 0}
    clustered = store.queue(project).get("strategy") == "diversity"
    current = lambda: served_version(runtime, project) == version  # noqa: E731
    results = runtime.model.predict(tasks, project=project, config=config) if version != UNTRAINED and tasks else [None] * len(tasks)
    new_version = store.redis.get(keys.pushed_version(project)) != version.encode()
    for start in range(0, len(tasks), labelstudio.PUSH_BATCH):
        if not current():
            summary["stopped"] = f"{version} is no longer served"
            log.info("project %s: stopped pushing %s after %s predictions: no longer served", project, version, summary["pushed"])
            return summary
        batch = list(zip(tasks[start : start + labelstudio.PUSH_BATCH], results[start : start + labelstudio.PUSH_BATCH]))
        predictions = [
            {
                "task": task["id"],
                "result": result["result"] if isinstance(result, dict) else [],
                "score": task["score"],
                "model_version": version,
                "cluster": task["cluster"] if clustered else None,
            }
            for task, result in batch
        ]
        labelstudio.push_predictions(ls, predictions, pace=len(open_) + summary["pushed"] >= labelstudio.PUSH_BATCH)
        store.grow_head(project, version, target, [task["id"] for task, _ in batch])
        summary["pushed"] += len(batch)
        if new_version:  # the first tasks of the head are served while the rest is stored
            labelstudio.set_model_version(ls, version, policy.uncertainty_sampling)
            store.redis.set(keys.pushed_version(project), version)
            new_version = False
    observation = getattr(results, "observation", None)
    if observation is not None:
        store.remember_predictions(project, version, observation.predicted)
    if summary["pushed"] or open_:
        summary["removed"] = labelstudio.remove_old_versions(ls, version)
    if summary["pushed"]:
        log.info("project %s: pushed %s predictions of %s (head of %s)", project, summary["pushed"], version, target)
    return summary


def push_mislabels(runtime: Runtime, ls: labelstudio.Connection, project: int, config: LabelConfig, version: str) -> int:
    """Push the `mislabeling` scores of the last label-error check to LS, once, as predictions of
    `version` on the suspected tasks, if the check is of that version; how many were stored. The
    next version's head removes them with the rest of this version's predictions."""
    store = runtime.store
    found = store.mislabels(project)
    if not found or found.get("version") != version or "pushed" in found or not found.get("suspects"):
        return 0
    worst: dict[int, float] = {}
    for suspect in found["suspects"]:
        worst[suspect["task"]] = max(worst.get(suspect["task"], 0.0), suspect["mislabeling"])
    predictions = [
        {"task": task, "result": r["result"], "score": r["score"], "model_version": version, "mislabeling": worst[task]}
        for task, r in predicted_labeled(runtime, project, config, list(worst))
    ]
    pushed = labelstudio.push_predictions(ls, predictions)
    store.save_mislabels(project, {**found, "pushed": pushed})
    return pushed


def ask_for_reviews(runtime: Runtime, ls: labelstudio.Connection, project: int, config: LabelConfig, version: str) -> int:
    """Ask LS for one more annotation of each disputed task the last train job listed
    (`review_extra_annotation`): raise its overlap, and store a prediction of `version` with a
    score below every head task's (-1 + its certainty: ties first), so LS's uncertainty sampling
    serves it next to an annotator who has not labeled it. Done once per task and version (the
    next version's head removes the prediction, and the next publish stores a new one)."""
    store = runtime.store
    waiting = {t: e for t, e in store.reviews(project).items() if e.get("version") != version}
    if not waiting:
        return 0
    found = predicted_labeled(runtime, project, config, sorted(waiting))
    predictions = []
    for task, result in found:
        if waiting[task].get("version") is None:
            labelstudio.ask_for_annotation(ls, task, int(waiting[task]["overlap"]))
        score = round(-1.0 + float(waiting[task].get("certainty") or 0.0), 6)
        predictions.append({"task": task, "result": result["result"], "score": score, "model_version": version})
    pushed = labelstudio.push_predictions(ls, predictions)
    store.mark_reviews(project, version, [task for task, _ in found])
    return pushed


def predicted_labeled(runtime: Runtime, project: int, config: LabelConfig, task_ids: list[int]) -> list[tuple[int, dict[str, Any]]]:
    """The served model's prediction of each of the first `MISLABELS_PUSHED` labeled tasks among
    `task_ids` (their texts from the stored votes), for the predictions pushed onto labeled tasks."""
    stored = {t.task: t for t in runtime.store.task_votes(project)}
    tasks = [{"id": t, "data": stored[t].data} for t in task_ids if t in stored][:MISLABELS_PUSHED]
    results = runtime.model.predict(tasks, project=project, config=config)
    return [(t["id"], r) for t, r in zip(tasks, results) if isinstance(r, dict)]


def next_for_head(runtime: Runtime, project: int, count: int, in_head: set[int]) -> list[dict[str, Any]]:
    """The first `count` ranked tasks that are neither labeled nor in the head, with their data,
    `score` and `cluster` (tasks no longer in the pool are passed over)."""
    entries = runtime.store.next_unlabeled(project, count, skip=in_head)
    data = runtime.store.pool_tasks(project, [e["task"] for e in entries])
    return [{**e, "id": e["task"], "data": data[e["task"]]} for e in entries if e["task"] in data]


def label_counts(labeled: list[Any], config: LabelConfig) -> tuple[dict[str, dict[str, int]], int]:
    """Labels per control and label among `labeled` (spans per type), and how many tasks have a
    label in the config, "no spans" of a Labels control included (the cold-start rule)."""
    counts: dict[str, dict[str, int]] = {}
    total = 0
    for task in labeled:
        counted = False
        for control in config.controls:
            found = task.labels.get(control.from_name)
            if found is None:
                continue
            counted = counted or (isinstance(control, LabelsControl) and not found)
            for item in found:
                if (label := control.label_of(item)) in control.labels:
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
