"""`/predict` under load: throughput and latency at a batch size, and the server time of big batches."""

from __future__ import annotations

import json
from collections.abc import Sequence

from lab.client import LABEL_CONFIG, Load, Reply, predict_body, run_load

VARIANTS = 8  # distinct request bodies per batch size, encoded before the clock starts
FIRST_TASK = 10**6  # task ids of predicted tasks, clear of the labeled ones


def bodies(project: int, texts: Sequence[str], batch: int, config: str = LABEL_CONFIG) -> list[bytes]:
    out = []
    for k in range(VARIANTS):
        start = (k * batch * 7) % max(1, len(texts) - batch)
        out.append(json.dumps(predict_body(project, texts[start : start + batch], FIRST_TASK + start, config)).encode())
    return out


def answered(batch: int):
    def ok(reply: Reply) -> bool:
        return reply.status == 200 and len(reply.json().get("results", [])) == batch

    return ok


def throughput(
    url: str,
    project: int,
    texts: Sequence[str],
    batch: int,
    threads: int,
    seconds: float,
    auth: tuple[str, str] | None = None,
    config: str = LABEL_CONFIG,
) -> Load:
    """`threads` clients send `batch`-task requests back to back for `seconds`."""
    encoded = bodies(project, texts, batch, config)
    return run_load(url, lambda t, i: encoded[(t + i) % VARIANTS], "/predict", threads, seconds=seconds, ok=answered(batch), auth=auth)


def server_time(
    url: str,
    project: int,
    texts: Sequence[str],
    batch: int,
    requests: int,
    auth: tuple[str, str] | None = None,
    pause: float = 0.5,
    config: str = LABEL_CONFIG,
) -> Load:
    """One client sends `requests` requests of `batch` tasks, `pause` seconds apart: the service time
    of a request on an otherwise idle server (the monitoring a request leaves to a background
    thread has finished before the next one)."""
    encoded = bodies(project, texts, batch, config)
    return run_load(url, lambda t, i: encoded[i % VARIANTS], "/predict", 1, requests=requests, ok=answered(batch), auth=auth, pause=pause)
