"""Parsing and validating what Label Studio sends: bodies in, typed values or a 4xx reason out.

Pure functions (no Flask), so every bad input in the reliability plan has a unit test here and the
HTTP layer only maps `InvalidPayload` to a JSON error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import spans
from .consensus import IMPORT_WINDOW, SUBMITTED, imported
from .state.store import Annotation


class InvalidPayload(ValueError):
    """A request the backend refuses, with the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def _reject_constant(name: str) -> Any:
    raise InvalidPayload(f"non-finite number {name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity, bounded nesting."""
    if not raw or not raw.strip():
        raise InvalidPayload("request body is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPayload("request body is not UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except InvalidPayload:
        raise
    except RecursionError:
        raise InvalidPayload("JSON is nested too deeply") from None
    except ValueError as exc:
        raise InvalidPayload(f"invalid JSON: {exc.msg if hasattr(exc, 'msg') else 'parse error'}") from None


def require_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidPayload(f"{what} must be a JSON object")
    return value


MAX_LS_PROJECT = 10**12  # the largest project id accepted from LS
MAX_PROJECT = 2 * 10**12  # backend project numbers: LS ids, then `Store.resolve_project`'s for another LS's same id


def project_id(value: Any, what: str = "project", limit: int = MAX_LS_PROJECT) -> int:
    """LS sends `"<id>.<created_at>"` to /setup and /predict, an object or an int elsewhere."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool) or value is None:
        raise InvalidPayload(f"{what} id is missing")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise InvalidPayload(f"{what} id must be a positive integer")
        value = int(value)
    if isinstance(value, str):
        head = value.split(".", 1)[0].strip()
        if not (head.isascii() and head.isdigit()) or len(head) > 12:  # int() refuses "²", which isdigit() allows
            raise InvalidPayload(f"{what} id must be a positive integer")
        value = int(head)
    if not isinstance(value, int) or value <= 0 or value > limit:
        raise InvalidPayload(f"{what} id must be a positive integer")
    return value


def project_created(value: Any) -> int | None:
    """When LS created the project, in whole epoch seconds: the `<created_at>` of `"<id>.<created_at>"`
    (/setup, /predict) or the `created_at` of a project object (webhooks, START_TRAINING). With the
    id it tells projects of different LS instances apart; None when the call does not carry it."""
    if isinstance(value, str):
        _, dot, tail = value.partition(".")
        tail = tail.strip()
        return int(tail) if dot and tail.isascii() and tail.isdigit() and len(tail) <= 12 else None
    if isinstance(value, dict):
        stamp = timestamp(value.get("created_at"))
        return int(stamp) if stamp > 0 else None
    return None


FLAG_WORDS = ("true", "false", "1", "0", "yes", "no")


def flag(value: str | None, what: str, default: bool = False) -> bool:
    """A yes/no query parameter: one of FLAG_WORDS (any case); absent is `default`."""
    if value is None:
        return default
    word = value.strip().lower()
    if word not in FLAG_WORDS:
        raise InvalidPayload(f"{what} must be true or false")
    return word in {"true", "1", "yes"}


def positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 10**15:
        raise InvalidPayload(f"{what} must be a non-negative integer")
    return value


def timestamp(value: Any) -> float:
    """LS `updated_at` (ISO 8601) as epoch seconds; 0 when absent or unreadable."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
    return 0.0


@dataclass(frozen=True)
class SetupRequest:
    project: int
    label_config: str | None
    hostname: str | None
    access_token: str | None
    extra_params: dict[str, Any]
    created: int | None = None


def parse_setup(body: Any) -> SetupRequest:
    body = require_object(body, "body")
    schema = body.get("schema", body.get("label_config"))
    if schema is not None and not isinstance(schema, str):
        raise InvalidPayload("schema must be a string")
    extra = body.get("extra_params")
    if isinstance(extra, str):
        extra = parse_json(extra.encode("utf-8", "surrogatepass")) if extra.strip() else None
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise InvalidPayload("extra_params must be a JSON object or a JSON string of one")
    hostname, token = body.get("hostname"), body.get("access_token")
    return SetupRequest(
        project=project_id(body.get("project")),
        label_config=schema,
        hostname=hostname if isinstance(hostname, str) and hostname else None,
        access_token=token if isinstance(token, str) and token else None,
        extra_params=extra,
        created=project_created(body.get("project")),
    )


@dataclass(frozen=True)
class PredictRequest:
    project: int
    label_config: str
    tasks: list[dict[str, Any]]
    context: Any = None
    created: int | None = None


def parse_predict(body: Any, max_tasks: int) -> PredictRequest:
    body = require_object(body, "body")
    tasks = body.get("tasks")
    if not isinstance(tasks, list):
        raise InvalidPayload("tasks must be a list")
    if len(tasks) > max_tasks:
        raise InvalidPayload(f"at most {max_tasks} tasks per request", status=413)
    config = body.get("label_config")
    if not isinstance(config, str) or not config.strip():
        raise InvalidPayload("label_config must be a non-empty string")
    params = body.get("params") if isinstance(body.get("params"), dict) else {}
    return PredictRequest(
        project=project_id(body.get("project")),
        label_config=config,
        tasks=[t if isinstance(t, dict) else {} for t in tasks],
        context=params.get("context"),
        created=project_created(body.get("project")),
    )


@dataclass(frozen=True)
class WebhookEvent:
    action: str
    project: int | None
    label_config: str | None
    annotations: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    deleted_ids: list[int] = field(default_factory=list)
    created: int | None = None


def parse_webhook(body: Any) -> WebhookEvent:
    body = require_object(body, "body")
    action = body.get("action")
    if not isinstance(action, str) or not action or len(action) > 100:
        raise InvalidPayload("action must be a non-empty string")
    project_raw = body.get("project")
    if project_raw is None:
        project = None
    else:
        if not isinstance(project_raw, (dict, int, str)) or isinstance(project_raw, bool):
            raise InvalidPayload("project must be an object with an id")
        project = project_id(project_raw)
    config = project_raw.get("label_config") if isinstance(project_raw, dict) else None
    annotations = _as_list(body.get("annotation")) + _as_list(body.get("annotations"))
    tasks = _as_list(body.get("task")) + _as_list(body.get("tasks"))
    if any(isinstance(a.get("task"), (dict, list)) for a in annotations):
        raise InvalidPayload("annotation task must be a task id")
    if any(isinstance(t.get("id"), (dict, list)) for t in tasks):
        raise InvalidPayload("task id must be an integer")
    deleted: list[int] = []
    if action == "ANNOTATIONS_DELETED":
        deleted = [positive_int(a.get("id"), "annotation id") for a in annotations]
        annotations = []
    return WebhookEvent(
        action=action,
        project=project,
        label_config=config if isinstance(config, str) and config.strip() else None,
        annotations=annotations,
        tasks=tasks,
        deleted_ids=deleted,
        created=project_created(project_raw),
    )


def _as_list(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, dict) for item in items):
        raise InvalidPayload("annotation and task entries must be JSON objects")
    return items


def parse_annotation(raw: dict[str, Any], task_id: Any, data: dict[str, str], task_created: Any = None) -> Annotation:
    """An LS annotation (webhook or API shape) as the store keeps it: choices, and spans in their
    stored form (`spans`; relations and other regions are ignored); a submitted annotation is
    marked `SUBMITTED` (of a Labels control it has no region for, it says "no spans"), a skip
    carries nothing.

    `completed_by` is kept as an opaque string (an id that arrives as 5 and as "5" is one annotator;
    nested user objects give their id). Ground truth counts unless the annotation was imported with
    its task (`task_created`) and never changed since (`consensus` says why)."""
    if isinstance(task_id, dict):
        task_id = task_id.get("id")
    labels: dict[str, list[str]] = {}
    if not raw.get("was_cancelled") and isinstance(raw.get("result"), list):
        labels[SUBMITTED] = []
        found: dict[str, set[str]] = {}
        for region in raw["result"]:
            if not isinstance(region, dict) or not isinstance(region.get("from_name"), str):
                continue
            value = region.get("value")
            choices = value.get("choices") if isinstance(value, dict) else None
            if isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices):
                labels[region["from_name"][:200]] = sorted(set(choices))
            elif (span := spans.from_region(value)) is not None:
                kept = found.setdefault(region["from_name"][:200], set())
                if len(kept) < spans.MAX_SPANS:
                    kept.add(span.encode())
        labels.update((name, sorted(kept)) for name, kept in found.items())
    author = raw.get("completed_by")
    if isinstance(author, dict):
        author = author.get("id")
    created, updated = timestamp(raw.get("created_at")) or None, timestamp(raw.get("updated_at")) or None
    unchanged_import = imported(created, timestamp(task_created) or None) and (updated is None or updated - (created or 0) < IMPORT_WINDOW)
    return Annotation(
        id=positive_int(raw.get("id"), "annotation id"),
        task=positive_int(task_id, "annotation task id"),
        updated_at=updated or created or 0.0,
        labels=labels,
        author=str(author)[:200] if isinstance(author, (int, str)) and not isinstance(author, bool) and str(author) else None,
        data=data,
        ground_truth=raw.get("ground_truth") is True and not unchanged_import,
    )
