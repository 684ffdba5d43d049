"""Talking back to Label Studio with `label-studio-sdk`: reconcile annotations, push predictions.

LS sends each webhook once and none for imported annotations, so a train job first pulls the
project's labeled tasks (incrementally by task `updated_at`, fully on demand) into the store.
After a promotion it pushes the new version's predictions for the unlabeled tasks and then sets
the project's `model_version`, because LS never re-predicts by itself. Credentials come from
LABEL_STUDIO_URL + LABEL_STUDIO_API_KEY, else from the `hostname`/`access_token` of `/setup`.
Tokens are never logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .payload import InvalidPayload, parse_annotation
from .state.store import Annotation, Store

log = logging.getLogger(__name__)

PAGE_SIZE = 500
PUSH_BATCH = 500
SYNC_BATCH = 500  # annotations written to Redis per round trip
SINGLE_PUSH_LIMIT = 300
SYNC_OVERLAP = 300.0  # seconds re-read before the last sync, for clock skew and slow commits


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str


def credentials(settings_url: str, settings_key: str, meta: dict[str, str]) -> Credentials | None:
    url = settings_url or meta.get("hostname", "")
    token = settings_key or meta.get("access_token", "")
    if not url or not token or not url.startswith(("http://", "https://")):
        return None
    return Credentials(url.rstrip("/"), token)


@dataclass(frozen=True)
class Connection:
    """One LS project reached through the SDK: the client and the project's id in that LS (which
    is not the backend's project number for a second LS's project with a taken id)."""

    client: Any
    project: int


def connect(creds: Credentials, project: int, timeout: float = 30.0) -> Connection:
    from label_studio_sdk import LabelStudio

    return Connection(LabelStudio(base_url=creds.url, api_key=creds.token, timeout=timeout), project)


def _query(*items: dict[str, Any]) -> str:
    return json.dumps({"filters": {"conjunction": "and", "items": list(items)}})


def labeled_tasks(ls: Connection, since: float | None) -> Iterator[Any]:
    items = [{"filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number", "value": 0}]
    if since:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(since))
        items.append({"filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime", "value": stamp})
    yield from ls.client.tasks.list(project=ls.project, query=_query(*items), fields="all", page_size=PAGE_SIZE)


def unlabeled_tasks(ls: Connection) -> Iterator[Any]:
    item = {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0}
    yield from ls.client.tasks.list(project=ls.project, query=_query(item), fields="all", page_size=PAGE_SIZE)


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return value.dict() if hasattr(value, "dict") else {}


def sync_annotations(
    ls: Connection, store: Store, project: int, texts_of: Callable[[dict[str, Any]], dict[str, str]], full: bool = False
) -> dict[str, int]:
    """Pull labeled tasks from LS into the store of backend project `project`; a full sync also
    removes what LS no longer has."""
    last = store.synced_at(project)
    started = time.time()
    since = None if full or not last else last - SYNC_OVERLAP
    seen: set[int] = set()
    changed = 0
    batch: list[Annotation] = []
    for task in labeled_tasks(ls, since):
        data = {"id": task.id, "data": task.data or {}}
        for raw in task.annotations or []:
            raw = _as_dict(raw)
            try:
                annotation = parse_annotation(raw, task.id, texts_of(data))
            except InvalidPayload:
                continue
            seen.add(annotation.id)
            batch.append(annotation)
        if len(batch) >= SYNC_BATCH:
            changed += sum(map(bool, store.upsert_many(project, batch)))
            batch = []
    changed += sum(map(bool, store.upsert_many(project, batch)))
    removed = 0
    if full:
        gone = store.annotation_ids(project) - seen
        removed = len(gone)
        store.delete(project, gone)
    store.mark_synced(project, started)
    return {"changed": changed, "seen": len(seen), "removed": removed, "full": int(full)}


def unlabeled(ls: Connection) -> list[dict[str, Any]]:
    return [{"id": t.id, "data": t.data or {}} for t in unlabeled_tasks(ls)]


def push_predictions(ls: Connection, version: str, predictions: list[dict[str, Any]], uncertainty_sampling: bool) -> int:
    """Store predictions in LS, then make `version` the project's model version.

    LS 1.23.2 drops `cluster` on bulk import (observed) but keeps it on single creates, so
    clustered predictions of small pools go one by one and everything else in bulk batches.
    """
    clustered = any(p.get("cluster") is not None for p in predictions)
    if clustered and len(predictions) <= SINGLE_PUSH_LIMIT:
        for prediction in predictions:
            ls.client.predictions.create(**prediction)
    else:
        for start in range(0, len(predictions), PUSH_BATCH):
            batch = [{k: v for k, v in p.items() if k != "cluster"} for p in predictions[start : start + PUSH_BATCH]]
            ls.client.projects.import_predictions(id=ls.project, request=batch)
    if predictions:
        if uncertainty_sampling:
            ls.client.projects.update(id=ls.project, model_version=version, sampling="Uncertainty sampling")
        else:
            ls.client.projects.update(id=ls.project, model_version=version)
    return len(predictions)


def push_mislabeling(ls: Connection, predictions: list[dict[str, Any]]) -> int:
    """Store predictions carrying `mislabeling` on labeled tasks (one by one: only single creates
    are known to keep the extra fields); leaves the project's model version alone."""
    for prediction in predictions[:SINGLE_PUSH_LIMIT]:
        ls.client.predictions.create(**prediction)
    return min(len(predictions), SINGLE_PUSH_LIMIT)
