"""Both feature hashings (compiled and numpy) equal scikit-learn's and a string-by-string reference,
so models keep their features exactly whichever one a process has. Every test runs on both."""

from __future__ import annotations

import random
import threading
from collections import Counter

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.utils import murmurhash3_32

from backend.families import hashing
from backend.families.hashing import CHAR_BITS, TOKEN_PATTERN, WORD_BITS, WordGrams, char_counts, hash_texts, murmurhash3, word_counts

pytestmark = pytest.mark.usefixtures("implementation")

REFERENCE = HashingVectorizer(
    ngram_range=(1, 2), n_features=2**WORD_BITS, token_pattern=TOKEN_PATTERN, alternate_sign=False, norm=None, dtype=np.float32
)
HARD = [
    "",
    " ",
    "Hello :D world",
    ":Dog days",
    "a:D",
    "=-) ;-P :/ :\\ =( :)(",
    "::)) ?:) d:dd x:-d",
    "wow!!! ?? !?!",
    "lone \ud800 surrogate",
    "ÉCOLE Straße İstanbul ΣΑΣ",
    "😀 emoji 𝐀𝐁 bold math",
    "tabs\tand\nnew lines",
    "under_score __init__",
    "١٢٣ arabic digits",
    "ｆｕｌｌｗｉｄｔｈ",
    "a  b",
    "a, b",
    "a\u00a0b",
    "nul\x00inside a text",
    "x" * 5000,
    "ab " * 2000,
    ":",
    "= :-",
    "@united flight #fail http://t.co/x",
]


def same(texts: list[str]) -> bool:
    expected, got = REFERENCE.transform(texts), word_counts(texts)
    expected.sort_indices()
    return expected.shape == got.shape and got.has_sorted_indices and (expected != got).nnz == 0


def test_word_counts_are_scikit_learns_hashing_vectorizer_on_tweets_and_hard_cases(tweets):
    assert same(tweets.texts[:5000])
    assert same(HARD) and all(same([text]) for text in HARD)
    rng = random.Random(0)
    alphabet = list("ab :;=-()dDpP/\\!?_ \t1é😀\ud800İΣ𝐀\x00\n")
    assert same(["".join(rng.choice(alphabet) for _ in range(rng.randrange(30))) for _ in range(3000)])
    assert word_counts([]).shape == (0, 2**WORD_BITS)


def test_few_texts_hashed_one_by_one_equal_scikit_learn_too(tweets):
    rng = random.Random(3)
    alphabet = list("ab :;=-()dDpP/\\!?_ \t1é😀\ud800İΣ𝐀\x00\n")
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(30))) for _ in range(600)] + tweets.texts[:600]
    assert len(texts[:15]) < hashing._FEW_TEXTS <= len(texts[:16])  # both paths are compared
    assert all(same(texts[i : i + size]) for size in (1, 2, 15, 16) for i in range(0, len(texts), size))
    assert all(identical(sp.hstack([word_counts([text]), char_counts([text])], format="csr"), hash_texts([text])) for text in HARD)


def test_murmurhash3_is_scikit_learns_on_every_tail_length():  # numpy's, which the compiled one matches above
    rng = np.random.default_rng(0)
    strings = [bytes(rng.integers(0, 256, size=n, dtype=np.uint8)) for n in range(41) for _ in range(5)]
    data = np.frombuffer(b"".join(strings), dtype=np.uint8)
    lengths = np.array([len(s) for s in strings])
    got = murmurhash3(data, np.cumsum(lengths) - lengths, lengths).view(np.int32)
    assert got.tolist() == [murmurhash3_32(s, seed=0) for s in strings]


def reference_char_counts(texts: list[str]) -> sp.csr_matrix:
    """char_counts string by string: each 2-5-gram of " word " (lower-cased, split on whitespace)
    that holds no NUL, hashed with the polynomial hash times the golden ratio, top CHAR_BITS bits."""
    rows = []
    for text in texts:
        counts: Counter[int] = Counter()
        for word in text.lower().split():
            padded = f" {word} "
            for n in range(2, 6):
                for gram in (padded[i : i + n] for i in range(len(padded) - n + 1)):
                    if "\x00" in gram:
                        continue
                    key = 0
                    for char in gram:
                        key = (key * 1000003 + ord(char)) % 2**64
                    counts[((key + n) * 0x9E3779B97F4A7C15 % 2**64) >> (64 - CHAR_BITS)] += 1
        rows.append(sorted(counts.items()))
    indptr = np.cumsum([0] + [len(row) for row in rows])
    columns = np.array([c for row in rows for c, _ in row], dtype=np.int32)
    values = np.array([v for row in rows for _, v in row], dtype=np.float32)
    return sp.csr_matrix((values, columns, indptr), shape=(len(texts), 2**CHAR_BITS))


