import json

import pytest

from backend.payload import InvalidPayload, parse_json, parse_predict, parse_setup, parse_webhook, project_id


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"{bad",
        b'{"a": 1',
        b"\xff\xfe\xfa{",
        b'{"a": NaN}',
        b"[" * 100_000 + b"]" * 100_000,
        '{"a": 1}'.encode("utf-16"),
        b'{"x": Infinity}',
    ],
)
def test_bad_json_is_a_400(raw):
    with pytest.raises(InvalidPayload) as err:
        parse_json(raw)
    assert err.value.status == 400


def test_utf8_with_bom_and_lone_surrogates_are_accepted():
    assert parse_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
    assert parse_json(b'{"t": "\\ud800"}') == {"t": "\ud800"}


@pytest.mark.parametrize("value,expected", [("1.1795336872", 1), (7, 7), ({"id": 3}, 3), ("12", 12), (5.0, 5)])
def test_project_ids(value, expected):
    assert project_id(value) == expected


@pytest.mark.parametrize("value", [None, "1; drop", -1, 0, 1e309, float("nan"), True, "abc", {"id": None}, [], 2.5])
def test_bad_project_ids(value):
    with pytest.raises(InvalidPayload):
        project_id(value)


def test_setup_accepts_extra_params_as_object_or_json_string():
    base = {"project": "3.17", "schema": "<View/>", "hostname": "http://ls", "access_token": "t"}
    assert parse_setup({**base, "extra_params": {"a": 1}}).extra_params == {"a": 1}
    assert parse_setup({**base, "extra_params": json.dumps({"a": 1})}).extra_params == {"a": 1}
    assert parse_setup({**base, "extra_params": None}).extra_params == {}
    assert parse_setup({**base, "extra_params": ""}).extra_params == {}
    for bad in ("[1]", "{oops", 5):
        with pytest.raises(InvalidPayload):
            parse_setup({**base, "extra_params": bad})


@pytest.mark.parametrize(
    "body", [[], "str", 42, {"tasks": {}}, {"tasks": [], "project": "1"}, {"tasks": [], "label_config": 5, "project": 1}]
)
def test_predict_shapes(body):
    with pytest.raises(InvalidPayload):
        parse_predict(body, max_tasks=10)


def test_predict_caps_the_batch_and_tolerates_odd_tasks():
    with pytest.raises(InvalidPayload) as err:
        parse_predict({"tasks": [{}] * 11, "label_config": "<View/>", "project": 1}, max_tasks=10)
    assert err.value.status == 413
    req = parse_predict({"tasks": [{"id": 1}, "junk", None], "label_config": "<View/>", "project": 1}, max_tasks=10)
    assert req.tasks == [{"id": 1}, {}, {}]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"action": 123},
        {"action": ""},
        {"action": "ANNOTATION_CREATED", "project": "1; drop"},
        {"action": "ANNOTATION_CREATED", "project": [1]},
        {"action": "ANNOTATIONS_DELETED", "project": 1, "annotations": [{"id": "x"}]},
        {"action": "ANNOTATION_CREATED", "project": 1, "annotation": ["x"]},
    ],
)
def test_bad_webhooks(body):
    with pytest.raises(InvalidPayload):
        parse_webhook(body)


def test_webhook_shapes_as_ls_sends_them():
    deleted = parse_webhook({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 10}, {"id": 11}], "project": {"id": 2}})
    assert deleted.deleted_ids == [10, 11] and deleted.project == 2
    bulk = parse_webhook(
        {
            "action": "ANNOTATIONS_CREATED",
            "annotation": [{"id": 1}, {"id": 2}],
            "task": [{"id": 5}, {"id": 6}],
            "project": {"id": 1, "label_config": "<View/>"},
        }
    )
    assert len(bulk.annotations) == 2 and len(bulk.tasks) == 2 and bulk.label_config == "<View/>"
    start = parse_webhook({"action": "START_TRAINING", "project": {"id": 4}})
    assert start.project == 4 and not start.annotations
    assert parse_webhook({"action": "ANNOTATION_CREATED"}).project is None


@pytest.mark.parametrize(
    "value,expected",
    [
        ("1.1795336872", 1795336872),
        ("1", None),
        ("1.", None),
        (7, None),
        ({"id": 3}, None),
        ({"id": 3, "created_at": "2026-11-30T10:00:00.999000Z"}, 1796032800),
        ({"id": 3, "created_at": "soon"}, None),
    ],
)
def test_project_created_is_the_stamp_of_either_form(value, expected):
    from backend.payload import project_created

    assert project_created(value) == expected


def test_annotators_are_opaque_strings_whatever_type_their_id_arrives_as():
    from backend.payload import parse_annotation

    def author(value):
        return parse_annotation({"id": 1, "completed_by": value}, 2, {}).author

    assert author(5) == author("5") == "5"
    assert author({"id": 7, "email": "a@b.c"}) == "7"  # only the id is kept, never a name or an email
    assert author(None) is None and author(True) is None and author("") is None and author([1]) is None


@pytest.mark.parametrize(
    "created,updated,task_created,counts",
    [
        ("2026-01-02T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", True),  # starred by a reviewer
        ("2026-01-01T00:00:01Z", "2026-01-01T00:00:01Z", "2026-01-01T00:00:00Z", False),  # imported with its task
        ("2026-01-01T00:00:01Z", "2026-01-03T00:00:00Z", "2026-01-01T00:00:00Z", True),  # imported, then re-marked
        ("2026-01-01T00:00:01Z", "2026-01-01T00:00:01Z", None, True),  # no task time: LS's mark stands
    ],
)
def test_ground_truth_counts_unless_imported_with_its_task_and_never_changed(created, updated, task_created, counts):
    from backend.payload import parse_annotation

    raw = {"id": 1, "ground_truth": True, "created_at": created, "updated_at": updated}
    assert parse_annotation(raw, 2, {}, task_created).ground_truth is counts
    assert parse_annotation({**raw, "ground_truth": False}, 2, {}, task_created).ground_truth is False
    assert parse_annotation({**raw, "ground_truth": "yes"}, 2, {}, task_created).ground_truth is False


def test_span_regions_are_stored_by_their_rule_and_never_refused():
    from backend.consensus import SUBMITTED
    from backend.payload import parse_annotation
    from backend.spans import MAX_SPANS

    text = "Ann met Bob"
    result = [
        {"from_name": "ner", "type": "labels", "value": {"start": 0, "end": 3, "labels": ["PER"]}},
        {"from_name": "ner", "type": "labels", "value": {"start": 0, "end": 3, "labels": ["PER"]}},  # duplicate
        {"from_name": "ner", "type": "labels", "value": {"start": 8.5, "end": 11, "labels": ["PER"]}},  # not an integer
        {"from_name": "ner", "type": "labels", "value": {"start": 9, "end": 4, "labels": ["PER"]}},  # start > end
        {"from_name": "ner", "type": "labels", "value": {"start": 500, "end": 900, "labels": ["PER"]}},  # past the text: training drops it
        {"from_name": "rel", "type": "relation", "from_id": "a", "to_id": "b"},  # relations are ignored
    ]
    labels = parse_annotation({"id": 1, "result": result}, 1, {"text": text}).labels
    assert labels == {SUBMITTED: [], "ner": ["0,3,PER", "500,900,PER"]}
    many = [{"from_name": "ner", "value": {"start": i, "end": i + 1, "labels": ["PER"]}} for i in range(10_000)]
    assert len(parse_annotation({"id": 2, "result": many}, 1, {}).labels["ner"]) == MAX_SPANS
