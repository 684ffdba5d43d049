"""The OpenAPI 3 description of every HTTP route, served at `GET /openapi.json`.

Kept as data next to the routes it describes; request schemas admit only what the validators in
`payload` and `policy` accept, so a schema-driven client (and the schemathesis test) sends real
requests. tests/test_openapi.py checks that every Flask rule is here and nothing else is.
"""

from __future__ import annotations

from typing import Any

from ..consensus import METHODS as CONSENSUS_METHODS
from ..payload import FLAG_WORDS, MAX_LS_PROJECT, MAX_PROJECT
from ..policy import GATE_METRICS, MAX_INTERVAL, STRATEGY_NAMES
from ..rules import KINDS as RULE_KINDS
from ..rules import MAX_PATTERN, MAX_RULES
from ..rules import PLURALS as RULE_PLURALS
from ..state.audit import KINDS
from ..strategy import BALANCES

MAX_ID = 10**15


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"$ref": f"#/components/responses/{ERRORS[code]}"} for code in (401, *codes)}


def _flag(name: str, description: str) -> dict[str, Any]:
    """A yes/no query parameter (`payload.flag`)."""
    return {"name": name, "in": "query", "description": description, "schema": {"type": "string", "enum": list(FLAG_WORDS)}}


def _operation(operation_id: str, summary: str, ok: dict[str, Any], *codes: int, **extra: Any) -> dict[str, Any]:
    return {"operationId": operation_id, "summary": summary, **extra, "responses": {"200": ok, **_errors(*codes)}}


