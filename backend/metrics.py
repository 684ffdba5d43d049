"""Prometheus metric definitions (`prometheus_client`), correct under several gunicorn workers.

Any layer may count here (HTTP requests, predictions, webhook events, the served pointer of
`serving`): this module imports neither Flask nor the runtime. Request counters and latency
histograms live in each web process; with `PROMETHEUS_MULTIPROC_DIR` set (as `python -m backend
serve` does, one directory per port), every process writes its samples there and `/metrics` merges
them, so the scrape is right whichever worker answers it. The scrape itself, with the project state
read from Redis and the registry, is the web layer's (`web_metrics`).
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram, multiprocess

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


def prepare_multiprocess_dir(path: str) -> None:
    """Start a deployment with an empty samples directory (stale files of dead processes would count)."""
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


def mark_process_dead(pid: int) -> None:
    """gunicorn's child_exit hook: drop a dead worker's live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
