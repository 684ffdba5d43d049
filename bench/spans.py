"""Span labeling (a `Labels` control, the CRF family): `/predict` of an NER config on the
production shape (1-task requests from several clients; the server time of 1,000-tweet requests),
and a train job's fit-and-judge at 1k and 10k sentences."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from backend import spans
from backend.consensus import LabeledTask
from backend.labelconfig import parse_label_config
from backend.state.registry import Registry
from backend.training import build_snapshot, train_and_judge
from lab.client import ner_config, run_load, span_event
from lab.datasets import SpanTexts, load_wnut, synthetic_spans
from lab.processes import Deployment

from . import loop, predict


def config(data: SpanTexts) -> str:
    return ner_config(data.labels)


def serving(web_workers: int, clients: int, seconds: float, labeled: int, big: int, pause: float, project: int = 950) -> dict[str, object]:
    """A deployment trained on `labeled` WNUT-16 tweets through span webhooks, then: `big` 1,000-tweet
    requests' server time, and 1-task requests from `clients` threads for `seconds`."""
    data = load_wnut()
    ner = config(data)
    pool = synthetic_spans(data, 5_000, seed=1).texts
    deployment = Deployment(web_workers, RETRAIN_THRESHOLD=str(10**6), RETRAIN_MIN_INTERVAL="0", LOG_LEVEL="WARNING")
    try:
        events = [
            json.dumps(span_event(i + 1, i + 1, data.texts[i], data.spans[i], config=ner, project=project)).encode() for i in range(labeled)
        ]
        run_load(deployment.url, lambda t, i: events[i], "/webhook", 2, requests=labeled)
        version = loop.await_model(deployment.url, project, timeout=600, config=ner)
        record = Registry(deployment.services.model_dir).record(project, version) if version else None
        loop.warm_up(deployment.url, "/predict", predict.bodies(project, pool, 1, ner)[0], deployment.web_pids)
        server = predict.server_time(deployment.url, project, pool, 1000, big, pause=pause, config=ner)
        load = predict.throughput(deployment.url, project, pool, 1, clients, seconds, config=ner)
        return {"version": version, "record": record, "server": server, "load": load}
    finally:
        deployment.stop()


def tasks_of(data: SpanTexts) -> list[LabeledTask]:
    return [
        LabeledTask(i + 1, {"text": text}, {"ner": sorted(spans.Span(*s).encode() for s in found)}, {"ner": i + 1})
        for i, (text, found) in enumerate(zip(data.texts, data.spans))
    ]


def retrain_seconds(size: int) -> tuple[float, float, float]:
    """Wall and CPU seconds of one train job's fit and judge at `size` synthetic sentences (WNUT-16
    tweets with their entities swapped), and the challenger's span F1."""
    data = load_wnut()
    parsed = parse_label_config(config(data))
    snapshot = build_snapshot(1, tasks_of(synthetic_spans(data, size, seed=size)), parsed, size, 20_000)
    started, cpu = time.perf_counter(), time.process_time()
    result = train_and_judge(snapshot, None)
    assert result.bundle is not None, result.judgement.reason
    return time.perf_counter() - started, time.process_time() - cpu, result.judgement.challenger["ner"]["micro_f1"]


def sizes(quick: bool) -> Sequence[int]:
    return (300, 1_000) if quick else (1_000, 10_000)
