import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import skops.io as sio

from backend import families
from backend.families import ModelBundle
from backend.families.estimator import (
    ALPHA,
    LEGACY_FORMAT,
    MAX_ALPHA,
    MULTICLASS,
    PRIOR,
    ControlModel,
    SparseLinear,
    alpha_for,
    build_classifier,
    weigh,
)
from backend.families.hashing import N_FEATURES, hash_texts
from backend.state.registry import NotPlain, Registry, RegistryError, read_plain

LABELS = ["negative", "neutral", "positive"]
pytestmark = pytest.mark.usefixtures("implementation")  # the compiled scores and numpy's, each held to scikit-learn


@pytest.fixture(scope="module")
def fitted(tweets):
    return ControlModel.fit(tweets.texts[:1000], [[y] for y in tweets.labels[:1000]], LABELS, False)


@pytest.fixture(scope="module")
def unseen(tweets):
    return hash_texts(tweets.texts[20_000:21_000])


def save_and_load(tmp_path, model, version="p1-v1"):
    registry = Registry(tmp_path)
    sha = registry.save_artifact(1, version, ModelBundle({"sentiment": model}))
    return registry.load(1, version, sha).controls["sentiment"], registry


def test_a_loaded_model_predicts_exactly_what_the_fitted_classifier_did(tmp_path, fitted, unseen):
    expected = fitted.fitted.predict_proba(weigh(fitted.idf, unseen))  # scikit-learn's own arithmetic
    loaded, _ = save_and_load(tmp_path, fitted)
    assert np.array_equal(fitted.predict_proba(features=unseen), expected)
    assert np.array_equal(loaded.predict_proba(features=unseen), expected)
    assert loaded.fitted is None  # nothing full-width was kept


def test_only_the_columns_training_texts_had_are_stored(tweets, fitted):
    seen = np.unique(hash_texts(tweets.texts[:1000]).indices)
    assert np.array_equal(fitted.linear.seen, seen) and len(seen) < N_FEATURES / 3
    others = np.setdiff1d(np.arange(N_FEATURES), seen)
    assert not np.asarray(fitted.fitted.coef_)[:, others].any()  # SGD never moved them
    assert np.array_equal(fitted.idf, fitted.linear.full_idf())


def test_binary_and_multi_label_models_round_trip_exactly(tmp_path, tweets, unseen):
    texts = tweets.texts[:400]
    binary = ControlModel.fit(texts, [["long" if len(t) > 70 else "short"] for t in texts], ["long", "short"], False)
    targets = [[y] + (["long"] if len(t) > 70 else []) for t, y in zip(texts, tweets.labels[:400])]
    multi = ControlModel.fit(texts, targets, [*LABELS, "long", "never"], True)
    assert binary.linear.coef.shape[1] == 1 and multi.constant == {"never": 0.0}
    for i, model in enumerate([binary, multi]):
        expected = np.asarray(model.fitted.predict_proba(weigh(model.idf, unseen)))
        loaded, _ = save_and_load(tmp_path / str(i), model)
        proba = loaded.predict_proba(features=unseen)
        assert np.array_equal(proba[:, [model.labels.index(c) for c in model.columns]], expected[:, : len(model.columns)])


def test_a_multi_label_control_with_one_varying_label_gives_that_labels_probability():
    texts = ["red apple", "green apple", "red car", "blue car"] * 5
    model = ControlModel.fit(texts, [["fruit"], ["fruit"], [], []] * 5, ["fruit", "red"], True)
    proba = model.predict_proba(["green apple", "blue car"])
    assert proba[0, 0] > 0.5 > proba[1, 0] and model.constant == {"red": 0.0}


def test_a_loaded_model_rebuilds_its_scikit_learn_classifier_on_demand(tmp_path, fitted, unseen):
    loaded, _ = save_and_load(tmp_path, fitted)
    rebuilt = sklearn_classifier(loaded.linear, loaded.columns)
    assert np.array_equal(rebuilt.coef_, fitted.fitted.coef_) and np.array_equal(rebuilt.intercept_, fitted.fitted.intercept_)
    assert list(rebuilt.classes_) == list(fitted.fitted.classes_)
    assert np.array_equal(rebuilt.predict_proba(weigh(loaded.idf, unseen)), fitted.predict_proba(features=unseen))


def test_legacy_artifacts_with_scikit_learn_objects_still_load_and_predict_the_same(tmp_path, fitted, unseen):
    legacy = {
        "format": LEGACY_FORMAT,
        "controls": {
            "sentiment": {
                "labels": fitted.labels,
                "multiple": False,
                "idf": fitted.idf,
                "classifier": fitted.fitted,
                "columns": fitted.columns,
                "constant": {},
            }
        },
    }
    data = sio.dumps(legacy)
    with pytest.raises(NotPlain):
        read_plain(data)
    registry = Registry(tmp_path)
    (tmp_path / "project-1").mkdir()
    (tmp_path / "project-1" / "p1-v1.skops").write_bytes(data)
    loaded = registry.load(1, "p1-v1", hashlib.sha256(data).hexdigest()).controls["sentiment"]
    assert loaded.fitted is None and len(loaded.linear.seen) == len(fitted.linear.seen)
    assert np.array_equal(loaded.predict_proba(features=unseen), fitted.predict_proba(features=unseen))


