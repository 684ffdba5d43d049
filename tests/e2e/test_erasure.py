"""Erasure with a real Label Studio 1.23.2: a task deleted in LS takes its text and annotations out of
the backend (TASKS_DELETED), and a project deleted in LS is forgotten through an organization
webhook (PROJECT_DELETED), which LS's API cannot create: an admin makes it with LS's ORM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
import requests

from backend.state import keys
from backend.state.connection import socket_path
from tests.conftest import LABEL_CONFIG, wait_for
from tests.e2e.test_label_studio import _choice

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

ORG_WEBHOOK = """
from organizations.models import Organization
from webhooks.models import Webhook
hook = Webhook.objects.create(organization=Organization.objects.first(), project=None, url={url!r}, send_for_all_actions=False)
hook.set_actions(["PROJECT_DELETED"])
print(hook.id)
"""


def embedded_redis(model_dir: str) -> redis.Redis:
    """The backend's private redis-server (embedded mode) of `model_dir`."""
    return redis.Redis(unix_socket_path=str(socket_path((Path(model_dir) / ".redis").absolute())))


def test_deleting_a_task_and_then_the_project_in_label_studio_erases_them(label_studio, backend_server, tweets):
    ls = label_studio.client()
    answer = requests.post(f"{label_studio.url}/api/webhooks/", json={"url": f"{backend_server.url}/webhook"}, headers=_auth(label_studio))
    assert answer.status_code == 404 and "Project not found" in answer.text  # LS's API makes no organization webhook
    hook = int(label_studio.orm(ORG_WEBHOOK.format(url=f"{backend_server.url}/webhook?erase_models=true")).split()[-1])

    project = ls.projects.create(title="e2e erasure", label_config=LABEL_CONFIG)
    ls.projects.import_tasks(id=project.id, request=[{"text": tweets.texts[i], "ref": i} for i in range(60)])
    tasks = sorted(ls.tasks.list(project=project.id, fields="all"), key=lambda t: t.id)
    ls.ml.create(url=backend_server.url, project=project.id, title="erasure", auto_update=True)
    for task in tasks[:40]:
        ls.annotations.create(id=task.id, result=_choice(tweets.labels[task.data["ref"]]), was_cancelled=False)
    backend_server.settled_version(project.id, changes=40)
    store = embedded_redis(backend_server.model_dir)
    doomed = tasks[0]
    assert store.hexists(keys.texts(project.id), doomed.id)

    ls.tasks.delete(id=doomed.id)  # LS sends TASKS_DELETED with the task's id, and nothing of its annotation
    wait_for(lambda: not store.hexists(keys.texts(project.id), doomed.id), timeout=30)
    stored = lambda: {json.loads(r)["task"] for r in store.hvals(keys.annotations(project.id))}  # noqa: E731
    wait_for(lambda: doomed.id not in stored() and len(stored()) == 39, timeout=120)  # by the publish job

    directory = Path(backend_server.model_dir) / f"project-{project.id}"
    assert directory.is_dir() and list(store.scan_iter(match=f"{keys.PREFIX}:{project.id}:*"))
    ls.projects.delete(id=project.id)  # LS sends PROJECT_DELETED to the organization webhook once it is gone
    wait_for(lambda: not directory.exists(), timeout=30)
    # a publish job that waited for the lock the erasure held takes it, finds the project erased and lets go
    wait_for(lambda: list(store.scan_iter(match=f"{keys.PREFIX}:{project.id}:*")) == [], timeout=30)
    [(_, tombstone)] = store.xrange(keys.ERASURES)
    assert tombstone[b"project"] == str(project.id).encode() and tombstone[b"by"] == b"Label Studio (PROJECT_DELETED)"
    assert tombstone[b"models_erased"] == b"True"
    assert not any(tweets.texts[i].encode() in b"".join(tombstone.values()) for i in range(60))
    models = requests.get(f"{backend_server.url}/projects/{project.id}/models", timeout=5).json()
    assert models["current"] is None and models["history"] == []
    label_studio.orm(f"from webhooks.models import Webhook\nWebhook.objects.filter(id={hook}).delete()")


def _auth(label_studio) -> dict[str, str]:
    return {"Authorization": f"Token {label_studio.token}"}
