"""End to end with a real Label Studio 1.23.2: connect, annotate, retrain, predictions in LS."""

from __future__ import annotations

import os
import random
import subprocess

import pytest
import requests

from tests.conftest import LABEL_CONFIG, wait_for
from tests.e2e.conftest import BASIC_AUTH, serves_by_uncertainty

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


def _labels_then_pushed(ls, backend, title: str, first: int, tweets) -> tuple[int, str, list]:
    """A project of 80 tweets from `first` connected to `backend`, 50 of them labeled in LS; waits
    until LS's model version is the backend's promoted one and its head is stored; returns the
    project id, that version and the unlabeled tasks."""
    project = ls.projects.create(title=title, label_config=LABEL_CONFIG)
    ls.projects.import_tasks(id=project.id, request=[{"text": tweets.texts[i], "ref": i} for i in range(first, first + 80)])
    tasks = sorted(ls.tasks.list(project=project.id, fields="all"), key=lambda t: t.id)
    ls.ml.create(url=backend.url, project=project.id, title=title, auto_update=True)
    for task in tasks[:50]:
        ls.annotations.create(id=task.id, result=_choice(tweets.labels[task.data["ref"]]), was_cancelled=False)

    labeled = {t.id for t in tasks[:50]}

    def pushed() -> tuple[str, list] | None:  # LS serves the version, and its head (50 or more) covers the 30 unlabeled tasks
        version = backend.version(project.id)
        if version == "untrained" or ls.projects.get(project.id).model_version != version:
            return None
        unlabeled = [t for t in ls.tasks.list(project=project.id, fields="all") if t.id not in labeled]
        held = all(version in {p.get("model_version") for p in _predictions(t)} for t in unlabeled)
        return (version, unlabeled) if held else None

    version, unlabeled = wait_for(pushed, timeout=120, interval=1)
    return project.id, version, unlabeled


def test_promoted_version_is_pushed_to_label_studio_for_unlabeled_tasks(label_studio, backend_server, tweets):
    """After a promotion LS holds predictions of that version and `project.model_version` is it."""
    _, version, unlabeled = _labels_then_pushed(label_studio.client(), backend_server, "e2e loop", 100, tweets)
    for task in unlabeled:
        versions = {p.get("model_version") for p in _predictions(task)}
        assert version in versions, (task.id, versions)


def test_the_readme_model_family_is_trained_and_pushed_to_label_studio(label_studio, backend_server_with_readme_family, tweets):
    """MODEL_FAMILIES with the README's family: LS's labels train it, and LS holds its predictions."""
    import requests

    backend = backend_server_with_readme_family
    project_id, version, unlabeled = _labels_then_pushed(label_studio.client(), backend, "e2e own family", 600, tweets)
    history = requests.get(f"{backend.url}/projects/{project_id}/models", timeout=5).json()["history"]
    assert {r["version"]: r["families"] for r in history}[version] == {"sentiment": "complement-nb"}
    for task in unlabeled:
        assert version in {p.get("model_version") for p in _predictions(task)}, task.id


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
        serves_by_uncertainty(ls, project.id, version)
        queue = requests.get(f"{backend_server.url}/queue", params={"project": project.id, "limit": 1}, timeout=5).json()
        assert queue["version"] == version and queue["strategy"] == "margin", queue
        served = requests.get(f"{label_studio.url}/api/projects/{project.id}/next", headers=headers, timeout=30).json()
        assert served["id"] == queue["tasks"][0]["task"], (round_, served["id"], queue["tasks"][:3])
        for task in [served["id"]] + [t.id for t in tasks[labeled:] if t.id != served["id"]][:14]:
            annotate(task)
        labeled += 15
        tasks = [t for t in tasks if t.id != served["id"]]


WORDS = {
    "positive": ("love", "great", "wonderful", "happy", "excellent", "amazing"),
    "negative": ("hate", "awful", "terrible", "sad", "horrible", "worst"),
    "neutral": ("meeting", "tuesday", "report", "schedule", "office", "weather"),
}


def _separable(n: int) -> list[tuple[str, str]]:
    """`n` (text, label) pairs a first model learns from a few dozen labels, so its promotion does not
    depend on which tweets land in the held-out set (the test below is about auth, not accuracy)."""
    rng = random.Random(7)
    labels = sorted(WORDS)
    pairs = []
    for i in range(n):
        label = labels[i % 3]
        words = rng.sample(WORDS[label], 3) + rng.sample(["the", "a", "today", "this", "my", "so"], 2)
        rng.shuffle(words)
        pairs.append((" ".join(words), label))
    return pairs


