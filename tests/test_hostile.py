"""The bad-input table of the reliability plan (section 8), row by row, for the rows that
tests/web/test_api.py, tests/test_payload.py, tests/web/test_ingest.py and tests/state/test_store.py do not already
cover. Every row: a 4xx JSON error or a 2xx "ignored", never a 5xx; no job enqueued for invalid
input; stored data unchanged. The transport rows (oversized headers and bodies, Content-Length and
chunked) run against a real gunicorn; the rest through Flask's test client on fakeredis.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import pytest
import redis as redis_client
import requests

from backend.state import keys
from backend.state.store import Annotation
from backend.web.auth import basic_header
from backend.web.ingest import HANDLED
from tests.conftest import LABEL_CONFIG, annotation_event, labeled, wait_for

SETTINGS = "/projects/1/settings"
VALID = {  # a body each JSON route accepts (rollback: a well-formed request for a version that does not exist)
    ("POST", "/setup"): {"project": "1.1700000000", "schema": LABEL_CONFIG},
    ("POST", "/predict"): {"project": "1.1700000000", "label_config": LABEL_CONFIG, "tasks": [{"id": 7, "data": {"text": "hi"}}]},
    ("POST", "/webhook"): annotation_event(50, 50, "fine flight", "positive"),
    ("POST", "/train"): {"project": 1},
    ("POST", "/projects/1/rollback"): {"version": "p1-v1"},
    ("PUT", SETTINGS): {"batch_size": 10},
    ("PATCH", SETTINGS): {"batch_size": 10},
}
BAD_BODIES = {  # name: (raw body, content type, expected status)
    "no content type": (b'{"project": 1}', None, 415),
    "text/plain": (b'{"project": 1}', "text/plain", 415),
    "empty": (b"", "application/json", 400),
    "null": (b"null", "application/json", 400),
    "invalid": (b"{bad", "application/json", 400),
    "truncated": (b'{"project": 1', "application/json", 400),
    "not utf-8": (b"\xff\xfe\xfa{", "application/json", 400),
    "top-level list": (b"[]", "application/json", 400),
    "top-level string": (b'"str"', "application/json", 400),
    "top-level number": (b"42", "application/json", 400),
    "100k deep": (b"[" * 100_000 + b"]" * 100_000, "application/json", 400),
    "NaN": (b'{"project": NaN, "version": NaN, "batch_size": NaN}', "application/json", 400),
}
ENCODINGS = ("utf-16", "utf-32", "utf-16-be")  # valid JSON, but not UTF-8: refused, as parse_json decides
IN_TEST_API = {
    ("/predict", n)
    for n in (
        "no content type",
        "text/plain",
        "empty",
        "null",
        "invalid",
        "truncated",
        "not utf-8",
        "top-level list",
        "top-level string",
        "top-level number",
    )
}
IN_TEST_API |= {("/webhook", "100k deep"), ("/webhook", "NaN")}


def snapshot(redis: Any) -> dict[bytes, Any]:
    """Everything the backend keeps in Redis (RQ's own bookkeeping aside), by value."""
    read = {
        b"string": redis.get,
        b"hash": redis.hgetall,
        b"set": redis.smembers,
        b"stream": redis.xrange,
        b"list": lambda k: redis.lrange(k, 0, -1),
        b"zset": lambda k: redis.zrange(k, 0, -1, withscores=True),
    }
    return {k: read[redis.type(k)](k) for k in redis.scan_iter() if not k.startswith(b"rq:")}


def jobs(redis: Any) -> set[bytes]:
    return set(redis.scan_iter("rq:job:*"))


@pytest.fixture
def seeded(runtime):
    """Project 1 with stored labels, metadata and a task pool, written without any request."""
    for i in range(1, 4):
        runtime.store.upsert(1, Annotation(i, i, 1.0, {"sentiment": ["positive"]}, 1, {"text": f"text {i}"}))
    runtime.store.set_meta(1, label_config=LABEL_CONFIG, access_token="t")
    runtime.store.remember_tasks(1, {100: {"text": "pool"}})
    return runtime


def send(client, runtime, method: str, path: str, **kwargs: Any) -> Any:
    """One request; asserts it enqueued no job and left the stored data as it was."""
    before, data = jobs(runtime.redis), snapshot(runtime.redis)
    response = client.open(path, method=method, **kwargs)
    assert response.status_code < 500, response.get_data(as_text=True)
    assert jobs(runtime.redis) == before
    assert snapshot(runtime.redis) == data
    return response


def refused(client, runtime, method: str, path: str, status: int, **kwargs: Any) -> Any:
    response = send(client, runtime, method, path, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json and isinstance(response.json["error"], str) and response.json["error"]
    return response


def ignored(client, runtime, body: dict[str, Any]) -> Any:
    response = send(client, runtime, "POST", "/webhook", json=body)
    assert response.status_code == 200 and response.json["status"] == "ignored"
    return response


@pytest.mark.parametrize(
    "route,name", [pytest.param(r, n, id=f"{r[0]} {r[1]}-{n}") for r in VALID for n in BAD_BODIES if (r[1], n) not in IN_TEST_API]
)
def test_malformed_bodies_on_every_json_route(client, seeded, route, name):
    method, path = route
    body, content_type, status = BAD_BODIES[name]
    headers = {"Content-Type": content_type} if content_type else {}
    refused(client, seeded, method, path, status, data=body, headers=headers)


@pytest.mark.parametrize("route", list(VALID), ids=lambda r: f"{r[0]} {r[1]}")
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_valid_json_in_another_encoding_is_refused(client, seeded, route, encoding):
    method, path = route
    body = json.dumps(VALID[route]).encode(encoding)
    refused(client, seeded, method, path, 400, data=body, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("route", [r for r in VALID if r[1] != "/predict"], ids=lambda r: f"{r[0]} {r[1]}")
def test_bodies_over_the_limit_are_413_on_every_json_route(tmp_path, route):
    """The Content-Length case through the test client (/predict: tests/web/test_api.py); on the wire and
    chunked: test_transport_rows_against_gunicorn."""
    import fakeredis

    from backend.config import Settings
    from backend.runtime import Runtime
    from backend.web.app import create_app

    runtime = Runtime.build(Settings.from_env({}, model_dir=tmp_path, max_request_bytes=1000), redis=fakeredis.FakeRedis())
    try:
        client = create_app(runtime=runtime).test_client()
        method, path = route
        body = json.dumps({**VALID[route], "padding": "x" * 2000}).encode()
        refused(client, runtime, method, path, 413, data=body, headers={"Content-Type": "application/json"})
    finally:
        runtime.stop()


PROJECT_IDS = {  # name: JSON text of the id
    "missing": None,
    "null": "null",
    "1; drop": '"1; drop"',
    "-1": "-1",
    "0": "0",
    "1e309": "1e309",
    "NaN": "NaN",
    "true": "true",
    "list": "[1]",
    "over 10^12": str(10**12 + 1),
    "13 digits": '"1234567890123"',
    "superscript": '"\\u00b2"',
    "arabic digits": '"\\u0661"',
    "fraction": "1.5",
}
PROJECT_ROUTES = {
    "/setup": lambda p: f'{{"schema": {json.dumps(LABEL_CONFIG)}{p}}}',
    "/predict": lambda p: f'{{"label_config": {json.dumps(LABEL_CONFIG)}, "tasks": [{{"id": 1, "data": {{"text": "x"}}}}]{p}}}',
    "/webhook": lambda p: f'{{"action": "START_TRAINING"{p}}}',
    "/webhook ANNOTATION_CREATED": lambda p: (
        json.dumps({k: v for k, v in annotation_event(9, 9, "t", "positive").items() if k != "project"})[:-1] + p + "}"
    ),
    "/train": lambda p: f'{{"label_config": {json.dumps(LABEL_CONFIG)}{p}}}',
}
PROJECT_IN_TEST_API = {
    ("/webhook", "missing"),  # {"action": ...} alone: test_webhooks_without_a_payload_are_ignored
    ("/setup", "null"),
    ("/webhook ANNOTATION_CREATED", "null"),
    ("/webhook ANNOTATION_CREATED", "1; drop"),
    ("/webhook ANNOTATION_CREATED", "1e309"),
    ("/webhook ANNOTATION_CREATED", "NaN"),
}


@pytest.mark.parametrize(
    "route,name", [pytest.param(r, n, id=f"{r}-{n}") for r in PROJECT_ROUTES for n in PROJECT_IDS if (r, n) not in PROJECT_IN_TEST_API]
)
def test_bad_project_ids_are_400_without_a_job(client, seeded, route, name):
    value = PROJECT_IDS[name]
    body = PROJECT_ROUTES[route]("" if value is None else f', "project": {value}')
    refused(client, seeded, "POST", route.split()[0], 400, data=body, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("path", ["/projects/0/train", "/projects/0/models", f"/projects/{2 * 10**12 + 1}/settings"])
def test_admin_routes_refuse_project_ids_outside_the_api_range(client, seeded, path):
    refused(client, seeded, "POST" if path.endswith("train") else "GET", path, 400)


@pytest.mark.parametrize(
    "path,status",
    [
        ("/ui?project=5", 200),
        ("/ui?project=2", 200),  # a project with nothing yet (the page once failed with 500)
        ("/projects/5/monitor", 200),
        ("/ui?project=abc", 400),
        ("/ui?project=-3", 400),
        ("/queue?project=abc", 400),
        ("/queue?project=1&limit=0", 400),
        ("/projects/1/audit?limit=0", 400),
        ("/projects/1/audit?kind=nope", 400),
        ("/versions?project=abc", 200),
    ],
)
def test_odd_query_values_on_get_routes(client, seeded, path, status):
    seeded.store.set_meta(2, label_config=LABEL_CONFIG)
    response = send(client, seeded, "GET", path)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    if status == 400:
        assert response.is_json and response.json["error"]


@pytest.mark.parametrize("action", [None, [], {"a": 1}, "", "A" * 101])
def test_actions_of_the_wrong_type_are_400(client, seeded, action):
    refused(client, seeded, "POST", "/webhook", 400, json={"action": action, "project": {"id": 1}})


def test_unknown_actions_are_ignored_without_a_job(client, seeded):
    event = annotation_event(60, 60, "some text", "negative")
    ignored(client, seeded, {**event, "action": "FOO"})
    ignored(client, seeded, {**event, "action": "annotation_created"})


@pytest.mark.parametrize("action", sorted(HANDLED))
def test_webhooks_without_a_payload_are_ignored(client, seeded, action):
    """send_payload=False: LS sends only the action; answering 4xx would only count failures in LS."""
    answer = ignored(client, seeded, {"action": action}).json
    assert answer["action"] == action and "send_payload" in answer["reason"]


@pytest.mark.parametrize(
    "annotation",
    [{"id": 70, "task": {"id": 70}}, {"id": 70, "task": [70]}, {"id": 70, "task": {}}],
)
def test_annotation_task_references_must_be_ids(client, seeded, annotation):
    event = annotation_event(70, 70, "text", "positive")
    refused(client, seeded, "POST", "/webhook", 400, json={**event, "annotation": annotation})


@pytest.mark.parametrize("task_id", [{"id": 1}, [1], {}])
def test_task_ids_must_be_scalars(client, seeded, task_id):
    for action in ("ANNOTATION_CREATED", "TASKS_CREATED", "TASKS_DELETED"):
        event = annotation_event(71, 71, "text", "positive", action=action)
        refused(client, seeded, "POST", "/webhook", 400, json={**event, "task": {"id": task_id, "data": {"text": "x"}}})


@pytest.mark.parametrize(
    "name,value",
    [
        ("strategy", []),
        ("strategy", {"a": 1}),
        ("gate_metric", ["accuracy"]),
        ("batch_size", -1),
        ("gate_margin", "0.1"),
        ("uncertainty_sampling", 1),
        ("nope", 1),
    ],
)
def test_bad_settings_are_400_and_never_poison_a_project(client, seeded, name, value):
    """An unhashable value once broke the setting check: the admin API answered 500, and the same value
    in /setup's extra_params made every later webhook of the project a 500."""
    refused(client, seeded, "PUT", SETTINGS, 400, json={name: value})
    setup = client.post("/setup", json={"project": 1, "schema": LABEL_CONFIG, "extra_params": {name: value, "batch_size": 7}})
    assert setup.status_code == 200
    assert client.get(SETTINGS).json["settings"]["batch_size"] == 7  # the bad value is dropped, the good one kept
    assert client.post("/webhook", json=annotation_event(85, 85, "text", "positive")).status_code == 200


def test_extra_fields_and_long_ignored_strings_are_accepted(client, seeded):
    event = annotation_event(80, 80, "crew was lovely", "positive")
    event["project"] |= {"title": "t" * 1_000_000, "task_data_password": "p" * 10_000, "unknown": {"deep": [1, 2, {"x": None}]}}
    event["annotation"] |= {"lead_time": 1.5, "draft_id": None, "extra": "e" * 100_000}
    event["task"] |= {"meta": {"k": "v" * 100_000}, "predictions": []}
    event["surprise"] = list(range(1000))
    response = client.post("/webhook", json=event)
    assert response.status_code == 200 and response.json["changed"] == 1
    stored = {t.task: t for t in labeled(seeded.store, 1)}[80]
    assert stored.labels == {"sentiment": ["positive"]} and stored.data == {"text": "crew was lovely"}


def test_a_10_mb_text_inside_the_limit_is_stored_cut_to_max_text_chars(client, seeded):
    response = client.post("/webhook", json=annotation_event(90, 90, "y" * 10_000_000, "neutral"))
    assert response.status_code == 200 and response.json["changed"] == 1
    stored = {t.task: t for t in labeled(seeded.store, 1)}[90]
    assert stored.data["text"] == "y" * seeded.settings.max_text_chars


def test_odd_annotators_each_get_a_rule_and_nothing_is_lost(client, seeded):
    """No completed_by: a voter of its own; an id as 7 and as "7": one annotator, whose later
    annotation is their vote; a deleted user's id: still an id; a thousand annotators on one task."""
    events = [
        annotation_event(200, 120, "t", "positive", author=None, updated_at="2026-01-01T00:00:01Z"),
        annotation_event(201, 120, "t", "positive", author=None, updated_at="2026-01-01T00:00:02Z"),
        annotation_event(202, 120, "t", "negative", author=7, updated_at="2026-01-01T00:00:03Z"),
        annotation_event(203, 120, "t", "positive", author="7", updated_at="2026-01-01T00:00:04Z"),
        annotation_event(204, 120, "t", "negative", author={"id": 99999, "email": "gone@example.com"}, updated_at="2026-01-01T00:00:05Z"),
    ]
    for event in events:
        assert client.post("/webhook", json=event).status_code == 200
    (task,) = [t for t in seeded.store.task_votes(1) if t.task == 120]
    assert [v.author for v in task.votes] == [None, None, "7", "7", "99999"]  # every annotation kept; no email stored
    assert {t.task: t for t in labeled(seeded.store, 1)}[120].labels == {"sentiment": ["positive"]}  # 3 votes to 1
    crowd = [annotation_event(1000 + i, 121, "t", "neutral" if i % 3 else "negative", author=f"u{i}") for i in range(1000)]
    bulk = {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [e["annotation"] for e in crowd],
        "task": [e["task"] for e in crowd],
        "project": crowd[0]["project"],
    }
    response = client.post("/webhook", json=bulk)
    assert response.status_code == 200 and response.json["changed"] == 1000
    assert {t.task: t for t in labeled(seeded.store, 1)}[121].labels == {"sentiment": ["neutral"]}
    agreement = client.get("/projects/1/agreement")
    assert agreement.status_code == 200 and agreement.json["controls"]["sentiment"]["annotators"] >= 1000


@pytest.mark.parametrize("kind", ["empty result", "skipped with a result"])
def test_empty_and_skipped_annotations_are_not_labels(client, seeded, kind):
    """(A skip without a result: tests/web/test_api.py.)"""
    event = annotation_event(95, 95, "text", "positive")
    if kind == "empty result":
        event["annotation"]["result"] = []
    else:
        event["annotation"]["was_cancelled"] = True
    seq = int(seeded.redis.get(keys.change_seq(1)) or 0)
    assert client.post("/webhook", json=event).status_code == 200
    assert 95 not in {t.task for t in labeled(seeded.store, 1)}
    assert int(seeded.redis.get(keys.change_seq(1)) or 0) == seq  # no label change counted towards a retrain


def test_duplicates_and_replays_are_idempotent_with_at_most_one_extra_retrain(client, seeded):
    seeded.store.set_meta(1, settings={"retrain_threshold": 1})
    first = annotation_event(100, 100, "late again", "negative", updated_at="2026-01-01T00:00:00Z")
    before = jobs(seeded.redis)
    assert client.post("/webhook", json=first).json["changed"] == 1
    for _ in range(3):  # LS repeats and replays: nothing changes
        assert client.post("/webhook", json=first).json["changed"] == 0
    update = annotation_event(100, 100, "late again", "neutral", action="ANNOTATION_UPDATED", updated_at="2026-01-02T00:00:00Z")
    assert client.post("/webhook", json=update).json["changed"] == 1
    assert client.post("/webhook", json=update).json["changed"] == 0
    assert client.post("/webhook", json=first).json["changed"] == 0  # the older version never wins
    assert {t.task: t.labels for t in labeled(seeded.store, 1)}[100] == {"sentiment": ["neutral"]}
    assert len(jobs(seeded.redis) - before) <= 2  # one for the label, at most one more for its change


def test_predict_with_no_tasks_the_maximum_and_one_more(client, seeded):
    body = VALID[("POST", "/predict")]
    limit = seeded.settings.max_tasks_per_request
    tasks = [{"id": i, "data": {"text": f"task {i}"}} for i in range(limit)]
    refused(client, seeded, "POST", "/predict", 413, json={**body, "tasks": tasks + [{"id": 0}]})
    assert client.post("/predict", json={**body, "tasks": []}).json == {"results": []}
    response = client.post("/predict", json={**body, "tasks": tasks})
    assert response.status_code == 200 and len(response.json["results"]) == limit


def test_empty_whitespace_emoji_and_surrogate_texts_train_without_error(client, runtime, tweets):
    odd = ["", "   ", "\n\t", "😀🙃🚀", "ありがとうございました", "\ud800 lone surrogate", "!!!", "x" * 30_000]
    runtime.store.set_meta(1, settings={"retrain_threshold": 10_000})  # one training: START_TRAINING's
    for i in range(80):
        text = odd[i] if i < len(odd) else tweets.texts[i]
        label = tweets.labels[i]
        assert client.post("/webhook", json=annotation_event(i + 1, i + 1, text, label)).status_code == 200
    assert client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}).status_code == 200
    done = {"promoted", "rejected", "superseded"}
    history = wait_for(lambda: [r for r in runtime.registry.history(1) if r.get("decision") in done], timeout=60)
    assert history[-1]["examples"] > 0
    from rq.registry import FailedJobRegistry

    from backend.jobs.trigger import retrain_queue

    assert FailedJobRegistry(queue=retrain_queue(runtime.settings, runtime.redis)).get_job_ids() == []
    results = client.post(
        "/predict", json={**VALID[("POST", "/predict")], "tasks": [{"id": i, "data": {"text": t}} for i, t in enumerate(odd)]}
    ).json["results"]
    assert results[:3] == [[], [], []]  # no text, no prediction
    assert all(isinstance(r["result"], list) and isinstance(r["model_version"], str) for r in results[3:])


# -- against a real gunicorn -------------------------------------------------------------------


def raw_request(url: str, head: bytes, body_parts: list[bytes], timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """Send `head` and then `body_parts` from a thread (errors ignored: the server may close first)
    while reading the answer; the body is never completed, so an answer proves the server did not wait for it."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)

    def sender() -> None:
        try:
            sock.sendall(head)
            for part in body_parts:
                sock.sendall(part)
        except OSError:
            pass

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head_raw, _, rest = data.partition(b"\r\n\r\n")
        lines = head_raw.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return int(lines[0].split()[1]), headers, rest
    finally:
        sock.close()
        thread.join(timeout=5)


LIMIT = 8_000_000
AUTH = basic_header("ls", "pässwörd")


def web_with_auth(services, monkeypatch, user: str, password: str, **env: str) -> tuple[str, Any]:
    """`services.web()` for a gunicorn with Basic auth on (its health check sends the credentials)."""
    import functools

    import lab.processes

    header = {"Authorization": basic_header(user, password)}
    monkeypatch.setattr(lab.processes, "healthy", functools.partial(lab.processes.healthy, headers=header))
    return services.web(BASIC_AUTH_USER=user, BASIC_AUTH_PASS=password, **env)


def post_head(path: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\nContent-Type: application/json\r\n{extra}\r\n").encode()


@pytest.mark.slow
def test_transport_rows_against_gunicorn(services, monkeypatch):
    """Oversized headers and bodies (Content-Length and chunked), odd credentials on the wire and a
    10k bulk webhook, against gunicorn with a real Redis; its workers survive all of it."""
    url, web = web_with_auth(services, monkeypatch, "ls", "pässwörd", MAX_REQUEST_BYTES=str(LIMIT))
    workers = set(web.children())
    store = redis_client.Redis.from_url(services.redis_url)

    for header in ("", "Basic " + "A" * 100_000):
        response = requests.get(f"{url}/health", headers={"Authorization": header} if header else {}, timeout=10)
        assert response.status_code in ({401} if not header else {400, 431}), (header[:20], response.status_code)
    for value in (
        b"Basic \xc3\xa9",
        b"Basic " + __import__("base64").b64encode("ls:päss".encode()),
        b"Basic !!!",
        AUTH.replace("Basic", "Bearer").encode(),
        b"Basic " + "ls:pässwörd".encode("latin-1"),
    ):
        status, headers, body = raw_request(url, b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: " + value + b"\r\n\r\n", [])
        assert status == 401 and json.loads(body)["error"], value

    ten_mb = [b"x" * 1_000_000] * 10
    for path in ("/predict", "/webhook", "/setup", "/projects/1/rollback"):
        status, headers, body = raw_request(url, post_head(path, f"Content-Length: {10 * 1_000_000}\r\n"), ten_mb[:2])
        assert status == 413 and json.loads(body)["error"], (path, status, body[:200])
        chunks = [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in ten_mb]  # no terminating chunk is ever sent
        status, headers, body = raw_request(url, post_head(path, "Transfer-Encoding: chunked\r\n"), chunks)
        assert status == 413 and json.loads(body)["error"], (path, status, body[:200])
    assert store.keys("rq:job:*") == [] and store.keys("lsb:*") == []

    events = [annotation_event(i + 1, i + 1, f"bulk text {i}", ("positive", "negative", "neutral")[i % 3]) for i in range(10_000)]
    bulk = {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [e["annotation"] for e in events],
        "task": [e["task"] for e in events],
        "project": events[0]["project"],
    }
    assert len(json.dumps(bulk)) < LIMIT
    response = requests.post(f"{url}/webhook", json=bulk, headers={"Authorization": AUTH}, timeout=120)
    assert response.status_code == 200 and response.json()["changed"] == 10_000
    assert len(store.keys("rq:job:*")) == 1  # one retrain for the whole bulk

    assert requests.get(f"{url}/health", headers={"Authorization": AUTH}, timeout=10).status_code == 200
    assert set(web.children()) == workers  # no worker died or was replaced
