"""Versioned model artifacts per project, on disk, with a compare-and-set `current` pointer.

Layout under `MODEL_DIR/project-<id>/`:
  `<version>.skops`  the artifact (skops, never pickle), published by temp file + fsync + rename
  `<version>.json`   its record: parent, metrics of both sides, fingerprint, label counts, decision
  `current.json`     the pointer `{version, seq, sha256, watermark}`, moved last and only under a lock
  `queue-scores.npy`, `labeling-rules.spec`  what `/predict` reads without Redis: queue positions, rules
  `pool/`            the unlabeled pool's cached features (`families.pool`)
The pointer on disk is authoritative; `seq` grows on every move (promotion or rollback), so a
process never swaps backwards, and `watermark` never falls, so an older job can never win.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import families, faults
from ..families import ModelBundle

ARTIFACT_SUFFIX = ".skops"
POINTER = "current.json"
QUEUE_SCORES = "queue-scores.npy"  # the stored ranking's LS score of each task, for `/predict`
RULES = "labeling-rules.spec"  # the project's labeling rules (JSON), for `/predict` before the first model
SCORE_ENTRY = np.dtype([("task", "<i8"), ("score", "<f8")])
_VERSION = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
TRUSTED_TYPES: list[str] = []  # a TF-IDF + linear-model pipeline needs none beyond skops' defaults
_SKOPS_PROTOCOL = 2  # the schema version `read_plain` knows (skops 0.10 and later write it)


class NotPlain(Exception):
    """The artifact holds something besides dicts, lists, JSON values and numeric arrays."""


def read_plain(data: bytes) -> Any:
    """A skops artifact made only of dicts with str keys, lists, JSON values and non-object numpy
    arrays, read without importing skops (which imports scikit-learn and pandas: 120 MB per web
    worker). Stricter than `skops.io.loads` with no trusted types; raises `NotPlain` for anything
    else (an artifact with scikit-learn objects, or a hostile one), which skops then judges."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        schema = json.loads(archive.read("schema.json"))
        if not isinstance(schema, dict) or schema.get("protocol") != _SKOPS_PROTOCOL:
            raise NotPlain("unknown skops protocol")

        def node(state: Any) -> Any:
            if not isinstance(state, dict):
                raise NotPlain("malformed node")
            kind = (state.get("__module__"), state.get("__class__"), state.get("__loader__"))
            if kind == ("builtins", "str", "JsonNode") and state.get("is_json") is True:
                value = json.loads(state["content"])
                if isinstance(value, (dict, list)):
                    raise NotPlain("nested JSON")
                return value
            if kind == ("builtins", "list", "ListNode"):
                return [node(item) for item in state["content"]]
            if kind == ("builtins", "dict", "DictNode"):
                types = state.get("key_types", {}).get("content", [])
                content = state["content"]
                if (
                    not isinstance(content, dict)
                    or len(types) != len(content)
                    or any((t.get("__module__"), t.get("__class__"), t.get("__loader__")) != ("builtins", "str", "TypeNode") for t in types)
                ):
                    raise NotPlain("dict keys that are not all str")
                return {key: node(value) for key, value in content.items()}
            if kind == ("numpy", "ndarray", "NdArrayNode") and state.get("type") == "numpy":
                array = np.lib.format.read_array(io.BytesIO(archive.read(str(state["file"]))))  # .npy only, never a pickle
                if array.dtype.kind not in "biuf":
                    raise NotPlain("array of an unexpected dtype")
                return array
            raise NotPlain(f"{kind[0]}.{kind[1]}")

        return node(schema)


def load_artifact(data: bytes) -> Any:
    """The object in a skops artifact: read plainly when it is plain (the current layout), else by
    skops with `TRUSTED_TYPES` (legacy artifacts; anything untrusted is refused there)."""
    try:
        return read_plain(data)
    except NotPlain:
        import skops.io as sio

        return sio.loads(data, trusted=TRUSTED_TYPES)


class RegistryError(Exception):
    """A registry operation was refused (unknown version, bad checksum, stale compare-and-set)."""


