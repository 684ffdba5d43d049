"""TextClassifier's shortcuts read tasks exactly as the label config and the store do."""

from types import SimpleNamespace

from backend.api import remember_unlabeled
from backend.labelconfig import parse_label_config
from backend.model import _texts
from backend.store import texts_of
from tests.conftest import LABEL_CONFIG

TWO_FIELDS = """<View><Text name="text" value="$text"/><HyperText name="page" value="$page"/>
<Choices name="sentiment" toName="text"><Choice value="positive"/><Choice value="negative"/></Choices>
<Choices name="topic" toName="page"><Choice value="a"/><Choice value="b"/></Choices></View>"""
ODD_DATA = [
    {"text": "plain"}, {"text": ""}, {"text": "   \n\t"}, {"text": 42}, {"text": 4.5}, {"text": True}, {"text": None},
    {"text": ["list"]}, {"text": {"nested": 1}}, {}, {"other": "wrong key"}, {"text": "x" * 50}, {"text": "  padded  "},
    {"text": "😀 \x00 nul"}, {"text": "a", "page": "<b>bold</b> &amp; more"}, {"page": "<p></p>"},
]


def test_texts_are_text_of_for_each_task():
    for config in (parse_label_config(LABEL_CONFIG), parse_label_config(TWO_FIELDS)):
        for control in config.controls:
            assert _texts(control, ODD_DATA, 20) == [control.text_of(data, 20) for data in ODD_DATA]


def test_remembered_tasks_are_the_stores_texts_of_each_unlabeled_task():
    tasks = [{"id": i, "data": data} for i, data in enumerate(ODD_DATA)] + [
        {"id": 100, "data": "not a dict"}, {"id": 101}, {"data": {"text": "no id"}}, {"id": "102", "data": {"text": "string id"}},
        {"id": 103, "data": {"text": "done"}, "annotations": [{"id": 1}]}, {"id": 104, "data": {"text": "done"}, "is_labeled": True},
        {"id": 105, "data": {"page": "b", "text": "a", "more": 1}},
    ]
    for config in (parse_label_config(LABEL_CONFIG), parse_label_config(TWO_FIELDS), SimpleNamespace(data_keys=None)):
        submitted = []
        runtime = SimpleNamespace(settings=SimpleNamespace(max_text_chars=20), store=SimpleNamespace(remember_tasks="remember"),
                                  writer=SimpleNamespace(submit=lambda *call: submitted.append(call)))
        remember_unlabeled(runtime, 7, config, tasks)
        expected = {}
        for task in tasks:
            if isinstance(task.get("id"), int) and not task.get("annotations") and not task.get("is_labeled"):
                if found := texts_of(task, config.data_keys, 20):
                    expected[task["id"]] = found
        assert submitted == [("remember", 7, expected)]
        assert [list(data.items()) for data in submitted[0][2].values()] == [list(data.items()) for data in expected.values()]
