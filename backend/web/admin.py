"""Admin API for project owners: model history, rollback, manual retrain, label summary, erasure."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from .. import agreement, consensus, erasure, monitor, rules
from ..jobs.trigger import check_settings, request_retrain, reschedule
from ..payload import MAX_PROJECT, InvalidPayload, flag, project_id, require_object
from ..policy import policy_for, validated
from ..state import audit
from ..state.registry import RegistryError
from .api import json_body, runtime

admin = Blueprint("admin", __name__, url_prefix="/projects")
STABLE_KAPPA = 0.98


@admin.before_request
def _known_project_range() -> None:
    """Backend project numbers (1 to MAX_PROJECT): no job or audit entry for project 0."""
    from flask import request as http

    project_id((http.view_args or {}).get("project"), limit=MAX_PROJECT)


def actor() -> str:
    """Who made an admin request: the basic-auth user, else the API itself."""
    from flask import request as http

    user = http.authorization.username if http.authorization and http.authorization.type == "basic" else None
    return f"admin API ({user})" if user else "admin API"


@admin.get("/<int:project>/models")
def models(project: int) -> Response:
    rt = runtime()
    pointer = rt.registry.pointer(project)
    return jsonify(
        project=project,
        current=pointer.to_json() if pointer else None,
        history=rt.registry.history(project),
    )


@admin.delete("/<int:project>")
def erase(project: int) -> Response:
    """Forget the project (`backend.erasure`); `?erase_models=true` removes its models too."""
    from flask import request as http

    models = flag(http.args.get("erase_models"), "erase_models")
    rt = runtime()
    done = erasure.erase(rt.settings, rt.redis, rt.registry, project, actor(), erase_models=models)
    rt.forget_project(project)
    return jsonify(erased=done.to_json())


@admin.post("/<int:project>/rollback")
def rollback(project: int) -> Response:
    body = require_object(json_body(), "body")
    version = body.get("version")
    if not isinstance(version, str) or not version:
        raise InvalidPayload("version must be a string")
    rt = runtime()
    before = rt.registry.pointer(project)
    try:
        pointer = rt.registry.rollback(project, version)
    except RegistryError as exc:
        raise InvalidPayload(str(exc), status=404 if "no artifact" in str(exc) else 409) from None
    audit.record(
        rt.redis,
        project,
        "rollback",
        actor(),
        f"rolled back to {version}",
        version=version,
        previous=before.version if before else None,
        seq=pointer.seq,
    )
    return jsonify(project=project, current=pointer.to_json())


@admin.post("/<int:project>/train")
def train(project: int) -> Response:
    """Enqueue a retrain; `?full_sync=1` first re-reads every annotation from Label Studio."""
    from flask import request as http

    rt = runtime()
    full = flag(http.args.get("full_sync"), "full_sync")
    request = request_retrain(rt.settings, rt.redis, project, "admin API" + (" (full sync)" if full else ""), full_sync=full, actor=actor())
    return jsonify(project=project, retrain=request.to_json())


@admin.get("/<int:project>/rules")
def rules_report(project: int) -> Response:
    """The project's labeling rules with each one's coverage, conflicts and accuracy against the
    consensus labels (`rules.report`)."""
    return jsonify(project=project, **rules_of(project))


def rules_of(project: int) -> dict[str, Any]:
    """`rules.report` of the project's rules over its consensus labels and unlabeled pool, with
    `model`: the serving version and, per control, the prior its train job chose from the rules
    (`training.choose_prior`: version, weight, out-of-fold score per weight; empty when it was
    trained without rules)."""
    rt = runtime()
    policy = policy_for(rt.settings, rt.store.meta(project))
    config = rt.store.label_config(project)
    tasks = consensus.for_policy(rt.store.task_votes(project), policy, config).tasks if config is not None else []
    pool = [t["data"] for t in rt.store.unlabeled_pool(project)]
    report = rules.report(policy.rule_set, config, [(t.data, t.labels) for t in tasks], pool, rt.settings.max_text_chars)
    pointer = rt.registry.pointer(project)
    record = (rt.registry.record(project, pointer.version) or {}) if pointer else {}
    model = {"version": pointer.version, "rules": (record.get("evaluation") or {}).get("rules", {})} if pointer else None
    return {**report, "model": model}


@admin.get("/<int:project>/labels")
def labels(project: int) -> Response:
    rt = runtime()
    policy = policy_for(rt.settings, rt.store.meta(project))
    tasks = consensus.for_policy(rt.store.task_votes(project), policy, rt.store.label_config(project)).tasks
    summary: dict[str, Any] = {}
    for task in tasks:
        for control, choices in task.labels.items():
            counts = summary.setdefault(control, {})
            for choice in choices:
                counts[choice] = counts.get(choice, 0) + 1
    return jsonify(project=project, labeled_tasks=len(tasks), annotations=rt.store.annotation_count(project), counts=summary)


@admin.get("/<int:project>/settings")
def get_settings(project: int) -> Response:
    rt = runtime()
    return jsonify(project=project, settings=policy_for(rt.settings, rt.store.meta(project)).to_json())


@admin.put("/<int:project>/settings")
@admin.patch("/<int:project>/settings")
def put_settings(project: int) -> Response:
    """Override project settings (validated); they take precedence over LS's extra_params."""
    import json

    rt = runtime()
    changes = validated(require_object(json_body(), "body"), strict=True)
    meta = rt.store.meta(project)
    before = policy_for(rt.settings, meta)
    stored = json.loads(meta.get("settings", "{}") or "{}")
    rt.store.set_meta(project, settings={**stored, **changes})
    audit.record(rt.redis, project, "settings", actor(), "settings changed: " + ", ".join(sorted(changes)), changes=changes)
    after = policy_for(rt.settings, rt.store.meta(project))
    reschedule(rt.redis, project, after.retrain_every)
    rt.keep_rules(project, after.rules)
    body: dict[str, Any] = {"project": project, "settings": after.to_json()}
    request = check_settings(rt.settings, rt.store, project, before, after, actor())
    if request is not None:  # the queue follows at once (a committee retrains)
        body["retrain"] = request.to_json()
    return jsonify(body)


