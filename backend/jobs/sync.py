"""The train job's side of Label Studio: a client for the project, and reconciling stored
annotations with LS before training (the webhook store stays the source when LS is away)."""

from __future__ import annotations

import logging

from .. import labelstudio
from ..runtime import Runtime
from ..state.store import texts_of

log = logging.getLogger(__name__)


def ls_client(runtime: Runtime, project: int) -> labelstudio.Connection | None:
    """A client for the project's LS (LABEL_STUDIO_URL, else what its /setup sent); None without one."""
    settings = runtime.settings
    creds = labelstudio.credentials(settings.label_studio_url, settings.label_studio_api_key, runtime.store.meta(project))
    return labelstudio.connect(creds, runtime.store.ls_project(project), timeout=settings.label_studio_timeout) if creds else None


def sync(runtime: Runtime, ls: labelstudio.Connection, project: int, full: bool) -> None:
    """Reconcile the store with LS; an unreachable LS leaves the webhook store as the source."""
    data_keys, limit = runtime.store.input_keys(project), runtime.settings.max_text_chars
    try:
        summary = labelstudio.sync_annotations(ls, runtime.store, project, lambda task: texts_of(task, data_keys, limit), full)
        log.info("project %s: synced from Label Studio: %s", project, summary)
    except Exception as exc:  # the SDK raises HTTP, connection and validation errors of many types
        log.warning("project %s: could not sync from Label Studio (%s); training on stored labels", project, type(exc).__name__)
