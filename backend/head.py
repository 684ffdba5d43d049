"""The head of the queue: how many of our first tasks Label Studio needs predictions for.

LS's uncertainty sampling serves the lowest `score` among the unlabeled tasks holding a prediction
of the project's current model version, and falls back to random order when none is left. So LS
needs the current version's predictions only for the tasks annotators will take before the next
version comes, not for the whole pool: the head. Its size covers the labels expected before the
next promotion, twice over, plus what several annotators draw at once (LS picks at random among
the top `annotators + 1` for each of them). It is refilled once half of it is taken.

Pure functions: the publish job and the webhook path pass what they measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import median
from typing import Any

MIN_HEAD = 50
MAX_HEAD = 5000
HEAD_MARGIN = 2.0
REFILL_AT = 0.5  # refill once fewer than this share of the head's tasks are left untaken
RECENT_PROMOTIONS = 5


def head_size(
    push_top: int,
    retrain_threshold: int,
    rate: float,
    annotators: int,
    cycle: tuple[float, float] = (0.0, 0.0),
) -> int:
    """The head's size: `push_top` when the admin fixed it; else from the labels expected before
    the next promotion, the most of `retrain_threshold`, the labels between recent promotions
    (`cycle[1]`) and `rate` (labels per second) times the seconds between them (`cycle[0]`)."""
    if push_top:
        return push_top
    expected = max(retrain_threshold, cycle[1], rate * cycle[0])
    drawn = (annotators + 1) * max(annotators, 1)
    return int(min(MAX_HEAD, max(MIN_HEAD, math.ceil(HEAD_MARGIN * expected + drawn))))


def promotion_cycle(history: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """Median seconds and label changes between the recent promotions of a version history (each
    record's `created_at` and `watermark`); zeros with fewer than two promotions."""
    promoted = [r for r in history if r.get("decision") == "promoted"][-(RECENT_PROMOTIONS + 1) :]
    if len(promoted) < 2:
        return 0.0, 0.0
    pairs = list(zip(promoted, promoted[1:]))
    seconds = median(float(b.get("created_at", 0)) - float(a.get("created_at", 0)) for a, b in pairs)
    labels = median(int(b.get("watermark", 0)) - int(a.get("watermark", 0)) for a, b in pairs)
    return max(seconds, 0.0), max(float(labels), 0.0)


def refill_due(left: int, target: int) -> bool:
    """Is a head of `target` tasks with `left` untaken due for a refill?"""
    return target > 0 and left < target * REFILL_AT
