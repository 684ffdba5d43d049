"""Span labeling end to end with a real Label Studio 1.23.2: an NER project of WNUT-16 tweets, its
annotations train a CRF version, LS holds that version's span predictions for the pushed head with
valid offsets, and under uncertainty sampling `/next` serves our first task."""

from __future__ import annotations

import pytest
import requests

from lab.client import ner_config, span_regions
from lab.datasets import load_wnut
from tests.conftest import wait_for
from tests.e2e.conftest import serves_by_uncertainty

pytestmark = pytest.mark.labelstudio


def covering(data, n: int) -> list[int]:
    """`n` tweets among which every entity type has a span (the cold-start rule then lets the
    margin strategy rank), the rest in file order."""
    chosen: list[int] = []
    for label in data.labels:
        chosen.append(next(i for i, found in enumerate(data.spans) if i not in chosen and any(s[2] == label for s in found)))
    return chosen + [i for i in range(len(data)) if i not in chosen][: n - len(chosen)]


def test_span_annotations_in_label_studio_train_a_version_whose_regions_and_order_it_serves(label_studio, backend_server):
    data = load_wnut()
    ls = label_studio.client()
    headers = {"Authorization": f"Token {label_studio.token}"}
    project = ls.projects.create(title="e2e spans", label_config=ner_config(data.labels))
    rows = covering(data, 260)
    ls.projects.import_tasks(id=project.id, request=[{"text": data.texts[i], "ref": i} for i in rows])
    tasks = sorted(ls.tasks.list(project=project.id, fields="all"), key=lambda t: t.id)
    ref = {t.id: t.data["ref"] for t in tasks}
    ls.ml.create(url=backend_server.url, project=project.id, title="active-learning", auto_update=True)
    settings = {"uncertainty_sampling": True, "retrain_threshold": 200, "cold_start_per_class": 1, "cold_start_total": 10}
    assert requests.put(f"{backend_server.url}/projects/{project.id}/settings", json=settings, timeout=5).status_code == 200

    for task in tasks[:200]:  # a tweet without entities is submitted with no region: "no entities"
        i = ref[task.id]
        ls.annotations.create(id=task.id, result=span_regions(data.texts[i], data.spans[i]), was_cancelled=False)
    # one train job on them all: out of fold, a CRF of 100 tweets may find no span and not beat the baseline
    version = backend_server.settled_version(project.id, changes=200)
    assert version != "untrained"
    models = requests.get(f"{backend_server.url}/projects/{project.id}/models", timeout=5).json()
    record = next(r for r in models["history"] if r["version"] == version)
    assert record["families"] == {"ner": "crf-spans"} and record["examples"] == 200
    serves_by_uncertainty(ls, project.id, version)
    queue = requests.get(f"{backend_server.url}/queue", params={"project": project.id, "limit": 1000}, timeout=5).json()
    assert queue["version"] == version and queue["strategy"] == "margin", queue
    head = {t["task"] for t in queue["tasks"][: min(queue["head"]["pushed"], 40)]}  # (the first 40 of it)
    assert queue["head"]["version"] == version and head

    def held():  # LS holds our version's predictions for the pushed head
        found = {t.id: t for t in ls.tasks.list(project=project.id, fields="all") if t.id in head}
        return found if all(version in {p.get("model_version") for p in _predictions(t)} for t in found.values()) else None

    found = wait_for(held, timeout=120, interval=1)
    regions = 0
    for task in found.values():
        text = task.data["text"]
        (prediction,) = [p for p in _predictions(task) if p.get("model_version") == version]
        for region in prediction["result"]:
            value = region["value"]
            assert region["type"] == "labels" and region["from_name"] == "ner" and region["to_name"] == "text"
            assert value["text"] == text[value["start"] : value["end"]] and value["labels"][0] in data.labels
            regions += 1
    assert regions > 0

    served = requests.get(f"{label_studio.url}/api/projects/{project.id}/next", headers=headers, timeout=30).json()
    assert served["id"] == queue["tasks"][0]["task"], (served["id"], queue["tasks"][:3])


def _predictions(task) -> list[dict]:
    return [p if isinstance(p, dict) else p.dict() for p in (task.predictions or [])]
