"""Batch CRF inference in numpy gives crfsuite's own answers: the same best paths, path
probabilities and marginals, whatever the batch and however long the sequences."""

import numpy as np
import pycrfsuite
import pytest

from backend import spans
from backend.families.crf_spans import CrfSpans, features
from backend.labelconfig import LabelsControl
from lab.datasets import load_wnut


@pytest.fixture(scope="module")
def fitted():
    data = load_wnut()
    control = LabelsControl("ner", "text", tuple(data.labels), "text")
    model = CrfSpans().fit(control, data.texts[:800], [sorted(spans.Span(*s).encode() for s in f) for f in data.spans[:800]])
    return model, data.texts[2000:2300] + ["", "x", "New York", "word " * 400, "@ann 👍🏽 #nyc https://x.co"]


def test_paths_probabilities_and_marginals_are_crfsuites(fitted):
    model, texts = fitted
    tagger = pycrfsuite.Tagger()
    tagger.open_inmemory(model.crf)
    for text, (bounds, decoded) in zip(texts, model.decode(texts)):
        if not bounds:
            assert len(decoded.best) == 0 and decoded.probability == 1.0
            continue
        tagger.set(features(text, bounds))
        best = tagger.tag()
        assert [model.tags[k] for k in decoded.best] == best, text
        assert decoded.probability == pytest.approx(tagger.probability(best), abs=1e-4)
        for i, tag in enumerate(best):
            assert decoded.marginals[i, model.tags.index(tag)] == pytest.approx(tagger.marginal(tag, i), abs=1e-4)
        assert np.allclose(decoded.marginals.sum(axis=1), 1.0)


def test_a_text_decodes_the_same_alone_and_in_any_batch(fitted):
    model, texts = fitted
    together = model.decode(texts)
    for i in (0, 7, len(texts) - 2):
        (alone,) = model.decode([texts[i]])
        assert np.array_equal(alone[1].best, together[i][1].best)
        assert alone[1].probability == pytest.approx(together[i][1].probability, rel=1e-9)
