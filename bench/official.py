"""Ours against the official example, side by side: `/predict` throughput, p99 latency and server
CPU per request for 1-task and 100-task requests, in our embedded default and production shapes.

The official `label-studio-ml-backend` `sklearn_text_classifier` example runs from a checkout given
with `--official PATH` (nothing of it is in this repository), in a virtual environment of its own
next to the checkout (`<PATH>.venv`), as its Dockerfile runs it: gunicorn `--preload`, 1 worker,
8 threads. Its requirements pin `label-studio-sdk` to a Git URL and `pillow` to a release that
conflicts with that SDK: the SDK comes from PyPI and the pin is dropped. Its `fit()` reads the
labeled tasks from LS's API, so a stand-in LS (`lab.standin_ls`) serves it the same 2,000 tweets
ours is trained on through webhooks. Tweets it would take for a file to download (a URL or a path
as the whole text) are left out of training and load, for both sides.

The load comes from `wrk` (Debian's package) with a Lua script that rotates pre-encoded bodies: a
compiled client, so the client costs the shared cores less than the servers do. Each row runs
ours and theirs in turn, A B A B, and reports the medians. Server CPU per request is the CPU time
the server's processes (gunicorn master and workers; for ours in production the RQ worker too)
spent during the load, divided by the requests answered.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from lab.client import LABEL_CONFIG, Client, predict_body
from lab.processes import ROOT, Process, free_port, healthy, wait_for
from lab.standin_ls import StandinLabelStudio

EXAMPLE = Path("label_studio_ml/examples/sklearn_text_classifier")
TRAIN = 2000  # labeled tweets both backends train on
LOAD = 5000  # held-out tweets the requests carry
CONCURRENCY = {1: 8, 100: 4}  # connections per batch size, as the official example's users see them
WRK_BODIES = 8
PROJECT = 1
_DOWNLOADABLE = re.compile(r"^(?:/|upload|s3:|gs:|azure-blob:|[A-Za-z][A-Za-z0-9+.-]*://)")


def official_requirements(checkout: Path) -> list[str]:
    """The example's and the package's requirements, installable from PyPI: the SDK's Git URL
    becomes `label-studio-sdk`, `label-studio-ml`'s own Git URL is dropped (the checkout is
    installed), and so is the `pillow` pin."""
    lines: list[str] = []
    for path in (checkout / "requirements.txt", checkout / EXAMPLE / "requirements-base.txt", checkout / EXAMPLE / "requirements.txt"):
        if not path.exists():
            continue
        for raw in path.read_text().splitlines():
            line = raw.split("#", 1)[0].strip()
            name = re.split(r"[ <>=~!@\[;]", line, maxsplit=1)[0].lower()
            if not line or name in ("pillow", "label-studio-ml"):
                continue
            lines.append("label-studio-sdk" if name == "label-studio-sdk" else line)
    return list(dict.fromkeys(lines))


def prepare(checkout: Path) -> Path:
    """The official example's Python: a venv beside the checkout, made once per requirements."""
    if not (checkout / EXAMPLE / "model.py").exists():
        raise SystemExit(f"--official {checkout}: not a checkout of label-studio-ml-backend ({EXAMPLE}/model.py missing)")
    venv = checkout.with_name(checkout.name + ".venv")
    wanted = official_requirements(checkout)
    marker = venv / "installed.json"
    if not marker.exists() or json.loads(marker.read_text()) != wanted:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True)  # type: ignore[attr-defined]
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        for args in (wanted, ["--no-deps", str(checkout)]):
            done = subprocess.run([*pip, *args], capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"installing the official example failed:\n{done.stderr[-4000:]}")
        marker.write_text(json.dumps(wanted))
    return venv / "bin" / "python"


def downloadable(text: str) -> bool:
    """Would the official example take this text for a file to fetch (`is_preload_needed`)?"""
    stripped = text.strip()
    return bool(_DOWNLOADABLE.match(stripped)) or os.path.exists(stripped)


