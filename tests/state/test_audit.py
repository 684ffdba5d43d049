"""The audit trail: append-only, newest first, filtered by kind, written by every kind of change."""

from __future__ import annotations

import fakeredis
import pytest

from backend.state import audit
from backend.web.auth import basic_header
from tests.web.test_api import train


def test_events_are_appended_newest_first_and_filtered_by_kind():
    redis = fakeredis.FakeRedis()
    audit.record(redis, 1, "settings", "admin API", "first", changes={"batch_size": 5})
    audit.record(redis, 1, "trigger", "webhook", "second")
    audit.record(redis, 2, "trigger", "webhook", "other project")
    events = audit.events(redis, 1)
    assert [e["message"] for e in events] == ["second", "first"]
    assert events[1]["details"] == {"changes": {"batch_size": 5}} and events[0]["at"] >= events[1]["at"]
    assert [e["message"] for e in audit.events(redis, 1, kind="settings")] == ["first"]
    with pytest.raises(ValueError):
        audit.record(redis, 1, "made-up", "x", "y")


def test_an_unreachable_redis_never_fails_the_action():
    redis = fakeredis.FakeRedis()
    redis.connected = False
    audit.record(redis, 1, "trigger", "webhook", "lost")  # logged, not raised


def test_training_settings_rollback_and_config_changes_are_recorded(client, tweets):
    first = train(client, tweets, n=120)
    client.put("/projects/1/settings", json={"batch_size": 7})
    second = train(client, tweets, n=240)
    assert client.post("/projects/1/rollback", json={"version": first}).status_code == 200
    changed = (
        client.application.extensions["backend"]
        .store.meta(1)["label_config"]
        .replace('<Choice value="neutral"/>', '<Choice value="neutral"/><Choice value="mixed"/>')
    )
    event = {"action": "PROJECT_UPDATED", "project": {"id": 1, "label_config": changed}}
    assert client.post("/webhook", json=event).status_code == 200
    events = client.get("/projects/1/audit").json["events"]
    kinds = [e["kind"] for e in events]
    assert {"trigger", "promotion", "settings", "rollback", "label_config"} <= set(kinds)
    rollback = next(e for e in events if e["kind"] == "rollback")
    assert rollback["details"]["version"] == first and rollback["details"]["previous"] == second
    promotion = next(e for e in events if e["kind"] == "promotion")
    assert promotion["actor"].startswith("train job") and promotion["details"]["examples"] > 0
    assert next(e for e in events if e["kind"] == "settings")["details"]["changes"] == {"batch_size": 7}
    assert next(e for e in events if e["kind"] == "label_config")["details"]["labels"]["sentiment"][-1] == "mixed"


def test_audit_queries_are_validated(client):
    assert client.get("/projects/1/audit?limit=0").status_code == 400
    assert client.get("/projects/1/audit?kind=nope").status_code == 400
    assert client.get("/projects/1/audit").json["events"] == []


def test_the_admin_user_is_named_as_the_actor(tmp_path):
    from backend.config import Settings
    from backend.runtime import Runtime
    from backend.web.app import create_app

    settings = Settings(model_dir=tmp_path / "m", basic_auth_user="ann", basic_auth_pass="s3cret")
    rt = Runtime.build(settings, redis=fakeredis.FakeRedis())
    client = create_app(settings, rt).test_client()
    headers = {"Authorization": basic_header("ann", "s3cret")}
    assert client.put("/projects/3/settings", json={"batch_size": 9}, headers=headers).status_code == 200
    assert client.get("/projects/3/audit", headers=headers).json["events"][0]["actor"] == "admin API (ann)"
    rt.stop()
