"""Labeling rules against a real Label Studio 1.23.2: rules sent as the ML backend's extra params
pre-annotate the project before its first label under their own version, LS's first tasks include
tasks the rules give each label (class-aware cold start), and the first promoted model replaces
them (their rows are deleted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from backend.labelconfig import parse_label_config
from backend.rules import RuleSet, decide, parse_rules
from lab.ls_session import annotate
from tests.conftest import LABEL_CONFIG, wait_for

pytestmark = pytest.mark.labelstudio

RULES = json.loads((Path(__file__).parents[2] / "lab" / "rules" / "tweets.json").read_text())


def test_rules_pre_annotate_in_label_studio_until_the_first_model(label_studio, backend_server, tweets):
    ls = label_studio.client()
    token = {"Authorization": f"Token {label_studio.token}"}
    ruleset = RuleSet(parse_rules(RULES))
    control = parse_label_config(LABEL_CONFIG).controls[0]
    found = ruleset.votes(control, tweets.texts[:5000], only=True).sum(axis=1)
    chosen = [i for i in range(5000) if found[i]][:30] + [i for i in range(5000) if not found[i]][:270]  # a tenth covered
    texts = [tweets.texts[i] for i in chosen]
    labels = [tweets.labels[i] for i in chosen]
    project = ls.projects.create(title="e2e rules", label_config=LABEL_CONFIG)
    ls.projects.import_tasks(id=project.id, request=[{"text": t, "ref": i} for i, t in enumerate(texts)])
    ls.ml.create(url=backend_server.url, project=project.id, title="active-learning", auto_update=True, extra_params={"rules": RULES})
    settings = {"uncertainty_sampling": True, "retrain_threshold": 20, "cold_start_per_class": 2, "cold_start_total": 20}
    assert requests.put(f"{backend_server.url}/projects/{project.id}/settings", json=settings, timeout=5).status_code == 200

    def ls_version() -> str | None:
        return requests.get(f"{label_studio.url}/api/projects/{project.id}", headers=token, timeout=30).json()["model_version"]

    wait_for(lambda: ls_version() == ruleset.version, timeout=120, interval=0.5)
    votes = ruleset.votes(control, texts, only=True)
    given = {i for i, picked in enumerate(decide(votes, multiple=False)[0]) if picked}

    ids = {int(t.data["ref"]): t.id for t in ls.tasks.list(project=project.id)}
    refs = {task: ref for ref, task in ids.items()}
    session = annotate(label_studio.url, label_studio.token, project.id, lambda data: labels[data["ref"]], steps=10)
    assert session.failures == [] and {step.version for step in session.steps} == {ruleset.version}
    served = [refs[step.task] for step in session.steps]
    assert len(given & set(served)) >= 3, served  # a tenth of the tasks, but half of each cold-start batch

    covered = next(i for i, row in enumerate(votes) if (row > 0).sum() == 1)
    expected = decide(votes[covered : covered + 1], multiple=False)[1][0]
    stored = requests.get(f"{label_studio.url}/api/predictions/", params={"task": ids[covered]}, headers=token, timeout=30).json()
    mine = [p for p in stored if p["model_version"] == ruleset.version]
    if mine:  # in the pushed head
        assert mine[0]["result"][0]["value"]["choices"] == [control.labels[int(votes[covered].argmax())]]
    body = {"project": project.id, "label_config": LABEL_CONFIG, "tasks": [{"id": ids[covered], "data": {"text": texts[covered]}}]}
    predicted = requests.post(f"{backend_server.url}/predict", json=body, timeout=5).json()["results"][0]
    assert predicted["model_version"] == ruleset.version
    assert predicted["result"][0]["value"]["choices"] == [control.labels[int(votes[covered].argmax())]]
    assert predicted["result"][0]["score"] == pytest.approx(expected, abs=1e-6) and expected >= 0.5

    annotate(label_studio.url, label_studio.token, project.id, lambda data: labels[data["ref"]], steps=30)
    trained = backend_server.settled_version(project.id, 20)
    assert trained.startswith(f"p{project.id}-v")

    def ours() -> set[str]:
        rows = requests.get(f"{label_studio.url}/api/projects/{project.id}/model-versions/", headers=token, timeout=30).json()
        return {v for v in rows if v.startswith("rules-") or v.startswith(f"p{project.id}-v")}

    wait_for(lambda: (ls_version() or "").startswith(f"p{project.id}-v") and ruleset.version not in ours(), timeout=120, interval=0.5)
