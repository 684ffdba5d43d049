"""The LS protocol through Flask's test client: shapes, the embedded loop, and every bad input."""

import json
from datetime import UTC
from types import SimpleNamespace

import pytest

from backend.config import Settings
from backend.labelconfig import parse_label_config
from backend.runtime import Runtime
from backend.state.store import Store, texts_of
from backend.web.api import remember_unlabeled
from backend.web.app import create_app
from backend.web.auth import basic_header
from lab.client import ner_config, span_event, span_regions
from lab.datasets import load_wnut
from tests.conftest import LABEL_CONFIG, annotation_event, labeled, wait_for
from tests.test_labelconfig import ODD_DATA, TWO_FIELDS

MULTI = """<View><Text name="text" value="$text"/>
<Choices name="sentiment" toName="text"><Choice value="positive"/><Choice value="negative"/><Choice value="neutral"/></Choices>
<Choices name="flags" toName="text" choice="multiple"><Choice value="airline"/><Choice value="other"/></Choices>
</View>"""


def predict(client, tasks, config=LABEL_CONFIG, project="1.1700000000"):
    return client.post("/predict", json={"tasks": tasks, "project": project, "label_config": config, "params": {"context": None}})


def train(client, tweets, n=120, project=1, config=LABEL_CONFIG, extra=None):
    """Send `n` annotation webhooks and wait until the project serves a trained version."""
    events = (annotation_event(i + 1, i + 1, tweets.texts[i], tweets.labels[i], project=project, config=config) for i in range(n))
    return trained(client, events, project, config, extra, timeout=60)


def trained(client, events, project: int, config: str, extra=None, timeout: float = 60) -> str:
    """Send the annotation webhooks `events` (each passed to `extra` with its number first), ask for
    training and wait until the project serves a trained version."""
    for i, event in enumerate(events):
        if extra:
            extra(event, i)
        assert client.post("/webhook", json=event).status_code == 200
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": project}})
    return wait_for(
        lambda: (
            (v := client.post("/setup", json={"project": f"{project}.1700000000", "schema": config}).json["model_version"]) != "untrained"
            and v
        ),
        timeout=timeout,
    )


