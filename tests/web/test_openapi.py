"""The OpenAPI document: it describes exactly the routes Flask serves, its request schemas admit
what LS sends and what the validators accept, and schemathesis, generating requests from it
against a live gunicorn, gets no 5xx from any operation.
"""

from __future__ import annotations

import re
from dataclasses import fields

import jsonschema
import pytest
import requests

from backend.config import Settings
from backend.payload import InvalidPayload
from backend.policy import Policy, validated
from backend.web.openapi import OPENAPI
from tests.conftest import LABEL_CONFIG, annotation_event, wait_for

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
UNDOCUMENTED = ("/static/", "/rq/", "/rq")  # Flask's static files and the mounted rq-dashboard


def documented() -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in OPENAPI["paths"].items() for method in item}


def served(app) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(UNDOCUMENTED) or rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes |= {(path, method) for method in rule.methods & METHODS}
    return routes


def test_every_route_is_documented_and_nothing_else(tmp_path):
    from backend.web.app import create_app

    app = create_app(Settings.from_env({}, model_dir=tmp_path, redis_url="redis://127.0.0.1:1/0"))  # with /rq mounted
    assert any(rule.rule.startswith("/rq") for rule in app.url_map.iter_rules())
    assert served(app) == documented()
    for path, item in OPENAPI["paths"].items():
        in_path = set(re.findall(r"{(\w+)}", path))
        for operation in item.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == in_path, (path, declared)
            assert "200" in operation["responses"] and "401" in operation["responses"]


def test_the_document_is_served(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.json == OPENAPI
    assert response.json["openapi"].startswith("3.")


def schema_of(name: str) -> dict:
    """A component schema, resolvable on its own (OpenAPI 3.0 schemas are JSON Schema draft 4 plus extras)."""
    return {"$ref": f"#/components/schemas/{name}", "components": OPENAPI["components"]}


@pytest.mark.parametrize(
    "name,body",
    [
        (
            "SetupRequest",
            {
                "project": "1.1700000000",
                "schema": LABEL_CONFIG,
                "hostname": "http://localhost:8080",
                "access_token": "t",
                "extra_params": '{"strategy": "entropy"}',
            },
        ),
        ("SetupRequest", {"project": 3, "label_config": LABEL_CONFIG, "extra_params": {"batch_size": 5}}),
        (
            "PredictRequest",
            {
                "tasks": [{"id": 1, "data": {"text": "x"}}],
                "project": "1.1700000000",
                "label_config": LABEL_CONFIG,
                "params": {"login": None, "password": None, "context": None},
            },
        ),
        ("WebhookEvent", annotation_event(1, 2, "text", "positive")),
        ("WebhookEvent", {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 10}], "project": {"id": 2}}),
        ("WebhookEvent", {"action": "TASKS_CREATED", "tasks": [{"id": 3, "data": {"text": "a"}}], "project": {"id": 1}}),
        ("WebhookEvent", {"action": "START_TRAINING", "project": {"id": 4}}),
        ("WebhookEvent", {"action": "ANNOTATION_CREATED"}),
        ("TrainRequest", {"project": 1, "label_config": LABEL_CONFIG}),
        ("RollbackRequest", {"version": "p1-v3"}),
        ("Settings", Policy().to_json()),
    ],
)
def test_what_label_studio_sends_fits_the_schemas(name, body):
    jsonschema.validate(body, schema_of(name))


def test_schema_rejects_what_the_validators_reject():
    for name, body in [
        ("SetupRequest", {}),
        ("PredictRequest", {"tasks": [], "project": 1}),
        ("WebhookEvent", {"action": ""}),
        ("WebhookEvent", {"action": "A", "project": "1; drop"}),
        ("RollbackRequest", {"version": ""}),
        ("Settings", {"nope": 1}),
        ("WebhookEvent", {"action": "A", "annotation": {"id": 1, "task": {"id": 2}}}),
    ]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, schema_of(name))


def test_settings_schema_is_the_validator():
    properties = OPENAPI["components"]["schemas"]["Settings"]["properties"]
    assert set(properties) == {f.name for f in fields(Policy)}
    for name, schema in properties.items():
        if "anyOf" in schema:  # retrain_every: seconds or a cron string
            for value in (schema["anyOf"][0]["minimum"], schema["anyOf"][0]["maximum"], "*/5 * * * *"):
                assert validated({name: value}, strict=True) == {name: value}
            for value in (-1, schema["anyOf"][0]["maximum"] + 1, "nope"):
                with pytest.raises(InvalidPayload):
                    validated({name: value}, strict=True)
            continue
        if schema.get("type") == "array":  # rules
            assert validated({name: [{"label": "positive", "keyword": "thanks"}]}, strict=True) == {
                name: [{"label": "positive", "keyword": "thanks"}]
            }
            for value in ("nope", [{"label": "positive"}], [{"label": "positive", "regex": "(a)\\1"}]):
                with pytest.raises(InvalidPayload):
                    validated({name: value}, strict=True)
            continue
        accepted = schema.get("enum") or ([True, False] if schema["type"] == "boolean" else [schema["minimum"], schema["maximum"]])
        rejected = (
            ["nope"]
            if "enum" in schema
            else ([1, "true"] if schema["type"] == "boolean" else [schema["minimum"] - 1, schema["maximum"] + 1])
        )
        for value in accepted:
            assert validated({name: value}, strict=True) == {name: value}
        for value in rejected:
            with pytest.raises(InvalidPayload):
                validated({name: value}, strict=True)


EXAMPLES = 25  # per operation and generation mode


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(services, tweets):
    """Every documented operation, with requests that fit the schema and requests that do not,
    against gunicorn serving a trained model for project 1: no 5xx."""
    import hypothesis
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    from backend.state.registry import Registry

    worker = services.worker()
    url, _ = services.web(workers=2)
    session = requests.Session()
    for i in range(60):
        event = annotation_event(i + 1, i + 1, tweets.texts[i], tweets.labels[i])
        assert session.post(f"{url}/webhook", json=event, timeout=10).status_code == 200
    session.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}, timeout=10)
    wait_for(lambda: Registry(services.model_dir).pointer(1), timeout=60)
    worker.stop()  # generated /setup bodies carry arbitrary hostnames: no job may run and call one

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    failures: list[str] = []
    counts: dict[str, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.path, op.method.upper()) for op in operations} == documented() - {("/openapi.json", "GET")}  # from_url read that one
    for operation in operations:
        has_inputs = bool(operation.path_parameters or operation.query or operation.body)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_inputs else (GenerationMode.POSITIVE,):
            label = f"{operation.label} ({mode.value})"
            counts[label] = 0

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case) -> None:
                counts[label] += 1
                case.call_and_validate(base_url=url, session=session, checks=[not_a_server_error])

            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - all operations run, all failures reported
                failures.append(f"{label}: {exc}")
    print(f"schemathesis: {sum(counts.values())} requests over {len(counts)} operation/mode pairs")
    assert all(counts.values()), counts
    assert not failures, "\n\n".join(failures)
