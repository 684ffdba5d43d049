"""Linear-chain CRF inference in numpy over a crfsuite model's weights: the best tag path
(Viterbi), its probability and every token's tag marginals (forward-backward), for a whole batch
of token sequences at once.

crfsuite tags one sequence per call, and turning each token's feature strings into its attribute
ids takes most of that call (55 of 72 ms for 1,000 tweets). Here the weights a token's own
features and its neighbours' give each tag are summed once per distinct word and kept, so a batch
costs a table lookup per token and a few numpy operations per position, in float32. The weights
come from crfsuite's own dump of the model (six decimals): paths are crfsuite's, probabilities and
marginals within about 2e-6 of its own (`tests/families/test_crf.py`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

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
        vectors = [self._words.get(w) for w in words]  # a cache cleared meanwhile only makes more words new
        new = [w for w, v in zip(words, vectors) if v is None]
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
            vectors = [found[w] if v is None else v for w, v in zip(words, vectors)]
            with self._lock:
                if len(self._words) + len(new) > WORDS_KEPT:
                    self._words.clear()
                self._words.update(found)
        return np.stack(vectors)

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
        """Each sequence's best path, its probability and its marginals.

        Every array is flat, a row per token of every sequence; step t of a pass works on the
        sequences longer than t, which are a suffix of them ordered by length: no padding."""
        emissions = self.emissions(sequences)
        n, k = len(sequences), len(self.tags)
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        starts = np.cumsum(lengths) - lengths
        order = np.argsort(lengths, kind="stable")
        by_length, first = lengths[order], starts[order]
        longest = int(by_length[-1]) if n else 0
        live = [int(np.searchsorted(by_length, t, side="right")) for t in range(longest + 1)]  # sequences longer than t: [live[t]:]
        trans = self.transitions
        # Viterbi: each sequence's best score so far, kept once it ends
        score = np.zeros((n, k))
        score[live[0] :] = emissions[first[live[0] :]]
        back = np.zeros(emissions.shape, dtype=np.int32)
        for t in range(1, longest):
            rows, at = slice(live[t], n), first[live[t] :] + t
            candidates = score[rows, :, None] + trans[None]
            came = candidates.argmax(axis=1)
            back[at] = came
            score[rows] = np.take_along_axis(candidates, came[:, None, :], axis=1)[:, 0] + emissions[at]
        best = np.zeros(len(emissions), dtype=np.int64)
        ends = first[live[0] :] + by_length[live[0] :] - 1
        best[ends] = score[live[0] :].argmax(axis=1)
        for t in range(longest - 1, 0, -1):
            at = first[live[t] :] + t
            best[at - 1] = back[at, best[at]]
        # forward-backward, scaled: each step's vector is normalised, its sum and the emissions'
        # maximum going into log Z
        top = emissions.max(axis=1, initial=-np.inf) if len(emissions) else np.zeros(0)
        potentials = np.exp(emissions - top[:, None])
        moves = np.exp(trans)
        alpha = np.empty_like(emissions)
        log_z = np.zeros(n)
        for t in range(longest):
            rows, at = slice(live[t], n), first[live[t] :] + t
            step = potentials[at] if t == 0 else (alpha[at - 1] @ moves) * potentials[at]
            total = step.sum(axis=1)
            alpha[at] = step / total[:, None]
            log_z[rows] += np.log(total) + top[at]
        beta = np.ones_like(emissions)
        for t in range(longest - 2, -1, -1):
            at = first[live[t + 1] :] + t
            step = (potentials[at + 1] * beta[at + 1]) @ moves.T
            beta[at] = step / step.sum(axis=1, keepdims=True)
        marginals = alpha * beta
        marginals /= np.maximum(marginals.sum(axis=1, keepdims=True), np.finfo(float).tiny)
        sequence = np.repeat(np.arange(n), lengths)
        path = np.bincount(sequence, weights=emissions[np.arange(len(best)), best], minlength=n)
        inner = np.flatnonzero(np.diff(sequence) == 0)  # a token followed by one of its own sequence
        path += np.bincount(sequence[inner], weights=trans[best[inner], best[inner + 1]], minlength=n)
        logs = np.zeros(n)
        logs[order] = log_z
        probability = np.where(lengths > 0, np.exp(np.minimum(path - logs, 0.0)), 1.0)  # an empty sequence has one path
        return [Decoded(best[a : a + m], float(p), marginals[a : a + m]) for a, m, p in zip(starts.tolist(), lengths.tolist(), probability)]
