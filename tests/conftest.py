"""Shared fixtures: settings in a temp dir, an app on fakeredis, a real redis-server, tweets."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import fakeredis
import pytest

from backend.app import create_app
from backend.config import Settings
from backend.datasets import LabeledTexts, load_tweets
from backend.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
LABEL_CONFIG = (ROOT / "label_config.xml").read_text()
REQUIRE_SERVICES = os.environ.get("REQUIRE_REAL_SERVICES") == "1"


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until `condition()` is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def annotation_event(
    ann_id: int,
    task_id: int,
    text: str,
    label: str | list[str] | None,
    *,
    action: str = "ANNOTATION_CREATED",
    project: int = 1,
    updated_at: str = "2026-01-01T00:00:00Z",
    from_name: str = "sentiment",
    config: str = LABEL_CONFIG,
    cancelled: bool = False,
) -> dict[str, Any]:
    """An annotation webhook as LS 1.23.2 sends it (trimmed to the fields that matter)."""
    choices = label if isinstance(label, list) else ([label] if label else [])
    result = [] if cancelled or not choices else [
        {"from_name": from_name, "to_name": "text", "type": "choices", "value": {"choices": choices}}
    ]
    return {
        "action": action,
        "annotation": {
            "id": ann_id,
            "task": task_id,
            "result": result,
            "was_cancelled": cancelled,
            "completed_by": 1,
            "created_at": updated_at,
            "updated_at": updated_at,
        },
        "task": {"id": task_id, "data": {"text": text}, "project": project},
        "project": {"id": project, "label_config": config, "title": "t"},
    }


@pytest.fixture(scope="session")
def tweets() -> LabeledTexts:
    """The tweets corpus in a fixed random order (it is sorted by source in the file)."""
    data = load_tweets()
    order = list(range(len(data)))
    random.Random(0).shuffle(order)
    return LabeledTexts([data.texts[i] for i in order], [data.labels[i] for i in order])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {}, model_dir=tmp_path / "models", retrain_min_interval=0.0, swap_poll_interval=0.05, log_level="WARNING"
    )


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    runtime = Runtime.build(settings, redis=fakeredis.FakeRedis())
    yield runtime
    runtime.cache.stop()


@pytest.fixture
def app(runtime: Runtime):
    return create_app(runtime=runtime)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A private redis-server on a free loopback port (AOF on, no eviction), stopped at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        if REQUIRE_SERVICES:
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    directory = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory), "--save", "",
         "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    wait_for(lambda: _pings(redis.Redis.from_url(url)), timeout=10)
    yield url
    process.terminate()
    process.wait(timeout=10)


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


class Process:
    """A subprocess in its own process group, with its log, killed at teardown."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log = log
        self.handle = open(log, "ab")
        self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self.handle, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill_group(self) -> None:
        import signal

        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill_group()
        self.handle.close()


class Services:
    """Real processes of a deployment on loopback: RQ workers and gunicorn against one Redis."""

    def __init__(self, redis_url: str, tmp_path: Path):
        self.redis_url = redis_url
        self.model_dir = tmp_path / "models"
        self.tmp_path = tmp_path
        self.processes: list[Process] = []
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "MODEL_DIR": str(self.model_dir),
            "RETRAIN_MIN_INTERVAL": "0",
            "LOG_LEVEL": "INFO",
            "SWAP_POLL_INTERVAL": "0.1",
        }
        for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "CRASH_AT", "SLEEP_AT"):
            self.env.pop(name, None)

    def worker(self, **env: str) -> Process:
        import sys

        process = Process([sys.executable, "-m", "backend", "worker"], {**self.env, **env},
                          self.tmp_path / f"worker-{len(self.processes)}.log")
        self.processes.append(process)
        return process

    def web(self, workers: int = 2, **env: str) -> tuple[str, Process]:
        import sys

        port = free_port()
        args = [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--threads", "4", "--bind",
                f"127.0.0.1:{port}", "--timeout", "60", "backend.app:create_app()"]
        process = Process(args, {**self.env, **env}, self.tmp_path / f"web-{len(self.processes)}.log")
        self.processes.append(process)
        url = f"http://127.0.0.1:{port}"
        import requests

        def up() -> bool:
            try:
                return requests.get(f"{url}/health", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, timeout=30, interval=0.2)
        return url, process

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture
def services(redis_server: str, tmp_path: Path):
    import redis

    redis.Redis.from_url(redis_server).flushall()
    deployment = Services(redis_server, tmp_path)
    yield deployment
    deployment.stop()
