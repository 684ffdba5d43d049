"""The unlabeled pool's cached features: what ranking needs that does not depend on the model.

After every promotion the same pool is ranked again with a new model. Its hashed counts, its
k-means clusters and the word counts behind the near-duplicate check depend only on the tasks'
texts, so they are computed once per task and kept next to the project's artifacts:

  `MODEL_DIR/project-<id>/pool/seg-<token>.{indptr,indices,counts}.npy`
      immutable segments of `hash_texts` counts: uint8 counts (uint16 past 255) and int32 columns,
      each row split into its word and its character part (2 rows of the `indptr`), about 5 bytes
      per non-zero (100k tweets: 32M non-zeros, 174 MB with the rest)
  `.../pool/clusters-<token>.npz`   the fitted clustering (SVD components, centres, the TF-IDF idf)
  `.../pool/index.npz`              task id, text digest, segment, row and cluster of every pooled task

Rank jobs run in fresh processes, possibly on other machines sharing MODEL_DIR, so the cache is
files (numpy, never pickle), each written atomically; the index is written last and names what is
live, under a file lock. Tasks that arrive are hashed and assigned to the fitted clusters; tasks that
leave are dropped from the index (their rows are compacted away once they are half a pool). The
clustering is fitted again once the tasks assigned since the fit reach a quarter of it.

Scoring a model over the counts is the model's own `decision_function` (the same values as
/predict), fed float32 copies of `CHUNK_ROWS` rows at a time on `SCORE_THREADS` threads.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import secrets
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfTransformer

from .. import strategy as strategies
from ..state.registry import atomic_write
from .estimator import ControlModel, SparseLinear
from .hashing import BLOCKS, N_FEATURES, hash_texts, spans, word_counts

log = logging.getLogger(__name__)

WORDS = BLOCKS[0].stop  # the word block's width: columns below it are word 1-2-grams
DIGEST_BYTES = 16
REFIT_GROWTH = 0.25  # refit the clustering once tasks assigned since the fit reach this share of it
COMPACT_LIVE = 0.5  # rewrite the segments once fewer than this share of their rows is still pooled
MAX_SEGMENTS = 32
HASH_BATCH = 10_000
CHUNK_ROWS = 8192  # rows scored at once: bounds the float32 copies of the counts to a few MB
SCORE_THREADS = 2  # the compiled scores (and scipy's sparse products) release the GIL


def digests(texts: Sequence[str]) -> np.ndarray:
    """A 16-byte BLAKE2b digest per text: a task whose text changed is hashed again."""
    blake2b = hashlib.blake2b
    joined = b"".join([blake2b(t.encode("utf-8", "surrogatepass"), digest_size=DIGEST_BYTES).digest() for t in texts])
    return np.frombuffer(joined, dtype=f"S{DIGEST_BYTES}").copy()


class Segment(NamedTuple):
    """Hashed counts of some tasks: row r's word part is `indices[indptr[2r]:indptr[2r+1]]`, its
    character part `indices[indptr[2r+1]:indptr[2r+2]]`."""

    indptr: np.ndarray  # int64, 2 * rows + 1
    indices: np.ndarray  # int32 columns of `hash_texts`
    counts: np.ndarray  # uint8 or uint16

    @property
    def rows(self) -> int:
        return (len(self.indptr) - 1) // 2

    @classmethod
    def of(cls, counts: sp.csr_matrix) -> Segment:
        counts = counts.tocsr()
        counts.sum_duplicates()
        per_row = np.diff(counts.indptr)
        words = (
            np.add.reduceat((counts.indices < WORDS).astype(np.int64), counts.indptr[:-1])
            if counts.nnz
            else np.zeros(len(per_row), dtype=np.int64)
        )
        words[per_row == 0] = 0  # reduceat repeats the next value for an empty row
        indptr = np.empty(2 * counts.shape[0] + 1, dtype=np.int64)
        indptr[0::2] = counts.indptr
        indptr[1::2] = counts.indptr[:-1] + words
        top = counts.data.max(initial=0)
        dtype = np.uint8 if top <= np.iinfo(np.uint8).max else np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32
        return cls(indptr, counts.indices.astype(np.int32), counts.data.astype(dtype))

    @classmethod
    def hashed(cls, texts: Sequence[str]) -> Segment:
        """`hash_texts` of the texts, HASH_BATCH at a time: hashing holds ~25 KB per text meanwhile."""
        return cls.joined([cls.of(hash_texts(texts[i : i + HASH_BATCH])) for i in range(0, len(texts), HASH_BATCH)])

    @classmethod
    def joined(cls, parts: Sequence[Segment]) -> Segment:
        """The rows of several segments, in order."""
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0] + [len(p.indices) for p in parts])[:-1]
        dtype = max((p.counts.dtype for p in parts), key=lambda d: d.itemsize)
        return cls(
            np.concatenate([np.zeros(1, dtype=np.int64)] + [p.indptr[1:] + offset for p, offset in zip(parts, offsets)]),
            np.concatenate([p.indices for p in parts]),
            np.concatenate([p.counts.astype(dtype) for p in parts]),
        )

    def check(self) -> None:
        """Refuse arrays that do not form a segment (a damaged file must not reach scipy's loops)."""
        if (
            self.indptr.ndim != 1
            or len(self.indptr) % 2 != 1
            or self.indptr[0] != 0
            or self.indptr[-1] != len(self.indices)
            or len(self.counts) != len(self.indices)
            or np.any(np.diff(self.indptr) < 0)
            or (len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= N_FEATURES))
        ):
            raise ValueError("damaged pool segment")

    def take(self, rows: np.ndarray) -> Segment:
        """These rows only, in this order."""
        starts, stops = self.indptr[2 * rows], self.indptr[2 * rows + 2]
        lengths = stops - starts
        entries = spans(starts, lengths)
        indptr = np.concatenate(
            [[0], np.cumsum(np.column_stack([self.indptr[2 * rows + 1] - starts, stops - self.indptr[2 * rows + 1]]).ravel())]
        )
        return Segment(indptr.astype(np.int64), np.asarray(self.indices[entries]), np.asarray(self.counts[entries]))

    def words(self, rows: np.ndarray) -> sp.csr_matrix:
        """The word counts of these rows (float32, the shape `word_counts` returns)."""
        starts, stops = self.indptr[2 * rows], self.indptr[2 * rows + 1]
        entries = spans(starts, stops - starts)
        indptr = np.concatenate([[0], np.cumsum(stops - starts)])
        return sp.csr_matrix((self.counts[entries].astype(np.float32), self.indices[entries], indptr), shape=(len(rows), WORDS))

    def matrix(self, start: int = 0, stop: int | None = None) -> sp.csr_matrix:
        """The counts of rows `start:stop` (all by default) as `hash_texts` returns them."""
        stop = self.rows if stop is None else stop
        indptr = self.indptr[2 * start : 2 * stop + 1 : 2]
        first, last = indptr[0], indptr[-1]
        return sp.csr_matrix(
            (self.counts[first:last].astype(np.float32), self.indices[first:last], indptr - first), shape=(stop - start, N_FEATURES)
        )


