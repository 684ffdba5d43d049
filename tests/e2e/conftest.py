"""A real Label Studio (own venv, SQLite on a RAM disk, loopback) and our backend as processes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from backend.web.auth import basic_header
from lab.label_studio import LabelStudio, scratch_dir, up
from tests.conftest import REQUIRE_SERVICES, ROOT, Process, free_port, wait_for

LS_BIN = os.environ.get("LABEL_STUDIO_BIN", "")


@pytest.fixture(scope="session")
def label_studio() -> Iterator[LabelStudio]:
    if not LS_BIN or not Path(LS_BIN).exists():
        if REQUIRE_SERVICES:
            pytest.fail("LABEL_STUDIO_BIN does not point at a label-studio executable")
        pytest.skip("set LABEL_STUDIO_BIN to a label-studio 1.23.2 executable to run end-to-end tests")
    try:
        process = LabelStudio(LS_BIN, scratch_dir("ls-data-"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield process
    finally:
        process.stop()


class BackendProcess:
    def __init__(self, url: str, process: Process, model_dir: str, headers: dict[str, str] | None = None):
        self.url, self.process, self.model_dir = url, process, model_dir
        self.headers = headers or {}  # the Authorization header when the backend runs with Basic auth

    def version(self, project: int) -> str:
        return requests.post(f"{self.url}/setup", json={"project": project}, headers=self.headers, timeout=5).json()["model_version"]

    def settled_version(self, project: int, changes: int, timeout: float = 300) -> str:
        """The current version once a train job has judged every one of `changes` label changes."""

        def settled() -> bool:
            models = requests.get(f"{self.url}/projects/{project}/models", headers=self.headers, timeout=5).json()
            trained = max((r.get("watermark", 0) for r in models["history"]), default=0)
            return models["current"] is not None and trained >= changes

        wait_for(settled, timeout=timeout, interval=0.3)
        return self.version(project)


def serves_by_uncertainty(ls, project: int, version: str, timeout: float = 120) -> None:
    """Wait until LS's project has `version` as its model version and samples by uncertainty."""

    def pushed() -> bool:
        p = ls.projects.get(project)
        return p.model_version == version and p.sampling == "Uncertainty sampling"

    wait_for(pushed, timeout=timeout, interval=1)


def _serve(tmp_path: Path, basic_auth: tuple[str, str] | None = None, **extra: str) -> Iterator[BackendProcess]:
    """`python -m backend serve` in embedded mode, as a new user runs it (with BASIC_AUTH_USER/PASS
    if given, and any other `extra` settings)."""
    port = free_port()
    model_dir = str(tmp_path / "models")
    env = {**os.environ, "MODEL_DIR": model_dir, "RETRAIN_THRESHOLD": "5", "RETRAIN_MIN_INTERVAL": "0", "LOG_LEVEL": "INFO", **extra}
    env.pop("REDIS_URL", None)
    headers: dict[str, str] = {}
    if basic_auth:
        env["BASIC_AUTH_USER"], env["BASIC_AUTH_PASS"] = basic_auth
        headers["Authorization"] = basic_header(*basic_auth)
    process = Process([sys.executable, "-m", "backend", "serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path / "backend.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.popen.poll() is not None or up(f"{url}/health", headers), timeout=60, interval=0.2)
        assert process.popen.poll() is None, process.log.read_text()
        yield BackendProcess(url, process, model_dir, headers)
    finally:
        process.stop()


@pytest.fixture
def backend_server(tmp_path: Path) -> Iterator[BackendProcess]:
    """`python -m backend serve` in embedded mode, as a new user runs it."""
    yield from _serve(tmp_path)


BASIC_AUTH = ("jürgen", "pässwörd")  # in latin-1's range: LS sends them latin-1, curl UTF-8


@pytest.fixture
def backend_server_with_basic_auth(tmp_path: Path) -> Iterator[BackendProcess]:
    """The same with BASIC_AUTH_USER/BASIC_AUTH_PASS = `BASIC_AUTH`; `.headers` carries the UTF-8 header."""
    yield from _serve(tmp_path, BASIC_AUTH)


@pytest.fixture
def backend_server_with_readme_family(tmp_path: Path) -> Iterator[BackendProcess]:
    """The same with the README's custom model family (MODEL_FAMILIES) on its PYTHONPATH."""
    from tests.families.test_readme_family import FAMILY, readme_family

    path = readme_family(tmp_path / "family")
    yield from _serve(tmp_path, MODEL_FAMILIES=FAMILY, PYTHONPATH=f"{path}:{ROOT}")
