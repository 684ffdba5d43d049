"""Building the compiled hashing: in place, only when its source is newer, never half-written."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from backend import native


@pytest.fixture
def source_copy(tmp_path, monkeypatch):
    if shutil.which(native.command(tmp_path / "x")[0]) is None:
        pytest.skip("no C compiler")
    copy = tmp_path / "_compiled.c"
    shutil.copy(native.SOURCE, copy)
    monkeypatch.setattr(native, "SOURCE", copy)
    return copy


def test_build_compiles_an_importable_module_once_until_the_source_changes(source_copy):
    built = native.build()
    assert built == native.target() and built.parent == source_copy.parent
    spec = importlib.util.spec_from_file_location("_compiled", built)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    indptr, indices, counts = module.counts(["a b"], True, False)
    assert len(indptr) == 16 and len(indices) == 12 and len(counts) == 12  # "a", "b", "a b"
    first = built.stat().st_mtime_ns
    assert native.build() == built and built.stat().st_mtime_ns == first  # up to date: not rebuilt
    assert not list(source_copy.parent.glob(".build-*"))


def test_a_failed_build_leaves_no_module_and_no_partial_file(source_copy):
    source_copy.write_text("this is not C\n")
    with pytest.raises(Exception):
        native.build(force=True)
    assert not native.target().exists() and not list(source_copy.parent.glob(".build-*"))
    assert native.main() == 1
