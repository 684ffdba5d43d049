"""A real Label Studio 1.23.2 project of 10,000 tweets (SQLite on a RAM disk), labeled through LS's
API by a scripted annotator while the backend retrains: LS holds the head of our queue, not the
pool, its prediction rows stay bounded across versions, and `/next` serves tasks carrying the
current version's predictions."""

from __future__ import annotations

import pytest
import requests

from lab.ls_session import annotate
from tests.conftest import LABEL_CONFIG, wait_for

pytestmark = pytest.mark.labelstudio

POOL = 10_000


def test_a_10000_task_project_holds_the_head_of_each_version_and_next_serves_it(label_studio, backend_server, tweets):
    ls = label_studio.client()
    token = {"Authorization": f"Token {label_studio.token}"}
    project = ls.projects.create(title="e2e 10k", label_config=LABEL_CONFIG)
    ls.projects.import_tasks(id=project.id, request=[{"text": tweets.texts[i], "ref": i} for i in range(POOL)])
    ls.ml.create(url=backend_server.url, project=project.id, title="active-learning", auto_update=True)
    settings = {"uncertainty_sampling": True, "retrain_threshold": 20, "cold_start_per_class": 2, "cold_start_total": 20}
    assert requests.put(f"{backend_server.url}/projects/{project.id}/settings", json=settings, timeout=5).status_code == 200

    def ls_version() -> str | None:
        return requests.get(f"{label_studio.url}/api/projects/{project.id}", headers=token, timeout=30).json()["model_version"]

    wait_for(lambda: ls_version() == "untrained", timeout=300, interval=1)  # the cold-start head, from a full listing

    session = annotate(label_studio.url, label_studio.token, project.id, lambda data: tweets.labels[data["ref"]], steps=160)

    assert session.failures == []
    history = requests.get(f"{backend_server.url}/projects/{project.id}/models", timeout=5).json()["history"]
    promoted = [r for r in history if r["decision"] == "promoted"]
    assert len(promoted) >= 2, [(r["version"], r["decision"], r["reason"]) for r in history]
    first_trained = min(at for r in promoted if (at := session.first_served(r["version"])) is not None)
    share = session.share_with_prediction(since=first_trained, of=lambda v: v.startswith(f"p{project.id}-v"))
    assert share >= 0.8, share

    def ours() -> dict[str, int]:
        rows = requests.get(f"{label_studio.url}/api/projects/{project.id}/model-versions/", headers=token, timeout=30).json()
        return {v: n for v, n in rows.items() if v == "untrained" or v.startswith(f"p{project.id}-v")}

    def settled() -> str | None:  # LS serves the backend's version, and once its head is stored every older version's rows go
        version = ls_version()
        return version if version == backend_server.version(project.id) and set(ours()) == {version} else None

    try:
        current = wait_for(settled, timeout=120, interval=0.5)
    except AssertionError:
        raise AssertionError(
            f"LS holds {ours()} with {ls_version()} current, the backend serves {backend_server.version(project.id)}"
        ) from None
    ours = ours()
    head = requests.get(f"{backend_server.url}/queue", params={"project": project.id, "limit": 1}, timeout=5).json()["head"]
    assert head["version"] == current
    assert head["pushed"] <= head["target"] + head["taken"], head  # refills replace what annotators took
    assert ours[current] <= head["pushed"] + len(session.steps), (ours, head)  # and suspected label errors on labeled tasks
    assert ours[current] < POOL // 10

    lags = sorted(session.lags(promoted))
    print(f"\n10k-task project: {len(promoted)} promotions, promotion -> /next serves it {[round(x, 1) for x in lags]} s;")
    print(f"served with a current trained prediction: {share:.0%}; rows of ours now {ours}; annotator medians {session.medians()}")