def predict_proba(model: ControlModel, segments: Sequence[Segment], rows: Sequence[np.ndarray]) -> np.ndarray:
    """`model.predict_proba` of the given rows of each segment, concatenated, from the counts."""
    n = sum(len(r) for r in rows)
    if model.linear is None or not n:
        return model.by_label(np.zeros((n, 0)))
    decision = np.concatenate([decision_values(model.linear, segment)[r] for segment, r in zip(segments, rows)])
    return model.by_label(model.linear.probabilities(decision))


def decision_values(weights: SparseLinear, segment: Segment) -> np.ndarray:
    """`weights.decision_function` of every row of a segment, `CHUNK_ROWS` rows at a time."""
    starts = range(0, segment.rows, CHUNK_ROWS)

    def chunk(start: int) -> np.ndarray:
        return weights.decision_function(segment.matrix(start, min(start + CHUNK_ROWS, segment.rows)))

    if len(starts) > 1 and SCORE_THREADS > 1:
        with ThreadPoolExecutor(SCORE_THREADS) as threads:
            parts = list(threads.map(chunk, starts))
    else:
        parts = [chunk(start) for start in starts]
    return np.concatenate(parts) if parts else np.zeros((0, weights.coef.shape[1]), dtype=np.float32)


@dataclass
class Pool:
    """The features of the pool's tasks, in the order the caller gave them."""

    segments: list[Segment]
    segment_of: np.ndarray  # per task: its segment
    row_of: np.ndarray  # per task: its row there
    clusters: np.ndarray  # per task: its k-means cluster

    def __len__(self) -> int:
        return len(self.row_of)

    def _groups(self, positions: np.ndarray | None = None) -> tuple[list[Segment], list[np.ndarray], np.ndarray]:
        """Segments with the rows the positions need, and the permutation back to position order."""
        positions = np.arange(len(self)) if positions is None else np.asarray(positions)
        by_segment = np.argsort(self.segment_of[positions], kind="stable")
        segments, rows = [], []
        for s, segment in enumerate(self.segments):
            chosen = by_segment[self.segment_of[positions][by_segment] == s]
            if len(chosen):
                segments.append(segment)
                rows.append(self.row_of[positions][chosen])
        back = np.empty(len(positions), dtype=np.int64)
        back[by_segment] = np.arange(len(positions))
        return segments, rows, back

    def predict_proba(self, model: ControlModel) -> np.ndarray:
        """`model.predict_proba` of every task (the same values to about 1e-6: the model weighs in float32)."""
        segments, rows, back = self._groups()
        return predict_proba(model, segments, rows)[back]

    def words(self, positions: np.ndarray | None = None) -> sp.csr_matrix:
        """Word counts of the tasks at `positions` (all by default), as `word_counts` gives them."""
        segments, rows, back = self._groups(positions)
        if not segments:
            return sp.csr_matrix((0, WORDS), dtype=np.float32)
        return sp.vstack([s.words(r) for s, r in zip(segments, rows)], format="csr")[back]

    def counts(self, positions: np.ndarray | None = None) -> sp.csr_matrix:
        """`hash_texts` features of the tasks at `positions` (all by default)."""
        segments, rows, back = self._groups(positions)
        if not segments:
            return sp.csr_matrix((0, N_FEATURES), dtype=np.float32)
        return sp.vstack([s.matrix()[r] for s, r in zip(segments, rows)], format="csr")[back]

    def document_frequencies(self) -> np.ndarray:
        """How many tasks hold each word column."""
        df = np.zeros(WORDS, dtype=np.int64)
        segments, rows, _ = self._groups()
        for segment, chosen in zip(segments, rows):
            starts, stops = segment.indptr[2 * chosen], segment.indptr[2 * chosen + 1]
            df += np.bincount(segment.indices[spans(starts, stops - starts)], minlength=WORDS)
        return df

    def tfidf(self, positions: np.ndarray) -> sp.csr_matrix:
        """The unsupervised TF-IDF (`features`, idf over the whole pool) of some tasks: an
        n-row matrix with only those rows filled, for the near-duplicate check of the first batch."""
        positions = np.unique(positions)
        transformer = TfidfTransformer(sublinear_tf=True)
        transformer.idf_ = np.log((1 + len(self)) / (1 + self.document_frequencies())) + 1  # as `fit` computes it
        weighed = transformer.transform(self.words(positions))
        return sp.csr_matrix(
            (weighed.data, weighed.indices, _scatter_indptr(weighed.indptr, positions, len(self))), shape=(len(self), WORDS)
        )

    @classmethod
    def build(cls, texts: Sequence[str], n_clusters: int, seed: int) -> Pool:
        """Everything computed in this process (no cache directory)."""
        segment = Segment.hashed(list(texts))
        pool = cls([segment], np.zeros(len(texts), dtype=np.int32), np.arange(len(texts), dtype=np.int32), np.zeros(0, dtype=int))
        pool.clusters = strategies.clusters(features((), pool.words()), n_clusters, seed)
        return pool


