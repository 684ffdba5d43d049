"""The `/metrics` scrape of the web layer: the project state of a runtime after this process's
metrics, and the layering (definitions low, the scrape only in HTTP modules)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from backend import web_metrics
from backend.trigger import request_retrain

BACKEND = Path(web_metrics.__file__).parent
HTTP = {"app", "api", "admin", "ui", "auth", "payload", "web_metrics", "cli", "__main__"}


def imported(path: Path) -> set[str]:
    """The backend modules `path` imports (relative imports, at any depth)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            names |= {node.module} if node.module else {a.name for a in node.names}
    return names


def test_the_scrape_adds_the_queue_and_each_projects_state(runtime):
    request_retrain(runtime.settings, runtime.redis, 1, "test")  # no worker here: it stays queued
    body, content_type = web_metrics.exposition(runtime)
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert content_type.startswith("text/plain")
    assert "lsb_http_requests" in families and "lsb_model_pointer_seq" in families  # the definitions in `metrics`
    assert [(s.labels, s.value) for s in families["lsb_queue_depth"].samples] == [({"queue": runtime.settings.queue_name}, 1.0)]
    assert families["lsb_model_version_info"].samples == []  # nothing trained yet
    assert "lsb_queue_depth" not in {f.name for f in text_string_to_metric_families(web_metrics.exposition()[0].decode())}


def test_only_http_modules_import_the_scrape_and_the_definitions_need_no_web_or_runtime():
    below = {p.stem: imported(p) for p in BACKEND.glob("*.py") if p.stem not in HTTP}
    assert {m for m, names in below.items() if "web_metrics" in names} == set()
    assert imported(BACKEND / "metrics.py") == set()
    script = "import json, sys, backend.metrics; print(json.dumps(sorted(m for m in sys.modules if m.startswith(('flask', 'backend.')))))"
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=BACKEND.parent).stdout
    assert json.loads(loaded) == ["backend.metrics"]
