"""The background writer: best-effort writes of web requests, merged per batch."""

from __future__ import annotations

import fakeredis

from backend.jobs import trigger
from backend.model import Observation
from backend.runtime import BackgroundWriter
from backend.state.store import Store
from tests.conftest import wait_for


def test_calls_of_one_work_and_project_merge_into_one_and_others_stay_apart(settings):
    store = Store(fakeredis.FakeRedis())
    batch = [
        (store.remember_tasks, (1, {1: {"text": "a"}})),
        (trigger.after_predict, (settings, store.redis, None, store, 1, Observation("v1", {1: {"c": ["x"]}}, [(0.9, 1.0, 0.0)]))),
        (store.remember_tasks, (2, {5: {"text": "e"}})),
        (store.remember_tasks, (1, {1: {"text": "a2"}, 2: {"text": "b"}})),
        (trigger.after_predict, (settings, store.redis, None, store, 1, Observation("v1", {2: {"c": ["y"]}}, [(0.5, 2.0, 0.1)]))),
        (trigger.after_predict, (settings, store.redis, None, store, 1, Observation("v2", {3: {"c": ["z"]}}, [(0.7, 3.0, 0.2)]))),
    ]
    calls = BackgroundWriter.coalesced(batch)
    assert [(work, args[-1]) for work, args in calls] == [
        (store.remember_tasks, {1: {"text": "a2"}, 2: {"text": "b"}}),
        (trigger.after_predict, Observation("v1", {1: {"c": ["x"]}, 2: {"c": ["y"]}}, [(0.9, 1.0, 0.0), (0.5, 2.0, 0.1)])),
        (store.remember_tasks, {5: {"text": "e"}}),
        (trigger.after_predict, Observation("v2", {3: {"c": ["z"]}}, [(0.7, 3.0, 0.2)])),
    ]


def test_submitted_writes_all_land_and_a_failing_one_does_not_stop_the_others():
    store = Store(fakeredis.FakeRedis())
    writer = BackgroundWriter(linger=0.01)

    def broken(project: int, tasks: dict) -> None:
        raise ConnectionError("redis went away")

    for task in range(1, 301):
        writer.submit(store.remember_tasks, 7, {task: {"text": f"t{task}"}})
        writer.submit(broken, 7, {task: {}})
    wait_for(lambda: len(store.pool(7)) == 300, timeout=10)
    assert store.pool(7)[300] == {"text": "t300"}
