"""A stand-in for Label Studio's API, the parts the loop uses, in memory and on loopback.

It answers the task listing (Data Manager filters on annotations, task id and `updated_at`,
pages that end with an "Invalid page" 404 as LS's do), prediction imports and creates, the project
PATCH (refusing a model version with no predictions, as LS 1.23.2 does), the model-versions list
and delete (resetting the project's version when it is deleted), and `/next` with uncertainty
sampling (lowest score among unlabeled tasks holding a prediction of the project's version, else
random); for the legacy SDK client the official example trains with, `/api/version`, the project
and labeled tasks with their annotations (`filter:tasks:completed_at`). It counts requests and
bytes, so benchmarks and tests can say what a promotion asks of LS.
Tests and `bench` use it where a real LS of 100,000 tasks would take an hour to fill.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: object) -> None:
        pass


@dataclass
class Traffic:
    """What the backend asked of LS: requests per kind, bytes both ways, and past-the-end pages."""

    requests: Counter = field(default_factory=Counter)
    bytes_in: int = 0
    bytes_out: int = 0
    past_end: int = 0

    def total(self) -> int:
        return sum(self.requests.values())


class StandinLabelStudio:
    """One project (`project`) of `tasks` (each `{"id", "data"}`), served on a free loopback port."""

    def __init__(self, tasks: list[dict[str, Any]], project: int = 1, latency: float = 0.0):
        self.project = project
        self.tasks = {int(t["id"]): {"id": int(t["id"]), "data": t["data"], "updated_at": time.time()} for t in tasks}
        self.labeled: set[int] = set()
        self.annotations: dict[int, list[dict[str, Any]]] = {}  # task -> its annotations' results, as listed with fields=all
        self.predictions: dict[int, dict[str, Any]] = {}  # prediction id -> row
        self.model_version = ""
        self.sampling = "Sequential sampling"
        self.latency = latency
        self.traffic = Traffic()
        self.unreachable = False
        self._next_id = 1
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=_Quiet)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StandinLabelStudio:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()

    # -- what a test does as LS's users would ----------------------------------------------------
    def annotate(self, task_id: int, result: list[dict[str, Any]] | None = None) -> None:
        """Mark a task labeled, with an annotation holding `result` when given."""
        with self._lock:
            self.labeled.add(task_id)
            self.tasks[task_id]["updated_at"] = time.time()
            if result is not None:
                annotation = {"id": task_id, "project": self.project, "result": result, "was_cancelled": False}
                self.annotations.setdefault(task_id, []).append(annotation)

    def add_tasks(self, tasks: list[dict[str, Any]]) -> None:
        with self._lock:
            for t in tasks:
                self.tasks[int(t["id"])] = {"id": int(t["id"]), "data": t["data"], "updated_at": time.time()}

    def rows(self, version: str | None = None) -> int:
        """Stored predictions (of `version`)."""
        return sum(1 for p in self.predictions.values() if version is None or p["model_version"] == version)

    def versions(self) -> Counter:
        return Counter(p["model_version"] for p in self.predictions.values())

    def current_tasks(self) -> set[int]:
        """Unlabeled tasks holding a prediction of the project's model version."""
        return {p["task"] for p in self.predictions.values() if p["model_version"] == self.model_version and p["task"] not in self.labeled}

    def next_task(self) -> tuple[int | None, bool]:
        """The task `/next` serves under uncertainty sampling, and whether it came from the
        predictions (False: LS's random fallback)."""
        with self._lock:
            return self._next()

    # -- the API ---------------------------------------------------------------------------------
    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        if self.latency:
            time.sleep(self.latency)
        if self.unreachable:
            response = Response("unavailable", status=503)
        else:
            with self._lock:
                response = self._route(request, json.loads(body) if body else None)
        self.traffic.requests[f"{request.method} {self._kind(request.path)}"] += 1
        self.traffic.bytes_in += len(body) + len(request.query_string)
        self.traffic.bytes_out += len(response.get_data())
        return response(environ, start_response)

    def _kind(self, path: str) -> str:
        return "/".join("ID" if part.isdigit() else part for part in path.split("/"))

    def _route(self, request: Request, body: Any) -> Response:
        path, method, prefix = request.path.rstrip("/"), request.method, f"/api/projects/{self.project}"
        if path == "/api/tasks" and method == "GET":
            return self._list(request)
        if path == "/api/version" and method == "GET":
            return _json({"release": "stand-in"})
        if path == prefix and method == "GET":
            return _json({"id": self.project, "model_version": self.model_version, "sampling": self.sampling})
        if path == f"{prefix}/import/predictions" and method == "POST":
            for row in body:
                self._store(row)
            return _json({"created": len(body)}, 201)
        if path == "/api/predictions" and method == "POST":
            return _json(self._store(body), 201)
        if path == prefix and method == "PATCH":
            if "model_version" in body:
                if not any(p["model_version"] == body["model_version"] for p in self.predictions.values()):
                    return _json({"detail": "Model version doesn't exist either as live model or as static predictions."}, 400)
                self.model_version = body["model_version"]
            self.sampling = body.get("sampling", self.sampling)
            return _json({"id": self.project, "model_version": self.model_version, "sampling": self.sampling})
        if path == f"{prefix}/model-versions" and method == "GET":
            return _json(dict(self.versions()))
        if path == f"{prefix}/model-versions" and method == "DELETE":
            version = body["model_version"]
            gone = [i for i, p in self.predictions.items() if p["model_version"] == version]
            for i in gone:
                del self.predictions[i]
            if version == self.model_version:
                self.model_version = ""
            return _json({"deleted": len(gone)}, 200)
        if path == f"{prefix}/next" and method == "GET":
            task, _ = self._next()
            return _json(self.tasks[task] if task is not None else {"detail": "no more tasks"}, 200 if task is not None else 404)
        return _json({"detail": "not found"}, 404)

    def _store(self, row: dict[str, Any]) -> dict[str, Any]:
        stored = {
            "id": self._next_id,
            "task": int(row["task"]),
            "score": row.get("score"),
            "model_version": row.get("model_version", ""),
            "result": row.get("result", []),
            "mislabeling": row.get("mislabeling", 0.0),
        }
        self.predictions[self._next_id] = stored
        self._next_id += 1
        return stored

    def _next(self) -> tuple[int | None, bool]:
        candidates = [
            (p["score"], p["task"])
            for p in self.predictions.values()
            if p["model_version"] == self.model_version and p["task"] not in self.labeled
        ]
        if self.sampling == "Uncertainty sampling" and candidates:
            return min(candidates)[1], True
        unlabeled = [t for t in self.tasks if t not in self.labeled]
        return (random.choice(unlabeled) if unlabeled else None), False

    def _list(self, request: Request) -> Response:
        page, size = int(request.args.get("page", 1)), int(request.args.get("page_size", 100))
        query = json.loads(request.args.get("query") or "{}")
        chosen = sorted(self.tasks)
        for item in (query.get("filters") or {}).get("items", []):
            name, operator, value = item["filter"], item["operator"], item["value"]
            if name == "filter:tasks:total_annotations":
                wanted = operator == "greater"
                chosen = [t for t in chosen if (t in self.labeled) == wanted]
            elif name == "filter:tasks:completed_at":  # empty = False: labeled
                chosen = [t for t in chosen if (t in self.labeled) != (operator == "empty" and value is not False)]
            elif name == "filter:tasks:id":
                chosen = [t for t in chosen if t > int(value)]
            elif name == "filter:tasks:updated_at":
                since = time.mktime(time.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
                chosen = [t for t in chosen if self.tasks[t]["updated_at"] > since]
        first = (page - 1) * size
        if page > 1 and first >= len(chosen):
            self.traffic.past_end += 1
            return _json({"detail": "Invalid page."}, 404)
        tasks = []
        for t in chosen[first : first + size]:
            task = {"id": t, "data": self.tasks[t]["data"]}
            if request.args.get("fields") == "all":
                task["annotations"] = self.annotations.get(t, [])
                task["predictions"] = [p for p in self.predictions.values() if p["task"] == t]
            tasks.append(task)
        return _json({"tasks": tasks, "total": len(chosen), "total_annotations": 0, "total_predictions": 0})


def _json(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value), status=status, content_type="application/json")
