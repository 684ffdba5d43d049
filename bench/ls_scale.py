"""The loop against a real Label Studio at 10,000 tasks (LABEL_STUDIO_BIN), on a RAM disk and on a real
disk (LS's default): a scripted annotator labels through `/next` and submit, a task every second or
so (faster than people label tweets), first in a project
without the backend (the baseline speed), then in one whose only addition is a webhook to an
endpoint that answers at once (LS without Redis sends webhooks inside the annotator's submit: what
connecting any backend costs), then in one connected to the backend (`python -m backend serve`,
embedded, as a new user runs it) with uncertainty sampling. Printed: the annotator's median `/next`
and submit times in the three, failed annotator requests, the seconds from
each promotion to `/next` first serving a task with its prediction (read off the annotator's steps:
polling LS's project, whose API counts the project's tasks, would itself slow the submits), the
share of served tasks that carried a prediction of the current trained version, and LS's prediction rows of ours at the end."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import median

import requests

from lab.client import LABEL_CONFIG
from lab.label_studio import LabelStudio, scratch_dir, up
from lab.ls_session import Session, annotate
from lab.processes import ROOT, Process, free_port, wait_for

THINK = 1.0  # seconds the scripted annotator looks at each task (people take several)


@dataclass(frozen=True)
class Run:
    storage: str
    alone: Session
    hooked: Session
    served: Session
    lags: list[float]
    share: float
    rows: dict[str, int]
    promotions: int


def import_project(ls: LabelStudio, title: str, texts: Sequence[str], labels: Sequence[str]) -> int:
    client = ls.client()
    project = client.projects.create(title=title, label_config=LABEL_CONFIG)
    client.projects.import_tasks(id=project.id, request=[{"text": t, "ref": i} for i, t in enumerate(texts)])
    return project.id


class _Answer(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def hooked_project(ls: LabelStudio, texts: Sequence[str], labels: Sequence[str], label_of, steps: int) -> Session:
    """The annotator's speed in a project whose only addition is a webhook to an instant endpoint."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        project = import_project(ls, "webhook only", texts, labels)
        hook = {
            "project": project,
            "url": f"http://127.0.0.1:{server.server_port}/webhook",
            "send_payload": True,
            "send_for_all_actions": True,
        }
        requests.post(f"{ls.url}/api/webhooks/", headers={"Authorization": f"Token {ls.token}"}, json=hook, timeout=60).raise_for_status()
        return annotate(ls.url, ls.token, project, label_of, steps, think=THINK)
    finally:
        server.shutdown()


def backend(tmp: Path) -> tuple[str, Process]:
    port = free_port()
    env = {**os.environ, "MODEL_DIR": str(tmp / "models"), "RETRAIN_MIN_INTERVAL": "0", "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO")}
    env.pop("REDIS_URL", None)
    process = Process(
        [sys.executable, "-m", "backend", "serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp / "backend.log", ROOT
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: process.popen.poll() is not None or up(f"{url}/health"), timeout=60, interval=0.2)
    return url, process


def one_storage(binary: str, storage: str, texts: Sequence[str], labels: Sequence[str], steps: int) -> Run:
    data_dir = scratch_dir("ls-bench-", ram=storage == "tmpfs")
    ls = LabelStudio(binary, data_dir)
    token = {"Authorization": f"Token {ls.token}"}
    label_of = lambda data: labels[data["ref"]]  # noqa: E731
    try:
        alone = import_project(ls, "alone", texts, labels)
        baseline = annotate(ls.url, ls.token, alone, label_of, steps, think=THINK)
        hooked = hooked_project(ls, texts, labels, label_of, steps)
        project = import_project(ls, "with the backend", texts, labels)
        with tempfile.TemporaryDirectory() as tmp:
            url, process = backend(Path(tmp))
            try:
                ls.client().ml.create(url=url, project=project, title="active-learning", auto_update=True)
                settings = {"uncertainty_sampling": True, "retrain_threshold": 20, "cold_start_per_class": 2, "cold_start_total": 20}
                requests.put(f"{url}/projects/{project}/settings", json=settings, timeout=5).raise_for_status()

                def version() -> str:
                    return requests.get(f"{ls.url}/api/projects/{project}", headers=token, timeout=60).json()["model_version"] or ""

                wait_for(lambda: version() == "untrained", timeout=600, interval=1)
                served = annotate(ls.url, ls.token, project, label_of, steps, think=THINK)
                history = requests.get(f"{url}/projects/{project}/models", timeout=5).json()["history"]
                promoted = [r for r in history if r["decision"] == "promoted"]
                lags = served.lags(promoted)
                trained = [at for r in promoted if (at := served.first_served(r["version"])) is not None]
                share = served.share_with_prediction(min(trained), lambda v: v.startswith(f"p{project}-v")) if trained else 0.0
                time.sleep(10)  # the last publish settles
                rows = requests.get(f"{ls.url}/api/projects/{project}/model-versions/", headers=token, timeout=60).json()
            finally:
                process.stop()
        return Run(storage, baseline, hooked, served, lags, share, rows, len(promoted))
    finally:
        ls.stop()


def runs(texts: Sequence[str], labels: Sequence[str], pool: int, steps: int, storages: Sequence[str] = ("tmpfs", "disk")) -> list[Run]:
    binary = os.environ.get("LABEL_STUDIO_BIN", "")
    if not binary or not Path(binary).exists():
        return []
    return [one_storage(binary, storage, texts[:pool], labels[:pool], steps) for storage in storages]


def describe(run: Run) -> str:
    alone, hooked, served = run.alone.medians(), run.hooked.medians(), run.served.medians()
    lag = f"{median(run.lags):.1f} s (max {max(run.lags):.1f})" if run.lags else "n/a"
    failed = len(run.served.failures) + len(run.alone.failures) + len(run.hooked.failures)
    return (
        f"submit {served['submit_s'] * 1000:.0f} ms, {hooked['submit_s'] * 1000:.0f} with a webhook only "
        f"({served['submit_s'] / hooked['submit_s']:.2f}x), {alone['submit_s'] * 1000:.0f} alone "
        f"({served['submit_s'] / alone['submit_s']:.2f}x); next {served['next_s'] * 1000:.0f} / {hooked['next_s'] * 1000:.0f} / "
        f"{alone['next_s'] * 1000:.0f} ms; {failed} failed requests; {run.promotions} promotions, promotion -> LS serves it "
        f"median {lag}; {run.share:.0%} served with a current prediction; rows {run.rows}"
    )
