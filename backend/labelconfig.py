"""The part of a Label Studio labeling config we can predict: Choices over Text or HyperText, and
Labels (spans) over Text.

Parsed with `label_studio_sdk`'s label interface, never by hand, and cached by config text because LS
sends the config with every request (and it may change between requests for one project).
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from . import spans

log = logging.getLogger(__name__)

TEXT_OBJECTS = ("Text", "HyperText")
_TAG = re.compile(r"<[^>]*>")


class LabelConfigError(ValueError):
    """The labeling config is not valid XML or not a Label Studio config."""


@dataclass(frozen=True)
class ChoicesControl:
    """One `<Choices>` control we can train and predict: its names, input fields and labels."""

    from_name: str
    to_name: str
    labels: tuple[str, ...]
    multiple: bool
    inputs: tuple[tuple[str, bool], ...]  # (data key, is HyperText) for each Text/HyperText object

    def text_of(self, data: Mapping[str, Any], max_chars: int) -> str | None:
        """The text this control reads from a task's `data`, or None when it is missing or empty."""
        if len(self.inputs) == 1 and not self.inputs[0][1] and type(value := data.get(self.inputs[0][0])) is str:
            return value[:max_chars] if value.strip() else None  # the usual case, once per task per request
        parts = []
        for key, is_html in self.inputs:
            value = data.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                continue
            if is_html:
                value = html.unescape(_TAG.sub(" ", value))
            if value.strip():
                parts.append(value)
        if not parts:
            return None
        return "\n".join(parts)[:max_chars]

    def label_of(self, item: str) -> str | None:
        """The label one stored item of this control counts for (a choice is its label)."""
        return item

    def problem(self, choices: list[str]) -> str | None:
        """Why these choices cannot train this control (None when they can)."""
        if any(c not in self.labels for c in choices):
            return "label not in config"
        if not self.multiple and len(choices) != 1:
            return "several choices for a single-choice control"
        return None

    @property
    def signature(self) -> str:
        """Identity of what a model for this control was trained to output."""
        return f"{self.from_name}|{self.to_name}|{int(self.multiple)}|" + "\x1f".join(self.labels)


@dataclass(frozen=True)
class LabelsControl:
    """One `<Labels>` control over one `<Text>` object: spans of its text, each with one label.

    Spans vote one by one, as the labels of a multi-label control do (`multiple`); a submitted
    annotation without a region of this control says the text has none (see `consensus`)."""

    from_name: str
    to_name: str
    labels: tuple[str, ...]
    key: str  # the data key of the Text object
    multiple: bool = True

    @property
    def inputs(self) -> tuple[tuple[str, bool], ...]:
        return ((self.key, False),)

    def label_of(self, item: str) -> str | None:
        """The label one stored span counts for."""
        return spans.label_of(item)

    def text_of(self, data: Mapping[str, Any], max_chars: int) -> str | None:
        """The text, cut at `max_chars` (offsets of the full text stay valid for the part kept)."""
        value = data.get(self.key)
        return value[:max_chars] if type(value) is str and value.strip() else None

    @property
    def signature(self) -> str:
        return f"{self.from_name}|{self.to_name}|spans|" + "\x1f".join(self.labels)


Control = ChoicesControl | LabelsControl


@dataclass(frozen=True)
class LabelConfig:
    """The predictable controls of one config, plus the data keys they read."""

    controls: tuple[Control, ...]
    digest: str

    @property
    def classes(self) -> dict[str, tuple[str, ...]]:
        """The labels of each Choices control: the classes the cold-start rule waits for
        (`Policy.warm`). Span types are not waited for: on WNUT-16, uncertainty from 50 labeled
        tasks on beat waiting for 5 spans of every type by 10 points of span F1 at 200 labels."""
        return {c.from_name: c.labels for c in self.controls if isinstance(c, ChoicesControl)}

    @property
    def span_controls(self) -> frozenset[str]:
        """The `from_name` of every Labels control."""
        return frozenset(c.from_name for c in self.controls if isinstance(c, LabelsControl))

    def control(self, from_name: str) -> Control | None:
        for control in self.controls:
            if control.from_name == from_name:
                return control
        return None

    @property
    def data_keys(self) -> tuple[str, ...]:
        return tuple(sorted({key for c in self.controls for key, _ in c.inputs}))


def config_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def preload() -> None:
    """Import the SDK's label interface now: on a web process's first request it takes 1.5-2 s,
    longer than LS waits for a webhook (1 s, never resent)."""
    import label_studio_sdk.label_interface  # noqa: F401


@lru_cache(maxsize=256)
def parse_label_config(text: str) -> LabelConfig:
    """Parse a config; raise LabelConfigError when LS itself could not have accepted it."""
    from label_studio_sdk.label_interface import LabelInterface

    if not isinstance(text, str) or not text.strip():
        raise LabelConfigError("label_config is empty")
    try:
        interface = LabelInterface(text)
    except Exception as exc:  # the SDK raises several unrelated types for bad XML
        raise LabelConfigError(f"label_config is not a valid labeling config: {type(exc).__name__}") from None
    controls: list[Control] = []
    for control in interface.controls:
        if control.tag == "Labels":
            spans = _labels_control(control, interface, text)
            if spans is not None:
                controls.append(spans)
            continue
        if control.tag != "Choices":
            continue
        inputs = []
        for name in control.to_name or []:
            obj = interface.get_object(name) if _has_object(interface, name) else None
            if obj is None or obj.tag not in TEXT_OBJECTS:
                continue
            value = str(obj.value or "")
            if not value.startswith("$") or len(value) < 2:
                continue
            inputs.append((value[1:], obj.tag == "HyperText"))
        labels = tuple(dict.fromkeys(str(label) for label in (control.labels or [])))
        if not inputs or not labels:
            continue
        controls.append(
            ChoicesControl(
                from_name=control.name,
                to_name=control.to_name[0] if len(control.to_name) == 1 else _first_text(control, interface),
                labels=labels,
                multiple=control.attr.get("choice") == "multiple",
                inputs=tuple(inputs),
            )
        )
    if not controls:
        log.info("label config %s has no Choices control over Text/HyperText or Labels over Text; nothing to predict", config_digest(text))
    return LabelConfig(controls=tuple(controls), digest=config_digest(text))


def _labels_control(control: Any, interface: Any, text: str) -> LabelsControl | None:
    """A Labels control over one Text object with a `$key` value; None otherwise. Spans of
    HyperText are XPath ranges we do not map: such a control gets no predictions (logged once per
    config, as parsing is cached)."""
    names = [n for n in control.to_name or [] if _has_object(interface, n)]
    objects = [interface.get_object(n) for n in names]
    labels = tuple(dict.fromkeys(str(label) for label in (control.labels or [])))
    if len(objects) != 1 or objects[0].tag != "Text" or not labels:
        if any(o.tag == "HyperText" for o in objects):
            log.warning("label config %s: Labels %r over HyperText is not predicted (XPath offsets)", config_digest(text), control.name)
        return None
    value = str(objects[0].value or "")
    if not value.startswith("$") or len(value) < 2:
        return None
    return LabelsControl(from_name=control.name, to_name=names[0], labels=labels, key=value[1:])


def _has_object(interface: Any, name: str) -> bool:
    return any(obj.name == name for obj in interface.objects)


def _first_text(control: Any, interface: Any) -> str:
    for name in control.to_name:
        if _has_object(interface, name) and interface.get_object(name).tag in TEXT_OBJECTS:
            return name
    return control.to_name[0]
