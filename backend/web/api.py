"""The Label Studio ML-backend protocol: /health, /setup, /predict, /webhook, /versions, /metrics, /openapi.json."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import consensus, metrics
from ..jobs.trigger import after_predict, request_publish, reschedule
from ..labelconfig import LabelConfigError, parse_label_config
from ..payload import InvalidPayload, WebhookEvent, flag, parse_json, parse_predict, parse_setup, parse_webhook
from ..policy import policy_for
from ..runtime import Runtime
from ..state.connection import replicated, storage_kind
from ..state.store import texts_of
from . import ingest, prometheus
from .openapi import OPENAPI

log = logging.getLogger(__name__)
api = Blueprint("api", __name__)
MAX_REMEMBERED = 1000


def runtime() -> Runtime:
    return current_app.extensions["backend"]


def json_body() -> Any:
    """The request's JSON body, strictly parsed; 415 unless it is declared as JSON."""
    if not request.is_json:
        raise InvalidPayload("Content-Type must be application/json", status=415)
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # Werkzeug cuts a chunked body at the limit without an error; its rest is never read
        raise InvalidPayload(f"request body is larger than {limit} bytes", status=413)
    return parse_json(raw)


@api.get("/")
@api.get("/health")
def health() -> Response:
    rt = runtime()
    body: dict[str, Any] = {"status": "UP", "model_class": rt.settings.model_title, "storage": storage_kind(rt.redis)}
    errors = rt.cache.errors()
    if errors:
        body["degraded"] = {str(p): e for p, e in errors.items()}
    return jsonify(body)


