"""Stateless text features: hashed word 1-2-grams and character 2-5-grams. Every model and the
queue read texts through `hash_texts`.

Two implementations give identical matrices (tests/test_hashing.py holds both to scikit-learn and
to each other): the compiled `_compiled` module, which `python -m backend.native` builds (5-6 ms per
1,000 tweets), and numpy over the whole batch, used where it is not built (12-18 ms when a bounded
memo holds the words' character n-grams, 15-21 ms when it does not: `python -m bench --parts kernels`)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from itertools import chain

import numpy as np
import scipy.sparse as sp

try:
    from .. import _compiled as compiled
except ImportError:  # not built (no C compiler): numpy below
    compiled = None

WORD_BITS = 18
CHAR_BITS = 18
N_FEATURES = 2**WORD_BITS + 2**CHAR_BITS
# words of one character or more, runs of ! and ?, and simple emoticons: sentiment lives there
TOKEN_PATTERN = r"(?u)\b\w+\b|[!?]+|[:;=]-?[()dDpP/\\]"
CHAR_NGRAMS = (2, 5)
_SEPARATOR = "\x00"
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BASE = np.uint64(1000003)
_TOKEN = re.compile(TOKEN_PATTERN)
_CHUNK = 4096  # texts hashed at once (a row number and a column make a 32-bit key up to 8,191 rows)
_FEW_TEXTS = 16  # below this many texts, words are hashed one by one (faster up to about 20)
_WORD_CHAR = re.compile(r"(?u)\w")
_BMP = 0x10000
_IS_WORD = np.array([_WORD_CHAR.match(chr(c)) is not None for c in range(_BMP)], dtype=bool)  # `\w` of `re`
_IS_EYES = np.isin(np.arange(_BMP), [ord(c) for c in ":;="])
_IS_MOUTH = np.isin(np.arange(_BMP), [ord(c) for c in "()dDpP/\\"])
_MURMUR = (np.uint32(0xCC9E2D51), np.uint32(0x1B873593), np.uint32(0xE6546B64), np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35))


def _tokens(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end positions of the matches of `TOKEN_PATTERN` (`re.findall`'s, in order) in
    NUL-separated lower-cased code points."""
    low = np.minimum(codes, _BMP - 1)
    word = _IS_WORD[low]
    astral = np.flatnonzero(codes >= _BMP)
    if astral.size:
        values, inverse = np.unique(codes[astral], return_inverse=True)
        word[astral] = np.array([_WORD_CHAR.match(chr(int(c))) is not None for c in values], dtype=bool)[inverse]
    eyes = np.flatnonzero(_IS_EYES[low[:-2]])
    mouth = _IS_MOUTH[low]
    nose = (codes[eyes + 1] == ord("-")) & mouth[eyes + 2]
    smiles = nose | mouth[eyes + 1]
    smile_start = eyes[smiles]
    smile_end = smile_start + np.where(nose[smiles], 3, 2)
    edges = np.diff(word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    word_start, word_end = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    eaten = np.zeros(len(codes), dtype=bool)  # an emoticon's mouth that is a letter ("d", "p") starts a word
    eaten[smile_end - 1] = True  # that `\b\w+\b` can then never match: the whole word is dropped
    kept = ~eaten[word_start]
    bangs = np.diff(((codes == ord("!")) | (codes == ord("?"))).view(np.int8), prepend=np.int8(0), append=np.int8(0))
    end_at = np.zeros(len(codes), dtype=np.int64)  # matches never overlap: one end per start position
    end_at[word_start[kept]] = word_end[kept]
    end_at[np.flatnonzero(bangs == 1)] = np.flatnonzero(bangs == -1)
    end_at[smile_start] = smile_end
    start = np.flatnonzero(end_at)
    return start, end_at[start]


def spans(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The positions start, start + 1, ... of every span, concatenated."""
    total = int(lengths.sum())
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total, dtype=np.int64)


def murmurhash3(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """MurmurHash3 x86_32 with seed 0 (scikit-learn's feature hash) of the byte strings
    `data[start:start + length]`, all at once: block by block over the strings still that long."""
    c1, c2, c3, m1, m2 = _MURMUR
    padded = np.concatenate([data, np.zeros(4, dtype=np.uint8)])
    words = np.empty(len(data) + 1, dtype=np.uint32)  # words[i]: the little-endian uint32 at byte i
    for shift in range(4):
        aligned = padded[shift : shift + 4 * ((len(padded) - shift) // 4)].view("<u4")
        words[shift::4] = aligned[: len(words[shift::4])]
    blocks = lengths // 4
    order = np.argsort((blocks.max(initial=0) - blocks).astype(np.uint16 if blocks.max(initial=0) < 2**16 else np.int64), kind="stable")
    starts, blocks = starts[order], blocks[order]  # longest first: the strings a block reaches are a prefix
    reach = np.searchsorted(-blocks, -np.arange(1, blocks.max(initial=0) + 1), side="right")
    h = np.zeros(len(starts), dtype=np.uint32)
    with np.errstate(over="ignore"):
        for b, count in enumerate(reach):
            k = words[starts[:count] + 4 * b] * c1
            k = ((k << np.uint32(15)) | (k >> np.uint32(17))) * c2
            x = h[:count] ^ k
            h[:count] = ((x << np.uint32(13)) | (x >> np.uint32(19))) * np.uint32(5) + c3
        rest = lengths[order] & 3
        tail = np.flatnonzero(rest)
        k = words[starts[tail] + 4 * blocks[tail]] & ((np.uint32(1) << (np.uint32(8) * rest[tail].astype(np.uint32))) - np.uint32(1))
        k = k * c1
        h[tail] ^= ((k << np.uint32(15)) | (k >> np.uint32(17))) * c2
        h ^= lengths[order].astype(np.uint32)
        h ^= h >> np.uint32(16)
        h *= m1
        h ^= h >> np.uint32(13)
        h *= m2
        h ^= h >> np.uint32(16)
    out = np.empty_like(h)
    out[order] = h
    return out


def word_counts(texts: Sequence[str]) -> sp.csr_matrix:
    """Counts of hashed word 1-2-grams (words, `!`/`?` runs, emoticons), one row per text.

    Exactly scikit-learn's `HashingVectorizer(ngram_range=(1, 2), token_pattern=TOKEN_PATTERN,
    alternate_sign=False, norm=None)` (tests/test_hashing.py compares them), computed with numpy
    over the whole batch instead of token by token: 2.7x faster on 1,000 tweets.
    """
    return _counts(texts, words=True, chars=False)


def _word_pairs(lowered: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The (text, column) of every hashed word 1-2-gram of lower-cased texts, in no particular order."""
    if len(lowered) < _FEW_TEXTS:
        return _word_pairs_one_by_one(lowered)
    joined = _SEPARATOR.join(lowered) + _SEPARATOR * 3
    codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    start, end = _tokens(codes)
    ends = np.cumsum(np.fromiter((len(text) + 1 for text in lowered), dtype=np.int64, count=len(lowered)))
    row = np.searchsorted(ends, start, side="right")  # a text may hold NULs itself: rows come from lengths
    wide = np.flatnonzero(codes >= 0x80)  # UTF-8 offsets: code point offsets plus the extra bytes before
    extra = np.concatenate([[0], np.cumsum(1 + (codes[wide] >= 0x800) + (codes[wide] >= _BMP))])
    start, end = start + extra[np.searchsorted(wide, start)], end + extra[np.searchsorted(wide, end)]
    data = np.frombuffer(joined.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    pair = np.flatnonzero(row[:-1] == row[1:])
    adjacent = (start[pair + 1] == end[pair] + 1) & (data[end[pair]] == ord(" "))  # "a b": already in the text
    apart = pair[~adjacent]  # other 2-grams are written out as "a" + " " + "b" after the text
    first, second = end[apart] - start[apart], end[apart + 1] - start[apart + 1]
    size = first + 1 + second
    written = np.full(int(size.sum()), ord(" "), dtype=np.uint8)
    at = np.cumsum(size) - size
    written[spans(at, first)] = data[spans(start[apart], first)]
    written[spans(at + first + 1, second)] = data[spans(start[apart + 1], second)]
    starts = np.concatenate([start, start[pair[adjacent]], len(data) + at])
    lengths = np.concatenate([end - start, end[pair[adjacent] + 1] - start[pair[adjacent]], size])
    rows = np.concatenate([row, row[pair[adjacent]], row[apart]])
    hashed = murmurhash3(np.concatenate([data, written]), starts, lengths).view(np.int32)
    return rows, np.abs(hashed.astype(np.int64)) % 2**WORD_BITS  # scikit-learn's column of a hash (a power-of-two width)


def _word_pairs_one_by_one(lowered: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """`_word_pairs` the way scikit-learn computes it, token by token with `re` (then one
    `murmurhash3` call): cheaper for a few texts than the fixed cost of the batch's numpy calls."""
    rows: list[int] = []
    grams: list[bytes] = []
    for row, text in enumerate(lowered):
        tokens = _TOKEN.findall(text)
        text_grams = tokens + [f"{first} {second}" for first, second in zip(tokens, tokens[1:])]
        rows += [row] * len(text_grams)
        grams += [gram.encode("utf-8", "surrogatepass") for gram in text_grams]
    lengths = np.fromiter(map(len, grams), dtype=np.int64, count=len(grams))
    hashed = murmurhash3(np.frombuffer(b"".join(grams), dtype=np.uint8), np.cumsum(lengths) - lengths, lengths).view(np.int32)
    return np.array(rows, dtype=np.int64), np.abs(hashed.astype(np.int64)) % 2**WORD_BITS


def _word_grams(words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The hashed character 2-5-grams of each word padded with spaces (`char_wb`), concatenated in
    word order, and how many each word has: a polynomial rolling hash over the whole list at once.
    A NUL inside a word ends n-grams there, as between words."""
    low, high = CHAR_NGRAMS
    lengths = np.fromiter((len(word) + 3 for word in words), dtype=np.int64, count=len(words))  # " word " + NUL
    total = int(lengths.sum())
    joined = "".join(f" {word} {_SEPARATOR}" for word in words) + _SEPARATOR * high
    codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    separators = np.concatenate([[0], np.cumsum(codes == 0)])
    keys = np.empty((total, high - low + 1), dtype=np.uint64)
    inside = np.empty((total, high - low + 1), dtype=bool)
    rolling = np.zeros(total, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for n in range(1, high + 1):
            rolling = rolling * _BASE + codes[n - 1 : n - 1 + total]
            if n >= low:
                keys[:, n - low] = rolling + np.uint64(n)
                inside[:, n - low] = separators[n : n + total] == separators[:total]
        columns = ((keys[inside] * _GOLDEN) >> np.uint64(64 - CHAR_BITS)).astype(np.int32)
    offsets = (np.cumsum(lengths) - lengths) * inside.shape[1]
    per_word = np.add.reduceat(inside.reshape(-1), offsets, dtype=np.int64) if total else np.zeros(0, dtype=np.int64)
    return columns, per_word


class WordGrams:
    """A bounded per-process memo of `_word_grams`: tweets repeat their words, so most words of a
    request were hashed by an earlier one. It stops growing at `capacity` columns. Safe to share
    between threads: stored columns are never rewritten, only appended."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}
        self._columns = np.empty(1024, dtype=np.int32)
        self._starts = np.empty(1024, dtype=np.int64)
        self._lengths = np.empty(1024, dtype=np.int64)
        self._used = 0

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def columns_held(self) -> int:
        return self._used

    def lookup(self, words: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each word, where its columns start in the returned column array, and how many there are."""
        with self._lock:
            try:
                at = np.fromiter(map(self._ids.__getitem__, words), dtype=np.intp, count=len(words))
            except KeyError:
                alone = self._learn(words)
                if alone is not None:
                    return alone
                at = np.fromiter(map(self._ids.__getitem__, words), dtype=np.intp, count=len(words))
            return self._starts[at], self._lengths[at], self._columns

    def _learn(self, words: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Hash and keep the words not held yet; once the memo is full it keeps what it holds (the
        words seen first, usually the frequent ones) and answers `lookup` for this batch alone."""
        distinct = list(dict.fromkeys(words))
        new = [word for word in distinct if word not in self._ids]
        columns, per_word = _word_grams(new)
        if self._used + len(columns) <= self.capacity:
            self._append(new, columns, per_word)
            return None
        held = np.fromiter((self._ids[word] for word in distinct if word in self._ids), dtype=np.intp)
        new += [word for word in distinct if word in self._ids]
        columns = np.concatenate([columns, self._columns[spans(self._starts[held], self._lengths[held])]])
        per_word = np.concatenate([per_word, self._lengths[held]])
        index = dict(zip(new, range(len(new))))
        at = np.fromiter(map(index.__getitem__, words), dtype=np.intp, count=len(words))
        return (np.cumsum(per_word) - per_word)[at], per_word[at], columns

    def _append(self, words: list[str], columns: np.ndarray, per_word: np.ndarray) -> None:
        first, used = len(self._ids), self._used + len(columns)
        if used > len(self._columns):
            self._columns = _grown(self._columns, used, self._used)
        if first + len(words) > len(self._starts):
            self._starts = _grown(self._starts, first + len(words), first)
            self._lengths = _grown(self._lengths, first + len(words), first)
        self._columns[self._used : used] = columns
        self._starts[first : first + len(words)] = self._used + np.cumsum(per_word) - per_word
        self._lengths[first : first + len(words)] = per_word
        self._ids.update(zip(words, range(first, first + len(words))))
        self._used = used


def _grown(array: np.ndarray, needed: int, kept: int) -> np.ndarray:
    """A new array of at least `needed` (doubling) holding `array[:kept]`: the old one stays as it was."""
    bigger = np.empty(max(needed, 2 * len(array)), dtype=array.dtype)
    bigger[:kept] = array[:kept]
    return bigger


# 2**20 columns: 4 MiB of int32 plus about 25,000 words (~3 MiB of dict and strings) per process
WORD_GRAMS = WordGrams(capacity=2**20)


def char_counts(texts: Sequence[str]) -> sp.csr_matrix:
    """Counts of hashed character 2-5-grams inside space-padded lower-cased words, one row per text.

    The n-grams of scikit-learn's `char_wb` analyzer, hashed with a polynomial rolling hash. A
    word's n-grams do not depend on its text, so each word is hashed once (`WORD_GRAMS`) and a
    text's row gathers the columns of its words.
    """
    return _counts(texts, words=False, chars=True)


def _char_pairs(lowered: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The (text, column) of every hashed character n-gram of lower-cased texts, in no particular order."""
    split = [text.split() for text in lowered]
    starts, lengths, columns = WORD_GRAMS.lookup(list(chain.from_iterable(split)))
    text_of_word = np.repeat(np.arange(len(split), dtype=np.int64), np.fromiter(map(len, split), dtype=np.int64, count=len(split)))
    return np.repeat(text_of_word, lengths), columns[spans(starts, lengths)]


def _sorted_counts(rows: np.ndarray, columns: np.ndarray, n_rows: int, width: int) -> sp.csr_matrix:
    """The count matrix of (row, column) pairs given in any order, indices sorted and duplicates
    summed as `sum_duplicates` leaves them: one numpy sort of 32-bit row-major keys instead of a
    sort per row."""
    bits = width.bit_length() - 1  # width is a power of two
    if n_rows >= 2 ** (32 - bits):
        raise ValueError(f"{n_rows} rows of {width} columns do not fit 32-bit keys: hash in chunks")
    key = np.uint32
    keys = np.sort((rows.astype(key) << key(bits)) | columns.astype(key))
    new = np.empty(len(keys), dtype=bool)
    new[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=new[1:])
    first = np.flatnonzero(new)
    unique = keys[first]
    indptr = np.searchsorted(unique, np.arange(n_rows + 1, dtype=key) << key(bits))  # where each row's keys start
    counts = np.diff(first, append=len(keys)).astype(np.float32)
    matrix = sp.csr_matrix((counts, (unique & key(width - 1)).astype(np.int32), indptr), shape=(n_rows, width))
    matrix.has_sorted_indices = True
    return matrix


def hash_texts(texts: Sequence[str]) -> sp.csr_matrix:
    """The stateless features of every model: word counts, then character counts."""
    return _counts(texts, words=True, chars=True)


def _counts(texts: Sequence[str], words: bool, chars: bool) -> sp.csr_matrix:
    """Word and/or character counts (characters after words), by the compiled kernel where it is
    built, else with numpy `_CHUNK` texts at a time."""
    width = (2**WORD_BITS if words else 0) + (2**CHAR_BITS if chars else 0)
    if compiled is None:
        return _chunked(lambda lowered: _numpy_counts(lowered, words, chars, width), texts)
    indptr, indices, counts = compiled.counts([text.lower() for text in texts], words, chars)
    matrix = sp.csr_matrix(
        (np.frombuffer(counts, dtype=np.float32), np.frombuffer(indices, dtype=np.int32), np.frombuffer(indptr, dtype=np.int64)),
        shape=(len(texts), width),
    )
    matrix.has_sorted_indices = True
    return matrix


def _numpy_counts(lowered: list[str], words: bool, chars: bool, width: int) -> sp.csr_matrix:
    pairs = [_word_pairs(lowered)] if words else []
    if chars:
        rows, columns = _char_pairs(lowered)
        pairs.append((rows, columns + (2**WORD_BITS if words else 0)))
    rows, columns = (np.concatenate(part) for part in zip(*pairs))
    return _sorted_counts(rows, columns, len(lowered), width)


def _chunked(counts: Callable[[list[str]], sp.csr_matrix], texts: Sequence[str]) -> sp.csr_matrix:
    """`counts` of the lower-cased texts, `_CHUNK` texts at a time: 32-bit sort keys and sorts that
    stay in cache however large the batch."""
    lowered = [text.lower() for text in texts]
    if len(lowered) <= _CHUNK:
        return counts(lowered)
    return sp.vstack([counts(lowered[i : i + _CHUNK]) for i in range(0, len(lowered), _CHUNK)], format="csr")


BLOCKS = (slice(0, 2**WORD_BITS), slice(2**WORD_BITS, N_FEATURES))