def _answered(backend) -> dict[tuple[str, str], float]:
    """Requests the backend answered so far, by (endpoint, status), from its own /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{backend.url}/metrics", headers=backend.headers, timeout=10).text
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "lsb_http_requests_total":
                endpoint = (sample.labels["endpoint"], sample.labels["status"])
                counts[endpoint] = counts.get(endpoint, 0) + sample.value
    return counts


def test_label_studio_with_basic_auth_and_a_non_ascii_password_connects_predicts_and_trains(label_studio, backend_server_with_basic_auth):
    """LS sends its Basic auth latin-1 (`requests.auth.HTTPBasicAuth`) on health, setup, predict, versions and
    START_TRAINING; the webhook sends the README's UTF-8 header: the backend accepts both."""
    backend = backend_server_with_basic_auth
    user, password = BASIC_AUTH
    ls = label_studio.client()
    token = {"Authorization": f"Token {label_studio.token}"}
    project = ls.projects.create(title="e2e basic auth", label_config=LABEL_CONFIG)
    pairs = _separable(70)
    ls.projects.import_tasks(id=project.id, request=[{"text": text, "ref": i} for i, (text, _) in enumerate(pairs)])
    tasks = sorted(ls.tasks.list(project=project.id, fields="all"), key=lambda t: t.id)
    assert requests.get(f"{backend.url}/health", timeout=5).status_code == 401

    ml = ls.ml.create(
        url=backend.url,
        project=project.id,
        title="active-learning",
        auto_update=True,
        is_interactive=True,
        auth_method="BASIC_AUTH",
        basic_auth_user=user,
        basic_auth_pass=password,
    )
    assert ml.state in ("CO", "TR"), (ml.state, ml.error_message)
    assert ml.auth_method == "BASIC_AUTH" and ml.basic_auth_user == user and ml.basic_auth_pass_is_set

    # The README's step: the auto-created webhook has no credentials; give it the header its shell pipeline builds.
    hooks = requests.get(f"{label_studio.url}/api/webhooks", params={"project": project.id}, headers=token, timeout=30).json()
    (hook,) = [h for h in hooks if h["url"] == f"{backend.url}/webhook"]
    assert hook["headers"] == {}
    encoded = subprocess.run(
        ["bash", "-c", """printf '%s' "$BASIC_AUTH_USER:$BASIC_AUTH_PASS" | base64 | tr -d '\\n'"""],
        env={"PATH": os.environ["PATH"], "BASIC_AUTH_USER": user, "BASIC_AUTH_PASS": password},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"Basic {encoded}" == backend.headers["Authorization"]  # UTF-8, unlike what LS's own client sends
    patched = requests.patch(
        f"{label_studio.url}/api/webhooks/{hook['id']}", headers=token, timeout=30, json={"headers": {"Authorization": f"Basic {encoded}"}}
    )
    assert patched.status_code == 200 and patched.json()["headers"] == {"Authorization": f"Basic {encoded}"}

    labeled = tasks[:50]
    for task in labeled:
        ls.annotations.create(id=task.id, result=_choice(pairs[task.data["ref"]][1]), was_cancelled=False)
    version = backend.settled_version(project.id, changes=len(labeled))  # every annotation webhook got through
    assert version != "untrained"

    def interactive() -> dict | None:  # the web process swaps to a promoted version within its poll interval
        answer = requests.post(
            f"{label_studio.url}/api/ml/{ml.id}/interactive-annotating", headers=token, timeout=60, json={"task": tasks[60].id}
        ).json()
        assert "errors" not in answer, answer
        return answer if answer["data"]["model_version"] == version else None

    answer = wait_for(interactive, timeout=30, interval=0.5)
    (region,) = answer["data"]["result"]
    assert region["value"]["choices"] == [pairs[tasks[60].data["ref"]][1]]
    assert version in ls.ml.list_model_versions(id=ml.id).versions

    ls.ml.train(id=ml.id)  # START_TRAINING: LS's latin-1 Basic auth, without the webhook's header
    triggers = requests.get(
        f"{backend.url}/projects/{project.id}/audit", params={"kind": "trigger"}, headers=backend.headers, timeout=5
    ).json()["events"]
    assert "START_TRAINING" in [event["message"] for event in triggers], triggers
    refused = {key: n for key, n in _answered(backend).items() if key[1] == "401"}
    assert refused == {("/health", "401"): 1}, refused  # only the probe above without credentials