class Official:
    """The official example on a free port, trained through its `/webhook` on `texts` and `labels`."""

    def __init__(self, checkout: Path, texts: Sequence[str], labels: Sequence[str], workdir: Path):
        python = prepare(checkout)
        tasks = [{"id": i + 1, "data": {"text": text}} for i, text in enumerate(texts)]
        self.ls = StandinLabelStudio(tasks, project=PROJECT).__enter__()
        for i, label in enumerate(labels):
            self.ls.annotate(i + 1, [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}])
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "PYTHON"))},
            "LABEL_STUDIO_HOST": self.ls.url,
            "LABEL_STUDIO_API_KEY": "stand-in",
            "MODEL_DIR": str(workdir),
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(checkout / EXAMPLE),
        }
        args = [str(python), "-m", "gunicorn", "--preload", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "8"]
        self.process = Process([*args, "--timeout", "0", "_wsgi:app"], env, workdir / "official.log", cwd=checkout / EXAMPLE)
        self.url = f"http://127.0.0.1:{port}"
        wait_for(lambda: healthy(self.url), timeout=60, interval=0.2)
        event = {"action": "START_TRAINING", "project": {"id": PROJECT, "label_config": LABEL_CONFIG}, "annotation": {"project": PROJECT}}
        reply = Client(self.url).post("/webhook", event)
        if reply.status >= 300 or not (workdir / "model.pkl").exists():
            raise RuntimeError(f"the official example did not train ({reply.status}): see {workdir / 'official.log'}")

    def stop(self) -> None:
        self.process.stop()
        self.ls.__exit__()


@dataclass(frozen=True)
class Load:
    """One wrk run: requests per second, latency percentiles (ms), failed requests, server CPU per request (ms)."""

    rate: float
    p50: float
    p99: float
    errors: int
    cpu_ms: float


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds the processes have used so far (those still alive)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


_LUA = """
local bodies = {}
for i = 1, %(count)d do
  local f = io.open("%(dir)s/body-" .. i .. ".json", "rb")
  bodies[i] = f:read("*a")
  f:close()
end
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n %% #bodies + 1
  return wrk.format(nil, "/predict", nil, bodies[n])
end
"""


def parse_wrk(output: str) -> tuple[float, float, float, int, int]:
    """Requests/s, p50 and p99 latency (ms), requests answered, and failures (non-2xx and socket
    errors) from wrk's `--latency` report."""

    def ms(label: str) -> float:
        found = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if not found:
            raise ValueError(f"no {label} latency in wrk's output:\n{output}")
        return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]

    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    answered = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", output))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors += sum(int(n) for n in socket.groups()) if socket else 0
    return rate, ms("50%"), ms("99%"), answered, errors


def wrk_load(url: str, bodies: Sequence[bytes], connections: int, seconds: float, pids: Sequence[int]) -> Load:
    """`connections` connections send the bodies in turn for `seconds` (wrk, one thread)."""
    with tempfile.TemporaryDirectory(prefix="wrk-") as folder:
        for i, body in enumerate(bodies, 1):
            Path(folder, f"body-{i}.json").write_bytes(body)
        script = Path(folder, "predict.lua")
        script.write_text(_LUA % {"count": len(bodies), "dir": folder})
        before = cpu_seconds(pids)
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s", "-s", str(script), url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        spent = cpu_seconds(pids) - before
    rate, p50, p99, answered, errors = parse_wrk(out)
    return Load(rate, p50, p99, errors, 1000 * spent / max(answered, 1))


def check_answers(url: str, body: bytes, batch: int) -> None:
    """One request, answered with one prediction per task and a label: the load measures real work."""
    reply = Client(url).post("/predict", body)
    results = reply.json().get("results", []) if reply.status == 200 else []
    if len(results) != batch or not all(r.get("result") for r in results):
        raise RuntimeError(f"{url}/predict answered {reply.status} with {len(results)} predictions for {batch} tasks")


def bodies(texts: Sequence[str], batch: int) -> list[bytes]:
    out = []
    for k in range(WRK_BODIES):
        start = (k * batch * 7) % max(1, len(texts) - batch)
        out.append(json.dumps(predict_body(PROJECT, texts[start : start + batch], 10**6 + start)).encode())
    return out


@dataclass(frozen=True)
class Side:
    """A backend under load: its URL and the pids whose CPU counts as the server's."""

    name: str
    url: str
    pids: list[int]


def compare(ours: Side, theirs: Side, texts: Sequence[str], seconds: float, rounds: int = 2) -> dict[int, tuple[Load, Load]]:
    """Per batch size (1 and 100 tasks), the median of `rounds` A B A B loads of each side."""
    out: dict[int, tuple[Load, Load]] = {}
    for batch, connections in CONCURRENCY.items():
        encoded = bodies(texts, batch)
        for side in (ours, theirs):
            check_answers(side.url, encoded[0], batch)
            wrk_load(side.url, encoded, connections, 2, side.pids)  # warm-up: first requests, caches, threads
        runs: dict[str, list[Load]] = {ours.name: [], theirs.name: []}
        for _ in range(rounds):
            for side in (ours, theirs):
                runs[side.name].append(wrk_load(side.url, encoded, connections, seconds, side.pids))
        out[batch] = (medians(runs[ours.name]), medians(runs[theirs.name]))
    return out


