"""Spans: tokens keep their offsets, the training rules of the module doc, BIO tags and scores."""

import pytest

from backend import spans
from backend.spans import Span, training_spans

LABELS = ("PER", "LOC")


def test_tokens_keep_code_point_offsets_through_emoji_marks_and_crlf():
    text = "@ann 👍🏽 in Café\u0301\r\nNew York 👩\u200d👩\u200d👧 #nyc it's https://x.co/a?b=1."
    found = [text[a:b] for a, b in spans.tokens(text)]
    assert found == ["@ann", "👍🏽", "in", "Café\u0301", "New", "York", "👩\u200d👩\u200d👧", "#nyc", "it's", "https://x.co/a?b=1."]
    assert all(not text[a:b].isspace() for a, b in spans.tokens(text))


def test_a_span_is_stored_as_a_string_and_read_back():
    assert Span(3, 9, "a,b").encode() == "3,9,a,b"
    assert spans.decode("3,9,a,b") == Span(3, 9, "a,b")
    assert spans.decode("x,9,PER") is None and spans.decode(7) is None and spans.decode("3,9") is None


@pytest.mark.parametrize(
    "value, expected",
    [
        ({"start": 0, "end": 3, "labels": ["PER", "LOC"]}, Span(0, 3, "PER")),  # several labels: the first
        ({"start": 0.0, "end": 3, "labels": ["PER"]}, None),  # not integers
        ({"start": "0", "end": 3, "labels": ["PER"]}, None),
        ({"start": True, "end": 3, "labels": ["PER"]}, None),
        ({"start": 5, "end": 3, "labels": ["PER"]}, None),  # start > end
        ({"start": -1, "end": 3, "labels": ["PER"]}, None),
        ({"start": 0, "end": 3, "labels": []}, None),
        ({"start": "/p[1]/text()[1]", "end": "/p[1]", "labels": ["PER"]}, None),  # HyperText XPath
        ("nonsense", None),
    ],
)
def test_regions_become_spans_only_with_integer_offsets(value, expected):
    assert spans.from_region(value) == expected


TEXT = "@ann went to New York ! ok"  # @ann 0-4, went 5-9, to 10-12, New 13-16, York 17-21


def test_training_rules_trim_widen_dedupe_and_keep_the_longest_of_overlaps():
    stored = ["13,16,LOC", "13,21,LOC", "13,21,LOC", "4,8,PER", "9,12,PER", "2,3,PER", "12,13,PER", "0,99,LOC", "21,21,PER"]
    kept, length, problem = training_spans(stored, TEXT, LABELS)
    assert problem is None and length == len(TEXT)
    # 2-3 (inside @ann) widens to @ann; " wen" trims and widens to "went"; " to" trims to "to";
    # whitespace only, past the text and empty spans are dropped; New York wins over New
    assert kept == [Span(0, 4, "PER"), Span(5, 9, "PER"), Span(10, 12, "PER"), Span(13, 21, "LOC")]


def test_overlaps_of_equal_length_keep_the_first_label_of_the_config():
    kept, _, _ = training_spans(["13,16,LOC", "13,16,PER", "14,21,LOC"], TEXT, LABELS)  # 14-21 widens to 13-21: longest
    assert kept == [Span(13, 21, "LOC")]
    kept, _, _ = training_spans(["13,16,LOC", "13,16,PER"], TEXT, LABELS)
    assert kept == [Span(13, 16, "PER")]


def test_a_label_not_in_the_config_sets_the_annotation_aside():
    assert training_spans(["0,4,PER", "5,9,ORG"], TEXT, LABELS) == ([], 0, "label not in config")


def test_a_span_across_the_cut_cuts_the_text_where_it_starts():
    cut = TEXT[:19]  # "... New Yo"
    kept, length, _ = training_spans(["0,4,PER", "13,21,LOC"], cut, LABELS, cut=True)
    assert kept == [Span(0, 4, "PER")] and length == 13
    kept, length, _ = training_spans(["0,4,PER", "13,21,LOC"], cut, LABELS, cut=False)  # not cut: outside the text
    assert kept == [Span(0, 4, "PER")] and length == 19


def test_bio_tags_round_trip_and_stray_inside_tags_open_a_span():
    bounds = spans.tokens(TEXT)
    tagged = spans.tags(TEXT, [Span(0, 4, "PER"), Span(13, 21, "LOC")], bounds)
    assert tagged == ["B-PER", "O", "O", "B-LOC", "I-LOC", "O", "O"]
    assert spans.from_tags(tagged, bounds) == [(0, 1, "PER"), (3, 5, "LOC")]
    assert spans.from_tags(["I-PER", "I-LOC", "O", "B-PER", "I-PER"], bounds[:5]) == [(0, 1, "PER"), (1, 2, "LOC"), (3, 5, "PER")]


def test_span_scores_need_exact_boundaries():
    found = spans.compare(["0,4,PER", "13,21,LOC"], ["0,4,PER", "13,16,LOC", "5,9,PER"], LABELS)
    assert found.tp.tolist() == [1, 0] and found.fp.tolist() == [1, 1] and found.fn.tolist() == [0, 1]
    assert spans.f1([], []) == 1.0
    assert spans.f1(["0,4,PER"], ["0,4,PER", "5,9,PER"]) == pytest.approx(2 / 3)
