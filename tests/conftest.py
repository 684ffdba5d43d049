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
