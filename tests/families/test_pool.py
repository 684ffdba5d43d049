"""The pool cache: model-free features kept on disk, updated as tasks come and go, scored exactly."""

import numpy as np
import pytest

from backend import strategy
from backend.families import pool as pool_module
from backend.families.estimator import ControlModel
from backend.families.hashing import hash_texts, word_counts
from backend.families.pool import Pool, cache_for, features


@pytest.fixture(scope="module")
def texts(tweets):
    return tweets.texts[:3000]


def fitted(tweets, labels, multiple=False, n=600):
    if multiple:
        targets = [[tweets.labels[i]] + (["long"] if len(tweets.texts[i]) > 80 else []) for i in range(n)]
        return ControlModel.fit(tweets.texts[:n], targets, labels, True)
    return ControlModel.fit(tweets.texts[:n], [[label] for label in tweets.labels[:n]], labels, False)


@pytest.mark.parametrize(
    "labels, multiple",
    [
        (("positive", "negative", "neutral"), False),
        (("neutral", "positive", "negative", "never seen"), False),
        (("positive", "negative", "neutral", "long"), True),
    ],
)
def test_scoring_the_counts_gives_predict_proba(tweets, texts, labels, multiple):
    model = fitted(tweets, labels, multiple)
    assert model.linear is not None  # else this test would only compare predict_proba with itself
    pool = Pool.build(texts[1000:2000], 10, 0)
    expected = model.predict_proba(features=hash_texts(texts[1000:2000]))
    assert np.abs(pool.predict_proba(model) - expected).max() < 1e-6


def test_binary_model_scores_like_predict_proba(tweets, texts):
    keep = [i for i in range(900) if tweets.labels[i] != "neutral"]
    model = ControlModel.fit([tweets.texts[i] for i in keep], [[tweets.labels[i]] for i in keep], ("positive", "negative"), False)
    pool = Pool.build(texts[2000:2500], 10, 0)
    assert np.abs(pool.predict_proba(model) - model.predict_proba(texts[2000:2500])).max() < 1e-6


def test_first_sync_matches_the_uncached_features_and_clusters(tmp_path, texts):
    pool = cache_for(tmp_path).sync(list(range(1, 1001)), texts[:1000], 8, 0)
    expected = strategy.clusters(features(texts[:1000]), 8, 0)
    assert (pool.clusters == expected).all()
    assert (pool.words() != word_counts(texts[:1000])).nnz == 0
    assert (pool.counts() != hash_texts(texts[:1000])).nnz == 0


def test_later_syncs_hash_only_new_or_changed_texts(tmp_path, texts, monkeypatch):
    cache = cache_for(tmp_path)
    first = cache.sync(list(range(1, 1001)), texts[:1000], 8, 0)
    hashed = []
    real = pool_module.hash_texts
    monkeypatch.setattr(pool_module, "hash_texts", lambda batch: hashed.extend(batch) or real(batch))

    again = cache.sync(list(range(1, 1001)), texts[:1000], 8, 0)
    assert hashed == [] and (again.clusters == first.clusters).all()

    # tasks 1-100 labeled (gone), task 200's text edited, tasks 1001-1100 arrive, order shuffled
    ids = list(range(101, 1101))[::-1]
    current = {i: texts[i - 1] for i in ids}
    current[200] = "an edited text about rockets"
    later = cache.sync(ids, [current[i] for i in ids], 8, 0)
    assert sorted(hashed) == sorted([current[200]] + texts[1000:1100])
    assert (later.counts() != hash_texts([current[i] for i in ids])).nnz == 0
    kept = {i: c for i, c in zip(range(1, 1001), first.clusters) if 101 <= i <= 1000 and i != 200}
    assert all(later.clusters[ids.index(i)] == c for i, c in kept.items())  # known tasks keep their cluster
    assert set(later.clusters.tolist()) <= set(range(8))


