"""Erasure of a project (`backend.erasure`): `DELETE /projects/P` and LS's `PROJECT_DELETED` remove
everything the backend holds of the project but one tombstone (and its models unless
`erase_models`), leave other projects alone, and stop the project's jobs."""

from __future__ import annotations

import time

import redis
import requests

from backend.state import keys
from backend.state.registry import Registry
from tests.conftest import LABEL_CONFIG, annotation_event, wait_for
from tests.jobs.test_entry import post_labels, predict
from tests.test_faults import start_training
from tests.web.test_api import train

SECRET = "a very private tweet about flight 123"


def project_keys(client_redis, project: int) -> list[bytes]:
    return sorted(client_redis.scan_iter(match=f"{keys.PREFIX}:{project}:*"))


def kept_of(client_redis, project: int) -> dict:
    """A project's labels, texts, pool and details (what no background job of it changes)."""
    return {name.__name__: client_redis.hgetall(name(project)) for name in (keys.annotations, keys.texts, keys.pool, keys.meta)}


def filled(client, tweets, project: int) -> None:
    """A project with labels, an unlabeled pool, settings, rules and a served model."""
    train(client, tweets, n=60, project=project)
    for i in range(3):
        event = annotation_event(900 + i, 900 + i, SECRET, "negative", project=project, author=7)
        assert client.post("/webhook", json=event).status_code == 200
    tasks = [{"id": 5000 + i, "data": {"text": f"{SECRET} {i}"}} for i in range(5)]
    assert client.post("/webhook", json={"action": "TASKS_CREATED", "tasks": tasks, "project": {"id": project}}).status_code == 200
    answer = client.put(f"/projects/{project}/settings", json={"rules": [{"label": "negative", "keyword": "refund"}]})
    assert answer.status_code == 200, answer.json


def test_delete_removes_everything_but_the_models_and_leaves_a_tombstone(client, runtime, tweets):
    filled(client, tweets, 1)
    filled(client, tweets, 2)
    store = runtime.redis
    directory = runtime.registry.project_dir(1)
    wait_for(lambda: (directory / "pool").is_dir() or (directory / "queue-scores.npy").exists(), timeout=60)
    other = kept_of(store, 2)
    version = runtime.registry.pointer(1).version
    assert project_keys(store, 1) and other

    assert client.delete("/projects/1?erase_models=maybe").status_code == 400
    response = client.delete("/projects/1", auth=("admin", "pw"))
    assert response.status_code == 200, response.json
    erased = response.json["erased"]
    assert erased["project"] == 1 and erased["redis_keys"] >= 10 and not erased["models_erased"]
    time.sleep(0.3)  # background writes of earlier requests land or are dropped
    assert project_keys(store, 1) == [keys.change_seq(1).encode()]  # the kept models' count of changes, and nothing else
    assert int(store.get(keys.change_seq(1))) == runtime.registry.pointer(1).watermark
    assert not store.sismember(keys.PROJECTS, 1) and store.sismember(keys.PROJECTS, 2)
    assert kept_of(store, 2) == other  # another project is untouched
    left = sorted(p.name for p in directory.iterdir())
    assert left and all(n.endswith((".skops", ".json")) or n in {".lock", "next-version"} for n in left), left
    assert client.get("/projects/1/labels").json["annotations"] == 0
    assert predict_version(client, 1) == version  # the kept model still serves

    [tombstone] = [fields for _, fields in store.xrange(keys.ERASURES)]
    flat = b" ".join(k + b"=" + v for k, v in tombstone.items())
    assert b"project=1" in flat and b"admin API (admin)" in flat and SECRET.encode() not in flat

    response = client.delete("/projects/1?erase_models=true")
    assert response.status_code == 200 and response.json["erased"]["models_erased"]
    assert not directory.exists() and runtime.registry.pointer(1) is None
    assert predict_version(client, 1) == "untrained"  # this process let go of it at once
    assert store.xlen(keys.ERASURES) == 2


def predict_version(client, project: int) -> str:
    body = {"tasks": [{"id": 1, "data": {"text": "hello"}}], "project": f"{project}.1700000000", "label_config": LABEL_CONFIG}
    return client.post("/predict", json=body).json["results"][0]["model_version"]


def test_project_deleted_from_label_studio_erases_it(client, runtime, tweets):
    filled(client, tweets, 3)
    event = {"action": "PROJECT_DELETED", "project": {"id": 3}}  # all LS 1.23.2 sends, after the project is gone
    response = client.post("/webhook?erase_models=true", json=event)
    assert response.status_code == 200, response.json
    assert response.json["erased"]["by"] == "Label Studio (PROJECT_DELETED)" and response.json["erased"]["models_erased"]
    time.sleep(0.3)
    assert project_keys(runtime.redis, 3) == [] and not runtime.registry.project_dir(3).exists()
    assert client.post("/webhook?erase_models=perhaps", json=event).status_code == 400
    again = client.post("/webhook", json=event)  # LS's organization webhook and an admin's DELETE may both come
    assert again.status_code == 200 and again.json["erased"]["redis_keys"] == 0


def test_erasure_cancels_queued_and_stops_running_jobs_of_the_project(services, tweets):
    url, _ = services.web(workers=1, RETRAIN_THRESHOLD="100000")
    worker = services.worker(SLEEP_AT="fit", SLEEP_SECONDS="30")
    registry = Registry(services.model_dir)
    post_labels(url, tweets, 0, 80, threads=4)
    start_training(url)
    wait_for(lambda: "holding at fit" in worker.log.read_text(), timeout=60)
    post_labels(url, tweets, 80, 100, threads=4)
    start_training(url)  # queued behind the one in fit
    response = requests.delete(f"{url}/projects/1", timeout=10)
    assert response.status_code == 200, response.text
    erased = response.json()["erased"]
    assert erased["jobs_stopped"] == 1 and erased["jobs_cancelled"] >= 1
    client = redis.Redis.from_url(services.redis_url)
    time.sleep(5)
    assert project_keys(client, 1) == [] and registry.history(1) == []  # nothing written after
    assert worker.popen.poll() is None  # the worker lives on and takes other projects' work
    assert predict(url, ["still serving"], project=4).status_code == 200


def test_a_job_running_through_the_erasure_records_nothing(client, runtime, tweets, monkeypatch):
    """The embedded worker's thread cannot be stopped: held in `fit` while the project is erased, it
    finds the erasure count moved on before it reserves a version, and stops."""
    from tests.conftest import annotation_event as event

    assert client.put("/projects/1/settings", json={"retrain_threshold": 100000}).status_code == 200  # only START_TRAINING trains
    for i in range(40):
        assert client.post("/webhook", json=event(i + 1, i + 1, tweets.texts[i], tweets.labels[i])).status_code == 200
    monkeypatch.setenv("SLEEP_AT", "fit")
    monkeypatch.setenv("SLEEP_SECONDS", "3")
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    wait_for(lambda: runtime.redis.get(keys.train_lock(1)), timeout=30)  # the job holds the project
    time.sleep(0.5)
    assert client.delete("/projects/1").status_code == 200
    time.sleep(4)  # past the hold: the job went on and met the check
    assert runtime.registry.history(1) == [] and runtime.registry.pointer(1) is None
    assert [k for k in project_keys(runtime.redis, 1) if not k.endswith(b":traffic")] == []
