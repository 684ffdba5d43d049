"""Webhook events in: validate, write to Redis, ask `trigger` whether they call for a retrain (or a
publish: new tasks to rank, a head to refill). Never decides to retrain itself, never trains.

This is the code behind `/webhook`; it answers in milliseconds because it only does Redis writes.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import erasure, monitor
from ..jobs import trigger
from ..labelconfig import LabelConfig, LabelConfigError, parse_label_config
from ..payload import InvalidPayload, WebhookEvent, parse_annotation, positive_int
from ..policy import policy_for
from ..runtime import Runtime
from ..state import audit
from ..state.store import texts_of

log = logging.getLogger(__name__)

ANNOTATION_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"}
HANDLED = ANNOTATION_ACTIONS | {
    "ANNOTATIONS_DELETED",
    "START_TRAINING",
    "TASKS_CREATED",
    "TASKS_DELETED",
    "PROJECT_UPDATED",
    "PROJECT_DELETED",
}


def handle(runtime: Runtime, event: WebhookEvent, erase_models: bool = False) -> dict[str, Any]:
    """Apply one webhook event; the returned dict is the JSON answer (never with a `job` key).
    `erase_models` (the webhook URL's `?erase_models=true`) applies to PROJECT_DELETED."""
    if event.action not in HANDLED:
        return {"status": "ignored", "action": event.action}
    if event.project is None:
        raise InvalidPayload(f"{event.action} needs a project")
    project, store, settings = event.project, runtime.store, runtime.settings
    answer: dict[str, Any] = {"status": "ok", "action": event.action, "project": project}
    if event.action == "PROJECT_DELETED":  # an organization webhook of LS: forget the project
        done = erasure.erase(settings, runtime.redis, runtime.registry, project, "Label Studio (PROJECT_DELETED)", erase_models)
        runtime.forget_project(project)
        answer["erased"] = done.to_json()
        return answer
    config_changed = False
    meta = store.meta(project)
    previous = meta.get("label_config")
    if event.label_config and previous != event.label_config:
        store.set_meta(project, label_config=event.label_config)
        config_changed = previous is not None
        if config_changed:
            audit.record(
                runtime.redis,
                project,
                "label_config",
                f"webhook {event.action}",
                "label config changed",
                labels={c.from_name: list(c.labels) for c in _controls(event.label_config)},
            )
    asked = trigger.check_asked(settings, runtime.redis, project, event.action, config_changed)
    if asked is not None:
        answer["retrain"] = asked.to_json()
        return answer
    known = event.label_config or previous or ""
    keys, limit = store.input_keys(project, known), settings.max_text_chars
    if event.action == "TASKS_CREATED":
        store.remember_tasks(project, {positive_int(t.get("id"), "task id"): texts_of(t, keys, limit) for t in event.tasks})
        answer["publish"] = trigger.request_publish(settings, runtime.redis, project, rerank=True).to_json()
        return answer
    if event.action == "TASKS_DELETED":  # LS deletes their annotations with them and says nothing of those
        store.delete_tasks(project, [positive_int(t.get("id"), "task id") for t in event.tasks])
        answer["publish"] = trigger.request_publish(settings, runtime.redis, project, rerank=True).to_json()
        return answer
    seq = 0
    if event.action == "ANNOTATIONS_DELETED":
        seq = store.delete(project, event.deleted_ids)
        answer["deleted"] = len(event.deleted_ids)
    else:
        tasks_by_id = {t.get("id"): t for t in event.tasks}
        annotations = []
        for index, raw in enumerate(event.annotations):
            task = tasks_by_id.get(raw.get("task"))
            if task is None and len(event.tasks) == len(event.annotations):
                task = event.tasks[index]
            task_id = raw.get("task") if raw.get("task") is not None else (task or {}).get("id")
            annotations.append(parse_annotation(raw, task_id, texts_of(task or {}, keys, limit), (task or {}).get("created_at")))
        config = _config(known)
        spans = bool(config.span_controls) if config is not None else True  # an unknown config may have them
        changes = [c for c in store.upsert_many(project, annotations, spans) if c]
        span_controls = config.span_controls if config is not None else frozenset()
        monitor.observe_annotations(runtime.redis, project, [(a.task, a.labels) for a in annotations if a.labels], span_controls)
        seq = max(changes, default=0)
        answer["changed"] = len(changes)
        if event.action != "ANNOTATION_UPDATED":  # a new annotation (or skip) took its task
            store.record_activity(project, [(a.id, a.author) for a in annotations])
            refill = trigger.check_head(settings, store, project, [a.task for a in annotations])
            if refill is not None:
                answer["publish"] = refill.to_json()
    policy = policy_for(settings, meta)
    request = trigger.check_labels(settings, store, project, policy, seq, event.action)
    if request is None and event.action in ANNOTATION_ACTIONS:
        request = trigger.check_quality(settings, runtime.redis, runtime.registry, project, policy)
    if request is not None:
        answer["retrain"] = request.to_json()
    return answer


def _controls(label_config: str) -> list[Any]:
    config = _config(label_config)
    return list(config.controls) if config is not None else []


def _config(label_config: str) -> LabelConfig | None:
    try:
        return parse_label_config(label_config)
    except LabelConfigError:
        return None