def medians(loads: list[Load]) -> Load:
    """The median of each figure, and every failed request of every run."""
    rate, p50, p99, cpu = (median(getattr(load, name) for load in loads) for name in ("rate", "p50", "p99", "cpu_ms"))
    return Load(rate, p50, p99, sum(load.errors for load in loads), cpu)


def usable(texts: Sequence[str], labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """The tweets neither side would stumble on: none the official example would fetch as a file
    (it does so in training and in `/predict`, and a tweet's URL is no file)."""
    kept = [(t, label) for t, label in zip(texts, labels) if not downloadable(t)]
    return [t for t, _ in kept], [label for _, label in kept]


def describe(shape: str, batch: int, ours: Load, theirs: Load) -> tuple[str, str, bool]:
    """A table row: what, the figures, and whether ours is 3x theirs with the lower p99."""
    ratio = ours.rate / theirs.rate if theirs.rate else float("inf")
    what = f"/predict vs official, {shape}, {batch} task{'s' if batch > 1 else ''}, {CONCURRENCY[batch]} connections"
    figures = (
        f"ours {ours.rate:,.0f} req/s, p99 {ours.p99:.0f} ms, CPU {ours.cpu_ms:.1f} ms/req; official {theirs.rate:,.0f} req/s, "
        f"p99 {theirs.p99:.0f} ms, CPU {theirs.cpu_ms:.1f} ms/req; {ratio:.1f}x ({ours.errors + theirs.errors} errors)"
    )
    return what, figures, ratio >= 3 and ours.p99 < theirs.p99 and not ours.errors


def ours_embedded(workdir: Path, texts: Sequence[str], labels: Sequence[str]) -> tuple[Process, str]:
    """`python -m backend serve` as a new user runs it (no REDIS_URL), trained on the same tweets."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "LABEL_STUDIO"))}
    env.update(MODEL_DIR=str(workdir / "models"), LOG_LEVEL="WARNING", PORT=str(port), HOST="127.0.0.1")
    process = Process([sys.executable, "-m", "backend", "serve"], env, workdir / "ours-embedded.log", cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: healthy(url), timeout=60, interval=0.2)
    train_ours(url, texts, labels)
    return process, url


def train_ours(url: str, texts: Sequence[str], labels: Sequence[str]) -> None:
    from .loop import await_model, burst

    burst(url, PROJECT, texts, labels, len(texts), 4)
    if await_model(url, PROJECT, timeout=300) is None:
        raise RuntimeError(f"{url} trained no model on {len(texts)} labels within 300 s")


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        found = subprocess.run(["pgrep", "-P", str(current)], capture_output=True, text=True).stdout
        todo += [int(p) for p in found.split()]
    return out


def wrk_missing() -> str | None:
    return None if shutil.which("wrk") else "wrk is not installed (apt-get install wrk)"


def run(checkout: Path, texts: Sequence[str], labels: Sequence[str], seconds: float) -> list[tuple[str, str, bool]]:
    """Every row: embedded default and production shapes against the official example."""
    from lab.processes import Deployment

    rows: list[tuple[str, str, bool]] = []
    texts, labels = usable(texts, labels)
    train_texts, train_labels = texts[:TRAIN], labels[:TRAIN]
    load_texts = texts[TRAIN : TRAIN + LOAD]
    with tempfile.TemporaryDirectory(prefix="bench-official-") as folder:
        workdir = Path(folder)
        official = Official(checkout, train_texts, train_labels, workdir)
        try:
            theirs = Side("official", official.url, descendants(official.process.pid))
            process, url = ours_embedded(workdir, train_texts, train_labels)
            try:
                for batch, (a, b) in compare(Side("ours", url, descendants(process.pid)), theirs, load_texts, seconds).items():
                    rows.append(describe("embedded default (python -m backend serve)", batch, a, b))
            finally:
                process.stop()
            deployment = Deployment(2, LOG_LEVEL="WARNING")
            try:
                train_ours(deployment.url, train_texts, train_labels)
                pids = [*descendants(deployment.web.pid), *descendants(deployment.worker.pid)]
                for batch, (a, b) in compare(Side("ours", deployment.url, pids), theirs, load_texts, seconds).items():
                    rows.append(describe("production (2 workers, redis-server, RQ worker)", batch, a, b))
            finally:
                deployment.stop()
        finally:
            official.stop()
    return rows
