"""Fault-injection points for the fault tests, inert unless the test sets one of these variables.

`CRASH_AT=<point>` ends the process at once (as a SIGKILL would); `SLEEP_AT=<point>` with
`SLEEP_SECONDS` holds it there, so a test can kill it mid-step; `DISK_FULL_AT=<point>` lets the
process write no file beyond `DISK_FULL_BYTES` from there on (RLIMIT_FSIZE: writes fail with EFBIG,
as on a full disk). Points: fit, before_dump, mid_dump, after_dump_before_replace,
after_replace_before_pointer. `POISON_TEXT=<s>` makes fitting any batch with a text containing `s`
raise, as a training example that crashes the estimator would.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)


def point(name: str) -> None:
    if os.environ.get("DISK_FULL_AT") == name:
        limit = int(os.environ.get("DISK_FULL_BYTES", "65536"))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    if os.environ.get("SLEEP_AT") == name:
        log.warning("fault injection: holding at %s", name)
        time.sleep(float(os.environ.get("SLEEP_SECONDS", "30")))
    if os.environ.get("CRASH_AT") == name:
        os._exit(137)


def poison(texts: Sequence[str]) -> None:
    marker = os.environ.get("POISON_TEXT")
    if marker and any(marker in text for text in texts):
        raise ValueError("fault injection: poisoned training example")
