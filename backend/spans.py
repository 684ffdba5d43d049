"""Labeled spans of text (`Labels` over `Text`): tokens with their character offsets, the stored
form of a span, the rules that turn annotated regions into training spans, and span-level scores.
Pure functions over strings and lists: no Redis, no HTTP, no model.

Offsets are code-point offsets into the task's full text (Python `str` indices), as LS 1.23.2
stores `value.start` / `value.end` of Text regions, and `value.text` is `text[start:end]`.

The rules that make an annotation's regions the spans a model trains on (`training_spans`):
- a region names its label in `value.labels`; a region with several labels counts as its first;
- a label the config does not have sets the whole annotation aside, as for `Choices`;
- offsets that are not integers, a negative start, an end past the text, or `start >= end`:
  the region is dropped;
- whitespace at either end is trimmed; a span of whitespace only is dropped;
- a span that cuts a token is widened to the whole tokens it touches;
- duplicates count once; of overlapping spans the longest is kept (then the earliest, then the
  first label in the config's order), since one token has one tag;
- a text cut at `MAX_TEXT_CHARS`: a span past the cut is left out, and a span across it cuts the
  text where it starts, so no token of an entity is trained as outside one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

MAX_SPANS = 1000  # regions of one control kept from one annotation (the rest are dropped)

_MARK = (  # combining marks, variation selectors, skin tones, tag characters: part of the token before them
    "\u0300-\u036f\u0483-\u0489\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe00-\ufe0f\ufe20-\ufe2f\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f"
)
_WORD = rf"[@#]?\w[\w{_MARK}]*(?:['\u2019]\w[\w{_MARK}]*)*"
_OTHER = rf"[^\s{_MARK}][{_MARK}]*(?:\u200d[^\s{_MARK}][{_MARK}]*)*"
TOKEN = re.compile(rf"https?://\S+|{_WORD}|{_OTHER}|[{_MARK}]+")


class Span(NamedTuple):
    start: int
    end: int
    label: str

    def encode(self) -> str:
        """The stored form: `start,end,label` (a string, so votes on spans count like labels)."""
        return f"{self.start},{self.end},{self.label}"


def decode(stored: Any) -> Span | None:
    """A span from its stored form (None when it is not one)."""
    if not isinstance(stored, str):
        return None
    parts = stored.split(",", 2)
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts[:2]):
        return None
    return Span(int(parts[0]), int(parts[1]), parts[2])


def label_of(stored: Any) -> str | None:
    span = decode(stored)
    return span.label if span is not None else None


def from_region(value: Any) -> Span | None:
    """The span of an LS region's `value` (`start`, `end`, `labels`), or None when it has none:
    offsets must be integers (LS's own are), the label a string."""
    if not isinstance(value, dict):
        return None
    start, end, labels = value.get("start"), value.get("end"), value.get("labels")
    if type(start) is not int or type(end) is not int or not isinstance(labels, list) or not labels:
        return None
    if not isinstance(labels[0], str) or not labels[0] or start < 0 or end <= start:
        return None
    return Span(start, end, labels[0][:200])


def tokens(text: str) -> list[tuple[int, int]]:
    """Every token's (start, end) in `text`: words (with @ and # prefixes, inner apostrophes and
    combining marks), links, and single other characters with their modifiers (emoji sequences)."""
    return [m.span() for m in TOKEN.finditer(text)]


def training_spans(stored: Iterable[Any], text: str, labels: Sequence[str], cut: bool = False) -> tuple[list[Span], int, str | None]:
    """The spans to train on from one annotation's stored spans of a control over `text` (`cut`:
    the text was cut at MAX_TEXT_CHARS, so a span may run past its end), how much of `text` to
    train on, and why the annotation cannot train the control (None when it can). See the module doc."""
    order = {label: i for i, label in enumerate(labels)}
    found = [s for s in (decode(x) for x in stored) if s is not None]
    if any(s.label not in order for s in found):
        return [], 0, "label not in config"
    length = len(text)
    bounds = tokens(text)
    starts = np.array([a for a, _ in bounds], dtype=np.int64)
    ends = np.array([b for _, b in bounds], dtype=np.int64)
    kept: set[Span] = set()
    crossing = []
    for span in found:
        if span.start >= span.end or span.end > length:
            if cut and span.start < length < span.end:
                crossing.append(span.start)
            continue
        piece = text[span.start : span.end]
        start = span.start + (len(piece) - len(piece.lstrip()))
        end = span.end - (len(piece) - len(piece.rstrip()))
        if start >= end:
            continue
        first = int(np.searchsorted(ends, start, side="right"))  # first token ending after start
        last = int(np.searchsorted(starts, end, side="left")) - 1  # last token starting before end
        if first <= last:
            start, end = min(start, int(starts[first])), max(end, int(ends[last]))
        kept.add(Span(start, end, span.label))
    if crossing:
        length = min(crossing)
        kept = {s for s in kept if s.end <= length}
    chosen: list[Span] = []
    for span in sorted(kept, key=lambda s: (s.start - s.end, s.start, order[s.label])):
        if all(span.end <= other.start or other.end <= span.start for other in chosen):
            chosen.append(span)
    return sorted(chosen), length, None


def tags(text: str, spans: Sequence[Span], bounds: Sequence[tuple[int, int]] | None = None) -> list[str]:
    """BIO tags of `text`'s tokens for non-overlapping `spans` on token boundaries."""
    bounds = tokens(text) if bounds is None else bounds
    out = ["O"] * len(bounds)
    starts = [a for a, _ in bounds]
    for span in spans:
        i = int(np.searchsorted(starts, span.start, side="left"))
        first = True
        while i < len(bounds) and bounds[i][1] <= span.end:
            out[i] = ("B-" if first else "I-") + span.label
            first = False
            i += 1
    return out


def from_tags(tagged: Sequence[str], bounds: Sequence[tuple[int, int]]) -> list[tuple[int, int, str]]:
    """The spans of BIO tags as (first token, last token + 1, label); an `I-` without its `B-`
    starts a span, as conlleval reads it."""
    out = []
    open_at, open_label = -1, ""
    for i, tag in enumerate([*tagged, "O"]):
        kind, _, label = tag.partition("-")
        continues = kind == "I" and open_at >= 0 and label == open_label
        if open_at >= 0 and not continues:
            out.append((open_at, i, open_label))
            open_at = -1
        if kind in ("B", "I") and not continues:
            open_at, open_label = i, label
    return out


class SpanOutcome(NamedTuple):
    """Per label: true positives, false positives and false negatives of exact-boundary spans."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray


def compare(true: Iterable[Any], predicted: Iterable[Any], labels: Sequence[str]) -> SpanOutcome:
    """Exact-boundary span matches of one text, per label of `labels` (spans in stored form)."""
    index = {label: i for i, label in enumerate(labels)}
    truth = {s for s in (decode(x) for x in true) if s is not None and s.label in index}
    guess = {s for s in (decode(x) for x in predicted) if s is not None and s.label in index}
    tp, fp, fn = (np.zeros(len(labels)) for _ in range(3))
    for s in truth & guess:
        tp[index[s.label]] += 1
    for s in guess - truth:
        fp[index[s.label]] += 1
    for s in truth - guess:
        fn[index[s.label]] += 1
    return SpanOutcome(tp, fp, fn)


def f1(true: Iterable[Any], predicted: Iterable[Any]) -> float:
    """Exact-boundary span F1 of one text's prediction (1.0 when both have no span)."""
    truth = set(true)
    guess = set(predicted)
    if not truth and not guess:
        return 1.0
    return 2 * len(truth & guess) / (len(truth) + len(guess))
