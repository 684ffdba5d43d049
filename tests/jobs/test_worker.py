"""Embedded worker threads: they start once per Redis and stop with their runtime."""

from __future__ import annotations

import threading

import fakeredis

from backend.jobs.worker import start_embedded_worker
from backend.runtime import Runtime
from tests.conftest import wait_for

NAMES = {"embedded-worker", "embedded-ranker", "embedded-schedule"}


def threads_of_this_test(before: set[threading.Thread]) -> set[str]:
    return {t.name for t in threading.enumerate() if t not in before and t.name in NAMES}


def test_embedded_threads_start_once_and_stop_with_their_runtime(settings):
    before = set(threading.enumerate())
    runtime = Runtime.build(settings, redis=fakeredis.FakeRedis())
    first = start_embedded_worker(runtime)
    assert start_embedded_worker(runtime) is first
    assert wait_for(lambda: threads_of_this_test(before) == NAMES, timeout=10)
    runtime.stop()
    assert wait_for(lambda: not threads_of_this_test(before), timeout=40)  # idle: between two dequeue waits
    assert not runtime.stoppers
    again = start_embedded_worker(runtime)  # a stopped runtime may start its threads again
    assert again is not first and again.is_alive()
    runtime.stop()
    assert wait_for(lambda: not threads_of_this_test(before), timeout=40)
