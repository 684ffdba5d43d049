"""What REDIS_MIN_REPLICAS_ACK costs a webhook: the same annotation webhooks against a Sentinel-
monitored master with two replicas (`lab.processes.SentinelGroup`, everything on loopback and
`appendfsync always`), answered once Redis has the write (0) or once one or two replicas confirm it
(Redis `WAIT`), from one client and from several."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lab.client import Load
from lab.processes import SentinelGroup, Services

from . import loop

ACKS = (0, 1, 2)


def webhook_latency(texts: Sequence[str], labels: Sequence[str], count: int, clients: int, web_workers: int) -> dict[tuple[int, int], Load]:
    """(REDIS_MIN_REPLICAS_ACK, clients) -> the load of `count` webhooks, for each of ACKS with one
    client and with `clients`; each setting on a fresh gunicorn and project of the same group."""
    directory = Path(tempfile.mkdtemp(prefix="bench-replication-"))
    group = SentinelGroup(directory / "redis", replicas=2, sentinels=3)
    found: dict[tuple[int, int], Load] = {}
    try:
        for n, acks in enumerate(ACKS):
            services = Services(f"redis://127.0.0.1:{group.master_port}/0", directory / f"web-{acks}")
            services.tmp_path.mkdir()
            url, web = services.web(
                web_workers, **group.env(), REDIS_MIN_REPLICAS_ACK=str(acks), RETRAIN_THRESHOLD="1000000", LOG_LEVEL="WARNING"
            )
            try:
                workers = {int(pid) for pid in web.children()}
                for k, threads in enumerate((1, clients)):
                    project = 700 + 10 * n + k
                    loop.warm_up(url, "/webhook", loop.skipped_annotation(project), workers)
                    found[(acks, threads)] = loop.burst(url, project, texts, labels, count, threads)
            finally:
                services.stop()
    finally:
        group.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return found