def identical(expected: sp.csr_matrix, got: sp.csr_matrix) -> bool:
    """Same shape, dtypes and stored arrays (so the same sums in the same order downstream)."""
    return (
        expected.shape == got.shape
        and expected.dtype == got.dtype
        and got.has_sorted_indices
        and all(
            np.array_equal(getattr(expected, a), getattr(got, a)) and getattr(expected, a).dtype == getattr(got, a).dtype
            for a in ("indptr", "indices", "data")
        )
    )


CHAR_HARD = HARD + [
    "\x00",
    "a\x00b c",
    " \x00 ",
    "ΣΑΣ Σ ς",
    "İi",
    "e\u0301 combining",
    "\U0001f600" * 50,
    "tab\tnew\nline\rcarriage\x0bvertical\x0cfeed\u2028line sep\u3000ideographic",
    "y" * 20000,
]


def test_char_counts_equal_a_string_by_string_reference_on_tweets_and_hard_cases(tweets):
    assert identical(reference_char_counts(tweets.texts[:2000]), char_counts(tweets.texts[:2000]))
    assert identical(reference_char_counts(CHAR_HARD), char_counts(CHAR_HARD))
    assert all(identical(reference_char_counts([text]), char_counts([text])) for text in CHAR_HARD)
    rng = random.Random(1)
    alphabet = list("ab :;-!_ \t1é😀\ud800İΣς𝐀\x00\n")
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(40))) for _ in range(2000)]
    assert identical(reference_char_counts(texts), char_counts(texts))
    assert char_counts([]).shape == (0, 2**CHAR_BITS)


def test_hash_texts_is_word_counts_then_char_counts_in_one_chunk_or_several(tweets):
    rng = random.Random(2)
    short = [rng.choice(["a b", "", "Hello world :)", "x", "Σ!? ς"]) for _ in range(16390)]  # hashed 4,096 texts at a time
    for texts in (tweets.texts[:1000] + CHAR_HARD, short[:8191], short[:8192], short[:16384], short):
        words, chars = REFERENCE.transform(texts), reference_char_counts(texts)
        words.sort_indices()
        assert identical(words, word_counts(texts)) and identical(chars, char_counts(texts))
        assert identical(sp.hstack([words, chars], format="csr"), hash_texts(texts))
    assert hash_texts([]).shape == (0, 2**WORD_BITS + 2**CHAR_BITS)


def numpy_only(implementation: str) -> None:
    if implementation != "numpy":
        pytest.skip("the memo serves the numpy hashing only")


def test_word_memo_stays_within_its_capacity_and_changes_no_count(tweets, monkeypatch, implementation):
    numpy_only(implementation)
    texts = tweets.texts[:3000]
    expected = reference_char_counts(texts)
    small = WordGrams(capacity=5000)
    monkeypatch.setattr(hashing, "WORD_GRAMS", small)
    for start in range(0, 3000, 100):  # new words keep arriving: the memo fills, then hashes the rest per batch
        assert identical(expected[start : start + 100], char_counts(texts[start : start + 100]))
        assert small.columns_held <= small.capacity
    assert identical(expected, char_counts(texts))  # more than the memo can hold: hashed for this batch alone
    assert identical(reference_char_counts(["x" * 9000]), char_counts(["x" * 9000]))


def test_word_memo_shared_by_threads_gives_each_its_own_counts(tweets, monkeypatch, implementation):
    numpy_only(implementation)
    monkeypatch.setattr(hashing, "WORD_GRAMS", WordGrams(capacity=20000))
    batches = [tweets.texts[i : i + 50] for i in range(0, 2000, 50)]
    expected = [reference_char_counts(batch) for batch in batches]
    failures = []

    def work(k: int) -> None:
        for j in range(k, len(batches), 4):
            if not identical(expected[j], char_counts(batches[j])):
                failures.append(j)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
