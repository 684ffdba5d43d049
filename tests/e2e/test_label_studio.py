"""End to end with a real Label Studio 1.23.2: connect, annotate, retrain, predictions in LS."""

from __future__ import annotations

import pytest

from tests.conftest import LABEL_CONFIG, wait_for

pytestmark = pytest.mark.labelstudio

LABELS = {"positive", "negative", "neutral"}


def _choice(label: str) -> list[dict]:
    return [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def _predictions(task) -> list[dict]:
    return [p if isinstance(p, dict) else p.dict() for p in (task.predictions or [])]


def test_label_studio_connects_trains_and_holds_our_predictions(label_studio, backend_server, tweets):
    ls = label_studio.client()
    project = ls.projects.create(title="e2e serving core", label_config=LABEL_CONFIG)
    sample = range(70)
    ls.projects.import_tasks(id=project.id, request=[{"text": tweets.texts[i], "ref": i} for i in sample])
    tasks = sorted(ls.tasks.list(project=project.id, fields="all"), key=lambda t: t.id)
    assert len(tasks) == 70

    ml = ls.ml.create(url=backend_server.url, project=project.id, title="active-learning", auto_update=True)
    assert ml.state in ("CO", "TR"), ml.state
    hooks = [w for w in ls.webhooks.list(project=project.id) if w.url == f"{backend_server.url}/webhook"]
    assert hooks and hooks[0].send_for_all_actions

    labeled = tasks[:50]
    for task in labeled:
        ls.annotations.create(id=task.id, result=_choice(tweets.labels[task.data["ref"]]), was_cancelled=False)
    version = backend_server.settled_version(project.id, changes=len(labeled))
    assert version != "untrained"

    ls.actions.create(id="retrieve_tasks_predictions", project=project.id, selected_items={"all": True, "excluded": []})
    unlabeled = {t.id for t in tasks[50:]}
    seen = 0
    for task in ls.tasks.list(project=project.id, fields="all"):
        if task.id not in unlabeled:
            continue
        ours = [p for p in _predictions(task) if p.get("model_version") == version]
        assert ours, f"task {task.id} has no prediction of {version}: {_predictions(task)}"
        prediction = ours[0]
        assert 0.0 <= prediction["score"] <= 1.0
        (region,) = prediction["result"]
        assert region["from_name"] == "sentiment" and region["to_name"] == "text" and region["type"] == "choices"
        assert len(region["value"]["choices"]) == 1 and region["value"]["choices"][0] in LABELS
        seen += 1
    assert seen == len(unlabeled)
    assert backend_server.version(project.id) == version


def test_promoted_version_is_pushed_to_label_studio_for_unlabeled_tasks(label_studio, backend_server, tweets):
    """After a promotion LS holds predictions of that version and `project.model_version` is it."""
    ls = label_studio.client()
    project = ls.projects.create(title="e2e loop", label_config=LABEL_CONFIG)
    ls.projects.import_tasks(id=project.id, request=[{"text": tweets.texts[i], "ref": i} for i in range(100, 170)])
    tasks = sorted(ls.tasks.list(project=project.id, fields="all"), key=lambda t: t.id)
    ls.ml.create(url=backend_server.url, project=project.id, title="active-learning", auto_update=True)
    labeled = tasks[:50]
    for task in labeled:
        ls.annotations.create(id=task.id, result=_choice(tweets.labels[task.data["ref"]]), was_cancelled=False)

    def pushed() -> str | None:
        version = backend_server.version(project.id)
        current = ls.projects.get(project.id).model_version
        return version if version != "untrained" and current == version else None

    version = wait_for(pushed, timeout=120, interval=1)
    labeled_ids = {t.id for t in labeled}
    for task in ls.tasks.list(project=project.id, fields="all"):
        if task.id in labeled_ids:
            continue
        versions = {p.get("model_version") for p in _predictions(task)}
        assert version in versions, (task.id, versions)


def test_imported_annotations_without_webhooks_are_reconciled_on_start_training(label_studio, backend_server, tweets):
    """LS sends no webhook for imported annotations: Start Training must still train on them."""
    ls = label_studio.client()
    project = ls.projects.create(title="e2e reconcile", label_config=LABEL_CONFIG)
    ml = ls.ml.create(url=backend_server.url, project=project.id, title="active-learning", auto_update=True)
    rows = [{"data": {"text": tweets.texts[i]}, "annotations": [{"result": _choice(tweets.labels[i])}]} for i in range(300, 420)]
    rows += [{"data": {"text": tweets.texts[i]}} for i in range(420, 430)]
    ls.projects.import_tasks(id=project.id, request=rows)
    ls.ml.train(id=ml.id)
    version = wait_for(lambda: (v := backend_server.version(project.id)) != "untrained" and v, timeout=120, interval=0.5)
    import requests

    labels = requests.get(f"{backend_server.url}/projects/{project.id}/labels", timeout=5).json()
    assert labels["labeled_tasks"] == 120
    assert version.startswith(f"p{project.id}-v")


def test_uncertainty_sampling_serves_our_queue_first_and_follows_each_promotion(label_studio, backend_server, tweets):
    import requests

    ls = label_studio.client()
    headers = {"Authorization": f"Token {label_studio.token}"}
    project = ls.projects.create(title="e2e queue", label_config=LABEL_CONFIG)
    ls.projects.import_tasks(id=project.id, request=[{"text": tweets.texts[i], "ref": i} for i in range(400, 480)])
    tasks = sorted(ls.tasks.list(project=project.id, fields="all"), key=lambda t: t.id)
    ref = {t.id: t.data["ref"] for t in tasks}
    ls.ml.create(url=backend_server.url, project=project.id, title="active-learning", auto_update=True)
    settings = {"uncertainty_sampling": True, "retrain_threshold": 15, "cold_start_per_class": 1, "cold_start_total": 10}
    assert requests.put(f"{backend_server.url}/projects/{project.id}/settings", json=settings, timeout=5).status_code == 200

    def annotate(task_id: int) -> None:
        ls.annotations.create(id=task_id, result=_choice(tweets.labels[ref[task_id]]), was_cancelled=False)

    for task in tasks[:30]:
        annotate(task.id)
    labeled = 30
    for round_ in range(2):
        version = backend_server.settled_version(project.id, changes=labeled)

        def pushed():
            p = ls.projects.get(project.id)
            return p.model_version == version and p.sampling == "Uncertainty sampling"

        wait_for(pushed, timeout=120, interval=1)
        queue = requests.get(f"{backend_server.url}/queue", params={"project": project.id, "limit": 1}, timeout=5).json()
        assert queue["version"] == version and queue["strategy"] == "margin", queue
        served = requests.get(f"{label_studio.url}/api/projects/{project.id}/next", headers=headers, timeout=30).json()
        assert served["id"] == queue["tasks"][0]["task"], (round_, served["id"], queue["tasks"][:3])
        for task in [served["id"]] + [t.id for t in tasks[labeled:] if t.id != served["id"]][:14]:
            annotate(task)
        labeled += 15
        tasks = [t for t in tasks if t.id != served["id"]]
