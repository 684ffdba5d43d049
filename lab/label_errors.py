"""How far the label-error suspects can be trusted: tweets with a share of labels flipped to another
class, checked the way a train job checks them (`mislabels.check`), at several project sizes.
Printed by `python -m lab mislabels`; the README quotes it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from backend import mislabels
from backend.consensus import LabeledTask
from backend.labelconfig import parse_label_config
from backend.training import build_snapshot

from .client import LABEL_CONFIG
from .datasets import load_tweets


def flipped_report(sizes: Sequence[int] = (200, 1000, 5000), share: float = 0.10, seed: int = 0) -> list[dict[str, Any]]:
    """Per size: whether suspects were flagged, their number, precision and recall against the
    flipped labels, and the expected precision the check itself reports."""
    data = load_tweets()
    classes = sorted(set(data.labels))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.texts))
    config = parse_label_config(LABEL_CONFIG)
    out = []
    for size in sizes:
        rows = order[:size]
        flipped = set(rng.choice(size, int(size * share), replace=False).tolist())
        tasks = []
        for i, row in enumerate(rows):
            label = data.labels[row]
            if i in flipped:
                label = classes[(classes.index(label) + 1 + int(rng.integers(len(classes) - 1))) % len(classes)]
            tasks.append(LabeledTask(i + 1, {"text": data.texts[row]}, {"sentiment": [label]}, {}))
        suspects, _, figures = mislabels.check(build_snapshot(1, tasks, config, size, 10_000))
        found, truth = {s.task for s in suspects}, {i + 1 for i in flipped}
        shown = figures.get("sentiment", {})
        out.append(
            {
                "labels": size,
                "flipped": len(truth),
                "flagged": bool(shown.get("flagged")),
                "out_of_fold_accuracy": shown.get("out_of_fold_accuracy"),
                "largest_class_share": shown.get("largest_class_share"),
                "suspects": len(found),
                "precision": round(len(found & truth) / len(found), 3) if found else None,
                "recall": round(len(found & truth) / len(truth), 3) if truth else None,
                "top_100_precision": round(len({s.task for s in suspects[:100]} & truth) / min(len(suspects), 100), 3)
                if suspects
                else None,
                "expected_precision": shown.get("expected_precision"),
            }
        )
    return out
