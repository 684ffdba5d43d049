"""Label Studio-shaped request bodies and a light HTTP client for load from this process.

The client is `http.client` over one keep-alive connection per thread: lighter than `requests`, so
the load generator takes less of the CPU it shares with the servers on a small machine.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LABEL_CONFIG = (Path(__file__).resolve().parent.parent / "label_config.xml").read_text()


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
    author: int | str | None = 1,
    ground_truth: bool = False,
    task_created: str = "2025-12-01T00:00:00Z",
) -> dict[str, Any]:
    """An annotation webhook as LS 1.23.2 sends it (trimmed to the fields that matter)."""
    choices = label if isinstance(label, list) else ([label] if label else [])
    result = (
        [] if cancelled or not choices else [{"from_name": from_name, "to_name": "text", "type": "choices", "value": {"choices": choices}}]
    )
    return {
        "action": action,
        "annotation": {
            "id": ann_id,
            "task": task_id,
            "result": result,
            "was_cancelled": cancelled,
            "completed_by": author,
            "ground_truth": ground_truth,
            "created_at": updated_at,
            "updated_at": updated_at,
        },
        "task": {"id": task_id, "data": {"text": text}, "project": project, "created_at": task_created},
        "project": {"id": project, "label_config": config, "title": "t"},
    }


def ner_config(labels: Sequence[str], choices: Sequence[str] = ()) -> str:
    """A config with a `Labels` control `ner` over the Text `text` (and a `Choices` control
    `sentiment` over it when `choices` are given)."""
    named = "".join(f'<Label value="{label}"/>' for label in labels)
    chosen = "".join(f'<Choice value="{c}"/>' for c in choices)
    extra = f'<Choices name="sentiment" toName="text">{chosen}</Choices>' if choices else ""
    return f'<View><Labels name="ner" toName="text">{named}</Labels><Text name="text" value="$text"/>{extra}</View>'


def span_regions(text: str, spans: Sequence[tuple[int, int, str]], from_name: str = "ner") -> list[dict[str, Any]]:
    """LS result regions of a `Labels` control for spans (start, end, label) of `text`."""
    return [
        {
            "id": f"r{n}",
            "from_name": from_name,
            "to_name": "text",
            "type": "labels",
            "origin": "manual",
            "value": {"start": a, "end": b, "text": text[a:b], "labels": [label]},
        }
        for n, (a, b, label) in enumerate(spans)
    ]


def span_event(
    ann_id: int, task_id: int, text: str, spans: Sequence[tuple[int, int, str]], *, config: str, **fields: Any
) -> dict[str, Any]:
    """`annotation_event` with span regions of the Labels control `ner` (none: "no entities")."""
    event = annotation_event(ann_id, task_id, text, None, config=config, **fields)
    if not fields.get("cancelled"):
        event["annotation"]["result"] = span_regions(text, spans)
    return event


def predict_body(project: int, texts: Sequence[str], first_id: int = 1, config: str = LABEL_CONFIG) -> dict[str, Any]:
    """A `/predict` request as LS sends it (project as `<id>.<created_at>`)."""
    tasks = [{"id": first_id + i, "data": {"text": text}} for i, text in enumerate(texts)]
    return {"tasks": tasks, "project": f"{project}.1700000000", "label_config": config, "params": {"context": None}}


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (NaN for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    seconds: float  # client-side: request written to response read

    def json(self) -> Any:
        return json.loads(self.body)

    def timing(self, metric: str) -> float | None:
        """Seconds of `metric` in the backend's `Server-Timing` header, when it sets one (ours: `app`,
        the request's wall time, and `cpu`, the CPU time of the thread that served it)."""
        match = re.search(rf"(?:^|,)\s*{metric};dur=([0-9.]+)", self.headers.get("Server-Timing", ""))
        return float(match.group(1)) / 1000 if match else None


class Client:
    """One keep-alive connection to a backend (reconnects once when the server closed it)."""

    def __init__(self, url: str, auth: tuple[str, str] | None = None, timeout: float = 120):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json"}
        if auth:
            self.headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        self.connection: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes | dict[str, Any] | list[Any]) -> Reply:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        for attempt in (1, 2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                started = time.perf_counter()
                self.connection.request("POST", self.prefix + path, data, self.headers)
                response = self.connection.getresponse()
                payload = response.read()
                return Reply(response.status, response.headers, payload, time.perf_counter() - started)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


@dataclass
class Load:
    """What a run of requests measured: client, server and server CPU seconds of each successful request."""

    wall: float = 0.0
    client: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def count(self) -> int:
        return len(self.client)

    @property
    def rate(self) -> float:
        return self.count / self.wall if self.wall else float("nan")

    def ms(self, q: float, of: str = "client") -> float:
        """The `q`-th percentile in ms of the `client`, `server` or `cpu` times."""
        return percentile(getattr(self, of), q) * 1000


def run_load(
    url: str,
    bodies: Callable[[int, int], bytes],
    path: str,
    threads: int,
    *,
    seconds: float | None = None,
    requests: int | None = None,
    ok: Callable[[Reply], bool] = lambda r: r.status == 200,
    auth: tuple[str, str] | None = None,
    pause: float = 0.0,
) -> Load:
    """`threads` clients post `bodies(thread, i)` until `seconds` pass or `requests` are sent in all,
    each waiting `pause` seconds after every answer."""
    load = Load()
    lock = threading.Lock()
    counter = iter(range(requests if requests is not None else 10**12))
    stop = time.perf_counter() + (seconds if seconds is not None else 10**9)

    def work(thread: int) -> None:
        client = Client(url, auth)
        try:
            while time.perf_counter() < stop:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                reply = client.post(path, bodies(thread, i))
                with lock:
                    if ok(reply):
                        load.client.append(reply.seconds)
                        for times, metric in ((load.server, "app"), (load.cpu, "cpu")):
                            value = reply.timing(metric)
                            if value is not None:
                                times.append(value)
                    else:
                        load.errors += 1
                time.sleep(pause)
        finally:
            client.close()

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    load.wall = time.perf_counter() - started
    return load
