"""Linear-chain CRF inference in numpy over a crfsuite model's weights: the best tag path
(Viterbi), its probability and every token's tag marginals (forward-backward), for a whole batch
of token sequences at once.

crfsuite tags one sequence per call, and turning each token's feature strings into its attribute
ids takes most of that call (55 of 72 ms for 1,000 tweets). Here the weights a token's own
features and its neighbours' give each tag are summed once per distinct word and kept, so a batch
costs a table lookup per token and a few numpy operations per position. The weights come from
crfsuite's own dump of the model (six decimals), so scores match crfsuite's to about 1e-5.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

CHUNK = 128  # sequences decoded together (sorted by length, padded to the chunk's longest)
WORDS_KEPT = 20_000  # distinct words whose summed weights are kept (420 bytes each with 21 tags)


@dataclass(frozen=True)
class Decoded:
    """One sequence: the best tags (indices into `tags`), the path's probability, and its tokens'
    marginals (tokens x tags)."""

    best: np.ndarray
    probability: float
    marginals: np.ndarray


class CompiledCrf:
    """The weights of a crfsuite model (`pycrfsuite.Tagger.info()`), by tag in `tags` order.

    `own(word)` and `around(word)` name a token's own features and, per neighbour offset, the
    features it gives the token at that offset; `edges` the features of a neighbour past either
    end (one per offset)."""

    def __init__(
        self,
        info: Any,
        tags: Sequence[str],
        own: Callable[[str], Sequence[str]],
        around: Callable[[str], Sequence[Sequence[str]]],
        edges: Sequence[Sequence[str]],
        offsets: Sequence[int],
    ):
        self.tags = tuple(tags)
        index = {tag: k for k, tag in enumerate(self.tags)}
        rows: dict[str, int] = {}
        keys, columns, weights = [], [], []
        for (attribute, tag), weight in info.state_features.items():
            keys.append(rows.setdefault(attribute, len(rows)))
            columns.append(index[tag])
            weights.append(float(weight))
        self._rows = rows
        self._weights = np.zeros((len(rows), len(self.tags)))
        np.add.at(self._weights, (np.array(keys, dtype=np.int64), np.array(columns, dtype=np.int64)), np.array(weights))
        self.transitions = np.zeros((len(self.tags), len(self.tags)))
        for (first, second), weight in info.transitions.items():
            self.transitions[index[first], index[second]] = float(weight)
        self._own, self._around, self._offsets = own, around, tuple(offsets)
        self._edges = np.stack([self._sum(names) for names in edges])
        self._words: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def _sum(self, names: Sequence[str]) -> np.ndarray:
        found = [self._rows[n] for n in names if n in self._rows]
        return self._weights[found].sum(axis=0) if found else np.zeros(len(self.tags))

    def _vectors(self, words: Sequence[str]) -> np.ndarray:
        """What each of (distinct) `words` gives each tag, as the token itself and then at each
        neighbour offset (words x (1 + offsets) x tags); words not kept yet are summed in one
        sparse product."""
        kept = self._words
        new = [w for w in words if w not in kept]
        found: dict[str, np.ndarray] = {}
        if new:
            rows = self._rows
            columns: list[int] = []
            indptr = [0]
            for word in new:
                for names in (self._own(word), *self._around(word)):
                    columns += [rows[n] for n in names if n in rows]
                    indptr.append(len(columns))
            picks = sp.csr_matrix(
                (np.ones(len(columns)), np.array(columns, dtype=np.int64), np.array(indptr, dtype=np.int64)),
                shape=(len(indptr) - 1, len(rows)),
            )
            summed = np.asarray(picks @ self._weights, dtype=np.float32).reshape(len(new), 1 + len(self._offsets), len(self.tags))
            found = dict(zip(new, summed))
            with self._lock:
                if len(kept) + len(new) > WORDS_KEPT:
                    kept.clear()
                kept.update(found)
        return np.stack([found[w] if w in found else kept[w] for w in words]).astype(np.float64)

    def emissions(self, sequences: Sequence[Sequence[str]]) -> np.ndarray:
        """Tokens of all sequences (concatenated) x tags: the state scores of each token."""
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        table: dict[str, int] = {}
        flat = [table.setdefault(word, len(table)) for words in sequences for word in words]
        if not flat:
            return np.zeros((0, len(self.tags)))
        vectors = self._vectors(list(table))  # distinct words x (1 + offsets) x tags
        ids = np.array(flat, dtype=np.int64)
        out = vectors[ids, 0].copy()
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        position = np.arange(len(ids)) - starts
        length = np.repeat(lengths, lengths)
        for k, offset in enumerate(self._offsets):
            inside = (position + offset >= 0) & (position + offset < length)
            rows = np.flatnonzero(inside)
            out[rows] += vectors[ids[rows + offset], k + 1]
            out[~inside] += self._edges[k]
        return out

    def decode(self, sequences: Sequence[Sequence[str]]) -> list[Decoded]:
        """Each sequence's best path, its probability and its marginals."""
        emissions = self.emissions(sequences)
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        starts = np.cumsum(lengths) - lengths
        out: list[Decoded | None] = [None] * len(sequences)
        order = np.argsort(lengths, kind="stable")
        for chunk in (order[i : i + CHUNK] for i in range(0, len(order), CHUNK)):
            for slot, found in zip(chunk, self._decode_chunk(emissions, starts[chunk], lengths[chunk])):
                out[slot] = found
        return out  # type: ignore[return-value]

    def _decode_chunk(self, emissions: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> list[Decoded]:
        size, longest, k = len(lengths), int(lengths.max(initial=0)), len(self.tags)
        if longest == 0:
            return [Decoded(np.zeros(0, dtype=np.int64), 1.0, np.zeros((0, k))) for _ in range(size)]
        padded = np.zeros((size, longest, k))
        mask = np.arange(longest)[None, :] < lengths[:, None]
        rows, columns = np.nonzero(mask)
        padded[rows, columns] = emissions[starts[rows] + columns]
        trans = self.transitions
        # Viterbi: a finished sequence keeps its score (its padded steps add nothing)
        score = padded[:, 0].copy()
        back = np.zeros((size, longest, k), dtype=np.int64)
        for t in range(1, longest):
            candidates = score[:, :, None] + trans[None]
            back[:, t] = candidates.argmax(axis=1)
            stepped = candidates.max(axis=1) + padded[:, t]
            score = np.where(mask[:, t, None], stepped, score)
        best = np.zeros((size, longest), dtype=np.int64)
        last = score.argmax(axis=1)
        best[np.arange(size), lengths - 1] = last
        for t in range(longest - 1, 0, -1):
            following = best[:, t]
            earlier = back[np.arange(size), t, following]
            best[:, t - 1] = np.where(t <= lengths - 1, earlier, best[:, t - 1])
        # forward-backward, scaled: each step's vector is normalised (its sum and the emissions'
        # maximum go into log Z); a finished sequence's padded steps change nothing
        top = padded.max(axis=2)
        potentials = np.exp(padded - top[:, :, None])
        moves = np.exp(trans)
        alpha = np.empty((size, longest, k))
        total = potentials[:, 0].sum(axis=1)
        alpha[:, 0] = potentials[:, 0] / total[:, None]
        log_z = top[:, 0] + np.log(total)
        for t in range(1, longest):
            live = mask[:, t]
            step = (alpha[:, t - 1] @ moves) * potentials[:, t]
            total = np.where(live, step.sum(axis=1), 1.0)
            alpha[:, t] = np.where(live[:, None], step / total[:, None], alpha[:, t - 1])
            log_z += np.where(live, np.log(total) + top[:, t], 0.0)
        beta = np.ones((size, longest, k))
        for t in range(longest - 2, -1, -1):
            step = (potentials[:, t + 1] * beta[:, t + 1]) @ moves.T
            beta[:, t] = np.where(mask[:, t + 1, None], step / step.sum(axis=1, keepdims=True), 1.0)
        path = padded[rows, columns, best[rows, columns]]
        path_score = np.bincount(rows, weights=path, minlength=size)
        r, c = np.nonzero(mask[:, 1:])
        path_score += np.bincount(r, weights=trans[best[r, c], best[r, c + 1]], minlength=size)
        probability = np.where(lengths > 0, np.exp(np.minimum(path_score - log_z, 0.0)), 1.0)  # an empty sequence has one path
        marginals = alpha * beta
        marginals /= marginals.sum(axis=2, keepdims=True)
        return [Decoded(best[i, : lengths[i]], float(probability[i]), marginals[i, : lengths[i]]) for i in range(size)]
