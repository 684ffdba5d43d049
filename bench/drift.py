"""A simulated drift scenario on tweets, through the real HTTP surface (embedded app: fakeredis
and the in-process worker): the model learns airline tweets first, then traffic moves to the other
topics of the corpus (Apple, #DeflateGate, self-driving cars, ...). Prints how drift and live
accuracy move, which trigger fires, and how live accuracy recovers after the retrain.

    .venv/bin/python bench/drift.py [--first 600] [--batch 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import fakeredis
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend import drift, monitor  # noqa: E402
from backend.config import Settings  # noqa: E402
from backend.runtime import Runtime  # noqa: E402
from backend.web.app import create_app  # noqa: E402
from lab.datasets import load_tweets  # noqa: E402

CONFIG = (Path(__file__).resolve().parents[1] / "label_config.xml").read_text()
AIRLINES = ("@united", "@americanair", "@usairways", "@southwestair", "@jetblue", "@virginamerica", "flight")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--first", type=int, default=600, help="airline tweets labeled before the shift")
    parser.add_argument("--batch", type=int, default=300, help="tasks per phase of traffic")
    args = parser.parse_args()
    data = load_tweets()
    order = np.random.default_rng(0).permutation(len(data.texts))  # the file is sorted by source and label
    airline = [int(i) for i in order if any(a in data.texts[i].lower() for a in AIRLINES)]
    other = [int(i) for i in order if not any(a in data.texts[i].lower() for a in AIRLINES)]
    print(f"tweets: {len(airline)} about airlines, {len(other)} about other topics")
    settings = Settings(
        model_dir=Path(tempfile.mkdtemp()) / "models",
        retrain_threshold=1_000_000,
        retrain_min_interval=0,
        trigger_check_interval=0,
        log_level="WARNING",
    )
    runtime = Runtime.build(settings, redis=fakeredis.FakeRedis())
    client = create_app(settings, runtime).test_client()
    next_id = iter(range(1, 10**9))

    def annotate(indices: list[int], tasks: list[int]) -> None:
        for i, task in zip(indices, tasks):
            event = {
                "action": "ANNOTATION_CREATED",
                "project": {"id": 1, "label_config": CONFIG},
                "task": {"id": task, "data": {"text": data.texts[i]}},
                "annotation": {
                    "id": next(next_id),
                    "task": task,
                    "completed_by": 1,
                    "updated_at": "2026-01-01T00:00:00Z",
                    "result": [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [data.labels[i]]}}],
                },
            }
            assert client.post("/webhook", json=event).status_code == 200

    def serve(indices: list[int]) -> list[int]:
        tasks = [next(next_id) + 10**6 for _ in indices]
        body = {
            "project": "1.1700000000",
            "label_config": CONFIG,
            "tasks": [{"id": t, "data": {"text": data.texts[i]}} for i, t in zip(indices, tasks)],
        }
        assert client.post("/predict", json=body).status_code == 200
        time.sleep(0.5)  # the background writer stores what monitoring keeps
        return tasks

    def version() -> str:
        return client.post("/setup", json={"project": "1.1700000000", "schema": CONFIG}).json["model_version"]

    def report(phase: str, served: str) -> None:
        record = runtime.registry.record(1, served) or {}
        moved = drift.compare(record.get("reference") or {}, monitor.traffic(runtime.redis, 1, served))
        live = client.get("/projects/1/monitor").json["live"]["lifetime"].get(served, {}).get("sentiment", {})
        print(
            f"{phase:36s} {served}: offline acc {monitor.offline_accuracy(record)}  live acc {live.get('accuracy')} "
            f"(n={live.get('n')})  confidence PSI {moved['confidence_psi']}  unseen share "
            f"{moved['unseen_mean']['recent']} (reference {moved['unseen_mean']['reference']}), "
            f"length KS p={moved.get('length_ks', {}).get('p_value', float('nan')):.2g}"
        )

    first = airline[: args.first]
    annotate(first, [next(next_id) for _ in first])
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    deadline = time.monotonic() + 60
    while version() == "untrained" and time.monotonic() < deadline:
        time.sleep(0.2)
    v1 = version()
    cursor_a, cursor_o = args.first, 0
    same = airline[cursor_a : cursor_a + args.batch]
    annotate(same, serve(same))
    report("A: airline traffic", v1)
    runtime.redis.delete("lsb:1:traffic")
    shifted = other[cursor_o : cursor_o + args.batch]
    cursor_o += args.batch
    annotate(shifted, serve(shifted))
    report("B: other topics (the shift)", v1)
    served = version()
    for phase in ("C", "D", "E"):
        time.sleep(2)  # a triggered retrain finishes
        runtime.redis.delete("lsb:1:traffic")
        served = version()
        batch = other[cursor_o : cursor_o + args.batch]
        cursor_o += args.batch
        annotate(batch, serve(batch))
        report(f"{phase}: other topics, later", served)
    for event in reversed(client.get("/projects/1/audit").json["events"]):
        if event["kind"] in {"trigger", "promotion", "rejection"}:
            print(f"  {event['kind']:9s} by {event['actor'][:32]:32s} {event['message'][:150]}")
    runtime.stop()


if __name__ == "__main__":
    main()
