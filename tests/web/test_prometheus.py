"""The `/metrics` scrape of the web layer: the project state of a runtime after this process's
metrics (the layering of definitions and scrape is in tests/test_layout.py)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from backend.jobs.trigger import request_retrain
from backend.web import prometheus


def test_the_scrape_adds_the_queue_and_each_projects_state(runtime):
    request_retrain(runtime.settings, runtime.redis, 1, "test")  # no worker here: it stays queued
    body, content_type = prometheus.exposition(runtime)
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert content_type.startswith("text/plain")
    assert "lsb_http_requests" in families and "lsb_model_pointer_seq" in families  # the definitions in `metrics`
    assert [(s.labels, s.value) for s in families["lsb_queue_depth"].samples] == [({"queue": runtime.settings.queue_name}, 1.0)]
    assert families["lsb_model_version_info"].samples == []  # nothing trained yet
    assert "lsb_queue_depth" not in {f.name for f in text_string_to_metric_families(prometheus.exposition()[0].decode())}
