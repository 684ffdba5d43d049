"""/predict latency and throughput against any running LS ML backend.

    python bench/predict.py --url http://127.0.0.1:9090 [--train 2000] [--threads 4] [--seconds 10]

Sends LS-shaped `/predict` requests of 1, 100 and 1,000 tweets from this process (loopback load),
several threads at a time, and prints client-side latency percentiles, throughput, and the
server-side time when the backend reports a `Server-Timing` header. `--train N` first posts N
annotation webhooks and waits until `/setup` reports a trained version (our backend's loop).
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from backend.datasets import load_tweets  # noqa: E402

CONFIG = (Path(__file__).resolve().parent.parent / "label_config.xml").read_text()
TIMING = re.compile(r"dur=([0-9.]+)")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def train(url: str, project: int, texts: list[str], labels: list[str], n: int, auth) -> str:
    session = requests.Session()
    for i in range(n):
        event = {
            "action": "ANNOTATION_CREATED",
            "annotation": {"id": i + 1, "task": i + 1, "updated_at": "2026-01-01T00:00:00Z",
                           "result": [{"from_name": "sentiment", "to_name": "text", "type": "choices",
                                       "value": {"choices": [labels[i]]}}]},
            "task": {"id": i + 1, "data": {"text": texts[i]}},
            "project": {"id": project, "label_config": CONFIG},
        }
        session.post(f"{url}/webhook", json=event, auth=auth, timeout=10).raise_for_status()
    session.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": project}}, auth=auth, timeout=100)
    deadline = time.time() + 300
    while time.time() < deadline:
        version = session.post(f"{url}/setup", json={"project": project, "schema": CONFIG}, auth=auth, timeout=5).json()["model_version"]
        if version != "untrained":
            return version
        time.sleep(0.5)
    raise SystemExit("no trained version within 300 s")


def run(url: str, project: int, texts: list[str], batch: int, threads: int, seconds: float, auth) -> dict[str, float]:
    latencies: list[float] = []
    server: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(offset: int) -> None:
        session = requests.Session()
        i = offset * 997
        while time.perf_counter() < stop:
            tasks = [{"id": j, "data": {"text": texts[(i + j) % len(texts)]}} for j in range(batch)]
            i += batch
            body = {"tasks": tasks, "project": f"{project}.1", "label_config": CONFIG, "params": {"context": None}}
            started = time.perf_counter()
            response = session.post(f"{url}/predict", json=body, auth=auth, timeout=100)
            elapsed = time.perf_counter() - started
            ok = response.status_code == 200 and len(response.json().get("results", [])) == batch
            match = TIMING.search(response.headers.get("Server-Timing", ""))
            with lock:
                if ok:
                    latencies.append(elapsed)
                    if match:
                        server.append(float(match.group(1)) / 1000)
                else:
                    errors[0] += 1

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - started
    result = {
        "requests": len(latencies),
        "errors": errors[0],
        "req_per_s": len(latencies) / wall,
        "tasks_per_s": len(latencies) * batch / wall,
        "p50_ms": percentile(latencies, 50) * 1000 if latencies else float("nan"),
        "p99_ms": percentile(latencies, 99) * 1000 if latencies else float("nan"),
        "server_p50_ms": percentile(server, 50) * 1000 if server else float("nan"),
        "server_p99_ms": percentile(server, 99) * 1000 if server else float("nan"),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:9090")
    parser.add_argument("--project", type=int, default=900)
    parser.add_argument("--train", type=int, default=0, help="post N annotation webhooks first and wait for a model")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--batches", default="1,100,1000")
    parser.add_argument("--user", default="")
    parser.add_argument("--password", default="")
    args = parser.parse_args()
    auth = (args.user, args.password) if args.user else None
    data = load_tweets()
    order = list(range(len(data)))
    random.Random(0).shuffle(order)  # the file is grouped by source and label
    texts, labels = [data.texts[i] for i in order], [data.labels[i] for i in order]
    if args.train:
        version = train(args.url, args.project, texts, labels, args.train, auth)
        print(f"trained version: {version}")
    texts = texts[args.train:] or texts
    print(f"{'batch':>6} {'threads':>7} {'requests':>8} {'errors':>6} {'req/s':>8} {'tasks/s':>9} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'srv p50':>8} {'srv p99':>8}")
    for batch in (int(b) for b in args.batches.split(",")):
        threads = args.threads if batch < 1000 else max(1, args.threads // 2)
        r = run(args.url, args.project, texts, batch, threads, args.seconds, auth)
        print(f"{batch:>6} {threads:>7} {r['requests']:>8} {r['errors']:>6} {r['req_per_s']:>8.1f} {r['tasks_per_s']:>9.0f} "
              f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['server_p50_ms']:>8.2f} {r['server_p99_ms']:>8.2f}")


if __name__ == "__main__":
    main()
