"""Webhook events in: validate, write to Redis, decide whether to enqueue a retrain. Never trains.

This is the code behind `/webhook`; it answers in milliseconds because it only does Redis writes.
"""

from __future__ import annotations

import logging
from typing import Any

from .labelconfig import LabelConfigError, parse_label_config
from .payload import InvalidPayload, WebhookEvent, positive_int, timestamp
from .runtime import Runtime
from .store import Annotation
from .trigger import count_change, request_retrain

log = logging.getLogger(__name__)

ANNOTATION_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"}
HANDLED = ANNOTATION_ACTIONS | {"ANNOTATIONS_DELETED", "START_TRAINING", "TASKS_CREATED", "TASKS_DELETED", "PROJECT_UPDATED"}
MAX_DATA_FIELDS = 32


def handle(runtime: Runtime, event: WebhookEvent) -> dict[str, Any]:
    """Apply one webhook event; the returned dict is the JSON answer (never with a `job` key)."""
    if event.action not in HANDLED:
        return {"status": "ignored", "action": event.action}
    if event.project is None:
        raise InvalidPayload(f"{event.action} needs a project")
    project, store, settings = event.project, runtime.store, runtime.settings
    answer: dict[str, Any] = {"status": "ok", "action": event.action, "project": project}
    config_changed = False
    if event.label_config:
        previous = store.meta(project).get("label_config")
        if previous != event.label_config:
            store.set_meta(project, label_config=event.label_config)
            config_changed = previous is not None
    if event.action == "START_TRAINING" or (event.action == "PROJECT_UPDATED" and config_changed):
        reason = "START_TRAINING" if event.action == "START_TRAINING" else "label config changed"
        request = request_retrain(settings, runtime.redis, project, reason)
        answer["retrain"] = {"job_id": request.job_id, "enqueued": request.enqueued}
        return answer
    if event.action == "TASKS_CREATED":
        store.remember_tasks(project, {positive_int(t.get("id"), "task id"): _texts(runtime, project, t) for t in event.tasks})
        return answer
    if event.action == "TASKS_DELETED":
        store.forget_tasks(project, [positive_int(t.get("id"), "task id") for t in event.tasks])
        return answer
    seq = 0
    if event.action == "ANNOTATIONS_DELETED":
        seq = store.delete(project, event.deleted_ids)
        answer["deleted"] = len(event.deleted_ids)
    else:
        tasks_by_id = {t.get("id"): t for t in event.tasks}
        stored = 0
        for index, raw in enumerate(event.annotations):
            task = tasks_by_id.get(raw.get("task"))
            if task is None and len(event.tasks) == len(event.annotations):
                task = event.tasks[index]
            annotation = _annotation(runtime, project, raw, task or {})
            changed = store.upsert(project, annotation)
            if changed:
                stored += 1
                seq = max(seq, changed)
        answer["changed"] = stored
    if seq and count_change(settings, runtime.redis, project, seq, settings.retrain_threshold):
        request = request_retrain(settings, runtime.redis, project, f"{event.action}: labels changed")
        answer["retrain"] = {"job_id": request.job_id, "enqueued": request.enqueued}
    return answer


def _annotation(runtime: Runtime, project: int, raw: dict[str, Any], task: dict[str, Any]) -> Annotation:
    task_id = raw.get("task")
    if isinstance(task_id, dict):
        task_id = task_id.get("id")
    if task_id is None:
        task_id = task.get("id")
    labels: dict[str, list[str]] = {}
    if not raw.get("was_cancelled") and isinstance(raw.get("result"), list):
        for region in raw["result"]:
            if not isinstance(region, dict) or not isinstance(region.get("from_name"), str):
                continue
            value = region.get("value")
            choices = value.get("choices") if isinstance(value, dict) else None
            if isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices):
                labels[region["from_name"]] = sorted(set(choices))
    return Annotation(
        id=positive_int(raw.get("id"), "annotation id"),
        task=positive_int(task_id, "annotation task id"),
        updated_at=timestamp(raw.get("updated_at") or raw.get("created_at")),
        labels=labels,
        author=raw.get("completed_by") if isinstance(raw.get("completed_by"), (int, str)) else None,
        data=_texts(runtime, project, task),
    )


def _texts(runtime: Runtime, project: int, task: dict[str, Any]) -> dict[str, str]:
    """The task's input fields training needs (all short string fields when no config is known)."""
    data = task.get("data")
    if not isinstance(data, dict):
        return {}
    keys: tuple[str, ...] | None = None
    try:
        keys = parse_label_config(runtime.store.meta(project).get("label_config", "")).data_keys or None
    except LabelConfigError:
        keys = None
    limit = runtime.settings.max_text_chars
    picked = {}
    for name, value in data.items():
        if keys is not None and name not in keys:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            picked[str(name)[:200]] = value[:limit]
        if len(picked) >= MAX_DATA_FIELDS:
            break
    return picked
