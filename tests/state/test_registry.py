import json

import numpy as np
import pytest

from backend.families import ModelBundle
from backend.families.estimator import ControlModel
from backend.state.registry import Registry, RegistryError


@pytest.fixture
def bundle(tweets):
    model = ControlModel.fit(tweets.texts[:200], [[y] for y in tweets.labels[:200]], ["negative", "neutral", "positive"], False)
    return ModelBundle({"sentiment": model})


def publish(registry, bundle, watermark, expected_seq):
    version = registry.next_version(1)
    sha = registry.save_artifact(1, version, bundle)
    registry.save_record(1, {"version": version, "sha256": sha, "watermark": watermark, "created_at": watermark})
    return version, registry.promote(1, version, sha, watermark, expected_seq)


def test_publish_load_and_history(tmp_path, bundle):
    registry = Registry(tmp_path)
    version, pointer = publish(registry, bundle, 10, 0)
    assert version == "p1-v1" and pointer.seq == 1 and registry.pointer(1) == pointer
    loaded = registry.load(1, version, pointer.sha256)
    assert loaded.controls["sentiment"].labels == ["negative", "neutral", "positive"]
    assert [r["version"] for r in registry.history(1)] == ["p1-v1"]
    assert not list((tmp_path / "project-1").glob(".tmp-*"))


def test_compare_and_set_refuses_a_stale_champion_or_an_older_watermark(tmp_path, bundle):
    registry = Registry(tmp_path)
    publish(registry, bundle, 10, 0)
    with pytest.raises(RegistryError, match="champion moved"):
        publish(registry, bundle, 20, 0)  # judged against no champion, but one exists now
    with pytest.raises(RegistryError, match="older"):
        publish(registry, bundle, 5, 1)  # a late job with older data
    assert registry.pointer(1).version == "p1-v1"


def test_rollback_moves_forward_in_seq_and_keeps_the_high_watermark(tmp_path, bundle):
    registry = Registry(tmp_path)
    publish(registry, bundle, 10, 0)
    publish(registry, bundle, 20, 1)
    pointer = registry.rollback(1, "p1-v1")
    assert (pointer.version, pointer.seq, pointer.watermark) == ("p1-v1", 3, 20)
    with pytest.raises(RegistryError):
        registry.rollback(1, "p1-v9")
    with pytest.raises(RegistryError):
        registry.rollback(1, "../../etc/passwd")


@pytest.mark.parametrize("damage", ["truncate", "flip", "pickle"])
def test_damaged_or_hostile_artifacts_are_refused(tmp_path, bundle, damage):
    import pickle

    registry = Registry(tmp_path)
    version, pointer = publish(registry, bundle, 10, 0)
    path = tmp_path / "project-1" / f"{version}.skops"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        path.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(RegistryError):
        registry.load(1, version, pointer.sha256)
    with pytest.raises(RegistryError):  # even with the right checksum a pickle is refused
        import hashlib

        registry.load(1, version, hashlib.sha256(path.read_bytes()).hexdigest())


def test_untrusted_types_are_refused_even_with_a_matching_checksum(tmp_path):
    import hashlib

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    registry = Registry(tmp_path)
    (tmp_path / "project-1").mkdir()
    data = sio.dumps({"format": 1, "controls": {"c": {"pipeline": FunctionTransformer(json.loads)}}})
    (tmp_path / "project-1" / "p1-v1.skops").write_bytes(data)
    with pytest.raises(RegistryError, match="refused"):
        registry.load(1, "p1-v1", hashlib.sha256(data).hexdigest())


def test_sweep_removes_only_old_temp_files(tmp_path):
    import os
    import time

    registry = Registry(tmp_path)
    directory = tmp_path / "project-1"
    directory.mkdir()
    old, fresh = directory / ".tmp-old", directory / ".tmp-fresh"
    old.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert registry.sweep_temp_files() == 1 and fresh.exists() and not old.exists()


def test_committee_members_survive_the_artifact(tmp_path, tweets):
    from backend.families import ModelBundle
    from backend.families.estimator import ControlModel
    from backend.families.hashing import hash_texts

    texts, targets = tweets.texts[:200], [[x] for x in tweets.labels[:200]]
    model = ControlModel.fit(texts, targets, ("positive", "negative", "neutral"), False).with_committee(targets, hash_texts(texts))
    registry = Registry(tmp_path)
    version, pointer = publish(registry, ModelBundle({"sentiment": model}), 10, 0)
    loaded = registry.load(1, version, pointer.sha256).controls["sentiment"]
    assert len(loaded.members) == 3
    for mine, theirs in zip(model.members, loaded.members):
        assert np.allclose(mine.predict_proba(texts[:20]), theirs.predict_proba(texts[:20]))
