"""Memory of the web workers with several projects loaded: resident set size from /proc."""

from __future__ import annotations

import time
from collections.abc import Sequence

from backend.state.registry import Registry
from lab.client import Client, predict_body
from lab.processes import wait_for

from .model import trained


def publish(registry: Registry, project: int, texts: Sequence[str], labels: Sequence[str]) -> str:
    """Train a model in this process and make it the project's current version, as a train job would."""
    bundle = trained(texts, labels)
    version = registry.next_version(project)
    sha256 = registry.save_artifact(project, version, bundle)
    registry.save_record(
        project,
        {
            "version": version,
            "project": project,
            "decision": "promoted",
            "created_at": time.time(),
            "watermark": len(texts),
            "sha256": sha256,
        },
    )
    pointer = registry.pointer(project)
    registry.promote(project, version, sha256, len(texts), pointer.seq if pointer else 0)
    return version


def loaded_everywhere(url: str, workers: set[int], versions: dict[int, str], timeout: float = 60) -> None:
    """Ask `/predict` of every project until each web worker has answered it with the current version."""
    seen: set[tuple[int, int]] = set()

    def ask() -> bool:
        for project, version in versions.items():
            client = Client(url)  # a new connection per request spreads them over the workers
            reply = client.post("/predict", predict_body(project, ["how much memory does this take?"]))
            client.close()
            if reply.json()["results"][0].get("model_version") == version:
                seen.add((int(reply.headers["X-Backend-Worker"]), project))
        return all((pid, p) in seen for pid in workers for p in versions)

    wait_for(ask, timeout=timeout, interval=0.01)


def rss_mb(pid: int) -> float:
    """VmRSS of a process in MB (10^6 bytes)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    raise ValueError(f"no VmRSS for {pid}")
