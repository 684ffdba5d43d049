"""The feedback loop over HTTP: a burst of annotation webhooks, and the time from one more
annotation to the model trained on it being served by every web worker."""

from __future__ import annotations

import concurrent.futures
import json
import statistics
import time
from collections.abc import Sequence

from backend.state.registry import Registry
from lab.client import LABEL_CONFIG, Client, Load, annotation_event, predict_body, run_load
from lab.processes import wait_for


def event_body(project: int, i: int, texts: Sequence[str], labels: Sequence[str]) -> bytes:
    """Annotation `i + 1` of task `i + 1` (text and label `i`), as LS sends it."""
    return json.dumps(annotation_event(i + 1, i + 1, texts[i], labels[i], project=project)).encode()


def warm_up(url: str, path: str, body: bytes, workers: set[int] | None, auth: tuple[str, str] | None = None, count: int = 8) -> None:
    """Post `body` on new connections until every web worker (by `X-Backend-Worker`) has answered it,
    or `count` times when the workers are not known: a worker's first request pays one-time imports
    and parsing (2-3 s for Label Studio's label interface), which no figure of the suite is about."""
    seen: set[str] = set()
    for _ in range(100 if workers else count):
        client = Client(url, auth)  # a new connection per request spreads them over the workers
        reply = client.post(path, body)
        client.close()
        seen.add(reply.headers.get("X-Backend-Worker", ""))
        if workers and {str(pid) for pid in workers} <= seen:
            return


def skipped_annotation(project: int) -> bytes:
    """A skipped annotation (no labels: nothing to store or train) with the label config."""
    return json.dumps(annotation_event(1, 1, "warm-up", None, project=project, cancelled=True)).encode()


def burst(
    url: str, project: int, texts: Sequence[str], labels: Sequence[str], count: int, threads: int, auth: tuple[str, str] | None = None
) -> Load:
    """`count` ANNOTATION_CREATED webhooks as fast as `threads` clients can send them."""
    encoded = [event_body(project, i, texts, labels) for i in range(count)]
    return run_load(url, lambda t, i: encoded[i], "/webhook", threads, requests=count, auth=auth)


def await_model(url: str, project: int, timeout: float, auth: tuple[str, str] | None = None, config: str = LABEL_CONFIG) -> str | None:
    """Ask for training (START_TRAINING) and wait until `/setup` reports a trained version (any backend)."""
    client = Client(url, auth)
    client.post("/webhook", {"action": "START_TRAINING", "project": {"id": project}})
    body = {"project": f"{project}.1700000000", "schema": config}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = client.post("/setup", body)
        version = reply.json().get("model_version") if reply.status == 200 else None
        if version and version != "untrained":
            return str(version)
        time.sleep(0.5)
    return None


def settled(registry: Registry, project: int, watermark: int, timeout: float = 600) -> dict:
    """The newest decided candidate once one has seen `watermark` label changes."""

    def done() -> dict | None:
        history = registry.history(project)
        if history and max(r["watermark"] for r in history) >= watermark and history[-1]["decision"] != "promoting":
            return history[-1]
        return None

    return wait_for(done, timeout=timeout, interval=0.02)


def served_by_all(url: str, project: int, version: str, workers: set[int], timeout: float) -> None:
    """Wait until every web worker (by its `X-Backend-Worker` pid) answers `/predict` with `version`."""
    body = json.dumps(predict_body(project, ["ok"])).encode()
    seen: dict[int, str] = {}

    def ask(_: int) -> None:
        client = Client(url)  # a new connection each time, so the requests spread over the workers
        reply = client.post("/predict", body)
        client.close()
        seen[int(reply.headers["X-Backend-Worker"])] = reply.json()["results"][0]["model_version"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:

        def everywhere() -> bool:
            list(pool.map(ask, range(8)))
            return all(seen.get(pid) == version for pid in workers)

        wait_for(everywhere, timeout=timeout, interval=0.01)


def feedback(
    url: str, registry: Registry, workers: set[int], project: int, texts: Sequence[str], labels: Sequence[str], start: int, rounds: int
) -> tuple[list[float], int]:
    """Seconds from one more annotation webhook to its model served everywhere, per promoted round;
    also how many rounds were judged (a candidate the gate rejects has no feedback time)."""
    client = Client(url)
    times: list[float] = []
    for r in range(rounds):
        i = start + r
        started = time.perf_counter()
        assert client.post("/webhook", event_body(project, i, texts, labels)).status == 200
        record = settled(registry, project, i + 1)
        if record["decision"] == "promoted":
            served_by_all(url, project, record["version"], workers, timeout=60)
            times.append(time.perf_counter() - started)
    client.close()
    return times, rounds


def describe(times: list[float], rounds: int) -> str:
    if not times:
        return f"no promotion in {rounds} rounds"
    return f"p50 {statistics.median(times):.2f} s, max {max(times):.2f} s ({len(times)}/{rounds} rounds promoted)"
