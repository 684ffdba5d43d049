"""Admin API for project owners: model history, rollback, manual retrain, label summary."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from .api import json_body, runtime
from .payload import InvalidPayload, require_object
from .registry import RegistryError
from .trigger import request_retrain

admin = Blueprint("admin", __name__, url_prefix="/projects")


@admin.get("/<int:project>/models")
def models(project: int) -> Response:
    rt = runtime()
    pointer = rt.registry.pointer(project)
    return jsonify(
        project=project,
        current=pointer.to_json() if pointer else None,
        history=rt.registry.history(project),
    )


@admin.post("/<int:project>/rollback")
def rollback(project: int) -> Response:
    body = require_object(json_body(), "body")
    version = body.get("version")
    if not isinstance(version, str) or not version:
        raise InvalidPayload("version must be a string")
    try:
        pointer = runtime().registry.rollback(project, version)
    except RegistryError as exc:
        raise InvalidPayload(str(exc), status=404 if "no artifact" in str(exc) else 409) from None
    return jsonify(project=project, current=pointer.to_json())


@admin.post("/<int:project>/train")
def train(project: int) -> Response:
    """Enqueue a retrain; `?full_sync=1` first re-reads every annotation from Label Studio."""
    from flask import request as http

    rt = runtime()
    full = http.args.get("full_sync", "0") in {"1", "true", "yes"}
    request = request_retrain(rt.settings, rt.redis, project, "admin API" + (" (full sync)" if full else ""), full_sync=full)
    return jsonify(project=project, retrain={"job_id": request.job_id, "enqueued": request.enqueued})


@admin.get("/<int:project>/labels")
def labels(project: int) -> Response:
    rt = runtime()
    tasks = rt.store.labeled_tasks(project)
    summary: dict[str, Any] = {}
    for task in tasks:
        for control, choices in task.labels.items():
            counts = summary.setdefault(control, {})
            for choice in choices:
                counts[choice] = counts.get(choice, 0) + 1
    return jsonify(project=project, labeled_tasks=len(tasks), annotations=rt.store.annotation_count(project), counts=summary)
