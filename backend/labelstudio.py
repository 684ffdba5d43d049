"""Talking back to Label Studio: reconcile annotations, list the task pool, push the queue's head.

LS sends each webhook once and none for imported annotations, so a train job first pulls the
project's labeled tasks (incrementally by task `updated_at`, fully on demand) into the store. The
publish job lists new tasks (past the highest id listed, fully once an hour) and pushes the head of
the queue as predictions of the served version, then sets the project's `model_version`, because LS
never re-predicts by itself, and removes the predictions our older versions left. Every write is
followed by a pause four times as long as it took, so LS (one Python process; on SQLite one writer at a
time, and 5 s until a waiting request fails) keeps serving its annotators in between.

Requests go through `label-studio-sdk`'s HTTP client (its base URL, auth and timeouts), with JSON
read as it comes: a 100,000-task listing parsed into the SDK's models costs more than the listing.
Listings stop at the last page instead of asking for one past it. Credentials come from
LABEL_STUDIO_URL + LABEL_STUDIO_API_KEY, else from the `hostname`/`access_token` of `/setup`.
Tokens are never logged.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .payload import InvalidPayload, parse_annotation
from .state.store import Annotation, Store

log = logging.getLogger(__name__)

PAGE_SIZE = 500
PUSH_BATCH = 10  # predictions stored between two checks that their version is still served
PUSH_DUTY = 0.2  # the share of time our writes keep LS busy; the rest is left to its annotators
SYNC_BATCH = 500  # annotations written to Redis per round trip
SYNC_OVERLAP = 300.0  # seconds re-read before the last sync, for clock skew and slow commits
OUR_VERSION = re.compile(r"^(untrained|p\d+-v\d+|rules-[0-9a-f]{8})$")  # the version names this backend gives


class LabelStudioError(Exception):
    """LS answered a request with an error status."""


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


def call(ls: Connection, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None) -> Any:
    """One request to LS's API through the SDK's client; the decoded JSON answer (None when empty)."""
    wrapper = ls.client._client_wrapper  # the SDK's own HTTP client: base URL, auth and timeouts
    response = wrapper.httpx_client.request(path, method=method, params=params, json=body)
    if response.status_code >= 300:
        raise LabelStudioError(f"{method} {path}: {response.status_code}")
    return response.json() if response.content else None


def _query(*items: dict[str, Any]) -> str:
    return json.dumps({"filters": {"conjunction": "and", "items": list(items)}, "ordering": ["tasks:id"]})


def list_tasks(ls: Connection, query: str, fields: str = "task_only", page_size: int = PAGE_SIZE) -> Iterator[dict[str, Any]]:
    """Every task of the project the Data Manager `query` selects, page by page, without asking
    for the page past the last (LS answers that with an error it logs as a traceback)."""
    page, seen = 1, 0
    while True:
        answer = call(
            ls,
            "GET",
            "api/tasks/",
            params={"project": ls.project, "page": page, "page_size": page_size, "fields": fields, "query": query},
        )
        tasks = answer.get("tasks") or [] if isinstance(answer, dict) else []
        yield from tasks
        seen += len(tasks)
        total = answer.get("total") if isinstance(answer, dict) else None
        if len(tasks) < page_size or (isinstance(total, int) and seen >= total):
            return
        page += 1


def labeled_tasks(ls: Connection, since: float | None) -> Iterator[dict[str, Any]]:
    items = [{"filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number", "value": 0}]
    if since:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(since))
        items.append({"filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime", "value": stamp})
    yield from list_tasks(ls, _query(*items), fields="all")


def unlabeled_tasks(ls: Connection, after: int = 0) -> Iterator[dict[str, Any]]:
    """The project's tasks without annotations, in id order; only those past task id `after`."""
    items = [{"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0}]
    if after:
        items.append({"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": int(after)})
    yield from list_tasks(ls, _query(*items))


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
        data = {"id": task.get("id"), "data": task.get("data") or {}}
        for raw in task.get("annotations") or []:
            try:
                annotation = parse_annotation(raw, task.get("id"), texts_of(data), task.get("created_at"))
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


def paced(write: Callable[[], Any]) -> Any:
    """Run one write, then pause so that writes take at most PUSH_DUTY of the time: LS serves its
    annotators from one Python process and, on SQLite, one writer at a time, and a submit waiting
    behind a long run of ours would be slow or fail."""
    started = time.perf_counter()
    result = write()
    time.sleep((time.perf_counter() - started) * (1 - PUSH_DUTY) / PUSH_DUTY)
    return result


def push_predictions(ls: Connection, predictions: list[dict[str, Any]], pace: bool = True) -> int:
    """Store predictions one by one, paced unless annotators are waiting for them (`pace` False: a
    new version's first batch). LS 1.23.2's bulk import recomputes the counters of every task of
    the project on each call (seconds per call at 10,000 tasks, whatever the batch) and drops
    `cluster`; a single create touches its own task only (about 0.07 s of LS's time)."""
    for prediction in predictions:
        body = {k: v for k, v in prediction.items() if v is not None}
        write = lambda body=body: call(ls, "POST", "api/predictions/", body={**body, "project": ls.project})  # noqa: E731
        if pace:
            paced(write)
        else:
            write()
    return len(predictions)


def ask_for_annotation(ls: Connection, task: int, overlap: int) -> None:
    """Have LS's queue serve `task` to one more annotator: its overlap raised to `overlap` and the
    task marked unlabeled (LS 1.23.2 accepts both fields in `PATCH /api/tasks/ID`; its next
    annotation marks it labeled again once `overlap` annotators have it)."""
    paced(lambda: call(ls, "PATCH", f"api/tasks/{task}", body={"overlap": overlap, "is_labeled": False}))


def set_model_version(ls: Connection, version: str, uncertainty_sampling: bool) -> None:
    """Make `version` the project's model version (LS accepts it once a prediction of it is stored)."""
    body: dict[str, Any] = {"model_version": version}
    if uncertainty_sampling:
        body["sampling"] = "Uncertainty sampling"
    paced(lambda: call(ls, "PATCH", f"api/projects/{ls.project}", body=body))


def model_versions(ls: Connection) -> dict[str, int]:
    """The model versions of the project's stored predictions, with their counts."""
    answer = call(ls, "GET", f"api/projects/{ls.project}/model-versions/")
    return {str(v): int(n or 0) for v, n in answer.items()} if isinstance(answer, dict) else {}


def remove_old_versions(ls: Connection, current: str) -> dict[str, int]:
    """Delete the stored predictions of our versions other than `current` (by our version names:
    other backends' and imported predictions stay); returns the rows removed per version. Call it
    only once the project's model version is `current`: LS resets the model version of a project
    whose version is deleted, and then serves in random order."""
    removed = {}
    for version, count in model_versions(ls).items():
        if version != current and OUR_VERSION.match(version):
            paced(lambda version=version: call(ls, "DELETE", f"api/projects/{ls.project}/model-versions/", body={"model_version": version}))
            removed[version] = count
    return removed
