"""Batch CRF inference in numpy gives crfsuite's own answers: the same best paths, path
probabilities and marginals, whatever the batch and however long the sequences."""

import numpy as np
import pycrfsuite
import pytest

from backend import spans
from backend.families.crf_spans import CrfSpans, SpanModel, features
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


def test_a_full_word_cache_is_emptied_without_losing_the_words_of_the_batch(fitted, monkeypatch):
    from backend.families import crf

    trained, texts = fitted
    model = SpanModel(trained.crf, trained.labels)  # an empty word cache
    expected = [d.best.tolist() for _, d in model.decode(texts[:50])]
    monkeypatch.setattr(crf, "WORDS_KEPT", 40)  # far fewer than the batch's distinct words: the cache is cleared mid-use
    model.decode(texts[50:60])  # words kept from before, and new ones
    assert [d.best.tolist() for _, d in model.decode(texts[:50])] == expected
    last_batch = {t[a:b] for t in texts[:50] for a, b in spans.tokens(t)}
    assert len(model.compiled._words) <= max(40, len(last_batch))  # the cap holds, beyond one batch's own words


def test_decoding_in_token_batches_gives_what_one_batch_gives(fitted, monkeypatch):
    from backend.families import crf_spans

    model, texts = fitted
    whole = model.decode(texts)
    monkeypatch.setattr(crf_spans, "TOKENS_PER_BATCH", 50)
    for (bounds, one), (same_bounds, batched) in zip(whole, model.decode(texts)):
        assert bounds == same_bounds and np.array_equal(one.best, batched.best)
        assert batched.probability == pytest.approx(one.probability, rel=1e-6)
