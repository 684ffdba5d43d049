"""The feedback loop's speed on real parts: webhook answer time under a burst, and feedback latency.

    python bench/loop.py [--sizes 1000,10000,30000] [--web-workers 2] [--rounds 5]

Starts a private redis-server, gunicorn (`--web-workers`) and one RQ worker on loopback. For each
size N it posts N labeled tweets as ANNOTATION_CREATED webhooks from 8 threads (a burst) and
reports the webhook answer time; once that is trained, it posts one more annotation and measures
the time until every gunicorn worker serves the version trained on it (feedback latency).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from backend.datasets import load_tweets  # noqa: E402
from backend.registry import Registry  # noqa: E402

CONFIG = (ROOT / "label_config.xml").read_text()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait(condition, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError


def event(i: int, text: str, label: str, project: int) -> dict:
    return {
        "action": "ANNOTATION_CREATED",
        "annotation": {"id": i, "task": i, "updated_at": f"2026-01-01T00:00:{i % 60:02d}Z", "completed_by": 1,
                       "result": [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]},
        "task": {"id": i, "data": {"text": text}},
        "project": {"id": project, "label_config": CONFIG},
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class Deployment:
    def __init__(self, web_workers: int):
        self.dir = Path(tempfile.mkdtemp(prefix="bench-loop-"))
        port = free_port()
        self.redis = subprocess.Popen([shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                       "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.dir)],
                                      stdout=subprocess.DEVNULL)
        env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{port}/0", "MODEL_DIR": str(self.dir / "models"),
               "RETRAIN_THRESHOLD": "1", "RETRAIN_MIN_INTERVAL": "0", "LOG_LEVEL": "WARNING", "SWAP_POLL_INTERVAL": "0.1"}
        self.registry = Registry(self.dir / "models")
        web_port = free_port()
        self.url = f"http://127.0.0.1:{web_port}"
        self.web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", str(web_workers), "--threads", "4", "-b",
                                     f"127.0.0.1:{web_port}", "backend.app:create_app()"], cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.worker = subprocess.Popen([sys.executable, "-m", "backend", "worker"], cwd=ROOT, env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait(lambda: self._up(), timeout=30)
        self.web_pids = {int(p) for p in subprocess.run(["pgrep", "-P", str(self.web.pid)], capture_output=True, text=True).stdout.split()}

    def _up(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def served_by_all(self, project: int, version: str, timeout: float) -> None:
        seen: dict[int, str] = {}
        body = {"tasks": [{"id": 1, "data": {"text": "ok"}}], "project": f"{project}.1", "label_config": CONFIG}

        def ask(_: int) -> None:
            r = requests.post(f"{self.url}/predict", json=body, timeout=10)
            seen[int(r.headers["X-Backend-Worker"])] = r.json()["results"][0]["model_version"]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            wait(lambda: list(pool.map(ask, range(8))) is not None and all(seen.get(p) == version for p in self.web_pids),
                 timeout=timeout, interval=0.01)

    def stop(self) -> None:
        for process in (self.web, self.worker):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        self.redis.terminate()
        self.redis.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def settled(registry: Registry, project: int, watermark: int, timeout: float = 600) -> dict:
    def done():
        history = registry.history(project)
        if history and max(r["watermark"] for r in history) >= watermark and history[-1]["decision"] != "promoting":
            return history[-1]
        return None

    return wait(done, timeout=timeout, interval=0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,30000")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--client-threads", type=int, default=4)
    args = parser.parse_args()
    data = load_tweets()
    order = list(range(len(data)))
    random.Random(0).shuffle(order)
    texts, labels = [data.texts[i] for i in order], [data.labels[i] for i in order]
    deployment = Deployment(args.web_workers)
    print(f"{'labels':>7} {'webhooks':>8} {'hook p50 ms':>11} {'hook p99 ms':>11} {'srv p50 ms':>10} {'srv p99 ms':>10} {'hooks/s':>8} "
          f"{'train s':>8} {'feedback p50 s':>14} {'feedback max s':>14} {'decisions':>12}")
    try:
        for project, n in enumerate((int(s) for s in args.sizes.split(",")), start=1):
            session_times: list[float] = []
            server_times: list[float] = []

            def send(i: int) -> None:
                started = time.perf_counter()
                r = requests.post(f"{deployment.url}/webhook", json=event(i + 1, texts[i], labels[i], project), timeout=10)
                r.raise_for_status()
                session_times.append(time.perf_counter() - started)
                server_times.append(float(r.headers["Server-Timing"].split("dur=")[1]) / 1000)

            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(args.client_threads) as pool:
                list(pool.map(send, range(n)))
            burst = time.perf_counter() - started
            record = settled(deployment.registry, project, n)
            feedback, decisions = [], []
            for r in range(args.rounds):
                i = n + r
                before = deployment.registry.pointer(project)
                t0 = time.perf_counter()
                requests.post(f"{deployment.url}/webhook", json=event(i + 1, texts[i], labels[i], project), timeout=10).raise_for_status()
                latest = settled(deployment.registry, project, n + r + 1)
                decisions.append(latest["decision"])
                if latest["decision"] == "promoted":
                    deployment.served_by_all(project, latest["version"], timeout=30)
                    feedback.append(time.perf_counter() - t0)
                elif before is not None:
                    continue
            print(f"{n:>7} {len(session_times):>8} {pct(session_times, 50) * 1000:>11.2f} {pct(session_times, 99) * 1000:>11.2f} "
                  f"{pct(server_times, 50) * 1000:>10.2f} {pct(server_times, 99) * 1000:>10.2f} "
                  f"{n / burst:>8.0f} {record['train_seconds']:>8.2f} "
                  f"{statistics.median(feedback) if feedback else float('nan'):>14.2f} {max(feedback) if feedback else float('nan'):>14.2f} "
                  f"{sum(d == 'promoted' for d in decisions)}/{len(decisions)} prom.", flush=True)
    finally:
        deployment.stop()


if __name__ == "__main__":
    main()
