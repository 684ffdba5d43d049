"""A scripted annotator against a real Label Studio: `/next`, then submit the true label, in a loop.

It records what each step was served (whether the task came with a prediction of the project's
current model version, which is what LS's uncertainty sampling ordered it by), how long `/next` and
the submit took, and every failed request, so a test can assert that annotators are served our head
and never see an error, and a benchmark can compare their speed with and without the backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import requests


@dataclass
class Step:
    task: int
    version: str | None  # the model version of the prediction the task was served with (None: none)
    next_seconds: float
    submit_seconds: float
    at: float  # when `/next` answered


@dataclass
class Session:
    steps: list[Step] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def share_with_prediction(self, since: float = 0.0, of: Callable[[str], bool] = lambda v: True) -> float:
        """Share of the steps served at or after `since` whose task held a prediction of a version `of` accepts."""
        steps = [s for s in self.steps if s.at >= since]
        return sum(1 for s in steps if s.version is not None and of(s.version)) / max(len(steps), 1)

    def first_served(self, version: str) -> float | None:
        """When `/next` first served a task carrying a prediction of `version` (None: never)."""
        return next((s.at for s in self.steps if s.version == version), None)

    def lags(self, promoted: list[dict[str, Any]]) -> list[float]:
        """Seconds from each promotion (a model record with `version` and `created_at`) to `/next`
        first serving its prediction; versions superseded before any was served are left out. Read off
        the annotator's own steps, so measuring it asks nothing of LS (polling the project would)."""
        served = ((self.first_served(r["version"]), r["created_at"]) for r in promoted)
        return [at - created for at, created in served if at is not None]

    def medians(self) -> dict[str, float]:
        return {
            "next_s": round(median(s.next_seconds for s in self.steps), 4) if self.steps else float("nan"),
            "submit_s": round(median(s.submit_seconds for s in self.steps), 4) if self.steps else float("nan"),
        }


def annotate(
    url: str,
    token: str,
    project: int,
    label_of: Callable[[dict[str, Any]], str],
    steps: int,
    control: str = "sentiment",
    think: float = 0.0,
) -> Session:
    """`steps` rounds of `/next` and a submit of `label_of(task data)`, as one annotator who looks at
    each task for `think` seconds."""
    http = requests.Session()
    http.headers["Authorization"] = f"Token {token}"
    session = Session()
    for _ in range(steps):
        started = time.perf_counter()
        served = http.get(f"{url}/api/projects/{project}/next", timeout=60)
        took_next = time.perf_counter() - started
        served_at = time.time()
        if served.status_code != 200:
            session.failures.append(f"GET next: {served.status_code} {served.text[:200]}")
            if served.status_code == 404:
                break
            continue
        task = served.json()
        predictions = task.get("predictions") or []
        result = [{"from_name": control, "to_name": "text", "type": "choices", "value": {"choices": [label_of(task["data"])]}}]
        time.sleep(think)
        started = time.perf_counter()
        submitted = http.post(f"{url}/api/tasks/{task['id']}/annotations", json={"result": result, "was_cancelled": False}, timeout=60)
        took_submit = time.perf_counter() - started
        if submitted.status_code >= 300:
            session.failures.append(f"POST annotation: {submitted.status_code} {submitted.text[:200]}")
        version = predictions[0].get("model_version") if predictions and isinstance(predictions[0], dict) else None
        session.steps.append(Step(task["id"], version, took_next, took_submit, served_at))
    return session
