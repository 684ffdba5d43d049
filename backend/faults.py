"""Fault-injection points for the fault tests, inert unless the test sets CRASH_AT / SLEEP_AT.

`CRASH_AT=<point>` ends the process at once (as a SIGKILL would); `SLEEP_AT=<point>` with
`SLEEP_SECONDS` holds it there, so a test can kill it mid-step. Points: fit, before_dump, mid_dump,
after_dump_before_replace, after_replace_before_pointer.
"""

from __future__ import annotations

import os
import time

def point(name: str) -> None:
    if os.environ.get("SLEEP_AT") == name:
        time.sleep(float(os.environ.get("SLEEP_SECONDS", "30")))
    if os.environ.get("CRASH_AT") == name:
        os._exit(137)
