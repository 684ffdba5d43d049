"""Several annotators in a real Label Studio 1.23.2: three users label overlapping tasks through
`/next` as themselves; the backend names them in its agreement figures, sets their ties aside as
disputed, has LS serve each disputed task to another annotator, and lets a ground-truth annotation
override the votes and join the gold set."""

from __future__ import annotations

import pytest
import requests

from lab.ls_session import annotate
from tests.conftest import LABEL_CONFIG, wait_for

pytestmark = pytest.mark.labelstudio

TASKS = 60
OTHER = {"positive": "negative", "negative": "neutral", "neutral": "positive"}


def test_three_annotators_disputes_back_to_people_and_ground_truth(label_studio, backend_server, tweets):
    ls = label_studio.client()
    admin = {"Authorization": f"Token {label_studio.token}"}

    def in_ls(method: str, path: str, token: dict[str, str] = admin, **kwargs):
        answer = requests.request(method, f"{label_studio.url}/api/{path}", headers=token, timeout=60, **kwargs)
        answer.raise_for_status()
        return answer.json()

    def ours(method: str, path: str, **kwargs):
        answer = requests.request(method, f"{backend_server.url}/{path}", timeout=10, **kwargs)
        assert answer.status_code < 300, answer.text
        return answer.json()

    project = ls.projects.create(title="e2e consensus", label_config=LABEL_CONFIG).id
    in_ls("PATCH", f"projects/{project}", json={"maximum_annotations": 2, "overlap_cohort_percentage": 100})
    ls.projects.import_tasks(id=project, request=[{"text": tweets.texts[i], "ref": i} for i in range(TASKS)])
    ls.ml.create(url=backend_server.url, project=project, title="active-learning", auto_update=True)
    ours("PUT", f"projects/{project}/settings", json={"review_extra_annotation": True, "gold_set": True, "gold_min": 1})
    tokens = {name: label_studio.signup(f"{name}@example.com") for name in ("ann-a", "ann-b", "ann-c")}
    users = {name: in_ls("GET", "current-user/whoami", {"Authorization": f"Token {t}"})["id"] for name, t in tokens.items()}

    def truth(data) -> str:
        return tweets.labels[data["ref"]]

    contrary = iter(range(3))  # B disagrees with A on their first three tasks: three ties

    def b_label(data) -> str:
        return OTHER[truth(data)] if next(contrary, None) is not None else truth(data)

    first = annotate(label_studio.url, tokens["ann-a"], project, truth, steps=12)
    second = annotate(label_studio.url, tokens["ann-b"], project, b_label, steps=12)
    assert first.failures == second.failures == []
    shared = [s.task for s in first.steps]
    assert sorted(s.task for s in second.steps) == sorted(shared)  # LS's overlap of 2 served B the tasks A labeled
    disputed = {s.task for s in second.steps[:3]}

    # a reviewer's ground truth on a task A and B agree on, with another label: it wins and forms the gold set
    starred = next(task for task in shared if task not in disputed)
    other = OTHER[truth(ls.tasks.get(id=starred).data)]
    result = [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [other]}}]
    in_ls("POST", f"tasks/{starred}/annotations", json={"result": result, "ground_truth": True})

    def trained_on_the_ground_truth():
        ours("POST", f"projects/{project}/train")
        history = ours("GET", f"projects/{project}/models")["history"]
        done = [r for r in history if r.get("consensus", {}).get("tasks", {}).get("sentiment", {}).get("ground_truth")]
        return done[-1] if done else None

    record = wait_for(trained_on_the_ground_truth, timeout=180, interval=2)
    counts = record["consensus"]["tasks"]["sentiment"]
    assert counts["disputed"] == 3 and counts["ground_truth"] == 1 and record["gold_tasks"] == 1, record
    review = ours("GET", "queue", params={"project": project, "purpose": "review"})
    assert {t["task"] for t in review["tasks"] if t["reason"] == "tie"} == disputed
    people = ours("GET", f"projects/{project}/agreement")["controls"]["sentiment"]["per_annotator"]
    assert {str(users["ann-a"]), str(users["ann-b"])} <= set(people)

    # LS asks for a third annotation of each disputed task and, under uncertainty sampling, serves it first
    ours("PUT", f"projects/{project}/settings", json={"uncertainty_sampling": True})
    wait_for(lambda: all((t := ls.tasks.get(id=task)).overlap == 3 and not t.is_labeled for task in disputed), timeout=120, interval=1)

    def served_first() -> bool:
        version = in_ls("GET", f"projects/{project}")["model_version"]
        found = [in_ls("GET", "predictions/", params={"task": t}) for t in disputed]
        return all(any(p["model_version"] == version and p["score"] < 0 for p in predictions) for predictions in found)

    wait_for(served_first, timeout=120, interval=1)
    third = annotate(label_studio.url, tokens["ann-c"], project, truth, steps=10)
    assert third.failures == []
    assert disputed & {s.task for s in third.steps}, [s.task for s in third.steps]
    people = ours("GET", f"projects/{project}/agreement")["controls"]["sentiment"]["per_annotator"]
    assert {str(u) for u in users.values()} <= set(people)  # the three, by their LS user ids

    def resolved():
        ours("POST", f"projects/{project}/train")
        return ours("GET", f"projects/{project}/audit", params={"kind": "resolution"})["events"] or None

    (event, *_) = wait_for(resolved, timeout=180, interval=2)
    assert {t["task"] for t in event["details"]["tasks"]} <= disputed and event["details"]["tasks"][0]["outcome"] == "vote"


def test_imported_annotations_stay_votes_though_ls_marks_them_ground_truth(label_studio, backend_server, tweets):
    ls = label_studio.client()
    admin = {"Authorization": f"Token {label_studio.token}"}
    project = ls.projects.create(title="e2e imported labels", label_config=LABEL_CONFIG).id

    def region(label: str) -> list[dict]:
        return [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]

    tasks = [{"data": {"text": tweets.texts[i]}, "annotations": [{"result": region(tweets.labels[i])}]} for i in range(40)]
    ls.projects.import_tasks(id=project, request=tasks)
    stored = requests.get(f"{label_studio.url}/api/tasks/", params={"project": project, "fields": "all"}, headers=admin, timeout=60).json()
    marks = {a["ground_truth"] for t in stored["tasks"] for a in t["annotations"]}
    assert marks == {True}  # what LS 1.23.2 does to imported annotations
    ls.ml.create(url=backend_server.url, project=project, title="active-learning", auto_update=True)
    requests.put(f"{backend_server.url}/projects/{project}/settings", json={"gold_set": True, "gold_min": 1}, timeout=5)

    def trained():
        requests.post(f"{backend_server.url}/projects/{project}/train", params={"full_sync": 1}, timeout=5)
        history = requests.get(f"{backend_server.url}/projects/{project}/models", timeout=5).json()["history"]
        return next((r for r in reversed(history) if r.get("examples")), None)

    record = wait_for(trained, timeout=180, interval=2)
    assert record["consensus"]["tasks"]["sentiment"] == {"single": 40} and record["gold_tasks"] == 0  # all trained on
