"""The Label Studio ML-backend protocol: /health, /setup, /predict, /webhook, /versions, /metrics."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from redis.exceptions import RedisError

from . import ingest, metrics
from .labelconfig import LabelConfigError, parse_label_config
from .payload import InvalidPayload, parse_json, parse_predict, parse_setup, parse_webhook
from .runtime import Runtime

log = logging.getLogger(__name__)
api = Blueprint("api", __name__)


def runtime() -> Runtime:
    return current_app.extensions["backend"]


def json_body() -> Any:
    """The request's JSON body, strictly parsed; 415 unless it is declared as JSON."""
    if not request.is_json:
        raise InvalidPayload("Content-Type must be application/json", status=415)
    return parse_json(request.get_data(cache=True))


@api.get("/")
@api.get("/health")
def health() -> Response:
    rt = runtime()
    body: dict[str, Any] = {"status": "UP", "model_class": rt.settings.model_title}
    errors = rt.cache.errors()
    if errors:
        body["degraded"] = {str(p): e for p, e in errors.items()}
    return jsonify(body)


@api.post("/setup")
def setup() -> Response:
    rt = runtime()
    req = parse_setup(json_body())
    if req.label_config is not None:
        try:
            parse_label_config(req.label_config)
        except LabelConfigError as exc:
            raise InvalidPayload(str(exc)) from None
    try:
        rt.store.set_meta(
            req.project,
            label_config=req.label_config,
            hostname=req.hostname,
            access_token=req.access_token,
            extra_params=req.extra_params or None,
        )
    except RedisError:
        log.warning("project %s: /setup could not store project details (redis unavailable)", req.project)
    return jsonify(model_version=rt.model.model_version(req.project))


@api.post("/predict")
def predict() -> Response:
    rt = runtime()
    req = parse_predict(json_body(), rt.settings.max_tasks_per_request)
    try:
        config = parse_label_config(req.label_config)
    except LabelConfigError as exc:
        raise InvalidPayload(str(exc)) from None
    results = rt.model.predict(req.tasks, req.context, project=req.project, config=config)
    served = sum(1 for r in results if r)
    metrics.PREDICTIONS.labels(str(req.project), "model").inc(served)
    metrics.PREDICTIONS.labels(str(req.project), "empty").inc(len(results) - served)
    return jsonify(results=results)


@api.post("/webhook")
def webhook() -> Response:
    event = parse_webhook(json_body())
    try:
        answer = ingest.handle(runtime(), event)
    except InvalidPayload:
        metrics.WEBHOOKS.labels(event.action[:40], "invalid").inc()
        raise
    metrics.WEBHOOKS.labels(event.action[:40] if event.action in ingest.HANDLED else "other", answer["status"]).inc()
    return jsonify(answer)


@api.post("/train")
def train_legacy() -> Response:
    """Older LS versions call /train instead of sending START_TRAINING to /webhook."""
    body = json_body()
    if isinstance(body, dict):
        body = {**body, "action": "START_TRAINING"}
        if isinstance(body.get("label_config"), str) and not isinstance(body.get("project"), dict):
            body["project"] = {"id": body.get("project"), "label_config": body["label_config"]}
    return jsonify(ingest.handle(runtime(), parse_webhook(body)))


@api.get("/versions")
def versions() -> Response:
    rt = runtime()
    project = request.args.get("project", type=int)
    projects = [project] if project else rt.registry.projects()
    found = []
    for p in projects:
        found += [r["version"] for r in rt.registry.history(p) if r.get("decision") == "promoted"]
    return jsonify(versions=found[::-1])


@api.get("/metrics")
def prometheus() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
