"""When to retrain: the schedule (`retrain_every`) fires exactly once per due time, whoever ticks."""

import time

import fakeredis
import pytest

from backend import audit, trigger
from backend.config import Settings
from backend.policy import validated
from backend.payload import InvalidPayload


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


def test_schedule_values_are_seconds_or_cron_strings():
    assert validated({"retrain_every": 3600}, strict=True) == {"retrain_every": 3600}
    assert validated({"retrain_every": "*/15 * * * *"}, strict=True) == {"retrain_every": "*/15 * * * *"}
    for bad in (-1, "every hour", "* * *", True, 1.5, 10**9):
        with pytest.raises(InvalidPayload):
            validated({"retrain_every": bad}, strict=True)


def test_next_due_of_an_interval_and_of_a_cron_string():
    assert trigger.next_due(0, 100.0) is None
    assert trigger.next_due(60, 100.0) == 160.0
    assert trigger.next_due("0 * * * *", 3600 * 5 + 1) == 3600 * 6


def test_a_due_schedule_fires_once_however_many_tick_and_moves_on(redis):
    settings = Settings.from_env({})
    trigger.reschedule(redis, 7, 30, now=1000.0)
    assert trigger.fire_due(settings, redis, now=1029.0) == []
    fired = trigger.fire_due(settings, redis, now=1031.0)
    assert [p for p, _ in fired] == [7] and fired[0][1].enqueued
    assert trigger.fire_due(settings, redis, now=1031.0) == []  # a second ticker finds it moved on
    assert redis.zscore(trigger.SCHEDULE, "7") == 1061.0
    assert [(e["actor"], e["message"]) for e in audit.events(redis, 7, 10, "trigger")] == [("schedule", "schedule")]


def test_rescheduling_keeps_an_unchanged_due_time_and_drops_a_removed_schedule(redis):
    first = trigger.reschedule(redis, 3, 600, now=1000.0)
    assert trigger.reschedule(redis, 3, 600, now=5000.0) == first == 1600.0
    assert trigger.reschedule(redis, 3, 60, now=5000.0) == 5060.0
    assert trigger.reschedule(redis, 3, 0) is None and redis.zscore(trigger.SCHEDULE, "3") is None
    assert trigger.fire_due(Settings.from_env({}), redis, now=time.time() + 10**6) == []


def test_extra_params_schedule_a_project_and_the_settings_api_overrides_it(client):
    from tests.conftest import LABEL_CONFIG

    client.post("/setup", json={"project": "4.1700000000", "schema": LABEL_CONFIG, "extra_params": {"retrain_every": "0 3 * * *"}})
    redis = client.application.extensions["backend"].redis
    due = redis.zscore(trigger.SCHEDULE, "4")
    assert due is not None and time.gmtime(due).tm_hour == 3 and time.gmtime(due).tm_min == 0
    client.put("/projects/4/settings", json={"retrain_every": 60})
    assert redis.zscore(trigger.SCHEDULE, "4") == pytest.approx(time.time() + 60, abs=5)
    client.put("/projects/4/settings", json={"retrain_every": 0})
    assert redis.zscore(trigger.SCHEDULE, "4") is None