ERRORS = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    409: "Conflict",
    413: "TooLarge",
    415: "NotJson",
    503: "StorageUnavailable",
}
JSON_IN = (400, 413, 415)  # every route that reads a JSON body
PROJECT_PATH = {"name": "project", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PROJECT}}
OBJECT = {"type": "object", "additionalProperties": True}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}},
    "ProjectId": {
        "description": 'A project id: an integer, or the string LS sends to /setup and /predict ("<id>.<created_at>").',
        "anyOf": [
            {"type": "integer", "minimum": 1, "maximum": MAX_LS_PROJECT},
            {"type": "string", "pattern": r"^[1-9][0-9]{0,11}(\.[0-9]*)?$"},
        ],
    },
    "ProjectRef": {
        "description": "The project of a webhook: its id, or the LS project object (its label_config is stored).",
        "anyOf": [
            _ref("ProjectId"),
            {
                "type": "object",
                "required": ["id"],
                "additionalProperties": True,
                "properties": {"id": _ref("ProjectId"), "label_config": {"type": "string"}},
            },
        ],
    },
    "Task": {
        "type": "object",
        "additionalProperties": True,
        "properties": {
            "id": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
            "data": {
                "type": "object",
                "additionalProperties": True,
                "description": "Task data; the keys the labeling config reads are used as text.",
            },
        },
    },
    "Region": {
        "type": "object",
        "additionalProperties": True,
        "properties": {
            "from_name": {"type": "string"},
            "to_name": {"type": "string"},
            "type": {"type": "string"},
            "value": {
                "type": "object",
                "additionalProperties": True,
                "properties": {"choices": {"type": "array", "items": {"type": "string"}}},
            },
        },
    },
    "TaskRef": {"allOf": [_ref("Task"), {"type": "object", "required": ["id"]}]},
    "Annotation": {
        "type": "object",
        "required": ["id", "task"],
        "additionalProperties": True,
        "properties": {
            "id": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
            "task": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
            "result": {"type": "array", "items": _ref("Region")},
            "was_cancelled": {"type": "boolean"},
            "completed_by": {"anyOf": [{"type": "integer"}, {"type": "string"}, OBJECT]},
            "created_at": {"type": "string"},
            "updated_at": {"type": "string"},
        },
    },
    "SetupRequest": {
        "type": "object",
        "required": ["project"],
        "additionalProperties": True,
        "properties": {
            "project": _ref("ProjectId"),
            "schema": {"type": "string", "description": "The labeling config (XML); 400 when it is not one."},
            "label_config": {"type": "string", "description": "Read when `schema` is absent."},
            "hostname": {"type": "string", "description": "LS base URL, kept for reconciliation."},
            "access_token": {"type": "string", "description": "LS token, kept for reconciliation; never logged."},
            "extra_params": {
                "description": "Project settings: an object, or a JSON string of one.",
                "anyOf": [OBJECT, {"type": "string"}, {"type": "null"}],
            },
        },
    },
    "PredictRequest": {
        "type": "object",
        "required": ["tasks", "project", "label_config"],
        "additionalProperties": True,
        "properties": {
            "tasks": {"type": "array", "items": _ref("Task"), "description": "At most MAX_TASKS_PER_REQUEST tasks (413 above)."},
            "project": _ref("ProjectId"),
            "label_config": {"type": "string", "minLength": 1, "description": "The labeling config (XML); 400 when it is not one."},
            "params": OBJECT,
        },
    },
    "WebhookEvent": {
        "type": "object",
        "required": ["action"],
        "additionalProperties": True,
        "description": "Every LS webhook action; unknown actions and payload-less ones (send_payload off) are ignored.",
        "properties": {
            "action": {"type": "string", "minLength": 1, "maxLength": 100},
            "project": _ref("ProjectRef"),
            "annotation": {"anyOf": [_ref("Annotation"), {"type": "array", "items": _ref("Annotation")}]},
            "annotations": {
                "type": "array",
                "description": "ANNOTATIONS_DELETED: the ids of the deleted annotations.",
                "items": {
                    "type": "object",
                    "required": ["id"],
                    "additionalProperties": True,
                    "properties": {"id": {"type": "integer", "minimum": 0, "maximum": MAX_ID}},
                },
            },
            "task": {"anyOf": [_ref("TaskRef"), {"type": "array", "items": _ref("TaskRef")}]},
            "tasks": {"type": "array", "items": _ref("TaskRef")},
        },
    },
    "TrainRequest": {
        "type": "object",
        "required": ["project"],
        "additionalProperties": True,
        "properties": {"project": _ref("ProjectRef"), "label_config": {"type": "string"}},
    },
    "RollbackRequest": {
        "type": "object",
        "required": ["version"],
        "additionalProperties": True,
        "properties": {"version": {"type": "string", "minLength": 1}},
    },
    "Settings": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "strategy": {"type": "string", "enum": list(STRATEGY_NAMES)},
            "batch_size": {"type": "integer", "minimum": 0, "maximum": 10**6},
            "retrain_threshold": {"type": "integer", "minimum": 0, "maximum": 10**6},
            "gate_metric": {"type": "string", "enum": list(GATE_METRICS)},
            "gate_margin": {"type": "number", "minimum": 0, "maximum": 1},
            "cold_start_per_class": {"type": "integer", "minimum": 0, "maximum": 10**6},
            "cold_start_total": {"type": "integer", "minimum": 0, "maximum": 10**6},
            "class_balance": {
                "description": "uniform: places in each batch for labels short of 1/k of their control's labels; off: none.",
                "type": "string",
                "enum": list(BALANCES),
            },
            "clusters": {"type": "integer", "minimum": 0, "maximum": 10**6},
            "rules": {
                "description": "Labeling rules: each names a label, optionally its control, and one of keyword, phrase, "
                "regex (RE2) or their lists keywords, phrases, regexes.",
                "type": "array",
                "maxItems": MAX_RULES,
                "items": {
                    "type": "object",
                    "required": ["label"],
                    "additionalProperties": False,
                    "properties": {
                        "label": {"type": "string", "minLength": 1},
                        "control": {"type": "string"},
                        **{kind: {"type": "string", "minLength": 1, "maxLength": MAX_PATTERN} for kind in RULE_KINDS},
                        **{
                            plural: {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1, "maxLength": MAX_PATTERN}}
                            for plural in RULE_PLURALS
                        },
                    },
                },
            },
            "uncertainty_sampling": {"type": "boolean"},
            "live_accuracy_drop": {"type": "number", "minimum": 0, "maximum": 1},
            "live_min_samples": {"type": "integer", "minimum": 0, "maximum": 10**6},
            "drift_threshold": {"type": "number", "minimum": 0, "maximum": 1},
            "drift_min_samples": {"type": "integer", "minimum": 0, "maximum": 10**6},
            "retrain_every": {
                "description": "Also retrain on a schedule: seconds (0 = off) or a five-field cron string (UTC).",
                "anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_INTERVAL}, {"type": "string"}],
            },
            "push_top": {
                "description": "Tasks of the queue's head pushed to Label Studio as predictions; 0 = adapt to the labeling rate.",
                "type": "integer",
                "minimum": 0,
                "maximum": 10**6,
            },
            "consensus": {
                "description": "How several annotators' votes become one training label.",
                "type": "string",
                "enum": list(CONSENSUS_METHODS),
            },
            "dispute_confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "gold_set": {"type": "boolean"},
            "gold_min": {"type": "integer", "minimum": 0, "maximum": 10**6},
            "kappa_min_shared": {"type": "integer", "minimum": 0, "maximum": 10**6},
            "annotator_trend": {"type": "integer", "minimum": 0, "maximum": 10**6},
            "review_extra_annotation": {
                "description": "Ask Label Studio for one more annotation of each disputed task (its overlap raised, served first).",
                "type": "boolean",
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "model_class"],
        "properties": {
            "status": {"type": "string", "enum": ["UP"]},
            "model_class": {"type": "string"},
            "storage": {
                "type": "string",
                "enum": ["memory", "embedded-redis", "redis"],
                "description": "where annotations are kept (memory: lost when the backend stops)",
            },
            "degraded": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "Predictions": {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "description": "One entry per task, in order; [] for a task without text.",
                "items": {
                    "anyOf": [
                        {
                            "type": "object",
                            "required": ["result", "score", "model_version"],
                            "properties": {
                                "result": {"type": "array", "items": _ref("Region")},
                                "score": {"type": "number"},
                                "model_version": {"type": "string"},
                            },
                        },
                        {"type": "array", "maxItems": 0},
                    ]
                },
            }
        },
    },
    "WebhookAnswer": {
        "type": "object",
        "required": ["status", "action"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "ignored"]},
            "action": {"type": "string"},
            "project": {"type": "integer"},
            "changed": {"type": "integer"},
            "deleted": {"type": "integer"},
            "reason": {"type": "string"},
            "retrain": _ref("Retrain"),
            "ranking": _ref("Retrain"),
        },
    },
    "Retrain": {
        "type": "object",
        "required": ["job_id", "enqueued"],
        "properties": {"job_id": {"type": "string"}, "enqueued": {"type": "boolean"}},
    },
    "ProjectObject": {
        "type": "object",
        "required": ["project"],
        "additionalProperties": True,
        "properties": {"project": {"type": "integer"}},
    },
}

