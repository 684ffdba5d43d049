"""The `/metrics` scrape: this deployment's metrics (`metrics`) followed by the project state.

Project state (served version, train jobs by outcome and duration, queue depth, live accuracy,
drift, stopping signal, suspected label errors, annotator agreement and disputed tasks) is read from Redis and the registry of the runtime
at scrape time, so it is the same from every process and includes what workers on other machines
did. This is the web layer's: nothing below HTTP imports this module (lower layers count in
`metrics`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .. import (
    metrics,  # noqa: F401 - the definitions this process exposes register on import
    monitor,
)
from ..jobs.trigger import retrain_queue
from ..runtime import Runtime


class ProjectCollector:
    """Per-project gauges and counters computed from the shared state at scrape time."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        rt = self.runtime
        served = GaugeMetricFamily(
            "lsb_model_version_info", "The version each project serves (value: pointer seq)", labels=["project", "version"]
        )
        trainings = CounterMetricFamily("lsb_train_jobs", "Train jobs by outcome (candidates recorded)", labels=["project", "outcome"])
        train_seconds = CounterMetricFamily("lsb_train_seconds", "Seconds spent training candidates", labels=["project"])
        live = GaugeMetricFamily(
            "lsb_live_accuracy", "Agreement of annotators with our predictions (rolling window)", labels=["project", "version"]
        )
        offline = GaugeMetricFamily(
            "lsb_offline_accuracy", "The gate's accuracy estimate of the serving version", labels=["project", "version"]
        )
        psi = GaugeMetricFamily(
            "lsb_drift_confidence_psi", "PSI of recent /predict confidence vs the serving version's reference", labels=["project"]
        )
        kappa = GaugeMetricFamily("lsb_stopping_kappa", "Agreement of the last two versions on the unlabeled pool", labels=["project"])
        suspects = GaugeMetricFamily("lsb_suspected_label_errors", "Suspected label errors found by the last check", labels=["project"])
        alpha = GaugeMetricFamily(
            "lsb_annotator_alpha", "Krippendorff's alpha of the annotators, as of the last train job", labels=["project", "control"]
        )
        disputed = GaugeMetricFamily(
            "lsb_disputed_tasks", "Tasks set aside as disputed by the last train job's consensus", labels=["project", "control"]
        )
        depth = GaugeMetricFamily("lsb_queue_depth", "Jobs waiting in the RQ queue", labels=["queue"])
        depth.add_metric([rt.settings.queue_name], retrain_queue(rt.settings, rt.redis).count)
        for project in sorted(set(rt.registry.projects()) | set(rt.store.projects())):
            p = str(project)
            history = rt.registry.history(project)
            outcomes: dict[str, int] = {}
            for record in history:
                outcomes[record.get("decision", "unknown")] = outcomes.get(record.get("decision", "unknown"), 0) + 1
            for outcome, count in outcomes.items():
                trainings.add_metric([p, outcome], count)
            train_seconds.add_metric([p], sum(float(r.get("train_seconds") or 0) for r in history))
            agreed = history[-1].get("consensus") if history else None
            for control, value in ((agreed or {}).get("alpha") or {}).items():
                if value is not None:
                    alpha.add_metric([p, control], value)
            for control, counts in ((agreed or {}).get("tasks") or {}).items():
                disputed.add_metric([p, control], counts.get("disputed", 0))
            state = monitor.status(rt.redis, rt.registry, project)
            version = state.get("version")
            if version:
                pointer = rt.registry.pointer(project)
                served.add_metric([p, version], pointer.seq if pointer else 0)
                if state["live_window"]["accuracy"] is not None:
                    live.add_metric([p, version], state["live_window"]["accuracy"])
                if state.get("offline_accuracy") is not None:
                    offline.add_metric([p, version], state["offline_accuracy"])
                if state.get("drift") and state["drift"]["samples"]:
                    psi.add_metric([p], state["drift"]["confidence_psi"])
            stability = rt.store.stability(project)
            if stability and stability[-1].get("agreement_kappa") is not None:
                kappa.add_metric([p], stability[-1]["agreement_kappa"])
            found = rt.store.mislabels(project)
            if found is not None:
                suspects.add_metric([p], len(found.get("suspects", [])))
        yield from (served, trainings, train_seconds, live, offline, psi, kappa, suspects, alpha, disputed, depth)


def exposition(runtime: Runtime | None = None) -> tuple[bytes, str]:
    """The text exposition: this deployment's processes merged (multiprocess mode) or this
    process's metrics, followed by the project state of `runtime`."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if runtime is not None:
        projects = CollectorRegistry(auto_describe=False)
        projects.register(ProjectCollector(runtime))
        body += generate_latest(projects)
    return body, CONTENT_TYPE_LATEST
