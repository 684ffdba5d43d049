"""The built-in span family: a linear-chain CRF (python-crfsuite) over the tokens of a `Labels`
control's text, tagging BIO, trained in the train job.

- Features per token: the lower-cased word, its shape, prefix and suffixes, its kind (mention,
  hashtag, link), case, and the words and shapes of two neighbours on each side. Hashed character
  trigrams were tried and left out: on WNUT-16 they moved span F1 by -0.003 and cost 15% of
  `/predict` time (the README, "Span labeling").
- A region's score is the mean marginal probability of its tokens' tags; a text's score is the
  probability of the best tag path, normalised by length (`p ** (1 / tokens)`). Inference runs in
  numpy over the model's weights (`crf.CompiledCrf`), a batch at a time.
- Ranking: `least_confidence` is one minus that score; `margin` and `entropy` are the mean over
  tokens of the strategy on each token's tag marginals.
- The artifact is crfsuite's own model file (bytes, as an array of uint8) with the labels: no pickle.
  Loading reads the weights through crfsuite's tagger (`open_inmemory`, `info`); the trainer is
  imported only to fit.
- Weights are not used (crfsuite has no per-example weights: span consensus gives every example
  weight 1), nor committees.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from .. import spans
from .. import strategy as strategies
from ..labelconfig import LabelsControl
from .base import Family, Outcomes, Prediction
from .crf import CompiledCrf, Decoded

ARTIFACT = 1  # this family's artifact layout
PARAMS = {"c1": 0.05, "c2": 0.05, "max_iterations": 150, "feature.possible_transitions": True}
TOKENS_PER_BATCH = 100_000  # tokens decoded together (`SpanModel.decode`)


@dataclass
class SpanModel:
    """A fitted CRF: crfsuite's model bytes, the span labels it was trained with, and its weights
    compiled for batch inference (`crf.CompiledCrf`)."""

    crf: bytes
    labels: tuple[str, ...]
    compiled: CompiledCrf = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        import pycrfsuite

        tagger = pycrfsuite.Tagger()
        try:
            tagger.open_inmemory(self.crf)
            info, tags = tagger.info(), tagger.labels()
        except (ValueError, OSError, RuntimeError) as exc:
            raise ValueError(f"artifact holds no CRF model: {exc}") from None
        finally:
            tagger.close()
        self.compiled = CompiledCrf(info, tags, word_features, neighbour_features, EDGES, NEIGHBOURS)

    @property
    def tags(self) -> tuple[str, ...]:
        return self.compiled.tags

    def decode(self, texts: Sequence[str]) -> list[tuple[list[tuple[int, int]], Decoded]]:
        """Each text's tokens and their decoding, `TOKENS_PER_BATCH` tokens at a time (a ranking of a
        large pool holds a few arrays of that many rows, not of the whole pool)."""
        bounds = [spans.tokens(text) for text in texts]
        words = [[text[a:b] for a, b in found] for text, found in zip(texts, bounds)]
        decoded: list[Decoded] = []
        start, tokens = 0, 0
        for end, found in enumerate(words, 1):
            tokens += len(found)
            if tokens >= TOKENS_PER_BATCH or end == len(words):
                decoded += self.compiled.decode(words[start:end])
                start, tokens = end, 0
        return list(zip(bounds, decoded))


@lru_cache(maxsize=20_000)
def shape(word: str) -> str:
    """`Xxxx`, `dd`, `x.x`: character classes with runs collapsed."""
    out = []
    for ch in word:
        kind = "X" if ch.isupper() else "x" if ch.isalpha() else "d" if ch.isdigit() else ch
        if not out or out[-1] != kind:
            out.append(kind)
    return "".join(out)[:8]


@lru_cache(maxsize=20_000)
def word_features(word: str) -> tuple[str, ...]:
    """A token's own features (cached: tweets repeat their words)."""
    lower = word.lower()
    out = [f"w={lower}", f"s={shape(word)}", f"p3={lower[:3]}", f"x3={lower[-3:]}", f"x2={lower[-2:]}"]
    if word[:1] == "@":
        out.append("mention")
    elif word[:1] == "#":
        out.append("hashtag")
    elif lower.startswith(("http://", "https://")):
        out.append("link")
    if word.istitle():
        out.append("title")
    if word.isupper() and len(word) > 1:
        out.append("upper")
    return tuple(out)


@lru_cache(maxsize=20_000)
def neighbour_features(word: str) -> tuple[tuple[str, ...], ...]:
    """What `word` tells the token that has it as a neighbour, at each of `NEIGHBOURS` (cached)."""
    lower, kind = word.lower(), shape(word)
    return tuple((f"{offset}w={lower}", f"{offset}s={kind}") for offset in NEIGHBOURS)


NEIGHBOURS = (-2, -1, 1, 2)
EDGES = tuple((f"{offset}edge",) for offset in NEIGHBOURS)


def features(text: str, bounds: Sequence[tuple[int, int]]) -> list[list[str]]:
    """Each token's feature strings, with its neighbours' words and shapes."""
    words = [text[a:b] for a, b in bounds]
    around = [neighbour_features(w) for w in words]
    n = len(words)
    seen = [  # per offset, what each token i sees at i + offset (an edge past either end)
        [EDGES[k]] * max(0, -offset) + [a[k] for a in around[max(0, offset) : n + min(0, offset)]] + [EDGES[k]] * max(0, offset)
        for k, offset in enumerate(NEIGHBOURS)
    ]
    return [[*own, *(name for names in theirs for name in names)] for own, *theirs in zip(map(word_features, words), *seen)]