@api.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3 description of every route (`backend/web/openapi.py`)."""
    return jsonify(OPENAPI)


def backend_project(rt: Runtime, project: int, created: int | None) -> int:
    """The backend project of an LS call (`Store.resolve_project`); the LS id when Redis is away."""
    try:
        return rt.store.resolve_project(project, created)
    except RedisError:
        return project


def resolved(event: WebhookEvent) -> WebhookEvent:
    """The event with its backend project."""
    return event if event.project is None else replace(event, project=backend_project(runtime(), event.project, event.created))


@api.post("/setup")
def setup() -> Response:
    rt = runtime()
    req = parse_setup(json_body())
    req = replace(req, project=backend_project(rt, req.project, req.created))
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
        policy = policy_for(rt.settings, rt.store.meta(req.project))
        reschedule(rt.redis, req.project, policy.retrain_every)
        rt.keep_rules(req.project, policy.rules)
    except RedisError:
        log.warning("project %s: /setup could not store project details (redis unavailable)", req.project)
    return jsonify(model_version=rt.model.model_version(req.project))


@api.post("/predict")
def predict() -> Response:
    rt = runtime()
    req = parse_predict(json_body(), rt.settings.max_tasks_per_request)
    req = replace(req, project=backend_project(rt, req.project, req.created))
    try:
        config = parse_label_config(req.label_config)
    except LabelConfigError as exc:
        raise InvalidPayload(str(exc)) from None
    results = rt.model.predict(req.tasks, req.context, project=req.project, config=config)
    observation = getattr(results, "observation", None)  # None while untrained
    remember_unlabeled(rt, req.project, config, req.tasks)
    if observation is not None:
        rt.writer.submit(after_predict, rt.settings, rt.redis, rt.registry, rt.store, req.project, observation)
    served = sum(1 for r in results if r)
    metrics.PREDICTIONS.labels(str(req.project), "model").inc(served)
    metrics.PREDICTIONS.labels(str(req.project), "empty").inc(len(results) - served)
    return jsonify(results=results)


def remember_unlabeled(rt: Runtime, project: int, config: Any, tasks: list[dict[str, Any]]) -> None:
    """Tasks LS asks about join the pool the queue ranks when LS's API is not reachable (best effort:
    /predict never fails because Redis does)."""
    keys = config.data_keys
    seen = {}
    for task in tasks[:MAX_REMEMBERED]:
        if isinstance(task.get("id"), int) and not task.get("annotations") and not task.get("is_labeled"):
            data = texts_of(task, keys, rt.settings.max_text_chars)
            if data:
                seen[task["id"]] = data
    if seen:
        rt.writer.submit(rt.store.remember_tasks, project, seen)


@api.post("/webhook")
def webhook() -> Response:
    body = json_body()
    event = resolved(parse_webhook(body))
    if body.keys() == {"action"} and event.action in ingest.HANDLED:
        log.warning("webhook %s without a payload ignored: turn on send_payload in Label Studio", event.action)
        metrics.WEBHOOKS.labels(event.action, "ignored").inc()
        return jsonify(status="ignored", action=event.action, reason="no payload (send_payload is off)")
    try:
        answer = ingest.handle(runtime(), event, erase_models=flag(request.args.get("erase_models"), "erase_models"))
    except InvalidPayload:
        metrics.WEBHOOKS.labels(event.action[:40], "invalid").inc()
        raise
    action = event.action[:40] if event.action in ingest.HANDLED else "other"
    unsafe = unreplicated(runtime(), answer)
    if unsafe is not None:
        metrics.WEBHOOKS.labels(action, "unreplicated").inc()
        return unsafe
    metrics.WEBHOOKS.labels(action, answer["status"]).inc()
    return jsonify(answer)


def unreplicated(rt: Runtime, answer: dict[str, Any]) -> Response | None:
    """A 503 when fewer replicas than REDIS_MIN_REPLICAS_ACK confirm the writes of an event within
    half the Redis timeout (the write stays on the master: LS's reconciliation path decides), else None."""
    wanted = rt.settings.redis_min_replicas_ack
    if wanted <= 0 or answer.get("status") == "ignored":
        return None
    try:
        confirmed = replicated(rt.redis, wanted, rt.settings.redis_timeout / 2)
    except RedisTimeoutError:  # the master itself was slow to answer: not confirmed either
        confirmed = 0
    if confirmed >= wanted:
        return None
    log.warning("webhook %s: %d of %d replicas confirmed its writes; answered 503", answer.get("action"), confirmed, wanted)
    response = jsonify(error=f"only {confirmed} of {wanted} Redis replicas confirmed the write (REDIS_MIN_REPLICAS_ACK), try again")
    response.status_code = 503
    return response


@api.post("/train")
def train_legacy() -> Response:
    """Older LS versions call /train instead of sending START_TRAINING to /webhook."""
    body = json_body()
    if isinstance(body, dict):
        body = {**body, "action": "START_TRAINING"}
        if isinstance(body.get("label_config"), str) and not isinstance(body.get("project"), dict):
            body["project"] = {"id": body.get("project"), "label_config": body["label_config"]}
    answer = ingest.handle(runtime(), resolved(parse_webhook(body)))
    return unreplicated(runtime(), answer) or jsonify(answer)


@api.get("/versions")
def versions() -> Response:
    rt = runtime()
    project = request.args.get("project", type=int)
    projects = [project] if project else rt.registry.projects()
    found = []
    for p in projects:
        pointer = rt.registry.pointer(p)
        current = pointer.version if pointer else None  # promoted, its record perhaps not yet saved as such
        found += [r["version"] for r in rt.registry.history(p) if r.get("decision") == "promoted" or r["version"] == current]
    return jsonify(versions=found[::-1])


@api.get("/metrics")
def metrics_page() -> Response:
    body, content_type = prometheus.exposition(runtime())
    return Response(body, content_type=content_type)


def review(rt: Runtime, project: int, limit: int) -> Response:
    """`GET /queue?purpose=review`: disputed tasks and suspected label errors, most useful first."""
    if not rt.store.known(project):
        raise InvalidPayload(f"project {project} is unknown: connect it in Label Studio (/setup) or send its tasks", status=404)
    policy = policy_for(rt.settings, rt.store.meta(project))
    found = consensus.for_policy(rt.store.task_votes(project), policy, rt.store.label_config(project))
    entries = consensus.review_queue(found, (rt.store.mislabels(project) or {}).get("suspects") or [])
    body = {"project": project, "purpose": "review", "pending": False, "consensus": policy.consensus, "total": len(entries)}
    return jsonify({**body, "tasks": entries[:limit]})


@api.get("/queue")
def queue() -> Response:
    """The next `limit` unlabeled tasks in our order, with scores, strategy and reason.

    404 for a project the backend has never heard of. `pending: true` with `Retry-After` while a
    ranking is under way (asked for by new tasks, or by this call when there is none yet): the
    tasks are then those of the previous ranking, if any. Tasks annotated since the ranking are
    skipped and the next ones read, so `limit` tasks come back while the ranking has that many left.
    `head`: what LS holds of the queue (its version, target size, tasks pushed, tasks taken since).

    `purpose=review`: instead, the labeled tasks to send back to people (`consensus.review_queue`)."""
    rt = runtime()
    project = request.args.get("project", type=int)
    limit = request.args.get("limit", default=20, type=int)
    purpose = request.args.get("purpose", default="label")
    if not project or project <= 0:
        raise InvalidPayload("project must be a positive integer")
    if limit is None or not 1 <= limit <= 1000:
        raise InvalidPayload("limit must be between 1 and 1000")
    if purpose not in ("label", "review"):
        raise InvalidPayload("purpose must be label or review")
    if purpose == "review":
        return review(rt, project, limit)
    stored = rt.store.queue(project)
    if stored is None and not rt.store.known(project):
        raise InvalidPayload(f"project {project} is unknown: connect it in Label Studio (/setup) or send its tasks", status=404)
    configured = stored is not None or bool(rt.store.meta(project).get("label_config"))
    pending = configured and (stored is None or rt.store.ranking_requests(project) > int(stored.get("covers", 0)))
    if stored is None and configured:
        request_publish(rt.settings, rt.redis, project)  # coalesced: at most one publish job waits
    tasks = rt.store.next_unlabeled(project, limit) if stored is not None else []
    body: dict[str, Any] = {"project": project, "pending": pending}
    if stored is None:
        reason = (
            "ranking pending: first ranking of this project"
            if configured
            else "no label config known yet: connect the project in Label Studio"
        )
        body.update(version=None, strategy=None, reason=reason, tasks=[])
    else:
        body.update({k: stored.get(k) for k in ("version", "strategy", "reason", "generated_at", "size")}, tasks=tasks)
    version, target, size, taken = rt.store.head(project)
    body["head"] = {"version": version, "target": target, "pushed": size, "taken": taken} if version else None
    response = jsonify(body)
    if pending:
        response.headers["Retry-After"] = "1"
    return response
