"""Model families (`base.Family`): the built-in text-choices and span (`crf_spans`) families and those MODEL_FAMILIES names,
which controls of a config each serves, and the artifact layout that holds a version's models.

MODEL_FAMILIES is a comma-separated list of `package.module:Class`; each class is a `Family`
subclass built without arguments. Families listed there claim controls before the built-in one,
so a project's `Choices` controls can be served by a classifier of the user's own.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..labelconfig import LabelConfig
from .base import DEFAULT_FAMILY, ChoicesFamily, Family, ModelBundle, Outcomes, Prediction
from .crf_spans import CrfSpans
from .text_choices import TextChoices

__all__ = [
    "ChoicesFamily",
    "Family",
    "ModelBundle",
    "Outcomes",
    "Prediction",
    "assign",
    "family",
    "from_artifact",
    "install",
    "to_artifact",
]

FORMAT = 4  # artifact layout: 4 = per control, its family's name and its `Family.dump`
BUILT_IN: tuple[Family, ...] = (TextChoices(), CrfSpans())
_installed: tuple[Family, ...] = BUILT_IN
_installed_spec = ""


class FamilyError(ValueError):
    """MODEL_FAMILIES names something that is not a usable family."""


def install(spec: str) -> tuple[Family, ...]:
    """Use the families MODEL_FAMILIES names (`package.module:Class,...`) before the built-in ones."""
    global _installed, _installed_spec
    if spec == _installed_spec:
        return _installed
    extra = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        module_name, _, class_name = entry.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise FamilyError(f"MODEL_FAMILIES: cannot import {entry!r} ({type(exc).__name__}: {exc})") from None
        if not (isinstance(cls, type) and issubclass(cls, Family)):
            raise FamilyError(f"MODEL_FAMILIES: {entry!r} is not a subclass of backend.families.Family")
        extra.append(cls())
    names = [f.name for f in (*extra, *BUILT_IN)]
    if len(set(names)) != len(names):
        raise FamilyError(f"MODEL_FAMILIES: two families share a name ({names})")
    _installed, _installed_spec = (*extra, *BUILT_IN), spec
    return _installed


def installed() -> tuple[Family, ...]:
    return _installed


def family(name: str) -> Family:
    for candidate in _installed:
        if candidate.name == name:
            return candidate
    raise FamilyError(f"no model family named {name!r} is installed (MODEL_FAMILIES)")


def assign(config: LabelConfig) -> dict[str, Family]:
    """The family of each control of `config` that an installed family claims (first claim wins)."""
    out = {}
    for control in config.controls:
        for candidate in _installed:
            if candidate.claims(control):
                out[control.from_name] = candidate
                break
    return out


def to_artifact(bundle: ModelBundle) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "controls": {
            name: {"family": bundle.family_of(name), "model": family(bundle.family_of(name)).dump(model)}
            for name, model in bundle.controls.items()
        },
    }


def from_artifact(data: Any) -> ModelBundle:
    """A bundle from an artifact of this layout or an earlier one (all text-choices; ValueError
    for anything else, and for a family that is not installed)."""
    from .estimator import FORMAT as CHOICES_FORMAT
    from .estimator import LEGACY_FORMAT

    if not isinstance(data, dict) or not isinstance(data.get("controls"), dict):
        raise ValueError("artifact has an unknown layout")
    layout = data.get("format")
    if layout in (CHOICES_FORMAT, LEGACY_FORMAT):
        built_in = family(DEFAULT_FAMILY)
        return ModelBundle({str(k): built_in.load(v, layout) for k, v in data["controls"].items()})  # type: ignore[call-arg]
    if layout != FORMAT:
        raise ValueError("artifact has an unknown layout")
    controls, families = {}, {}
    for name, entry in data["controls"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("family"), str):
            raise ValueError("artifact control has no family")
        controls[str(name)] = family(entry["family"]).load(entry["model"])
        families[str(name)] = entry["family"]
    return ModelBundle(controls, families)