def test_clusters_are_fitted_again_once_the_pool_has_grown(tmp_path, texts):
    cache = cache_for(tmp_path)
    cache.sync(list(range(1, 401)), texts[:400], 6, 0)
    grown = cache.sync(list(range(1, 1001)), texts[:1000], 6, 0)
    assert (grown.clusters == strategy.clusters(features(texts[:1000]), 6, 0)).all()
    other = cache.sync(list(range(1, 1001)), texts[:1000], 4, 0)  # another cluster count: fitted again
    assert set(other.clusters.tolist()) <= set(range(4))


def test_departed_tasks_are_compacted_away(tmp_path, texts):
    cache = cache_for(tmp_path)
    cache.sync(list(range(1, 1001)), texts[:1000], 8, 0)
    segments = lambda: {p.name.split(".")[0] for p in cache.directory.glob("seg-*")}
    before = segments()
    remaining = list(range(800, 1001))
    pool = cache.sync(remaining, texts[799:1000], 8, 0)
    assert len(segments()) == 1 and segments() != before
    assert (pool.counts() != hash_texts(texts[799:1000])).nnz == 0


def test_cache_files_are_plain_numpy_and_a_damaged_cache_is_rebuilt(tmp_path, texts, caplog):
    cache = cache_for(tmp_path)
    first = cache.sync(list(range(1, 301)), texts[:300], 5, 0)
    for path in cache.directory.iterdir():
        if path.suffix == ".npy":
            np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            np.load(path, allow_pickle=False).files
    counts = next(cache.directory.glob("seg-*.indices.npy"))
    counts.write_bytes(counts.read_bytes()[:200])
    rebuilt = cache.sync(list(range(1, 301)), texts[:300], 5, 0)
    assert "rebuilding" in caplog.text
    assert (rebuilt.clusters == first.clusters).all()
    assert (rebuilt.counts() != hash_texts(texts[:300])).nnz == 0


def test_a_damaged_index_is_rebuilt(tmp_path, texts):
    cache = cache_for(tmp_path)
    first = cache.sync(list(range(1, 201)), texts[:200], 5, 0)
    (cache.directory / "index.npz").write_bytes(b"not a zip file")
    again = cache.sync(list(range(1, 201)), texts[:200], 5, 0)
    assert (again.clusters == first.clusters).all()
    assert (again.counts() != hash_texts(texts[:200])).nnz == 0


def test_texts_are_hashed_in_batches_into_one_segment(tmp_path, texts, monkeypatch):
    monkeypatch.setattr(pool_module, "HASH_BATCH", 128)
    pool = cache_for(tmp_path).sync(list(range(1, 501)), texts[:500], 5, 0)
    assert len(pool.segments) == 1 and (pool.counts() != hash_texts(texts[:500])).nnz == 0


def test_forgetting_deleted_tasks_rewrites_their_features_out_of_the_files(tmp_path, texts):
    cache = cache_for(tmp_path)
    files = tmp_path / "pool"
    first = cache.sync(list(range(1, 301)), texts[:300], 6, 0)
    assert cache.forget([5, 6, 7, 9999]) == 3
    segments = [np.load(p) for p in files.glob("seg-*.indptr.npy")]
    assert len(segments) == 1 and len(segments[0]) == 2 * 297 + 1  # two rows (words, characters) per task left
    with np.load(files / "index.npz") as index:
        assert sorted(index["ids"].tolist()) == [i for i in range(1, 301) if i not in (5, 6, 7)]
    kept = [i for i in range(1, 301) if i not in (5, 6, 7)]
    again = cache.sync(kept, [texts[i - 1] for i in kept], 6, 0)
    assert (again.counts() != hash_texts([texts[i - 1] for i in kept])).nnz == 0
    assert (again.clusters == np.delete(first.clusters, [4, 5, 6])).all()
    assert cache.forget([5]) == 0 and cache.forget(kept) == len(kept)
    assert not list(files.glob("seg-*"))