def test_health_and_root(client):
    for path in ("/", "/health"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.json == {"status": "UP", "model_class": "TextClassifier", "storage": "memory"}


def test_setup_returns_untrained_then_the_current_version(client, tweets, runtime):
    body = {
        "project": "1.1700000000",
        "schema": LABEL_CONFIG,
        "hostname": "http://127.0.0.1:8080",
        "access_token": "tok",
        "extra_params": json.dumps({"k": 1}),
    }
    assert client.post("/setup", json=body).json == {"model_version": "untrained"}
    meta = runtime.store.meta(1)
    assert meta["hostname"] == "http://127.0.0.1:8080" and meta["access_token"] == "tok"
    assert client.post("/setup", json={**body, "extra_params": {"k": 2}}).status_code == 200
    version = train(client, tweets)
    assert client.post("/setup", json=body).json == {"model_version": version}


def test_cold_start_invents_nothing(client):
    response = predict(client, [{"id": 1, "data": {"text": "great"}}, {"id": 2, "data": {}}])
    assert response.status_code == 200
    assert response.json["results"] == [{"result": [], "score": 1.0, "model_version": "untrained"}, []]  # not ranked yet: last


def test_trained_predictions_are_aligned_valid_and_versioned(client, tweets):
    version = train(client, tweets)
    tasks = [
        {"id": 10, "data": {"text": "I love this airline, great crew"}},
        {"id": 11, "data": {"text": ""}},
        {"id": 12, "data": {"other": "x"}},
        {"id": 13},
        {"id": 14, "data": {"text": "delayed again, lost my bag"}},
    ]
    results = predict(client, tasks).json["results"]
    assert len(results) == len(tasks)
    assert results[1] == [] and results[2] == [] and results[3] == []
    for entry in (results[0], results[4]):
        assert entry["model_version"] == version
        assert 0.0 <= entry["score"] <= 1.0
        (region,) = entry["result"]
        assert region["from_name"] == "sentiment" and region["to_name"] == "text" and region["type"] == "choices"
        assert len(region["value"]["choices"]) == 1 and region["value"]["choices"][0] in {"positive", "negative", "neutral"}
        assert 0.0 <= region["score"] <= 1.0


def test_config_edits_are_honoured_and_labels_never_leave_the_config(client, tweets):
    train(client, tweets)
    narrowed = LABEL_CONFIG.replace('<Choice value="neutral"/>', "")
    texts = [{"id": i, "data": {"text": t}} for i, t in enumerate(tweets.texts[500:560])]
    for entry in predict(client, texts, config=narrowed).json["results"]:
        assert entry["result"][0]["value"]["choices"][0] in {"positive", "negative"}
    renamed = LABEL_CONFIG.replace('name="sentiment"', 'name="mood"')
    assert predict(client, texts[:3], config=renamed).json["results"] == [[], [], []]


def test_several_controls_and_multi_label(client, tweets):
    def add_flags(event, i):
        flags = ["airline"] if "@" in tweets.texts[i] else ["other"]
        if i % 7 == 0:
            flags.append("other")
        event["annotation"]["result"].append(
            {"from_name": "flags", "to_name": "text", "type": "choices", "value": {"choices": sorted(set(flags))}}
        )

    version = train(client, tweets, n=200, project=2, config=MULTI, extra=add_flags)
    results = predict(client, [{"id": 1, "data": {"text": "@united thanks for the flight"}}], config=MULTI, project="2.1700000000").json[
        "results"
    ]
    regions = {r["from_name"]: r for r in results[0]["result"]}
    assert results[0]["model_version"] == version
    assert set(regions) == {"sentiment", "flags"}
    flags = regions["flags"]["value"]["choices"]
    assert flags and len(flags) == len(set(flags)) and set(flags) <= {"airline", "other"}


def test_config_with_nothing_to_predict_gives_empty_slots(client):
    config = '<View><Image name="i" value="$img"/><Choices name="c" toName="i"><Choice value="a"/></Choices></View>'
    assert predict(client, [{"id": 1, "data": {"img": "x"}}], config=config).json == {"results": [[]]}


def test_versions_lists_promoted_models(client, tweets):
    version = train(client, tweets)
    assert version in client.get("/versions").json["versions"]


def test_webhook_acknowledges_every_action(client):
    for action in ("PROJECT_CREATED", "LABEL_LINK_CREATED", "SOMETHING_NEW", "TASKS_DELETED"):
        response = client.post("/webhook", json={"action": action, "project": {"id": 1}, "tasks": []})
        assert response.status_code == 200
    start = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert start.status_code == 200 and isinstance(start.json, dict) and "job" not in start.json


def test_skips_and_unknown_labels_are_not_trained_on(client, runtime, tweets):
    client.post("/webhook", json=annotation_event(1, 1, "skip me", None, cancelled=True))
    client.post("/webhook", json=annotation_event(2, 2, "bogus", "Bogus"))
    assert labeled(runtime.store, 1)[0].labels == {"sentiment": ["Bogus"]}
    from backend.labelconfig import parse_label_config
    from backend.training import build_snapshot

    snapshot = build_snapshot(1, labeled(runtime.store, 1), parse_label_config(LABEL_CONFIG), 0, 1000)
    assert snapshot.size == 0 and snapshot.set_aside == {"label not in config": 1}


def test_metrics_report_the_served_model_per_project(client, tweets):
    train(client, tweets)
    predict(client, [{"id": 1, "data": {"text": "fine"}}])
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    samples = {s.labels["project"]: s.value for s in families["lsb_model_pointer_seq"].samples}
    assert samples.get("1", 0) >= 1


def test_metrics_are_prometheus_text(client):
    client.get("/health")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    from prometheus_client.parser import text_string_to_metric_families

    names = {f.name for f in text_string_to_metric_families(response.get_data(as_text=True))}
    assert "lsb_http_requests" in names and "lsb_http_request_seconds" in names


BAD_BODIES = [
    ("/predict", b"{bad", "application/json", 400),
    ("/predict", b'{"tasks": [], "project": "1"', "application/json", 400),
    ("/predict", b"\xff\xfe\xfa{", "application/json", 400),
    ("/predict", b"[]", "application/json", 400),
    ("/predict", b'"str"', "application/json", 400),
    ("/predict", b"42", "application/json", 400),
    ("/predict", b"null", "application/json", 400),
    ("/predict", b"", "application/json", 400),
    ("/predict", b'{"tasks": [{"data": {"text": "x"}}], "project": 1, "label_config": "<View><Choices"}', "application/json", 400),
    ("/predict", b'{"tasks": [], "project": 1, "label_config": "<View/>"}', "text/plain", 415),
    ("/predict", b'{"tasks": [], "project": 1, "label_config": "<View/>"}', None, 415),
    ("/setup", b'{"project": null}', "application/json", 400),
    ("/setup", b'{"project": 1, "schema": "<View><Choices"}', "application/json", 400),
    ("/setup", b'{"project": 1, "extra_params": "[1,2]"}', "application/json", 400),
    ("/webhook", b"{}", "application/json", 400),
    ("/webhook", b'{"action": 123}', "application/json", 400),
    ("/webhook", b'{"action": "ANNOTATION_CREATED", "project": null}', "application/json", 400),
    ("/webhook", b'{"action": "ANNOTATION_CREATED", "project": {"id": "1; drop"}}', "application/json", 400),
    ("/webhook", b'{"action": "ANNOTATION_CREATED", "project": {"id": 1e309}}', "application/json", 400),
    ("/webhook", b'{"action": "ANNOTATION_CREATED", "project": {"id": NaN}}', "application/json", 400),
    ("/webhook", b"[" * 100_000 + b"]" * 100_000, "application/json", 400),
    ("/webhook", b'{"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"id": "x", "task": 1}}', "application/json", 400),
]


@pytest.mark.parametrize("path,body,content_type,status", BAD_BODIES)
def test_bad_input_gets_a_clear_4xx_json_error(client, path, body, content_type, status):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(path, data=body, headers=headers)
    assert response.status_code == status
    assert response.is_json and isinstance(response.json.get("error"), str)
    assert "Traceback" not in response.get_data(as_text=True)


def test_oversized_body_is_413(tmp_path):
    settings = Settings.from_env({}, model_dir=tmp_path, max_request_bytes=1000)
    client = create_app(settings).test_client()
    response = client.post(
        "/predict", data=b'{"tasks": [' + b'{"data": {"text": "x"}},' * 200 + b"{}]}", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413 and response.is_json


def test_huge_and_odd_texts_never_break_a_batch(client, tweets):
    train(client, tweets)
    tasks = [
        {"id": 1, "data": {"text": "x " * 500_000}},
        {"id": 2, "data": {"text": "\ud800 lone surrogate"}},
        {"id": 3, "data": {"text": "😀🙃🚀"}},
        {"id": 4, "data": {"text": 12345}},
        {"id": 5, "data": {"text": None}},
        {"id": 6, "data": "not-a-dict"},
    ]
    response = predict(client, tasks)
    assert response.status_code == 200
    results = response.json["results"]
    assert len(results) == 6 and all(results[i] for i in range(4)) and results[4] == [] and results[5] == []


def test_unknown_routes_and_methods_are_json(client):
    assert client.get("/nope").status_code == 404 and client.get("/nope").is_json
    assert client.get("/predict").status_code == 405 and client.get("/predict").is_json


def test_redis_unreachable_gives_503_fast_and_predict_keeps_serving(tmp_path, tweets):
    import time

    from backend.state.connection import redis_for

    port = __import__("tests.conftest", fromlist=["free_port"]).free_port()
    settings = Settings.from_env({}, model_dir=tmp_path, redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout=0.2)
    client = create_app(runtime=Runtime.build(settings, redis=redis_for(settings))).test_client()
    started = time.perf_counter()
    response = client.post("/webhook", json=annotation_event(1, 1, "hello", "positive"))
    assert response.status_code == 503 and response.is_json
    assert time.perf_counter() - started < 1.0
    assert predict(client, [{"id": 1, "data": {"text": "hi"}}]).status_code == 200
    assert client.post("/setup", json={"project": 1, "schema": LABEL_CONFIG}).status_code == 200


class TestBasicAuth:
    @pytest.fixture
    def client(self, tmp_path):
        settings = Settings.from_env({}, model_dir=tmp_path, basic_auth_user="ls", basic_auth_pass="sécret")
        return create_app(settings).test_client()

    def test_every_route_needs_credentials(self, client):
        for method, path in (
            ("get", "/health"),
            ("get", "/"),
            ("post", "/setup"),
            ("post", "/predict"),
            ("post", "/webhook"),
            ("get", "/versions"),
            ("get", "/metrics"),
            ("get", "/projects/1/models"),
        ):
            response = getattr(client, method)(path, json={})
            assert response.status_code == 401, path
            assert response.headers["WWW-Authenticate"] == 'Basic realm="Login required"'

    def test_wrong_and_odd_credentials_are_401_not_500(self, client):
        for header in (basic_header("ls", "wrong"), "Basic é", "Basic " + "A" * 10_000, "Basic !!!", "Token abc"):
            assert client.get("/health", headers={"Authorization": header}).status_code == 401

    def test_webhook_registered_with_an_authorization_header_is_accepted(self, client):
        headers = {"Authorization": basic_header("ls", "sécret")}
        event = annotation_event(1, 1, "great", "positive")
        assert client.post("/webhook", json=event, headers=headers).status_code == 200
        assert client.post("/webhook", json=event).status_code == 401
        assert client.get("/health", headers=headers).json["status"] == "UP"


def test_secrets_never_reach_the_logs(client, caplog, tweets):
    import logging

    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-token-4242"
    client.post("/setup", json={"project": 1, "schema": LABEL_CONFIG, "hostname": "http://127.0.0.1:9", "access_token": secret})
    event = annotation_event(1, 1, "text", "positive")
    event["project"]["task_data_password"] = secret
    client.post("/webhook", json=event)
    client.post(
        "/predict",
        json={
            "tasks": [{"id": 1, "data": {"text": "x"}}],
            "project": 1,
            "label_config": LABEL_CONFIG,
            "params": {"login": "u", "password": secret},
        },
    )
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    client.post("/setup", json={"project": 1, "access_token": secret, "extra_params": "{bad"})
    assert secret not in caplog.text


def test_remembered_tasks_are_the_stores_texts_of_each_unlabeled_task():
    tasks = [{"id": i, "data": data} for i, data in enumerate(ODD_DATA)] + [
        {"id": 100, "data": "not a dict"},
        {"id": 101},
        {"data": {"text": "no id"}},
        {"id": "102", "data": {"text": "string id"}},
        {"id": 103, "data": {"text": "done"}, "annotations": [{"id": 1}]},
        {"id": 104, "data": {"text": "done"}, "is_labeled": True},
        {"id": 105, "data": {"page": "b", "text": "a", "more": 1}},
    ]
    for config in (parse_label_config(LABEL_CONFIG), parse_label_config(TWO_FIELDS), SimpleNamespace(data_keys=None)):
        submitted = []
        runtime = SimpleNamespace(
            settings=SimpleNamespace(max_text_chars=20),
            store=SimpleNamespace(remember_tasks="remember"),
            writer=SimpleNamespace(submit=lambda *call: submitted.append(call)),
        )
        remember_unlabeled(runtime, 7, config, tasks)
        expected = {}
        for task in tasks:
            if isinstance(task.get("id"), int) and not task.get("annotations") and not task.get("is_labeled"):
                if found := texts_of(task, config.data_keys, 20):
                    expected[task["id"]] = found
        assert submitted == [("remember", 7, expected)]
        assert [list(data.items()) for data in submitted[0][2].values()] == [list(data.items()) for data in expected.values()]


def test_a_second_label_studio_with_the_same_project_id_gets_none_of_the_first_ones_state(client, tweets):
    from datetime import datetime

    first_created, second_created = 1700000000, 1801234567
    iso = datetime.fromtimestamp(second_created + 0.25, UTC).isoformat().replace("+00:00", "Z")  # as LS sends it
    client.post("/setup", json={"project": f"1.{first_created}", "schema": LABEL_CONFIG, "hostname": "http://ls-one:8080"})
    version = train(client, tweets)  # webhooks with a bare project id: the id's first project
    assert version != "untrained"

    other = client.post("/setup", json={"project": f"1.{second_created}", "schema": LABEL_CONFIG, "hostname": "http://ls-two:8080"})
    assert other.json["model_version"] == "untrained"
    body = {"tasks": [{"id": 1, "data": {"text": tweets.texts[0]}}], "project": f"1.{second_created}", "label_config": LABEL_CONFIG}
    assert client.post("/predict", json=body).json["results"][0]["model_version"] == "untrained"
    first = client.post("/predict", json={**body, "project": f"1.{first_created}"}).json["results"][0]
    assert first["model_version"] == version

    project = {"id": 1, "created_at": iso, "label_config": LABEL_CONFIG}
    for i in range(3):
        event = annotation_event(90_000 + i, 90_000 + i, tweets.texts[i], tweets.labels[i])
        event["project"] = project
        assert client.post("/webhook", json=event).status_code == 200
    assert client.get("/projects/1/labels").json["labeled_tasks"] == 120  # the first project's labels, untouched
    extra = client.get(f"/projects/{10**12 + 1}/labels").json
    assert extra["labeled_tasks"] == 3
    assert client.post("/setup", json={"project": f"1.{first_created}", "schema": LABEL_CONFIG}).json["model_version"] == version


def test_responses_orjson_cannot_encode_fall_back_to_the_standard_encoder(app):
    with app.app_context():
        assert app.json.response({"n": 2**70, "text": "é"}).get_json() == {"n": 2**70, "text": "é"}  # beyond 64 bits
        assert app.json.dumps({1: "a"}) == '{"1": "a"}'  # a non-string key
        assert app.json.response(results=[{"score": 0.5}]).get_data() == b'{"results":[{"score":0.5}]}'  # orjson's compact form


def wnut_project(client, n: int, project: int, config: str, extra=None) -> str:
    """Send `n` WNUT-16 span annotations (a tweet without entities as a submission with no region)
    and wait for a trained version."""
    data = load_wnut()
    client.post("/setup", json={"project": f"{project}.1700000000", "schema": config})
    client.put(f"/projects/{project}/settings", json={"retrain_threshold": 100_000})  # one version: START_TRAINING's, on every label
    events = (span_event(i + 1, i + 1, data.texts[i], data.spans[i], config=config, project=project) for i in range(n))
    return trained(client, events, project, config, extra, timeout=120)


def test_span_labels_train_a_version_that_predicts_valid_regions(client, runtime):
    labels = load_wnut().labels
    config = ner_config(labels)
    version = wnut_project(client, 600, 5, config)
    record = runtime.registry.record(5, version)
    assert record["families"] == {"ner": "crf-spans"} and "micro_f1 " in record["reason"] and "macro_f1" not in record["reason"]
    challenger = record["evaluation"]["challenger"]["ner"]
    assert challenger["micro_f1"] > 0 and set(challenger["per_label"]) <= set(labels)
    assert "person" in record["label_counts"]["ner"]
    texts = ["Justin Bieber is in New York tonight 👩\u200d👩\u200d👧 !", "nothing to see here", "I love the Empire State Building"]
    results = predict(
        client, [{"id": i + 1, "data": {"text": t}} for i, t in enumerate(texts)], config=config, project="5.1700000000"
    ).json["results"]
    found = [r for entry in results if entry for r in entry["result"]]
    assert found, results
    for entry, text in zip(results, texts):
        for region in entry["result"] if entry else []:
            value = region["value"]
            assert region["type"] == "labels" and value["text"] == text[value["start"] : value["end"]] and value["labels"][0] in labels
        assert not entry or entry["model_version"] == version


def test_choices_and_labels_in_one_config_are_served_in_one_prediction(client):
    data = load_wnut()
    config = ner_config(data.labels, choices=["entities", "none"])

    def add_choice(event, i):
        choice = "entities" if data.spans[i] else "none"
        event["annotation"]["result"].append(
            {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}
        )

    version = wnut_project(client, 400, 6, config, add_choice)
    texts = [data.texts[i] for i in range(400) if len(data.spans[i]) >= 2][:20]  # seen in training, with entities
    results = predict(client, [{"id": i + 1, "data": {"text": t}} for i, t in enumerate(texts)], config=config, project="6.1700000000")
    both = [
        e
        for e in results.json["results"]
        if e and {r["from_name"]: r["type"] for r in e["result"]} == {"sentiment": "choices", "ner": "labels"}
    ]
    assert both and all(e["model_version"] == version for e in both), results.json


def test_hostile_span_annotations_are_stored_by_rule_and_training_goes_on(client, runtime):
    labels = load_wnut().labels
    config = ner_config(labels)
    huge = "Justin Bieber " * 75_000  # about 1 MB
    regions = [
        {"from_name": "ner", "to_name": "text", "type": "labels", "value": {"start": 14 * i, "end": 14 * i + 13, "labels": ["person"]}}
        for i in range(10_000)
    ]
    event = span_event(9_001, 9_001, huge, [], config=config, project=8)
    event["annotation"]["result"] = regions
    assert client.post("/webhook", json=event).status_code == 200

    def hostile(event, i):
        bad = [
            {"start": 5, "end": 2, "labels": ["person"]},
            {"start": 0, "end": 10**9, "labels": ["person"]},
            {"start": "0", "end": 4, "labels": ["person"]},
            {"start": 0, "end": 3, "labels": ["not-a-type"]} if i == 3 else {"start": 1.5, "end": 3, "labels": ["person"]},
        ]
        event["annotation"]["result"] += [{"from_name": "ner", "to_name": "text", "type": "labels", "value": v} for v in bad]

    version = wnut_project(client, 300, 8, config, hostile)
    record = runtime.registry.record(8, version)
    assert record["set_aside"] == {"label not in config": 1} and record["examples"] == 300
    answer = predict(client, [{"id": 1, "data": {"text": huge}}, {"id": 2, "data": {"text": ""}}], config=config, project="8.1700000000")
    assert answer.status_code == 200
    regions = answer.json["results"][0]["result"]
    assert all(r["value"]["end"] <= runtime.settings.max_text_chars for r in regions) and answer.json["results"][1] == []


def test_several_labels_controls_are_trained_and_predicted_each_on_its_own(client, runtime):
    data = load_wnut()
    config = ner_config(data.labels).replace(
        '<Text name="text"', '<Labels name="people" toName="text"><Label value="person"/></Labels><Text name="text"'
    )

    def add_people(event, i):
        people = [(a, b, label) for a, b, label in data.spans[i] if label == "person"]
        event["annotation"]["result"] += span_regions(data.texts[i], people, from_name="people")

    version = wnut_project(client, 500, 9, config, add_people)
    assert runtime.registry.record(9, version)["families"] == {"ner": "crf-spans", "people": "crf-spans"}
    texts = [data.texts[i] for i in range(500) if any(label == "person" for _, _, label in data.spans[i])][:30]  # seen in training
    results = predict(client, [{"id": i + 1, "data": {"text": t}} for i, t in enumerate(texts)], config=config, project="9.1700000000")
    regions = [r for entry in results.json["results"] if entry for r in entry["result"]]
    assert {r["from_name"] for r in regions} == {"ner", "people"}, results.json
    assert all(r["value"]["labels"] == ["person"] for r in regions if r["from_name"] == "people")
    for entry in results.json["results"]:
        ids = [r["id"] for r in entry["result"]] if entry else []
        assert len(set(ids)) == len(ids)


def test_min_replicas_ack_answers_503_until_a_replica_holds_the_label(private_redis, tmp_path):
    """REDIS_MIN_REPLICAS_ACK=1: without a replica in sync the webhook answers 503 (the write stays
    on the master for LS's reconciliation to meet); with one it answers 200; with 0, as before."""
    import redis as redis_py

    master = private_redis()
    answers = {}
    for wanted in (0, 1):
        settings = Settings.from_env({}, model_dir=tmp_path / "models", redis_url=master.url, redis_min_replicas_ack=wanted)
        runtime = Runtime.build(settings)
        client = create_app(runtime=runtime).test_client()
        response = client.post("/webhook", json=annotation_event(10 + wanted, 10 + wanted, "late again", "negative"))
        answers[wanted] = response.status_code, response.json
        runtime.stop()
    assert answers[0][0] == 200
    assert answers[1][0] == 503 and "0 of 1 Redis replicas" in answers[1][1]["error"]
    assert Store(redis_py.Redis.from_url(master.url)).annotation_ids(1) == {10, 11}  # the unconfirmed label is kept

    replica = private_redis("--replicaof", "127.0.0.1", str(master.port))
    watcher = redis_py.Redis.from_url(master.url)
    wait_for(lambda: watcher.info("replication").get("slave0", {}).get("state") == "online", timeout=20)
    settings = Settings.from_env({}, model_dir=tmp_path / "models", redis_url=master.url, redis_min_replicas_ack=1, redis_timeout=2.0)
    runtime = Runtime.build(settings)
    client = create_app(runtime=runtime).test_client()
    response = client.post("/webhook", json=annotation_event(12, 12, "fine now", "positive"))
    assert response.status_code == 200, response.json
    assert client.post("/train", json={"project": 1}).status_code == 200  # the legacy route waits too
    runtime.stop()
    assert Store(redis_py.Redis.from_url(replica.url)).annotation_ids(1) == {10, 11, 12}
