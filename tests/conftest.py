"""Shared fixtures: settings in a temp dir, an app on fakeredis, a real redis-server, tweets."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import fakeredis
import pytest

from backend import consensus
from backend.config import Settings
from backend.runtime import Runtime
from backend.web.app import create_app
from lab.client import LABEL_CONFIG, annotation_event  # noqa: F401 (tests import them from here)
from lab.datasets import LabeledTexts, load_tweets
from lab.processes import Process, Services, free_port, healthy, start_redis, wait_for  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("REQUIRE_REAL_SERVICES") == "1"


@pytest.fixture(params=["compiled", "numpy"])
def implementation(request, monkeypatch) -> str:
    """Runs a test with the compiled kernels (`bin/setup` builds them: CI requires them) and with numpy."""
    from backend.families import hashing

    if request.param == "numpy":
        monkeypatch.setattr(hashing, "compiled", None)
    elif hashing.compiled is None:
        (pytest.fail if REQUIRE_SERVICES else pytest.skip)("backend/_compiled.c is not built: run python -m backend.native")
    return request.param


@pytest.fixture(scope="session")
def tweets() -> LabeledTexts:
    """The tweets corpus in a fixed random order (it is sorted by source in the file)."""
    data = load_tweets()
    order = list(range(len(data)))
    random.Random(0).shuffle(order)
    return LabeledTexts([data.texts[i] for i in order], [data.labels[i] for i in order])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({}, model_dir=tmp_path / "models", retrain_min_interval=0.0, swap_poll_interval=0.05, log_level="WARNING")


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    runtime = Runtime.build(settings, redis=fakeredis.FakeRedis())
    yield runtime
    runtime.stop()


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
    process, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    process.terminate()
    process.wait(timeout=10)


class RedisServer:
    """A private redis-server that a test may SIGKILL and start again on the same port and `--dir`
    (what survives is what its options persisted)."""

    def __init__(self, directory: Path, *options: str):
        self.directory, self.options = directory, options
        self.process, self.url = start_redis(directory, *options)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def start(self) -> None:
        """Start it again (after `kill`) on the same port and `--dir` with the same options."""
        self.process, _ = start_redis(self.directory, *self.options, port=self.port)

    def restart(self) -> None:
        """SIGKILL (no shutdown save) and start again."""
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def private_redis(redis_server: str, tmp_path: Path):
    """Start redis-servers of the test's own (`private_redis("--appendonly", "no")`); stopped at the end."""
    started: list[RedisServer] = []

    def start(*options: str) -> RedisServer:
        directory = tmp_path / f"redis-{len(started)}"
        directory.mkdir()
        started.append(RedisServer(directory, *options))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def services(redis_server: str, tmp_path: Path):
    import redis

    redis.Redis.from_url(redis_server).flushall()
    deployment = Services(redis_server, tmp_path)
    yield deployment
    deployment.stop()


def labeled(store, project: int, method: str = "majority") -> list[consensus.LabeledTask]:
    """The training examples of a project's stored annotations under a consensus method."""
    return consensus.resolve(store.task_votes(project), method).tasks
