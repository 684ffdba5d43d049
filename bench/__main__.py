"""The benchmark suite: `python -m bench [--quick] [--url URL]` prints one table with targets.

Without `--url` it starts its own deployment on loopback (redis-server on a free port, gunicorn
with `--web-workers` workers, one RQ worker; RETRAIN_THRESHOLD=1 so every annotation retrains) and
sends the HTTP load from this process. Parts, in order:

  webhook   a burst of annotation webhooks (they also train the model the other parts use)
  feedback  one more annotation -> the model trained on it served by every web worker
  predict   server time of 1,000-task /predict requests (0.5 s apart), then throughput and latency
            of 1- and 100-task requests from `--clients` threads for `--seconds` each
  memory    resident memory (VmRSS) of each web worker with 10 projects loaded
  ranking   our ranking of a 100k-task pool by a new model with the pool cache filled (after a
            promotion), and the first ranking with the cache empty (in this process)
  retrain   train and judge at 1k, 10k and 100k labels (in this process)
  kernels   CPU time to hash and to score 1,000 tweets, compiled against numpy (in this process)
  spans     an NER config (the CRF span family) on its own deployment trained on WNUT-16 through
            span webhooks: server time of 1,000-tweet /predict requests and 1-task requests from
            `--clients` threads; then a train job's fit and judge at 1k and 10k sentences (in this process)
  replication  annotation webhooks against a Sentinel-monitored master with two replicas, with
            REDIS_MIN_REPLICAS_ACK 0, 1 and 2, from one client and from `--clients` (latency p50, p99)
  publish   what one promotion asks of Label Studio at 10k and 100k tasks (a stand-in LS API, in this
            process): requests, bytes, seconds until LS serves the new head and until it is stored
  official  ours against the official example side by side (`bench/official.py`): /predict
            throughput, p99 and server CPU per request of 1- and 100-task requests under wrk, in
            our embedded default and production shapes (only with `--official PATH`, a checkout
            of HumanSignal/label-studio-ml-backend)
  labelstudio  a real Label Studio (LABEL_STUDIO_BIN) with 10,000 tasks on a RAM disk and on a disk:
            a scripted annotator's speed without the backend, with only a webhook, and with the
            backend; failed requests, promotion to served, share served with a current
            prediction, LS's rows (skipped without LS)

With `--url` only the HTTP load runs (webhook, predict), against any LS ML backend; the parts that
need our processes or code are skipped. `--quick` runs every part small (the smoke test's mode).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from backend.state.registry import Registry
from lab.datasets import load_tweets
from lab.processes import Deployment

from . import loop, ls_scale, memory, model, official, predict, replication, spans
from . import publish as publishing

PARTS = (
    "webhook",
    "feedback",
    "predict",
    "memory",
    "ranking",
    "retrain",
    "kernels",
    "spans",
    "replication",
    "publish",
    "official",
    "labelstudio",
)


@dataclass(frozen=True)
class Row:
    measure: str
    result: str
    target: str = ""
    ok: bool | None = None

    def cells(self) -> list[str]:
        verdict = "" if self.ok is None else ("pass" if self.ok else "**FAIL**")
        return [self.measure, self.result, self.target or "-", verdict or "-"]


def check(value: float, limit: float, below: bool = True) -> bool:
    return not math.isnan(value) and (value < limit if below else value <= limit)


def table(rows: list[Row]) -> str:
    header = ["measure", "result", "target", ""]
    cells = [header] + [row.cells() for row in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c[i].ljust(widths[i]) for i in range(len(header))) + " |" for c in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="load this running LS ML backend instead of starting ours (HTTP parts only)")
    parser.add_argument("--user", default="", help="basic auth user for --url")
    parser.add_argument("--password", default="", help="basic auth password for --url")
    parser.add_argument("--quick", action="store_true", help="every part small (seconds, not minutes)")
    parser.add_argument(
        "--parts",
        help=f"comma-separated subset of {','.join(PARTS)} (default: all but labelstudio, about 15 minutes, "
        "which runs only when named, and official, which runs with --official)",
    )
    parser.add_argument("--project", type=int, default=900, help="project id the load uses")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4, help="client threads of the HTTP load")
    parser.add_argument("--seconds", type=float, help="duration of each /predict throughput run")
    parser.add_argument(
        "--official", type=Path, help="a checkout of HumanSignal/label-studio-ml-backend: runs the official part (its venv goes beside it)"
    )
    args = parser.parse_args(argv)
    if args.parts is None:
        args.parts = ",".join(p for p in PARTS if p != "labelstudio" and (p != "official" or args.official))
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    sizes = (
        dict(
            burst=200,
            rounds=1,
            seconds=1.0,
            big=5,
            pause=0.1,
            pool=2_000,
            labeled=300,
            repeat=1,
            retrain=(300, 1_000, 2_000),
            per_project=200,
            pools=(1_000, 4_000),
            ls_pool=2_000,
            ls_steps=40,
        )
        if args.quick
        else dict(
            burst=10_000,
            rounds=5,
            seconds=10.0,
            big=30,
            pause=0.5,
            pool=100_000,
            labeled=2_000,
            repeat=3,
            retrain=(1_000, 10_000, 100_000),
            per_project=2_000,
            pools=(10_000, 100_000),
            ls_pool=10_000,
            ls_steps=160,
        )
    )
    for name, value in sizes.items():
        if name != "seconds" or args.seconds is None:
            setattr(args, name, value)
    return args


def http_parts(args: argparse.Namespace, parts: set[str], texts: list[str], labels: list[str], add: Callable[[Row], None]) -> None:
    auth = (args.user, args.password) if args.user else None
    deployment = (
        None
        if args.url
        else Deployment(args.web_workers, RETRAIN_THRESHOLD="1", RETRAIN_MIN_INTERVAL="0", SWAP_POLL_INTERVAL="0.25", LOG_LEVEL="WARNING")
    )
    url = args.url or deployment.url
    project = args.project
    try:
        workers = deployment.web_pids if deployment is not None else None
        loop.warm_up(url, "/webhook", loop.skipped_annotation(project + 50), workers, auth)
        hooks = loop.burst(url, project, texts, labels, args.burst, args.clients, auth)
        if "webhook" in parts:
            add(
                Row(
                    f"webhook burst: {args.burst:,} annotations, {args.clients} clients",
                    f"{hooks.rate:,.0f} webhooks/s ({hooks.errors} errors)",
                )
            )
            server = f", server p99 {hooks.ms(99, 'server'):.1f} ms" if hooks.server else ""
            server += f" (CPU p99 {hooks.ms(99, 'cpu'):.1f} ms)" if hooks.cpu else ""
            add(
                Row(
                    "webhook latency under the burst",
                    f"p50 {hooks.ms(50):.1f} ms, p99 {hooks.ms(99):.1f} ms{server}",
                    "p99 < 20 ms",
                    check(hooks.ms(99), 20) and not hooks.errors,
                )
            )
        if deployment is not None:
            registry = Registry(deployment.services.model_dir)
            loop.settled(registry, project, args.burst)
            if "feedback" in parts:
                times, rounds = loop.feedback(url, registry, deployment.web_pids, project, texts, labels, args.burst, args.rounds)
                add(Row(f"feedback latency at {args.burst:,} labels (webhook -> served by all workers)", loop.describe(times, rounds)))
        elif loop.await_model(url, project, timeout=300, auth=auth) is None:
            print(f"note: {url} reported no trained model within 300 s; /predict figures are of an untrained model", file=sys.stderr)
        unlabeled = texts[args.burst + args.rounds :]
        if "predict" in parts:
            loop.warm_up(url, "/predict", predict.bodies(project, unlabeled, 1)[0], workers, auth)
            big = predict.server_time(url, project, unlabeled, 1000, args.big, auth, args.pause)  # first: an idle server
            if big.server:
                cpu = f"CPU p50 {big.ms(50, 'cpu'):.1f} ms, " if big.cpu else ""
                add(
                    Row(
                        "/predict 1,000 tasks, server time (Server-Timing), one client",
                        f"p50 {big.ms(50, 'server'):.1f} ms, p99 {big.ms(99, 'server'):.1f} ms "
                        f"({cpu}client p50 {big.ms(50):.1f} ms, {big.errors} errors)",
                        "p50 < 50 ms",
                        check(big.ms(50, "server"), 50) and not big.errors,
                    )
                )
            else:
                add(
                    Row(
                        "/predict 1,000 tasks, client time (no Server-Timing header)",
                        f"p50 {big.ms(50):.1f} ms, p99 {big.ms(99):.1f} ms ({big.errors} errors)",
                    )
                )
            for batch in (1, 100):
                load = predict.throughput(url, project, unlabeled, batch, args.clients, args.seconds, auth)
                servers = f", {args.web_workers} web workers" if deployment is not None else ""
                judged = dict(target="p99 < 20 ms", ok=check(load.ms(99), 20) and not load.errors) if batch == 1 else {}
                add(
                    Row(
                        f"/predict {batch} task{'s' if batch > 1 else ''}, {args.clients} clients{servers}",
                        f"{load.rate:,.0f} req/s, p50 {load.ms(50):.1f} ms, p99 {load.ms(99):.1f} ms ({load.errors} errors)",
                        **judged,
                    )
                )
        if deployment is not None and "memory" in parts:
            versions = {project: registry.pointer(project).version}
            for k in range(1, 10):
                chunk = slice(k * args.per_project, (k + 1) * args.per_project)
                versions[project + k] = memory.publish(registry, project + k, texts[chunk], labels[chunk])
            memory.loaded_everywhere(url, deployment.web_pids, versions)
            sizes = [memory.rss_mb(pid) for pid in sorted(deployment.web_pids)]
            add(
                Row(
                    f"RSS per web worker, {len(versions)} projects loaded",
                    f"max {max(sizes):.0f} MB (" + ", ".join(f"{s:.0f}" for s in sizes) + ")",
                    "<= 250 MB",
                    check(max(sizes), 250, below=False),
                )
            )
    finally:
        if deployment is not None:
            deployment.stop()


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    parts = set(args.parts.split(","))
    data = load_tweets()
    order = list(range(len(data)))
    random.Random(0).shuffle(order)  # the file is grouped by source and label
    texts, labels = [data.texts[i] for i in order], [data.labels[i] for i in order]
    rows: list[Row] = []
    started = time.monotonic()

    def add(row: Row) -> None:
        rows.append(row)
        print(f"  [{time.monotonic() - started:6.1f} s] {row.measure}: {row.result}", file=sys.stderr, flush=True)

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", file=sys.stderr, flush=True)
    if parts & {"webhook", "feedback", "predict", "memory"}:
        http_parts(args, parts, texts, labels, add)
    for name in ("feedback", "memory", "ranking", "retrain", "kernels", "publish", "official", "labelstudio"):
        if args.url and name in parts:
            add(Row(name, "skipped: needs our processes (no --url)"))
    if not args.url and "ranking" in parts:
        ranking = model.ranking_seconds(texts, labels, args.pool, args.labeled, args.repeat)
        (seconds, cpu), (cold, cold_cpu) = ranking.warm, ranking.cold
        add(
            Row(
                f"ranking {args.pool:,} tasks (margin, new model on {args.labeled:,} labels, pool cache filled), best of {args.repeat}",
                f"{seconds:.2f} s (CPU {cpu:.2f} s)",
                "< 1 s",
                check(seconds, 1.0),
            )
        )
        add(
            Row(
                f"first ranking of {args.pool:,} tasks (pool cache empty: hash, cluster, store)",
                f"{cold:.2f} s (CPU {cold_cpu:.2f} s), cache {ranking.cache_bytes / 1e6:,.0f} MB on disk",
            )
        )
    if not args.url and "retrain" in parts:
        champion = model.trained(texts[: args.retrain[0]], labels[: args.retrain[0]])
        for size in args.retrain:
            seconds, cpu = model.retrain_seconds(texts, labels, size, champion)
            add(Row(f"retrain at {size:,} labels (train + judge)", f"{seconds:.2f} s (CPU {cpu:.2f} s)"))
    if not args.url and "kernels" in parts:
        for name, ms in model.kernel_ms(texts, labels, args.labeled).items():
            add(Row(f"{name}: 1,000 tweets (CPU, best of 20)", f"{ms:.1f} ms"))
    if not args.url and "spans" in parts:
        served = spans.serving(args.web_workers, args.clients, args.seconds, 300 if args.quick else 2_000, args.big, args.pause)
        server, load = served["server"], served["load"]
        figures = ((served["record"] or {}).get("evaluation") or {}).get("challenger", {}).get("ner", {})
        add(
            Row(
                "spans: version trained on WNUT-16 span webhooks",
                f"{served['version']}, span F1 {figures.get('micro_f1', float('nan')):.3f}",
            )
        )
        add(
            Row(
                "spans: /predict 1,000 tweets, server time, one client",
                f"p50 {server.ms(50, 'server'):.1f} ms, p99 {server.ms(99, 'server'):.1f} ms ({server.errors} errors)",
                "p50 < 150 ms",
                check(server.ms(50, "server"), 150) and not server.errors,
            )
        )
        add(
            Row(
                f"spans: /predict 1 task, {args.clients} clients, {args.web_workers} web workers",
                f"{load.rate:,.0f} req/s, p50 {load.ms(50):.1f} ms, p99 {load.ms(99):.1f} ms ({load.errors} errors)",
                "p99 < 20 ms",
                check(load.ms(99), 20) and not load.errors,
            )
        )
        for size in spans.sizes(args.quick):
            seconds, cpu, f1 = spans.retrain_seconds(size)
            add(Row(f"spans: retrain at {size:,} sentences (train + judge)", f"{seconds:.2f} s (CPU {cpu:.2f} s), span F1 {f1:.3f}"))
    if not args.url and "replication" in parts:
        count = 100 if args.quick else 1_000
        for (acks, threads), hooks in replication.webhook_latency(texts, labels, count, args.clients, args.web_workers).items():
            add(
                Row(
                    f"replication: webhook, REDIS_MIN_REPLICAS_ACK={acks}, {threads} client{'s' if threads > 1 else ''}",
                    f"p50 {hooks.ms(50):.1f} ms, p99 {hooks.ms(99):.1f} ms, "
                    f"server p99 {hooks.ms(99, 'server'):.1f} ms ({hooks.errors} errors)",
                )
            )
    if not args.url and "publish" in parts:
        promotions = publishing.per_promotion(texts, labels, args.pools, args.labeled)
        smallest = promotions[0]
        for p in promotions:
            grows = p.requests <= 1.2 * smallest.requests and p.bytes <= 1.2 * smallest.bytes
            add(
                Row(
                    f"one promotion at {p.pool:,} tasks (stand-in LS API, head {p.head})",
                    f"{p.requests} LS requests, {p.bytes / 1e3:,.0f} kB; LS serves it after {p.served_after:.1f} s, "
                    f"head stored after {p.seconds:.1f} s; {p.past_end} pages past the end",
                    f"requests and bytes within 20% of {smallest.pool:,} tasks'",
                    grows and not p.past_end,
                )
            )
    if not args.url and "official" in parts:
        missing = "no --official checkout" if args.official is None else official.wrk_missing()
        if missing:
            add(Row("/predict against the official example", f"skipped: {missing}"))
        else:
            for measure, result, ok in official.run(args.official.resolve(), texts, labels, args.seconds):
                add(Row(measure, result, ">= 3x the official req/s, lower p99", ok))
    if not args.url and "labelstudio" in parts:
        found = ls_scale.runs(texts, labels, args.ls_pool, args.ls_steps)
        if not found:
            add(Row("real Label Studio", "skipped: set LABEL_STUDIO_BIN (bin/test installs one in .venv-ls)"))
        for run in found:
            slower = run.served.medians()["submit_s"] / run.hooked.medians()["submit_s"]
            lag = median(run.lags) if run.lags else float("nan")
            add(
                Row(
                    f"real LS, {args.ls_pool:,} tasks, SQLite on {run.storage}, {args.ls_steps} annotations",
                    ls_scale.describe(run),
                    "submit within 20% of webhook only, no failed request, served <= 10 s, >= 80% current",
                    slower <= 1.2 and not run.served.failures and check(lag, 10, below=False) and run.share >= 0.8,
                )
            )
    print(table(rows))
    judged = [r for r in rows if r.ok is not None]
    print(f"\n{sum(r.ok for r in judged)} of {len(judged)} targets met; load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