def test_artifacts_are_plain_skops_that_skops_itself_loads_with_no_trusted_types(fitted, unseen):
    data = sio.dumps(families.to_artifact(ModelBundle({"sentiment": fitted})))
    assert sio.get_untrusted_types(data=data) == []
    by_skops = families.from_artifact(sio.loads(data, trusted=[])).controls["sentiment"]
    plain = families.from_artifact(read_plain(data)).controls["sentiment"]
    assert np.array_equal(by_skops.predict_proba(features=unseen), plain.predict_proba(features=unseen))


@pytest.mark.parametrize("damage", ["unsorted", "out of range", "shape", "link", "labels"])
def test_weights_that_do_not_fit_together_are_refused(tmp_path, fitted, damage):
    artifact = families.to_artifact(ModelBundle({"sentiment": fitted}))
    control = artifact["controls"]["sentiment"]["model"]
    linear = control["linear"]
    if damage == "unsorted":
        linear["seen"] = linear["seen"][::-1].copy()
    elif damage == "out of range":
        linear["seen"] = linear["seen"] + N_FEATURES
    elif damage == "shape":
        linear["coef"] = linear["coef"][:-1]
    elif damage == "link":
        linear["link"] = "softmax"
    else:
        control["columns"] = control["columns"][:2]
    data = sio.dumps(artifact)
    (tmp_path / "project-1").mkdir()
    (tmp_path / "project-1" / "p1-v1.skops").write_bytes(data)
    with pytest.raises(RegistryError, match="refused: ValueError"):
        Registry(tmp_path).load(1, "p1-v1", hashlib.sha256(data).hexdigest())


def test_unseen_words_are_exactly_the_columns_at_the_largest_idf(tmp_path, fitted, unseen):
    from backend.families.hashing import BLOCKS
    from backend.families.text_choices import unseen_share

    loaded, _ = save_and_load(tmp_path, fitted)
    idf, words = fitted.idf[BLOCKS[0]], unseen[:, BLOCKS[0]].tocsr()
    at_max = (idf >= idf.max() - 1e-6)[words.indices]
    expected = [at_max[a:b].mean() if b > a else 0.0 for a, b in zip(words.indptr[:-1], words.indptr[1:])]
    assert np.allclose(unseen_share(loaded, unseen), expected) and 0 < np.mean(expected) < 1


def test_repeated_words_and_empty_texts_score_as_scikit_learn_does(fitted):
    features = hash_texts(["good " * n + "bad" for n in (1, 2, 3, 50, 300)] + ["", "!!!"])
    assert features.data.max() >= 300
    assert np.array_equal(fitted.predict_proba(features=features), fitted.fitted.predict_proba(weigh(fitted.idf, features)))


def test_regularisation_fades_as_labels_grow_from_the_cap_to_the_floor(tweets):
    assert alpha_for(1) == alpha_for(2000) == MAX_ALPHA
    assert alpha_for(4000) == pytest.approx(PRIOR / 4000) and MAX_ALPHA > alpha_for(4000) > alpha_for(10_000) > ALPHA
    assert alpha_for(20_000) == alpha_for(29_757) == ALPHA and alpha_for(500, prior=0) == ALPHA
    small = ControlModel.fit(tweets.texts[:300], [[y] for y in tweets.labels[:300]], LABELS, False)
    assert small.fitted.alpha == MAX_ALPHA
    fixed = ControlModel.fit(tweets.texts[:300], [[y] for y in tweets.labels[:300]], LABELS, False, alpha=ALPHA)
    assert fixed.fitted.alpha == ALPHA


def sklearn_classifier(linear: SparseLinear, columns: Sequence[str]) -> Any:
    """A scikit-learn classifier with `linear`'s weights: the `build_classifier` model that `fit`
    returned, rebuilt (shows that `SparseLinear` keeps everything the classifier had)."""
    from sklearn.preprocessing import LabelBinarizer

    coef, outputs = linear.full_coef(), linear.coef.shape[1]

    def sgd(rows: slice, classes: Sequence[Any]) -> Any:
        model = build_classifier()
        model.coef_, model.intercept_ = np.asfortranarray(coef[rows]), linear.intercept[rows].copy()
        model.classes_, model.n_features_in_ = np.asarray(classes), N_FEATURES
        return model

    if linear.link == MULTICLASS:
        return sgd(slice(0, outputs), list(columns))
    classifier = build_classifier(multiple=True)
    classifier.estimators_ = [sgd(slice(k, k + 1), [0, 1]) for k in range(outputs)]
    classifier.label_binarizer_ = LabelBinarizer(sparse_output=True).fit(np.array([[0] * outputs, [1] * outputs]))
    classifier.n_features_in_ = N_FEATURES
    return classifier