@admin.get("/<int:project>/stopping")
def stopping(project: int) -> Response:
    """The stopping signal per version: agreement with the previous version on the unlabeled pool
    (kappa near 1 for several versions = more labels no longer change the model)."""
    history = runtime().store.stability(project)
    recent = [h.get("agreement_kappa") for h in history[-3:] if h.get("agreement_kappa") is not None]
    stable = len(recent) == 3 and min(recent) >= STABLE_KAPPA
    return jsonify(
        project=project,
        history=history,
        stable=stable,
        advice="labeling no longer changes the model much" if stable else "more labels still change the model",
    )


@admin.get("/<int:project>/monitor")
def monitoring(project: int) -> Response:
    """Live accuracy (lifetime per version, control and class; rolling window), its gap to the
    offline estimate, and drift of recent /predict traffic against the serving version."""
    rt = runtime()
    return jsonify(project=project, **monitor.status(rt.redis, rt.registry, project))


@admin.get("/<int:project>/audit")
def audit_trail(project: int) -> Response:
    from flask import request as http

    limit = http.args.get("limit", default=100, type=int)
    kind = http.args.get("kind")
    if limit is None or not 1 <= limit <= 1000:
        raise InvalidPayload("limit must be between 1 and 1000")
    if kind is not None and kind not in audit.KINDS:
        raise InvalidPayload(f"kind must be one of {sorted(audit.KINDS)}")
    return jsonify(project=project, events=audit.events(runtime().redis, project, limit, kind))


@admin.get("/<int:project>/agreement")
def annotator_agreement(project: int) -> Response:
    """Agreement per control (alpha, pairwise kappa, per class) and per annotator (labels, agreement
    with the others' consensus, with the model's out-of-fold predictions, estimated accuracy, trend),
    with how the consensus resolved each task (`agreement`, `consensus`)."""
    rt = runtime()
    policy = policy_for(rt.settings, rt.store.meta(project))
    config = rt.store.label_config(project)
    votes = rt.store.task_votes(project)
    found = consensus.for_policy(votes, policy, config)
    multiple = consensus.multi_label(config)
    checked = rt.store.mislabels(project) or {}
    predicted = {c: {int(t): v for t, v in by.items()} for c, by in (checked.get("predicted") or {}).items()}
    controls = agreement.report(votes, found, multiple, policy.kappa_min_shared, policy.annotator_trend, predicted)
    return jsonify(project=project, consensus=policy.consensus, disputed=sum(map(len, found.disputed.values())), controls=controls)


@admin.get("/<int:project>/mislabels")
def suspected_label_errors(project: int) -> Response:
    """Suspected label errors of the latest check (cleanlab), most suspicious first; labels are never changed."""
    found = runtime().store.mislabels(project)
    if found is None:
        return jsonify(project=project, version=None, suspects=[], reason="not checked yet: runs after each promotion")
    found.pop("predicted", None)  # every checked task's out-of-fold prediction: `agreement` reads it
    return jsonify(project=project, **found)
