import html
import re

import pytest

from backend.consensus import SUBMITTED
from backend.labelconfig import LabelConfigError, LabelsControl, parse_label_config
from tests.conftest import LABEL_CONFIG

MULTI = """<View>
  <Text name="title" value="$title"/>
  <HyperText name="body" value="$html"/>
  <Choices name="sentiment" toName="title" choice="single-radio">
    <Choice value="Positive"/><Choice value="Negative"/>
  </Choices>
  <Choices name="topics" toName="body" choice="multiple">
    <Choice value="Sports"/><Choice value="Politics"/><Choice value="Tech" alias="tech"/>
  </Choices>
  <Image name="img" value="$image"/>
  <Choices name="image_kind" toName="img"><Choice value="Photo"/></Choices>
  <Labels name="ner" toName="title"><Label value="PER"/></Labels>
</View>"""


def test_reads_every_choices_control_over_text_and_hypertext_and_labels_over_text():
    config = parse_label_config(MULTI)
    assert [c.from_name for c in config.controls] == ["sentiment", "topics", "ner"]
    sentiment, topics, ner = config.controls
    assert isinstance(ner, LabelsControl) and ner.to_name == "title" and ner.labels == ("PER",) and ner.key == "title"
    assert config.span_controls == {"ner"} and set(config.classes) == {"sentiment", "topics"}  # the cold-start rule's classes
    assert sentiment.to_name == "title" and sentiment.labels == ("Positive", "Negative") and not sentiment.multiple
    assert topics.to_name == "body" and topics.multiple
    assert topics.labels == ("Sports", "Politics", "tech")  # LS writes the alias into results
    assert config.data_keys == ("html", "title")


def test_hypertext_is_stripped_of_markup_and_missing_text_is_none():
    topics = parse_label_config(MULTI).control("topics")
    assert topics.text_of({"html": "<p>Goal &amp; win</p>"}, 100).split() == ["Goal", "&", "win"]
    assert topics.text_of({"html": "   "}, 100) is None
    assert topics.text_of({}, 100) is None
    assert topics.text_of({"html": ["not", "text"]}, 100) is None
    assert topics.text_of({"html": "x" * 50}, 10) == "x" * 10


def test_config_without_predictable_controls_is_empty_not_an_error():
    config = parse_label_config('<View><Image name="i" value="$img"/><Choices name="c" toName="i"><Choice value="a"/></Choices></View>')
    assert config.controls == ()


@pytest.mark.parametrize("text", ["", "   ", "<View><Choices", "not xml at all <<<"])
def test_broken_configs_raise_a_config_error(text):
    with pytest.raises(LabelConfigError):
        parse_label_config(text)


def test_annotation_choices_are_validated_against_the_config():
    from backend.payload import parse_annotation

    config = parse_label_config(MULTI)
    sentiment, topics, _ = config.controls
    result = [
        {"from_name": "topics", "value": {"choices": ["Sports", "tech", "Sports"]}},
        {"from_name": "sentiment", "value": {"choices": ["Negative"]}},
    ]
    labels = parse_annotation({"id": 1, "result": result}, 1, {}).labels
    assert labels["sentiment"] == ["Negative"] and sentiment.problem(labels["sentiment"]) is None
    assert labels["topics"] == ["Sports", "tech"] and topics.problem(labels["topics"]) is None
    assert parse_annotation({"id": 1, "result": []}, 1, {}).labels == {SUBMITTED: []}  # submitted with no region
    assert parse_annotation({"id": 1, "result": result, "was_cancelled": True}, 1, {}).labels == {}  # a skip
    assert sentiment.problem(["Bogus"]) == "label not in config"
    assert sentiment.problem(["Positive", "Negative"]) == "several choices for a single-choice control"


TWO_FIELDS = """<View><Text name="text" value="$text"/><HyperText name="page" value="$page"/>
<Choices name="sentiment" toName="text"><Choice value="positive"/><Choice value="negative"/></Choices>
<Choices name="topic" toName="page"><Choice value="a"/><Choice value="b"/></Choices></View>"""
ODD_DATA = [
    {"text": "plain"},
    {"text": ""},
    {"text": "   \n\t"},
    {"text": 42},
    {"text": 4.5},
    {"text": True},
    {"text": None},
    {"text": ["list"]},
    {"text": {"nested": 1}},
    {},
    {"other": "wrong key"},
    {"text": "x" * 50},
    {"text": "  padded  "},
    {"text": "😀 \x00 nul"},
    {"text": "a", "page": "<b>bold</b> &amp; more"},
    {"page": "<p></p>"},
]


def general_text_of(control, data, limit):
    """Every input's text (numbers as text, HyperText without tags), non-empty ones joined by newlines."""
    parts = []
    for key, is_html in control.inputs:
        value = data.get(key)
        value = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        if isinstance(value, str):
            value = html.unescape(re.sub(r"<[^>]*>", " ", value)) if is_html else value
            if value.strip():
                parts.append(value)
    return "\n".join(parts)[:limit] if parts else None


def test_texts_are_text_of_for_each_task():
    for config in (parse_label_config(LABEL_CONFIG), parse_label_config(TWO_FIELDS)):
        for control in config.controls:
            assert [control.text_of(data, 20) for data in ODD_DATA] == [general_text_of(control, data, 20) for data in ODD_DATA]


def test_labels_over_hypertext_or_several_objects_are_not_predicted(caplog):
    config = parse_label_config(
        """<View><HyperText name="body" value="$html"/><Text name="t" value="$t"/><Text name="u" value="$u"/>
        <Labels name="html_ner" toName="body"><Label value="PER"/></Labels>
        <Labels name="two" toName="t,u"><Label value="PER"/></Labels>
        <Labels name="ner" toName="u"><Label value="PER"/><Label value="ORG" alias="org"/></Labels></View>"""
    )
    assert [c.from_name for c in config.controls] == ["ner"]
    assert config.controls[0].labels == ("PER", "org")
    assert "over HyperText is not predicted" in caplog.text


def test_a_labels_control_reads_its_text_whole_or_cut_and_counts_spans_by_label():
    ner = LabelsControl("ner", "text", ("PER",), "text")
    assert ner.text_of({"text": "Ann went"}, 100) == "Ann went"
    assert ner.text_of({"text": "Ann went"}, 3) == "Ann"
    assert ner.text_of({"text": " \n"}, 100) is None and ner.text_of({"text": 5}, 100) is None
    assert ner.label_of("0,3,PER") == "PER" and ner.label_of("nonsense") is None