RESPONSES = {
    name: _json(_ref("Error"), description)
    for name, description in (
        ("BadRequest", "Invalid input: a JSON error says what is wrong."),
        ("Unauthorized", "Basic auth is on and the credentials are missing or wrong."),
        ("NotFound", "No such artifact or version."),
        ("Conflict", "The registry refused the change."),
        ("TooLarge", "Body over MAX_REQUEST_BYTES, or more than MAX_TASKS_PER_REQUEST tasks."),
        ("NotJson", "Content-Type is not application/json."),
        ("StorageUnavailable", "Redis is unreachable; try again."),
    )
}

_project_json = _json(_ref("ProjectObject"), "The project's data.")

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "Active-learning ML backend for Label Studio",
        "version": "1",
        "description": "The Label Studio ML-backend protocol plus admin and status routes. "
        "With BASIC_AUTH_USER and BASIC_AUTH_PASS set, every route needs Basic auth.",
    },
    "security": [{"basicAuth": []}, {}],
    "paths": {
        "/": {"get": _operation("root", "Health check (LS calls /health)", _json(_ref("Health"), "Up."))},
        "/health": {"get": _operation("health", "Health check", _json(_ref("Health"), "Up."))},
        "/openapi.json": {"get": _operation("openapi", "This document", _json(OBJECT, "OpenAPI 3 document."))},
        "/setup": {
            "post": _operation(
                "setup",
                "LS setup: store the config and credentials, return the current model version",
                _json(
                    {"type": "object", "required": ["model_version"], "properties": {"model_version": {"type": "string"}}},
                    "The project's current model version (`untrained` before the first).",
                ),
                *JSON_IN,
                requestBody=_body("SetupRequest"),
            )
        },
        "/predict": {
            "post": _operation(
                "predict",
                "Pre-annotations, one entry per task",
                _json(_ref("Predictions"), "Predictions in task order."),
                *JSON_IN,
                requestBody=_body("PredictRequest"),
            )
        },
        "/webhook": {
            "post": _operation(
                "webhook",
                "Every LS webhook action: store and enqueue, never train",
                _json(_ref("WebhookAnswer"), "Stored or ignored."),
                *JSON_IN,
                503,
                requestBody=_body("WebhookEvent"),
            )
        },
        "/train": {
            "post": _operation(
                "trainLegacy",
                "Legacy LS training call (same as START_TRAINING)",
                _json(_ref("WebhookAnswer"), "Retrain requested."),
                *JSON_IN,
                503,
                requestBody=_body("TrainRequest"),
            )
        },
        "/versions": {
            "get": _operation(
                "versions",
                "Promoted versions, newest first",
                _json(
                    {
                        "type": "object",
                        "required": ["versions"],
                        "properties": {"versions": {"type": "array", "items": {"type": "string"}}},
                    },
                    "Version names.",
                ),
                parameters=[{"name": "project", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PROJECT}}],
            )
        },
        "/metrics": {
            "get": _operation(
                "metrics",
                "Prometheus metrics",
                {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}},
            )
        },
        "/queue": {
            "get": _operation(
                "queue",
                "The next tasks in our order, with scores, strategy and reason",
                _json(
                    {
                        "type": "object",
                        "required": ["project", "pending", "tasks"],
                        "additionalProperties": True,
                        "properties": {
                            "project": {"type": "integer"},
                            "version": {"type": "string", "nullable": True},
                            "pending": {"type": "boolean", "description": "a ranking is under way: ask again after Retry-After seconds"},
                            "strategy": {"type": "string", "nullable": True},
                            "reason": {"type": "string"},
                            "tasks": {"type": "array", "items": OBJECT},
                        },
                    },
                    "The head of the queue (or, with purpose=review, the tasks to review).",
                ),
                400,
                404,
                503,
                parameters=[
                    {
                        "name": "project",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PROJECT},
                    },
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20}},
                    {
                        "name": "purpose",
                        "in": "query",
                        "description": "label: unlabeled tasks in our order; review: disputed tasks and suspected label errors",
                        "schema": {"type": "string", "enum": ["label", "review"], "default": "label"},
                    },
                ],
            )
        },
        "/ui": {
            "get": _operation(
                "statusPage",
                "The status page",
                {"description": "HTML.", "content": {"text/html": {"schema": {"type": "string"}}}},
                400,
                503,
                parameters=[{"name": "project", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PROJECT}}],
            )
        },
        "/projects/{project}/models": {
            "get": _operation(
                "models", "Current pointer and the full candidate history", _project_json, 400, 503, parameters=[PROJECT_PATH]
            )
        },
        "/projects/{project}": {
            "delete": _operation(
                "erase",
                "Forget the project: labels, texts, pool, queue, monitor, agreement and drift data, its jobs; one tombstone stays",
                _project_json,
                400,
                503,
                parameters=[PROJECT_PATH, _flag("erase_models", "true: remove its model artifacts and their records too (default false)")],
            )
        },
        "/projects/{project}/rollback": {
            "post": _operation(
                "rollback",
                "Make an earlier artifact current",
                _project_json,
                *JSON_IN,
                404,
                409,
                503,
                parameters=[PROJECT_PATH],
                requestBody=_body("RollbackRequest"),
            )
        },
        "/projects/{project}/train": {
            "post": _operation(
                "train",
                "Enqueue a retrain",
                _project_json,
                400,
                503,
                parameters=[PROJECT_PATH, _flag("full_sync", "1, true or yes: re-read every annotation from LS first")],
            )
        },
        "/projects/{project}/labels": {
            "get": _operation("labels", "Stored labels per control and class", _project_json, 400, 503, parameters=[PROJECT_PATH])
        },
        "/projects/{project}/agreement": {
            "get": _operation(
                "agreement",
                "Annotator agreement per control (Krippendorff's alpha, pairwise Cohen's kappa, per class) and per annotator",
                _project_json,
                400,
                503,
                parameters=[PROJECT_PATH],
            )
        },
        "/projects/{project}/rules": {
            "get": _operation(
                "rules",
                "The labeling rules with each one's coverage, conflicts and accuracy against the consensus labels, "
                "and the prior the serving model took from them (per control: weight and out-of-fold scores)",
                _project_json,
                400,
                503,
                parameters=[PROJECT_PATH],
            )
        },
        "/projects/{project}/settings": {
            "get": _operation("getSettings", "The project's effective settings", _project_json, 400, 503, parameters=[PROJECT_PATH]),
            "put": _operation(
                "putSettings",
                "Override project settings",
                _project_json,
                *JSON_IN,
                503,
                parameters=[PROJECT_PATH],
                requestBody=_body("Settings"),
            ),
            "patch": _operation(
                "patchSettings",
                "Override project settings (same as PUT)",
                _project_json,
                *JSON_IN,
                503,
                parameters=[PROJECT_PATH],
                requestBody=_body("Settings"),
            ),
        },
        "/projects/{project}/stopping": {
            "get": _operation("stopping", "The stopping signal per version", _project_json, 400, 503, parameters=[PROJECT_PATH])
        },
        "/projects/{project}/monitor": {
            "get": _operation(
                "monitor", "Live accuracy and drift of the serving version", _project_json, 400, 503, parameters=[PROJECT_PATH]
            )
        },
        "/projects/{project}/mislabels": {
            "get": _operation("mislabels", "Suspected label errors of the last check", _project_json, 400, 503, parameters=[PROJECT_PATH])
        },
        "/projects/{project}/audit": {
            "get": _operation(
                "audit",
                "The audit trail, newest first",
                _project_json,
                400,
                503,
                parameters=[
                    PROJECT_PATH,
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                    {"name": "kind", "in": "query", "schema": {"type": "string", "enum": sorted(KINDS)}},
                ],
            )
        },
    },
    "components": {
        "schemas": SCHEMAS,
        "responses": RESPONSES,
        "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}},
    },
}