def _scatter_indptr(indptr: np.ndarray, positions: np.ndarray, n: int) -> np.ndarray:
    """The indptr of an n-row matrix whose rows `positions` hold the rows of `indptr`, in order;
    `positions` must be increasing."""
    lengths = np.zeros(n, dtype=np.int64)
    lengths[positions] = np.diff(indptr)
    return np.concatenate([[0], np.cumsum(lengths)])


def features(texts: Sequence[str], counts: Any = None) -> sp.csr_matrix:
    """Unsupervised TF-IDF over the pool's hashed word 1-2-grams (for clusters and near-duplicates);
    `counts`: those word counts when the caller has hashed the texts already."""
    return TfidfTransformer(sublinear_tf=True).fit_transform(word_counts(texts) if counts is None else counts)


class PoolCache:
    """One project's pool cache under `directory` (`MODEL_DIR/project-<id>/pool`)."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def sync(self, ids: Sequence[int], texts: Sequence[str], n_clusters: int, seed: int) -> Pool:
        """The pool of these tasks: cached rows reused, new or changed texts hashed and stored,
        departed tasks dropped; the cache is rebuilt when its files cannot be read."""
        ids_array = np.asarray(ids, dtype=np.int64)
        texts = list(texts)
        digest = digests(texts)
        with self._locked():
            try:
                index, segments, projection = self._load()
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
                if (self.directory / "index.npz").exists():
                    log.warning("pool cache %s unreadable (%s); rebuilding it", self.directory, exc)
                index, segments, projection = _empty_index(), {}, None
            return self._update(ids_array, texts, digest, index, segments, projection, n_clusters, seed)

    def forget(self, task_ids: Iterable[int]) -> int:
        """Drop these tasks (LS deleted them) and rewrite the files so their features are gone at
        once, not at the next compaction; how many were cached."""
        wanted = np.asarray(sorted({int(t) for t in task_ids}), dtype=np.int64)
        if not len(wanted) or not (self.directory / "index.npz").exists():
            return 0
        with self._locked():
            try:
                index, segments, _ = self._load()
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                return 0
            gone = np.isin(index["ids"], wanted)
            if not gone.any():
                return 0
            keep = ~gone
            names = [str(n) for n in index["segment_names"]]
            pool = Pool([segments[n] for n in names], index["segment"][keep], index["row"][keep], index["cluster"][keep])
            pool, names = self._compacted(pool, names, force=True)
            self._save_array_file(
                "index.npz",
                {
                    **index,
                    "ids": index["ids"][keep],
                    "digests": index["digests"][keep],
                    "segment": pool.segment_of,
                    "row": pool.row_of,
                    "cluster": pool.clusters,
                    "segment_names": np.array(names, dtype="U40"),
                },
            )
            self._sweep(set(names) | {str(index["clusters_name"])})
            return int(gone.sum())

    # -- files ---------------------------------------------------------------------------------
    def _load(self) -> tuple[dict[str, np.ndarray], dict[str, Segment], tuple[strategies.Projection | None, np.ndarray, np.ndarray] | None]:
        with np.load(self.directory / "index.npz", allow_pickle=False) as data:
            index = {name: data[name] for name in data.files}
        segments = {}
        for name in np.unique(index["segment_names"]).tolist():
            segment = Segment(
                *(np.load(self.directory / f"{name}.{part}.npy", mmap_mode="r", allow_pickle=False) for part in Segment._fields)
            )
            segment.check()
            segments[name] = segment
        if len(index["row"]) and any(
            index["row"][index["segment"] == s].max(initial=-1) >= segments[name].rows
            for s, name in enumerate(index["segment_names"].tolist())
        ):
            raise ValueError("index points past a segment")
        projection = None
        name = str(index["clusters_name"])
        if name:
            with np.load(self.directory / f"{name}.npz", allow_pickle=False) as data:
                fitted = (
                    strategies.Projection(data["used"], data["components"], data["centers"])
                    if data["used"].size
                    else strategies.Projection(None, None, data["centers"])
                    if data["centers"].size
                    else None
                )
                projection = (fitted, data["idf"], data["meta"])
        return index, segments, projection

    def _save_array_file(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write(self.directory / name, buffer.getvalue())

    def _save_segment(self, segment: Segment) -> str:
        name = f"seg-{secrets.token_hex(8)}"
        for part, array in zip(Segment._fields, segment):
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
            atomic_write(self.directory / f"{name}.{part}.npy", buffer.getvalue())
        return name

    def _sweep(self, keep: set[str]) -> None:
        """Delete files no index names (old segments, a crashed writer's leftovers); we hold the lock."""
        for path in self.directory.iterdir():
            stem = path.name.split(".")[0]
            if path.name.startswith((".tmp-", "seg-", "clusters-")) and stem not in keep:
                try:
                    path.unlink()
                except OSError:
                    pass

    # -- update --------------------------------------------------------------------------------
    def _update(
        self,
        ids: np.ndarray,
        texts: list[str],
        digest: np.ndarray,
        index: dict[str, np.ndarray],
        segments: dict[str, Segment],
        projection: Any,
        n_clusters: int,
        seed: int,
    ) -> Pool:
        segment_of = np.full(len(ids), -1, dtype=np.int32)
        row_of = np.full(len(ids), -1, dtype=np.int32)
        clusters = np.full(len(ids), -1, dtype=np.int64)
        if len(index["ids"]):
            order = np.argsort(index["ids"], kind="stable")
            at = order[np.minimum(np.searchsorted(index["ids"], ids, sorter=order), len(order) - 1)]
            known = (index["ids"][at] == ids) & (index["digests"][at] == digest)
            segment_of[known], row_of[known], clusters[known] = (
                index["segment"][at[known]],
                index["row"][at[known]],
                index["cluster"][at[known]],
            )
        live = np.unique(segment_of[segment_of >= 0])  # segments no pooled task uses any more are dropped
        names = [str(n) for n in index["segment_names"][live]]
        segment_of[segment_of >= 0] = np.searchsorted(live, segment_of[segment_of >= 0])
        new = np.flatnonzero(segment_of < 0)
        changed = len(new) > 0 or len(ids) != len(index["ids"]) or len(live) != len(index["segment_names"])
        if len(new):
            segment = Segment.hashed([texts[i] for i in new])
            name = self._save_segment(segment)
            segments[name] = segment
            names.append(name)
            segment_of[new], row_of[new] = len(names) - 1, np.arange(len(new))
        pool = Pool([segments[n] for n in names], segment_of, row_of, clusters)
        pool, compacted = self._compacted(pool, names)
        changed |= compacted != names
        names = compacted
        clusters_name = str(index["clusters_name"])
        meta = projection[2] if projection is not None else None
        assigned_since = int(index["assigned_since"]) + len(new)
        if meta is None or int(meta[0]) != n_clusters or int(meta[1]) != seed or assigned_since > REFIT_GROWTH * max(int(meta[2]), 1):
            words = pool.words()
            transformer = TfidfTransformer(sublinear_tf=True).fit(words)
            pool.clusters, fitted = strategies.clusters(transformer.transform(words), n_clusters, seed, projection=True)
            clusters_name = f"clusters-{secrets.token_hex(8)}"
            empty = np.zeros(0)
            self._save_array_file(
                f"{clusters_name}.npz",
                {
                    "used": fitted.used if fitted is not None and fitted.used is not None else np.zeros(0, dtype=np.int64),
                    "components": fitted.components if fitted is not None and fitted.components is not None else empty,
                    "centers": fitted.centers if fitted is not None else empty,
                    "idf": transformer.idf_,
                    "meta": np.array([n_clusters, seed, len(pool)], dtype=np.int64),
                },
            )
            assigned_since, changed = 0, True
        elif len(new):
            fitted, idf, _ = projection
            missing = np.flatnonzero(pool.clusters < 0)
            if fitted is None:
                pool.clusters[missing] = 0
            else:
                transformer = TfidfTransformer(sublinear_tf=True)
                transformer.idf_ = idf
                pool.clusters[missing] = fitted.assign(transformer.transform(pool.words(missing)))
        if changed:
            self._save_array_file(
                "index.npz",
                {
                    "ids": ids,
                    "digests": digest,
                    "segment": pool.segment_of,
                    "row": pool.row_of,
                    "cluster": pool.clusters,
                    "segment_names": np.array(names, dtype="U40"),
                    "clusters_name": np.array(clusters_name, dtype="U40"),
                    "assigned_since": np.array(assigned_since, dtype=np.int64),
                },
            )
            self._sweep(set(names) | {clusters_name})
        return pool

    def _compacted(self, pool: Pool, names: list[str], force: bool = False) -> tuple[Pool, list[str]]:
        """The pool with its live rows rewritten into one segment, when dead rows are the most or
        segments have piled up (or `force`); else as it is."""
        total = sum(s.rows for s in pool.segments)
        if not force and len(pool) >= COMPACT_LIVE * total and len(pool.segments) <= MAX_SEGMENTS:
            return pool, names
        if not len(pool):
            return Pool([], pool.segment_of, pool.row_of, pool.clusters), []
        segments, rows, back = pool._groups()
        segment = Segment.joined([s.take(r) for s, r in zip(segments, rows)])
        name = self._save_segment(segment)
        compacted = Pool([segment], np.zeros(len(pool), dtype=np.int32), back.astype(np.int32), pool.clusters)
        return compacted, [name]


def _empty_index() -> dict[str, np.ndarray]:
    return {
        "ids": np.zeros(0, dtype=np.int64),
        "digests": np.zeros(0, dtype=f"S{DIGEST_BYTES}"),
        "segment": np.zeros(0, dtype=np.int32),
        "row": np.zeros(0, dtype=np.int32),
        "cluster": np.zeros(0, dtype=np.int64),
        "segment_names": np.zeros(0, dtype="U40"),
        "clusters_name": np.array("", dtype="U40"),
        "assigned_since": np.array(0, dtype=np.int64),
    }


def cache_for(project_dir: Path | str) -> PoolCache:
    return PoolCache(Path(project_dir) / "pool")


def size_on_disk(directory: Path | str) -> int:
    return sum(p.stat().st_size for p in Path(directory).iterdir() if p.is_file())
