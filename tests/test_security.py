"""Security rules: no secret reaches any log at any level, no pickle anywhere, and task data is text,
never a URL to fetch. (Body and header size limits: tests/test_hostile.py, against gunicorn.)
"""

from __future__ import annotations

import ast
import base64
import json
import threading
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import requests

from backend.state import keys
from backend.state.registry import Registry
from backend.web.auth import basic_header
from tests.conftest import LABEL_CONFIG, ROOT, annotation_event, wait_for
from tests.test_hostile import web_with_auth
from tests.web.test_api import train

MODULES = sorted((ROOT / "backend").rglob("*.py"))


class Recorder:
    """A loopback HTTP server that records every request: a stand-in Label Studio, or a trap for
    URLs that must never be fetched. `/redirect` answers 302 to `/after`; everything else 404."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                recorder.requests.append((self.command, self.path, dict(self.headers)))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                redirect = self.path.startswith("/redirect")
                self.send_response(302 if redirect else 404)
                if redirect:
                    self.send_header("Location", "/after")
                body = b'{"detail": "Not found."}'
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder():
    server = Recorder()
    yield server
    server.stop()


SECRETS = {
    "BASIC_AUTH_PASS": "basic-pass-6f1d0c",
    "LABEL_STUDIO_API_KEY": "ls-api-key-93b7e2",
    "access_token": "setup-token-c4a85f",
    "task_data_password": "task-data-pass-2e9d71",
}
USER = "ls-admin"


def forms(secret: str) -> set[str]:
    """The ways a secret could show up in a log line: as is, URL-quoted, in a Basic header, base64."""
    return {
        secret,
        urllib.parse.quote(secret),
        basic_header(USER, secret).split()[1],
        base64.b64encode(secret.encode()).decode().rstrip("="),
    }


@pytest.mark.slow
def test_secrets_never_reach_any_log_at_debug_level(services, monkeypatch, recorder, tweets):
    ls = {
        "LABEL_STUDIO_URL": recorder.url,
        "LABEL_STUDIO_API_KEY": SECRETS["LABEL_STUDIO_API_KEY"],
        "LOG_LEVEL": "DEBUG",
        "BASIC_AUTH_USER": USER,
        "BASIC_AUTH_PASS": SECRETS["BASIC_AUTH_PASS"],
    }
    services.worker(**ls)
    url, _ = web_with_auth(
        services,
        monkeypatch,
        USER,
        SECRETS["BASIC_AUTH_PASS"],
        GUNICORN_CMD_ARGS="--log-level debug",
        **{k: v for k, v in ls.items() if not k.startswith("BASIC_AUTH")},
    )
    http = requests.Session()
    http.headers["Authorization"] = basic_header(USER, SECRETS["BASIC_AUTH_PASS"])
    token, password = SECRETS["access_token"], SECRETS["task_data_password"]

    def post(path: str, body: Any, status: int = 200) -> None:
        response = http.post(f"{url}{path}", json=body, timeout=30)
        assert response.status_code == status, (path, response.text)
        assert token not in response.text and password not in response.text

    setup = {"project": "1.1700000000", "schema": LABEL_CONFIG, "hostname": recorder.url, "access_token": token}
    post("/setup", setup)
    post("/setup", {**setup, "extra_params": "{" + token}, 400)
    post("/setup", {**setup, "schema": "<View><" + token}, 400)
    post("/setup", {**setup, "project": token}, 400)
    params = {"login": "annotator", "password": password, "context": None}
    task = {"id": 1000, "data": {"text": "the crew was lovely"}}
    post("/predict", {"tasks": [task], "project": 1, "label_config": LABEL_CONFIG, "params": params, "task_data_password": password})
    post("/predict", {"tasks": [task], "project": 1, "label_config": "<" + password, "params": params}, 400)
    for i in range(60):
        event = annotation_event(i + 1, i + 1, tweets.texts[i], tweets.labels[i])
        event["project"] |= {"task_data_login": "annotator", "task_data_password": password, "token": token}
        post("/webhook", event)
    bad = annotation_event(999, 999, "x", "positive")
    bad["project"]["task_data_password"] = password
    bad["annotation"]["id"] = password
    post("/webhook", bad, 400)
    post("/webhook", {"action": "START_TRAINING", "project": {"id": 1, "task_data_password": password}})
    wrong = requests.get(f"{url}/health", headers={"Authorization": basic_header(USER, "x" + SECRETS["BASIC_AUTH_PASS"])}, timeout=10)
    assert wrong.status_code == 401

    wait_for(lambda: Registry(services.model_dir).pointer(1), timeout=90)
    key = SECRETS["LABEL_STUDIO_API_KEY"]
    wait_for(lambda: any(key in " ".join(h.values()) for _, _, h in recorder.requests), timeout=30)  # the worker used the key
    services.stop()

    logs = {p.name: p.read_text(errors="replace") for p in services.tmp_path.glob("*.log")}
    web = "".join(text for name, text in logs.items() if name.startswith("web"))
    worker = "".join(text for name, text in logs.items() if name.startswith("worker"))
    assert " DEBUG backend.web.app: POST /predict 200" in web and "[DEBUG]" in web  # the app's and gunicorn's debug lines
    assert "dequeueing jobs on queues" in worker and "performing job retrain-1-" in worker  # RQ's debug lines
    for name, secret in SECRETS.items():
        for form in forms(secret):
            leaked = [log for log, text in logs.items() if form in text]
            assert not leaked, f"{name} ({form!r}) is in {leaked}"


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_no_pickle_in_the_backend():
    unsafe = {"pickle", "cPickle", "_pickle", "joblib", "dill", "cloudpickle", "shelve", "marshal"}
    for path in MODULES:
        assert not imported_modules(path) & unsafe, path.name
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.keyword)
                and node.arg == "allow_pickle"
                and not (isinstance(node.value, ast.Constant) and node.value.value is False)
            ):
                pytest.fail(f"{path.name}: allow_pickle other than False")


def test_every_rq_object_uses_the_json_serializer():
    """Queues, workers and job look-ups built from RQ's classes (or our subclasses) all name the
    JSON serializer; RQ's default is pickle."""
    seen = 0
    for path in MODULES:
        tree = ast.parse(path.read_text())
        rq_names = {
            a.asname or a.name
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("rq")
            for a in n.names
        } - {"JSONSerializer", "Retry", "JobStatus", "NoSuchJobError", "TimerDeathPenalty"}
        rq_names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and {getattr(b, "id", "") for b in n.bases} & rq_names}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            owner = func.value if isinstance(func, ast.Attribute) and func.attr in {"fetch", "fetch_many"} else func
            keywords = {k.arg: k.value for k in node.keywords}
            if isinstance(owner, ast.Name) and owner.id in rq_names and owner.id[0].isupper() and "queue" not in keywords:
                seen += 1  # (a registry built from a queue takes that queue's serializer)
                serializer = keywords.get("serializer")
                assert isinstance(serializer, ast.Name) and serializer.id == "JSONSerializer", f"{path.name}:{node.lineno}"
    assert seen >= 5


