"""What a promotion asks of Label Studio: the publish job against the stand-in LS API (`lab.standin_ls`)
at several pool sizes, in this process (fakeredis): LS requests and bytes per promotion, and the
seconds from promotion to the new head stored and to LS serving it (its model version set)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import fakeredis

from backend import labelstudio
from backend.config import Settings
from backend.jobs.promotion import train_project
from backend.jobs.publish import publish
from backend.runtime import Runtime
from backend.state.store import Annotation
from lab.client import LABEL_CONFIG
from lab.standin_ls import StandinLabelStudio

PROJECT = 1


@dataclass(frozen=True)
class Promotion:
    pool: int
    head: int
    requests: int
    bytes: int
    seconds: float  # promotion -> the whole head stored and old versions removed
    served_after: float  # promotion -> LS's model version is the new one (its first batch stored)
    past_end: int


def per_promotion(texts: Sequence[str], labels: Sequence[str], pools: Sequence[int], labeled: int) -> list[Promotion]:
    """For each pool size: a project with `labeled` labels and a promoted model, its pool listed and
    head pushed once; then a second promotion (50 more labels) and its publish, measured."""
    found = []
    for size in pools:
        with (
            tempfile.TemporaryDirectory() as tmp,
            StandinLabelStudio(
                [{"id": 10**6 + i, "data": {"text": texts[(labeled + 50 + i) % len(texts)]}} for i in range(size)], project=PROJECT
            ) as standin,
        ):
            settings = Settings.from_env({}, model_dir=tmp, retrain_threshold=20, gate_margin=1.0, log_level="WARNING")
            runtime = Runtime.build(settings, redis=fakeredis.FakeRedis(), poll=False)
            runtime.store.set_meta(PROJECT, label_config=LABEL_CONFIG)
            label(runtime, texts, labels, 0, labeled)
            train_project(runtime, PROJECT, "bench")
            ls = labelstudio.connect(labelstudio.Credentials(standin.url, "token"), PROJECT)
            publish(runtime, PROJECT, ls)
            label(runtime, texts, labels, labeled, labeled + 50)
            promoted = train_project(runtime, PROJECT, "bench")
            assert promoted["status"] == "promoted", promoted
            promoted_at = time.perf_counter()
            standin.traffic = type(standin.traffic)()
            served: list[float] = []
            watching = _watch(standin, promoted["version"], promoted_at, served)
            summary = publish(runtime, PROJECT, ls)
            seconds = time.perf_counter() - promoted_at
            watching.join()
            found.append(
                Promotion(
                    size,
                    int(summary.get("head", 0)),
                    standin.traffic.total(),
                    standin.traffic.bytes_in + standin.traffic.bytes_out,
                    seconds,
                    served[0] if served else float("nan"),
                    standin.traffic.past_end,
                )
            )
            runtime.stop()
    return found


def label(runtime: Runtime, texts: Sequence[str], labels: Sequence[str], start: int, stop: int) -> None:
    annotations = [Annotation(i + 1, i + 1, float(i), {"sentiment": [labels[i]]}, 1, {"text": texts[i]}) for i in range(start, stop)]
    runtime.store.upsert_many(PROJECT, annotations)


def _watch(standin: StandinLabelStudio, version: str, since: float, served: list[float]):
    import threading

    def loop() -> None:
        deadline = time.perf_counter() + 600
        while time.perf_counter() < deadline:
            if standin.model_version == version:
                served.append(time.perf_counter() - since)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread
