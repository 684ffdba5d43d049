"""The models this process serves, swapped in the background when a project's pointer moves.

Each process (every gunicorn worker, each RQ work-horse) keeps its own cache. A poller thread,
started lazily after fork, reads the pointers every `poll_interval` seconds and loads a newer
artifact off the request path; requests keep the reference they took, so a swap never fails one.
A process never moves to a lower pointer `seq`, and a fresh process loads whatever is current.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .families import ModelBundle
from .metrics import MODEL_SEQ
from .rules import RuleSet, parse_rules
from .state.registry import Pointer, Registry, RegistryError

log = logging.getLogger(__name__)


_LIBC = ctypes.CDLL(None)
_MALLOC_TRIM = getattr(_LIBC, "malloc_trim", None)  # glibc's; absent elsewhere
_MALLOPT = getattr(_LIBC, "mallopt", None)
M_ARENA_MAX = -8  # glibc malloc.h
ARENAS = 2


def release_free_memory() -> None:
    """Give the heap's free pages back to the OS. Loading an artifact frees model-sized buffers that
    glibc otherwise keeps: 11.6 instead of 8.4 MB per loaded model in a web worker."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def limit_malloc_arenas() -> None:
    """At most `ARENAS` glibc heaps for this process's threads (the default allows 8 per core): each
    gunicorn thread otherwise keeps the peak of the biggest batch it served in a heap of its own
    (about 60 MB less per web worker after 1,000-task requests, measured)."""
    if _MALLOPT is not None:
        _MALLOPT(M_ARENA_MAX, ARENAS)


@dataclass(frozen=True)
class Served:
    """One loaded model version of a project."""

    project: int
    version: str
    seq: int
    bundle: ModelBundle
    loaded_at: float


@dataclass(frozen=True)
class QueueScores:
    """The stored ranking's LS score of each task (`Registry.save_queue_scores`), as the file was."""

    entries: np.ndarray
    stamp: tuple[int, int]  # the file's mtime (ns) and size when read

    def lookup(self, task_ids: Sequence[int]) -> list[float | None]:
        tasks = self.entries["task"]
        wanted = np.asarray(task_ids, dtype=np.int64)
        at = np.minimum(np.searchsorted(tasks, wanted), max(len(tasks) - 1, 0))
        if not len(tasks):
            return [None] * len(wanted)
        found = tasks[at] == wanted
        scores = self.entries["score"][at].tolist()
        return [score if hit else None for score, hit in zip(scores, found.tolist())]


class ModelCache:
    """Per-process cache of the current model of each project, and of its queue's scores."""

    def __init__(self, registry: Registry, poll_interval: float = 0.25):
        limit_malloc_arenas()  # before the request threads of a web worker allocate
        self.registry = registry
        self.poll_interval = poll_interval
        self._served: dict[int, Served] = {}
        self._scores: dict[int, QueueScores] = {}
        self._rules: dict[int, tuple[tuple[int, int], RuleSet]] = {}
        self._known: set[int] = set()
        self._errors: dict[int, str] = {}
        self._lock = threading.Lock()
        self._load_locks: dict[int, threading.Lock] = {}
        self._poller_pid = 0
        self._stop = threading.Event()

    def get(self, project: int) -> Served | None:
        """The served model of a project (loaded now if this process never looked at the project)."""
        self._ensure_poller()
        served = self._served.get(project)
        if served is None:
            with self._lock:
                self._known.add(project)
            self.refresh(project)  # waits for a load the poller may have started
            served = self._served.get(project)
        return served

    def queue_scores(self, project: int) -> QueueScores | None:
        """The project's queue scores as of the last poll (read now when this process never
        looked, or polls nothing)."""
        if project not in self._scores or self.poll_interval <= 0:
            self._ensure_poller()
            with self._lock:
                self._known.add(project)
            self.refresh_scores(project)
        return self._scores.get(project)

    def rules(self, project: int) -> RuleSet | None:
        """The project's labeling rules as of the last poll (`Registry.save_rules`); None without."""
        self.queue_scores(project)
        held = self._rules.get(project)
        return held[1] if held else None

    def refresh_rules(self, project: int) -> None:
        """Read the project's rules again if their file changed."""
        path = self.registry.rules_path(project)
        try:
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            held = self._rules.get(project)
            if held is None or held[0] != stamp:
                self._rules[project] = (stamp, RuleSet(parse_rules(path.read_text())))
        except FileNotFoundError:
            self._rules.pop(project, None)
        except (OSError, ValueError) as exc:  # InvalidPayload is a ValueError
            log.warning("project %s: labeling rules unreadable (%s); predicting without them", project, exc)

    def refresh_scores(self, project: int) -> None:
        """Read the project's queue scores (and rules) again if their files changed."""
        self.refresh_rules(project)
        path = self.registry.queue_scores_path(project)
        try:
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            held = self._scores.get(project)
            if held is None or held.stamp != stamp:
                self._scores[project] = QueueScores(np.load(path, allow_pickle=False), stamp)
        except FileNotFoundError:
            self._scores.pop(project, None)
        except (OSError, ValueError) as exc:
            log.warning("project %s: queue scores unreadable (%s); scoring tasks as unranked", project, exc)

    def pointer(self, project: int) -> Pointer | None:
        return self.registry.pointer(project)

    def refresh(self, project: int) -> bool:
        """Load the project's current artifact if it is newer than the served one; True on a swap."""
        pointer = self.registry.pointer(project)
        if pointer is None:
            if not self.registry.pointer_path(project).exists() and self._served.pop(project, None) is not None:
                log.info("project %s: its models were erased; no longer serving them", project)  # only an erasure removes it
            return False
        served = self._served.get(project)
        if served is not None and pointer.seq <= served.seq:
            return False
        with self._lock:
            lock = self._load_locks.setdefault(project, threading.Lock())
        with lock:
            served = self._served.get(project)
            if served is not None and pointer.seq <= served.seq:
                return False
            try:
                bundle = self.registry.load(project, pointer.version, pointer.sha256)
            except RegistryError as exc:
                if self._errors.get(project) != str(exc):
                    log.error("project %s: keeping the served model: %s", project, exc)
                self._errors[project] = str(exc)
                return False
            self._errors.pop(project, None)
            self._served[project] = Served(project, pointer.version, pointer.seq, bundle, time.time())
            release_free_memory()
            MODEL_SEQ.labels(str(project)).set(pointer.seq)
            log.info("project %s: now serving %s (seq %s)", project, pointer.version, pointer.seq)
            return True

    def errors(self) -> dict[int, str]:
        """Projects whose current artifact could not be loaded (the health endpoint reports them)."""
        return dict(self._errors)

    def _ensure_poller(self) -> None:
        if self._poller_pid == os.getpid() or self.poll_interval <= 0:
            return
        with self._lock:
            if self._poller_pid == os.getpid():
                return
            self._poller_pid = os.getpid()
            threading.Thread(target=self._poll, name="model-poller", daemon=True).start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval):
            for project in set(self._known) | set(self.registry.projects()):
                try:
                    self._known.add(project)
                    self.refresh(project)
                    self.refresh_scores(project)
                except Exception:  # the poller must survive anything a broken file throws at it
                    log.exception("project %s: model refresh failed", project)

    def stop(self) -> None:
        self._stop.set()