def test_a_queued_train_job_is_stored_as_json(settings):
    from backend.jobs.trigger import request_retrain

    redis = fakeredis.FakeRedis()
    job_id = request_retrain(settings, redis, 7, "a reason").job_id
    raw = redis.hget(f"rq:job:{job_id}", "data")
    assert json.loads(zlib.decompress(raw)) == [keys.RETRAIN_JOB, None, [7, "a reason", False], {}]


def test_no_module_fetches_urls():
    """Task data is text: no HTTP client in the backend except the Label Studio SDK, which only
    labelstudio.py (LS's API at the configured or /setup host) and labelconfig.py (config parsing) use."""
    clients = {"requests", "urllib", "urllib3", "httpx", "aiohttp", "http", "pycurl"}
    for path in MODULES:
        assert not imported_modules(path) & clients, path.name
        if "label_studio_sdk" in path.read_text():
            assert path.name in {"labelstudio.py", "labelconfig.py"}, path.name
        assert "get_local_path" not in path.read_text() and "urlopen" not in path.read_text(), path.name


def test_task_data_urls_are_never_fetched(client, runtime, recorder, tweets):
    """Texts that are URLs (loopback ones: the recorder) are classified as strings, in /predict, in
    the task pool and in training; the recorder sees no request."""
    host, port = recorder.url.removeprefix("http://").split(":")
    urls = [
        f"{recorder.url}/steal?x=1",
        f"http://localhost:{port}/latest/meta-data/",
        f"{recorder.url}/redirect",
        "file:///etc/passwd",
        f"http://[::1]:{port}/",
        f"{recorder.url}/image.png",
    ]
    train(client, tweets)
    before = len(runtime.registry.history(1))
    tasks = [{"id": 5000 + i, "data": {"text": u, "image": u, "audio": u}} for i, u in enumerate(urls)]
    results = client.post("/predict", json={"tasks": tasks, "project": 1, "label_config": LABEL_CONFIG}).json["results"]
    assert all(r and r["result"] for r in results)  # the URL was read as a string and classified
    client.post("/webhook", json={"action": "TASKS_CREATED", "tasks": tasks, "project": {"id": 1}})
    for i, u in enumerate(urls):
        assert client.post("/webhook", json=annotation_event(6000 + i, 6000 + i, u, "neutral")).status_code == 200
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    wait_for(lambda: len(runtime.registry.history(1)) > before, timeout=60)
    assert recorder.requests == []
