"""A real Label Studio (its own venv's `label-studio`) on loopback, started the way the end-to-end tests
and the benchmarks need it: SQLite in `data_dir` (a RAM disk, or a real disk to measure LS's default),
legacy API tokens on, local ML backends allowed, no Sentry. Shared by `tests/e2e` and `bench`."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import requests

from .processes import Process, free_port, wait_for

VERSION = "1.23.2"


def scratch_dir(prefix: str, ram: bool = True) -> str:
    """A new directory, on /dev/shm when `ram` and it is writable."""
    base = "/dev/shm" if ram and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix=prefix, dir=base)


def up(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        return requests.get(url, headers=headers, timeout=2).status_code == 200
    except requests.RequestException:
        return False


class LabelStudio:
    """A running Label Studio: its URL, the admin's API token, the process and its data directory."""

    def __init__(self, binary: str, data_dir: str, **env: str):
        self.data_dir = data_dir
        self.token = secrets.token_hex(20)
        self.email, self.password = "admin@example.com", secrets.token_urlsafe(12)  # the admin's login (the editor tests sign in)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        environment = {
            **os.environ,
            "LABEL_STUDIO_BASE_DATA_DIR": data_dir,
            "LABEL_STUDIO_USERNAME": self.email,
            "LABEL_STUDIO_PASSWORD": self.password,
            "LABEL_STUDIO_USER_TOKEN": self.token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "ML_BLOCK_LOCAL_IP": "false",
            "SSRF_PROTECTION_ENABLED": "false",
            "LABEL_STUDIO_HOST": self.url,
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            **env,
        }
        self.binary, self.environment = binary, environment
        args = [binary, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port), "--enable-legacy-api-token"]
        self.process = Process(args + ["--log-level", "WARNING"], environment, Path(data_dir) / "label-studio.log")
        wait_for(lambda: self.process.popen.poll() is not None or up(f"{self.url}/health"), timeout=300, interval=1)
        if self.process.popen.poll() is not None:
            raise RuntimeError("Label Studio exited:\n" + self.process.log.read_text()[-3000:])

    def orm(self, code: str) -> str:
        """Run Python `code` with LS's Django set up on this instance's database (what an admin does
        in `label-studio shell`, for what LS's API does not offer); its output."""
        python = Path(self.binary).with_name("python")
        setup = (
            "import os, sys, label_studio\n"
            "sys.path.insert(0, os.path.dirname(label_studio.__file__))\n"
            "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'core.settings.label_studio')\n"
            "import django\n"
            "django.setup()\n"
        )
        done = subprocess.run(
            [str(python), "-W", "ignore", "-c", setup + code], env=self.environment, capture_output=True, text=True, timeout=300
        )
        if done.returncode:
            raise RuntimeError(f"Label Studio's ORM: {done.stderr[-2000:]}")
        return done.stdout

    def client(self) -> Any:
        from label_studio_sdk import LabelStudio as Client

        return Client(base_url=self.url, api_key=self.token, timeout=60)

    def signup(self, email: str) -> str:
        """A new user of the organization (LS's signup form, as a person signs up), and their API token."""
        session = requests.Session()
        session.get(f"{self.url}/user/signup/", timeout=60)
        form = {"email": email, "password": secrets.token_urlsafe(12), "csrfmiddlewaretoken": session.cookies.get("csrftoken")}
        answer = session.post(f"{self.url}/user/signup/", data=form, headers={"Referer": f"{self.url}/user/signup/"}, timeout=60)
        answer.raise_for_status()
        return session.get(f"{self.url}/api/current-user/token", timeout=60).json()["token"]

    def stop(self, remove: bool = True) -> None:
        self.process.stop()
        if remove:
            shutil.rmtree(self.data_dir, ignore_errors=True)
