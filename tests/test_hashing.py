"""The numpy feature hashing equals scikit-learn's, so models keep their features exactly."""

from __future__ import annotations

import random

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.utils import murmurhash3_32

from backend.hashing import TOKEN_PATTERN, WORD_BITS, murmurhash3, word_counts

REFERENCE = HashingVectorizer(ngram_range=(1, 2), n_features=2**WORD_BITS, token_pattern=TOKEN_PATTERN,
                              alternate_sign=False, norm=None, dtype=np.float32)
HARD = [
    "", " ", "Hello :D world", ":Dog days", "a:D", "=-) ;-P :/ :\\ =( :)(", "::)) ?:) d:dd x:-d", "wow!!! ?? !?!",
    "lone \ud800 surrogate", "ÉCOLE Straße İstanbul ΣΑΣ", "😀 emoji 𝐀𝐁 bold math", "tabs\tand\nnew lines",
    "under_score __init__", "١٢٣ arabic digits", "ｆｕｌｌｗｉｄｔｈ", "a  b", "a, b", "a\u00a0b", "nul\x00inside a text",
    "x" * 5000, "ab " * 2000, ":", "= :-", "@united flight #fail http://t.co/x",
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


def test_murmurhash3_is_scikit_learns_on_every_tail_length():
    rng = np.random.default_rng(0)
    strings = [bytes(rng.integers(0, 256, size=n, dtype=np.uint8)) for n in range(41) for _ in range(5)]
    data = np.frombuffer(b"".join(strings), dtype=np.uint8)
    lengths = np.array([len(s) for s in strings])
    got = murmurhash3(data, np.cumsum(lengths) - lengths, lengths).view(np.int32)
    assert got.tolist() == [murmurhash3_32(s, seed=0) for s in strings]
