"""Train, judge, record and promote: one candidate version of a project per call.

The invariant: the project's pointer moves only through `Registry.promote`'s compare-and-set, and
only to a challenger the gate judged not worse than the champion; every candidate is recorded
(promoted, rejected or superseded) with its lineage, and the decision is in the audit trail.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .. import agreement, consensus, faults
from ..consensus import Consensus
from ..erasure import check_not_erased
from ..labelconfig import LabelConfig
from ..policy import Policy, policy_for
from ..runtime import Runtime
from ..state import audit, keys
from ..state.registry import RegistryError
from ..training import Snapshot, build_snapshot, example_digest, poisoned_tasks

log = logging.getLogger(__name__)


def train_project(
    runtime: Runtime, project: int, reason: str, job_id: str = "", last_attempt: bool = False, generation: int | None = None
) -> dict[str, Any]:
    """Snapshot, train, judge, record and (maybe) promote. Returns a summary of what happened.

    When the last attempt fails in `fit`, the tasks whose examples make it fail are quarantined,
    so the project's next job trains without them. With the erasure `generation` the job started
    with, nothing is recorded once the project was erased since (`erasure.ProjectErased`).
    """
    store, registry = runtime.store, runtime.registry
    config = store.label_config(project)
    if config is None:
        return {"status": "skipped", "reason": "no usable label config stored for the project yet"}
    pointer = registry.pointer(project)
    if pointer and store.raise_change_seq(project, pointer.watermark):
        trained_on = int((registry.record(project, pointer.version) or {}).get("examples", 0))
        store.redis.set(keys.lost_labels(project), trained_on)
        log.error("project %s: Redis lost labels %s was trained on (%s labeled tasks)", project, pointer.version, trained_on)
    policy = policy_for(runtime.settings, store.meta(project))
    snapshot, agreed = snapshot_of(runtime, project, config, policy)
    labeled = agreed.tasks
    alpha = agreement.alphas(agreed.votes)
    audit_disputes(runtime, project, agreed, job_id, policy.review_extra_annotation)
    history = registry.history(project)
    if (
        history
        and history[-1].get("fingerprint") == snapshot.fingerprint
        and history[-1].get("decision") != "promoting"
        and history[-1].get("committee", 0) == policy.committee
        and history[-1].get("rules", "") == (policy.rule_set.version if policy.rule_set else "")
    ):
        return {"status": "unchanged", "version": pointer.version if pointer else None}
    champion = None
    if pointer:
        snapshot.champion_saw_gold = not (registry.record(project, pointer.version) or {}).get("gold_tasks")
        try:
            champion = registry.load(project, pointer.version, pointer.sha256)
        except RegistryError as exc:
            log.error("project %s: champion %s unusable, judging without it: %s", project, pointer.version, exc)
    faults.point("fit")
    try:
        result = runtime.model.fit(
            reason,
            snapshot,
            champion,
            metric=policy.gate_metric,
            margin=policy.gate_margin,
            committee=policy.committee,
            rules=policy.rule_set,
        )
    except Exception:
        if last_attempt:
            quarantine_poison(runtime, project, snapshot, labeled, job_id)
        raise
    if generation is not None:
        check_not_erased(runtime.redis, project, generation)
    version = registry.next_version(project)
    record: dict[str, Any] = {
        "version": version,
        "project": project,
        "parent": pointer.version if pointer else None,
        "created_at": time.time(),
        "job_id": job_id,
        "trigger": result.event or reason,
        "fingerprint": snapshot.fingerprint,
        "committee": policy.committee,
        "rules": policy.rule_set.version if policy.rule_set else "",
        "watermark": snapshot.watermark,
        "label_config": config.digest,
        "examples": snapshot.size,
        "label_counts": {name: data.counts() for name, data in snapshot.controls.items()},
        "families": {name: data.family.name for name, data in snapshot.controls.items()},
        "set_aside": snapshot.set_aside,
        "consensus": {"method": policy.consensus, "tasks": snapshot.consensus, "alpha": alpha},
        "gold_tasks": len({t for data in snapshot.gold.values() for t in data.tasks}),
        "train_seconds": round(result.seconds, 3),
        "evaluation": result.judgement.to_json(),
        "sha256": None,
        "reference": result.reference,
        "decision": "rejected",
        "reason": result.judgement.reason,
    }
    promote = result.bundle is not None and result.judgement.promote
    lost = int(store.redis.get(keys.lost_labels(project)) or 0)
    if promote and not result.judgement.champion and snapshot.size < lost:
        # judged without the champion (too few held-out labels): a model of the few labels stored
        # since Redis lost its data must not replace one trained on many
        promote = False
        record["reason"] = (
            f"{result.judgement.reason}; kept the champion: Redis lost the labels it was trained on "
            f"({lost} labeled tasks), {snapshot.size} stored since"
        )
    if result.bundle is not None:
        record["sha256"] = registry.save_artifact(project, version, result.bundle)
    if promote:
        record["decision"] = "promoting"
        registry.save_record(project, record)
        try:
            registry.promote(project, version, record["sha256"], snapshot.watermark, pointer.seq if pointer else 0)
            record["decision"] = "promoted"
            store.redis.delete(keys.lost_labels(project))
        except RegistryError as exc:
            record["decision"] = "superseded"
            record["reason"] = f"{result.judgement.reason}; not promoted: {exc}"
    registry.save_record(project, record)
    log.info("project %s: %s %s (%s)", project, version, record["decision"], record["reason"])
    promoted = record["decision"] == "promoted"
    audit.record(
        runtime.redis,
        project,
        "promotion" if promoted else "rejection",
        f"train job {job_id}" if job_id else "train job",
        f"{version} {record['decision']}: {record['reason']}",
        version=version,
        parent=record["parent"],
        trigger=reason,
        examples=snapshot.size,
        metrics=record["evaluation"].get("challenger"),
    )
    return {"status": record["decision"], "version": version, "reason": record["reason"]}


def snapshot_of(runtime: Runtime, project: int, config: LabelConfig, policy: Policy) -> tuple[Snapshot, Consensus]:
    """What a model of the project trains on now: the consensus of the stored votes under `policy`,
    its gold set held out, quarantined tasks set aside; and the consensus itself."""
    store = runtime.store
    watermark = store.change_seq(project)
    agreed = consensus.for_policy(store.task_votes(project), policy, config)
    gold = consensus.gold_tasks(agreed, policy)
    snapshot = build_snapshot(
        project, agreed.tasks, config, watermark, runtime.settings.max_text_chars, store.quarantined(project), gold, agreed.counts
    )
    return snapshot, agreed


def audit_disputes(runtime: Runtime, project: int, agreed: Consensus, job_id: str, ask: bool = False) -> None:
    """Record in the audit trail the tasks newly disputed since the last train job, and how the
    ones no longer disputed were resolved (the outcome their consensus has now, or gone); with
    `ask` (`review_extra_annotation`), have the next publish job ask LS for one more annotation of
    each disputed task."""
    disputes = {(d.task, d.control): d for d in agreed.disputes}
    new, settled = runtime.store.swap_disputes(project, set(disputes))
    runtime.store.forget_reviews(project, {t for t, _ in settled} - {t for t, _ in disputes})
    if ask and disputes:
        voters = {t.task: len({v.voter for v in t.votes}) for t in agreed.votes}
        runtime.store.ask_reviews(
            project, {d.task: {"overlap": voters.get(d.task, 1) + 1, "certainty": d.certainty} for d in disputes.values()}
        )
    actor = f"train job {job_id}" if job_id else "train job"
    if new:
        shown = [{"task": t, "control": c, "reason": disputes[t, c].reason, "votes": disputes[t, c].votes} for t, c in sorted(new)[:100]]
        audit.record(runtime.redis, project, "dispute", actor, f"{len(new)} tasks newly disputed by their annotators", tasks=shown)
    if settled:
        outcome = {(t.task, c): (o, t.labels[c]) for t in agreed.tasks for c, o in t.outcomes.items()}
        shown = [
            {
                "task": t,
                "control": c,
                "outcome": outcome.get((t, c), ("no longer labeled", []))[0],
                "label": outcome.get((t, c), ("", []))[1],
            }
            for t, c in sorted(settled)[:100]
        ]
        audit.record(runtime.redis, project, "resolution", actor, f"{len(settled)} disputed tasks resolved", tasks=shown)


def quarantine_poison(runtime: Runtime, project: int, snapshot: Snapshot, labeled: list[Any], job_id: str) -> None:
    """Set aside the labeled tasks whose examples make fitting raise (they stay stored, and are
    tried again once edited), and say so in the log and the audit trail."""
    poisoned = sorted(poisoned_tasks(snapshot))
    if not poisoned:
        return
    by_task = {t.task: t for t in labeled}
    runtime.store.quarantine(project, {t: example_digest(by_task[t]) for t in poisoned})
    log.error("project %s: quarantined %s labeled tasks whose examples make training fail: %s", project, len(poisoned), poisoned[:20])
    audit.record(
        runtime.redis,
        project,
        "training",
        f"train job {job_id}",
        f"quarantined {len(poisoned)} labeled tasks whose examples make training fail",
        tasks=poisoned[:100],
    )
