"""Property-based fuzzing of the Label Studio protocol routes (/predict, /setup, /webhook) with
Hypothesis, through Flask's test client on fakeredis with a trained model: arbitrary JSON values,
arbitrary bytes, and near-valid LS payloads with one to three fields replaced, removed or added.
Whatever arrives, the answer is below 500 and JSON (with an `error` string when it is a 4xx).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.config import Settings
from backend.runtime import Runtime
from backend.web.app import create_app
from tests.conftest import LABEL_CONFIG, annotation_event
from tests.web.test_api import MULTI, train

ROUTES = ("/predict", "/setup", "/webhook")
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
KEYS = (
    "project",
    "tasks",
    "task",
    "label_config",
    "schema",
    "action",
    "annotation",
    "annotations",
    "id",
    "data",
    "text",
    "result",
    "value",
    "choices",
    "from_name",
    "extra_params",
    "params",
    "context",
    "updated_at",
    "was_cancelled",
)
CONFIGS = (
    LABEL_CONFIG,
    MULTI,
    "",
    "<View/>",
    "<View><Choices",
    "<View><Text name='t' value='$text'/><Choices name='c' toName='t'/></View>",
    "<View><HyperText name='h' value='$html'/><Choices name='c' toName='h'><Choice value='a'/><Choice value='a'/></Choices></View>",
    "<View><Text name='t' value='$'/><Choices name='c' toName='nowhere'><Choice value='x'/></Choices></View>",
    '<!DOCTYPE v [<!ENTITY e SYSTEM "file:///etc/passwd">]><View><Text name="t" value="$text"/>'
    '<Choices name="c" toName="t"><Choice value="&e;"/></Choices></View>',
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-2, 2**63)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "1",
            "1.1700000000",
            "²",
            "-1",
            "0",
            "1; drop",
            "ANNOTATION_CREATED",
            "START_TRAINING",
            "\ud800",
            "http://127.0.0.1:1/",
            "2026-01-01T00:00:00Z",
            "9999-12-31T23:59:59-23:59",
        ]
    )
    | st.sampled_from(CONFIGS)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def valid_bodies() -> dict[str, list[Any]]:
    """Payloads as LS sends them, one route each."""
    events = [annotation_event(i, i, t, label) for i, t, label in ((1, "late again", "negative"), (2, "thanks!", "positive"))]
    return {
        "/predict": [
            {
                "tasks": [{"id": 1, "data": {"text": "great crew"}}, {"id": 2, "data": {"text": "lost my bag"}}],
                "project": "1.1700000000",
                "label_config": LABEL_CONFIG,
                "params": {"login": None, "password": None, "context": None},
            }
        ],
        "/setup": [
            {
                "project": "1.1700000000",
                "schema": LABEL_CONFIG,
                "access_token": "token",
                "model_version": "",
                "extra_params": '{"strategy": "entropy"}',
            }
        ],  # no hostname: train jobs must not call a real host
        "/webhook": [
            events[0],
            {
                "action": "ANNOTATIONS_CREATED",
                "annotation": [e["annotation"] for e in events],
                "task": [e["task"] for e in events],
                "project": events[0]["project"],
            },
            {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 1}], "project": {"id": 1}},
            {"action": "TASKS_CREATED", "tasks": [{"id": 9, "data": {"text": "new task"}}], "project": {"id": 1}},
            {"action": "PROJECT_UPDATED", "project": {"id": 1, "label_config": LABEL_CONFIG}},
            {"action": "START_TRAINING", "project": {"id": 1}},
        ],
    }


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place inside a JSON value (dict keys and list indexes), outermost first."""
    found = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            found += paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += paths(v, prefix + (i,))
    return found


@st.composite
def near_valid(draw: st.DrawFn) -> tuple[str, Any]:
    route = draw(st.sampled_from(ROUTES))
    body = copy.deepcopy(draw(st.sampled_from(valid_bodies()[route])))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(paths(body)[1:] or [()]))
        if not where:
            return route, draw(json_values)
        parent = body
        for step in where[:-1]:
            parent = parent[step]
        last = where[-1]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete":
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS))] = draw(json_values)
        else:
            parent[last] = draw(json_values)
    return route, body


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tweets):
    """A test client whose project 1 serves a trained model, so /predict runs the model on what it gets."""
    runtime = Runtime.build(
        Settings.from_env(
            {},
            model_dir=tmp_path_factory.mktemp("fuzz") / "models",
            retrain_min_interval=0.0,
            swap_poll_interval=0.05,
            log_level="CRITICAL",
        ),
        redis=fakeredis.FakeRedis(),
    )
    client = create_app(runtime=runtime).test_client()
    train(client, tweets)
    yield client
    runtime.stop()


def answered(response: Any) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    assert response.is_json, response.get_data(as_text=True)[:200]
    if response.status_code >= 400:
        assert isinstance(response.json.get("error"), str) and response.json["error"]


@FUZZ
@given(route=st.sampled_from(ROUTES), body=json_values)
def test_any_json_value(trained, route, body):
    answered(trained.post(route, data=json.dumps(body), content_type="application/json"))


@FUZZ
@given(
    route=st.sampled_from(ROUTES),
    raw=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    content_type=st.sampled_from(
        ["application/json", "application/json; charset=latin-1", "text/plain", "application/x-www-form-urlencoded"]
    ),
)
def test_any_bytes(trained, route, raw, content_type):
    answered(trained.post(route, data=raw, content_type=content_type))


@settings(FUZZ, max_examples=400)
@given(case=near_valid())
def test_near_valid_payloads(trained, case):
    route, body = case
    answered(trained.post(route, data=json.dumps(body), content_type="application/json"))


def test_the_valid_templates_are_accepted(trained):
    """The fuzzer starts from payloads the routes accept, so its mutations are one step from valid."""
    for route, bodies in valid_bodies().items():
        for body in bodies:
            response = trained.post(route, json=body)
            assert response.status_code == 200, (route, body.get("action"), response.json)