class CrfSpans(Family):
    name = "crf-spans"
    f1 = "micro_f1"  # span-level, exact boundaries

    def claims(self, control: Any) -> bool:
        return isinstance(control, LabelsControl)

    def problem(self, control: LabelsControl, target: Any) -> str | None:
        return "label not in config" if any(spans.label_of(s) not in control.labels for s in target) else None

    def example(self, control: LabelsControl, stored: Any, data: Any, max_chars: int) -> tuple[Any, str | None, str | None]:
        """`spans.training_spans` over the text as cut for training. A text `max_chars` long may have
        been cut before (the store keeps task texts cut at MAX_TEXT_CHARS), so its spans may cross the cut."""
        text = control.text_of(data, max_chars)
        if text is None:
            return None, None, "no text"
        kept, length, problem = spans.training_spans(stored, text, control.labels, cut=len(text) >= max_chars)
        if problem:
            return None, None, problem
        return [s.encode() for s in kept], text[:length], None

    def fit(
        self, control: LabelsControl, texts: Sequence[str], targets: Sequence[Any], weights: np.ndarray | None = None, committee: int = 0
    ) -> SpanModel | None:
        """None when no text has a span (the CRF would learn only `O`)."""
        import pycrfsuite

        if not any(targets):
            return None
        trainer = pycrfsuite.Trainer(verbose=False)
        trainer.set_params(PARAMS)
        for text, target in zip(texts, targets):
            bounds = spans.tokens(text)
            if bounds:
                trainer.append(features(text, bounds), spans.tags(text, [spans.decode(s) for s in target], bounds))
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.crfsuite")
            trainer.train(path)
            with open(path, "rb") as handle:
                return SpanModel(handle.read(), tuple(control.labels))

    def predict(self, model: SpanModel, control: LabelsControl, texts: Sequence[str], threshold: float) -> list[Prediction]:
        out = []
        tags = model.tags
        for text, (bounds, decoded) in zip(texts, model.decode(texts)):
            best = [tags[k] for k in decoded.best]
            regions, target = [], []
            for first, last, label in spans.from_tags(best, bounds):
                if label not in control.labels:
                    continue
                span = spans.Span(bounds[first][0], bounds[last - 1][1], label)
                score = float(decoded.marginals[np.arange(first, last), decoded.best[first:last]].mean())
                regions.append(span_region(control, text, span, score))
                target.append(span.encode())
            score = decoded.probability ** (1.0 / len(bounds)) if bounds else 1.0
            out.append(Prediction(regions, round(score, 6), sorted(target)))
        return out

    def uncertainty(self, model: SpanModel, control: LabelsControl, texts: Sequence[str], strategy: str, pool: Any = None) -> np.ndarray:
        out = np.zeros(len(texts))
        for i, (bounds, decoded) in enumerate(model.decode(texts)):
            if not bounds:
                continue
            if strategy in ("margin", "entropy"):
                out[i] = float(strategies.uncertainty(decoded.marginals, strategy).mean())
            else:
                out[i] = 1.0 - decoded.probability ** (1.0 / len(bounds))
        return out

    def outcomes(self, control: LabelsControl, targets: Sequence[Any], predicted: Sequence[Any]) -> Outcomes:
        """Exact-boundary span matches per label; an example is correct when every span matches."""
        found = [spans.compare(t, p, control.labels) for t, p in zip(targets, predicted)]
        k = len(control.labels)
        tp = np.array([f.tp for f in found]).reshape(len(found), k)
        fp = np.array([f.fp for f in found]).reshape(len(found), k)
        fn = np.array([f.fn for f in found]).reshape(len(found), k)
        correct = ((fp.sum(axis=1) + fn.sum(axis=1)) == 0).astype(float)
        return Outcomes(tp, fp, fn, correct, tp.sum(axis=0) + fn.sum(axis=0) > 0, tuple(control.labels))

    def baseline(self, control: LabelsControl, targets: Sequence[Any], n: int) -> list[Any]:
        """No spans: what a model that learned nothing predicts."""
        return [[] for _ in range(n)]

    def dump(self, model: SpanModel) -> dict[str, Any]:
        return {"layout": ARTIFACT, "crf": np.frombuffer(model.crf, dtype=np.uint8).copy(), "labels": list(model.labels)}

    def load(self, data: dict[str, Any]) -> SpanModel:
        if not isinstance(data, dict) or data.get("layout") != ARTIFACT:
            raise ValueError("span artifact has an unknown layout")
        crf = np.asarray(data.get("crf"))
        if crf.dtype != np.uint8 or crf.ndim != 1 or not crf.size:
            raise ValueError("span artifact holds no CRF model")
        return SpanModel(crf.tobytes(), tuple(str(label) for label in data.get("labels") or ()))


def span_region(control: LabelsControl, text: str, span: spans.Span, score: float) -> dict[str, Any]:
    """One LS result region marking `span` of `text` (the caller adds its `id`): code-point offsets
    into the full text, as LS's editor reads and writes them (`tests/e2e/test_editor.py`)."""
    return {
        "from_name": control.from_name,
        "to_name": control.to_name,
        "type": "labels",
        "value": {"start": span.start, "end": span.end, "text": text[span.start : span.end], "labels": [span.label]},
        "score": round(score, 6),
    }