@dataclass(frozen=True)
class Pointer:
    version: str
    seq: int
    sha256: str
    watermark: int

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "seq": self.seq, "sha256": self.sha256, "watermark": self.watermark}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file so readers see the old or the new content, never a part (temp, fsync, rename)."""
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}-{time.monotonic_ns()}"
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


class Registry:
    """All projects' artifacts, records and pointers under one model directory."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def project_dir(self, project: int) -> Path:
        return self.root / f"project-{int(project)}"

    def erase(self, project: int, models: bool) -> int:
        """Remove what the project's directory holds beside its models (pool cache, queue scores,
        rules), or everything with `models`; the number of files removed."""
        directory = self.project_dir(project)
        if not directory.is_dir():
            return 0
        kept = (
            (lambda path: False)
            if models
            else (lambda path: path.suffix in {ARTIFACT_SUFFIX, ".json"} or path.name in {".lock", "next-version"})
        )
        removed = 0
        for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            try:
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()  # empty by now, unless a job of the project still writes into it
                elif not (path.parent == directory and kept(path)):
                    path.unlink()
                    removed += 1
            except OSError:  # gone meanwhile, or a directory still written to
                continue
        if models:
            shutil.rmtree(directory, ignore_errors=True)
        return removed

    def projects(self) -> list[int]:
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            if entry.name.startswith("project-") and entry.name[8:].isdigit():
                found.append(int(entry.name[8:]))
        return sorted(found)

    @contextmanager
    def _locked(self, project: int) -> Iterator[Path]:
        directory = self.project_dir(project)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield directory
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- pointer -------------------------------------------------------------------------------
    def save_queue_scores(self, project: int, tasks: Sequence[int], scores: Sequence[float]) -> None:
        """Store the stored ranking's LS score of each task, sorted by task, where web processes
        read it without Redis (`ModelCache.queue_scores`)."""
        entries = np.empty(len(tasks), dtype=SCORE_ENTRY)
        entries["task"] = np.asarray(tasks, dtype=np.int64)
        entries["score"] = np.asarray(scores, dtype=np.float64)
        entries.sort(order="task")
        directory = self.project_dir(project)
        directory.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, entries, allow_pickle=False)
        atomic_write(directory / QUEUE_SCORES, buffer.getvalue())

    def save_rules(self, project: int, spec: Sequence[dict[str, str]]) -> None:
        """Store the project's labeling rules (their JSON spec) where web processes read them
        without Redis (`ModelCache.rules`); no rules: no file."""
        path = self.rules_path(project)
        if not spec:
            path.unlink(missing_ok=True)
            return
        raw = json.dumps(list(spec), sort_keys=True).encode()
        try:
            if path.read_bytes() == raw:
                return
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, raw)

    def rules_path(self, project: int) -> Path:
        return self.project_dir(project) / RULES

    def queue_scores_path(self, project: int) -> Path:
        return self.project_dir(project) / QUEUE_SCORES

    def pointer_path(self, project: int) -> Path:
        return self.project_dir(project) / POINTER

    def pointer(self, project: int) -> Pointer | None:
        try:
            raw = json.loads(self.pointer_path(project).read_bytes())
            return Pointer(str(raw["version"]), int(raw["seq"]), str(raw["sha256"]), int(raw["watermark"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return None

    def _move_pointer(self, directory: Path, pointer: Pointer) -> None:
        atomic_write(directory / POINTER, json.dumps(pointer.to_json()).encode())

    # -- candidates ----------------------------------------------------------------------------
    def next_version(self, project: int) -> str:
        """Reserve the next version name of a project (`p<id>-v<n>`), unique even across machines."""
        with self._locked(project) as directory:
            counter = directory / "next-version"
            n = int(counter.read_text() or "0") + 1 if counter.exists() else 1
            existing = [int(m.group(1)) for p in directory.glob("*.json") if (m := re.search(r"-v(\d+)\.json$", p.name))]
            n = max([n, *[e + 1 for e in existing]])
            atomic_write(counter, str(n).encode())
        return f"p{int(project)}-v{n}"

    def save_artifact(self, project: int, version: str, bundle: ModelBundle) -> str:
        """Publish an artifact under its final name; return its sha256. Never touches the pointer."""
        if not _VERSION.match(version):
            raise RegistryError("invalid version name")
        directory = self.project_dir(project)
        directory.mkdir(parents=True, exist_ok=True)
        import skops.io as sio  # only processes that publish pay for importing it

        faults.point("before_dump")
        data = sio.dumps(families.to_artifact(bundle))
        tmp = directory / f".tmp-{version}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data[: len(data) // 2])
                faults.point("mid_dump")
                handle.write(data[len(data) // 2 :])
                handle.flush()
                os.fsync(handle.fileno())
            faults.point("after_dump_before_replace")
            os.replace(tmp, directory / f"{version}{ARTIFACT_SUFFIX}")
        finally:
            if tmp.exists():
                tmp.unlink()
        _fsync_dir(directory)
        return hashlib.sha256(data).hexdigest()

    def save_record(self, project: int, record: dict[str, Any]) -> None:
        version = str(record["version"])
        if not _VERSION.match(version):
            raise RegistryError("invalid version name")
        directory = self.project_dir(project)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / f"{version}.json", json.dumps(record, sort_keys=True, default=str).encode())

    def record(self, project: int, version: str) -> dict[str, Any] | None:
        if not _VERSION.match(version):
            return None
        try:
            return json.loads((self.project_dir(project) / f"{version}.json").read_bytes())
        except (FileNotFoundError, ValueError):
            return None

    def history(self, project: int) -> list[dict[str, Any]]:
        """Every candidate's record, oldest first."""
        records = []
        for path in self.project_dir(project).glob("*.json"):
            if path.name == POINTER:
                continue
            try:
                record = json.loads(path.read_bytes())
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return sorted(records, key=lambda r: (r.get("created_at", 0), r.get("version", "")))

    def load(self, project: int, version: str, sha256: str) -> ModelBundle:
        """Load an artifact after checking its checksum and its types (skops allow-list)."""
        if not _VERSION.match(version):
            raise RegistryError("invalid version name")
        try:
            data = (self.project_dir(project) / f"{version}{ARTIFACT_SUFFIX}").read_bytes()
        except FileNotFoundError:
            raise RegistryError(f"artifact {version} is missing") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise RegistryError(f"artifact {version} fails its checksum")
        try:
            return families.from_artifact(load_artifact(data))
        except Exception as exc:
            raise RegistryError(f"artifact {version} was refused: {type(exc).__name__}") from None

    # -- moves ---------------------------------------------------------------------------------
    def promote(self, project: int, version: str, sha256: str, watermark: int, expected_seq: int) -> Pointer:
        """Make `version` current if the champion is still the one it was judged against (CAS)."""
        faults.point("after_replace_before_pointer")
        with self._locked(project) as directory:
            current = self.pointer(project)
            current_seq = current.seq if current else 0
            if current_seq != expected_seq:
                raise RegistryError(f"champion moved (seq {current_seq}, expected {expected_seq})")
            if current and watermark < current.watermark:
                raise RegistryError(f"watermark {watermark} is older than current {current.watermark}")
            pointer = Pointer(version, current_seq + 1, sha256, watermark)
            self._move_pointer(directory, pointer)
            return pointer

    def rollback(self, project: int, version: str) -> Pointer:
        """Point back at an earlier artifact (a new pointer seq; the watermark keeps its high mark)."""
        with self._locked(project) as directory:
            record = self.record(project, version)
            if not record or not record.get("sha256"):
                raise RegistryError(f"no artifact for version {version}")
            self.load(project, version, record["sha256"])  # refuse a broken target before moving
            current = self.pointer(project)
            pointer = Pointer(
                version,
                (current.seq if current else 0) + 1,
                record["sha256"],
                max(current.watermark if current else 0, int(record.get("watermark", 0))),
            )
            self._move_pointer(directory, pointer)
            return pointer

    def sweep_temp_files(self, max_age: float = 3600.0) -> int:
        """Remove temp files that a crashed publish left behind (never the live ones of a running job)."""
        removed = 0
        now = time.time()
        for project in self.projects():
            for tmp in self.project_dir(project).glob(".tmp-*"):
                try:
                    if now - tmp.stat().st_mtime > max_age:
                        tmp.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed
