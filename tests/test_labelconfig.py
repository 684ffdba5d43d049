import pytest

from backend.labelconfig import LabelConfigError, parse_label_config

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


def test_reads_every_choices_control_over_text_and_hypertext():
    config = parse_label_config(MULTI)
    assert [c.from_name for c in config.controls] == ["sentiment", "topics"]
    sentiment, topics = config.controls
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
    sentiment, topics = config.controls
    result = [
        {"from_name": "topics", "value": {"choices": ["Sports", "tech", "Sports"]}},
        {"from_name": "sentiment", "value": {"choices": ["Negative"]}},
    ]
    labels = parse_annotation({"id": 1, "result": result}, 1, {}).labels
    assert labels["sentiment"] == ["Negative"] and sentiment.problem(labels["sentiment"]) is None
    assert labels["topics"] == ["Sports", "tech"] and topics.problem(labels["topics"]) is None
    assert parse_annotation({"id": 1, "result": []}, 1, {}).labels == {}
    assert sentiment.problem(["Bogus"]) == "label not in config"
    assert sentiment.problem(["Positive", "Negative"]) == "several choices for a single-choice control"
