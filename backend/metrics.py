"""Prometheus metrics (`prometheus_client`), multiprocess-aware under gunicorn.

With `PROMETHEUS_MULTIPROC_DIR` set, every process writes its samples there and `/metrics` merges
them, so the scrape is correct whichever worker answers it.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

REQUESTS = Counter("lsb_http_requests_total", "HTTP requests by endpoint and status", ["endpoint", "method", "status"])
LATENCY = Histogram(
    "lsb_http_request_seconds",
    "HTTP request latency by endpoint",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
PREDICTIONS = Counter("lsb_predictions_total", "Predictions served, by project and kind", ["project", "kind"])
WEBHOOKS = Counter("lsb_webhook_events_total", "Webhook events by action and outcome", ["action", "outcome"])
MODEL_SEQ = Gauge("lsb_model_pointer_seq", "Pointer sequence of the model this process serves", ["project"], multiprocess_mode="max")


def exposition() -> tuple[bytes, str]:
    """The text exposition of all metrics (merged across processes in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
