import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from backend.labelconfig import parse_label_config
from backend.payload import InvalidPayload
from backend.rules import RulePrior, RuleSet, blend, decide, parse_rules
from tests.conftest import LABEL_CONFIG

TWEET_RULES = json.loads((Path(__file__).parents[1] / "lab" / "rules" / "tweets.json").read_text())  # ten rules from common sense


def test_rules_parse_into_one_rule_per_pattern_and_refuse_what_is_wrong():
    rules = parse_rules(TWEET_RULES)
    assert len(rules) == 10 and {r.kind for r in rules} == {"keyword", "phrase", "regex"}
    assert parse_rules('[{"label": "positive", "phrase": "on time"}]')[0].pattern == "on time"
    for bad in (
        {"rules": []},
        [{"label": "positive"}],
        [{"label": "positive", "keyword": "a", "regex": "b"}],
        [{"label": "", "keyword": "a"}],
        [{"label": "positive", "keyword": "a", "when": "always"}],
        [{"label": "positive", "regex": r"(a)\1"}],  # a backreference: RE2 cannot run it in linear time
        [{"label": "positive", "regex": "(?=a)"}],
        [{"label": "positive", "keywords": []}],
        [{"label": "positive", "keyword": "thank you"}],  # two words: a phrase
        [{"label": "positive", "regex": "x" * 501}],
        [{"label": "positive", "keywords": [f"w{i}" for i in range(501)]}],  # at most 500 rules
        "not json",
    ):
        with pytest.raises(InvalidPayload):
            parse_rules(bad)


def test_votes_and_decisions_single_and_multi_label():
    config = parse_label_config(LABEL_CONFIG)
    control = config.controls[0]
    ruleset = RuleSet(parse_rules(TWEET_RULES))
    texts = ["Thanks, great crew!", "Flight delayed, no response at all", "thanks but my bag is lost", "on my way", None]
    votes = ruleset.votes(control, texts, only=True)
    labels = list(control.labels)
    assert votes[0, labels.index("positive")] == 2 and votes[1, labels.index("negative")] == 2
    picked, scores = decide(votes, multiple=False)
    assert [labels[k] for k in picked[0]] == ["positive"] and scores[0] == pytest.approx(0.75)
    assert picked[2] == [] and scores[2] == 0  # a tie: no pre-annotation
    assert picked[3] == [] and picked[4] == []  # uncovered
    assert not ruleset.votes(control, texts, only=False).any()  # rules without a control need the only control
    multi, multi_scores = decide(np.array([[1, 2, 0]]), multiple=True)
    assert multi == [[0, 1]] and multi_scores[0] == pytest.approx(1 / 3 * 0.5)
    assert RuleSet(parse_rules(TWEET_RULES)).version == ruleset.version  # a stable name
    assert ruleset.version != RuleSet(parse_rules(TWEET_RULES[:2])).version


def test_blend_moves_covered_tasks_towards_the_rules_and_leaves_the_rest():
    proba = np.array([[0.6, 0.4], [0.6, 0.4], [0.5, 0.5]])
    votes = np.array([[0, 2], [1, 1], [0, 0]])
    single = blend(proba, votes, 0.5, multiple=False)
    assert np.allclose(single, [[0.3, 0.7], [0.55, 0.45], [0.5, 0.5]])
    assert np.allclose(single.sum(axis=1), 1.0)
    multi = blend(proba, votes, 0.5, multiple=True)
    assert np.allclose(multi, [[0.6, 0.7], [0.8, 0.7], [0.5, 0.5]])
    assert blend(proba, votes, 0.0, multiple=False) is proba


def test_a_rule_prior_applies_its_votes_and_round_trips_as_plain_values():
    control = parse_label_config(LABEL_CONFIG).controls[0]
    prior = RulePrior(parse_rules([{"label": "positive", "keyword": "great"}]), 0.5, "rules-x")
    proba = np.full((2, len(control.labels)), 1 / len(control.labels))
    mixed = prior.apply(proba, control, ["a great day", "a day"])
    assert mixed[0].argmax() == control.labels.index("positive") and np.allclose(mixed[1], proba[1])
    again = RulePrior.from_json(json.loads(json.dumps(prior.to_json())))
    assert again == prior and np.allclose(again.apply(proba, control, ["great"]), prior.apply(proba, control, ["great"]))
    with pytest.raises(ValueError):
        RulePrior.from_json({"rules": [{"label": "positive"}], "weight": 0.5})


def test_a_pattern_built_to_backtrack_catastrophically_matches_in_linear_time():
    ruleset = RuleSet(parse_rules([{"label": "negative", "regex": "(a+)+$"}, {"label": "negative", "regex": "(x+x+)+y"}]))
    hostile = ["a" * 100_000 + "!", "x" * 100_000]
    started = time.perf_counter()
    assert ruleset.matches(hostile).tolist() == [[False, False], [False, False]]
    assert time.perf_counter() - started < 2.0  # Python's re takes longer than the age of the universe


def test_rules_pre_annotate_before_the_first_model_under_their_own_version(client):
    client.post("/setup", json={"project": 1, "schema": LABEL_CONFIG, "extra_params": {"rules": TWEET_RULES}})
    version = client.post("/setup", json={"project": 1, "schema": LABEL_CONFIG}).json["model_version"]
    assert version.startswith("rules-")
    tasks = [{"id": 1, "data": {"text": "thanks, great crew"}}, {"id": 2, "data": {"text": "on my way"}}]
    results = client.post("/predict", json={"project": 1, "label_config": LABEL_CONFIG, "tasks": tasks}).json["results"]
    assert results[0]["model_version"] == version and results[0]["result"][0]["value"]["choices"] == ["positive"]
    assert results[0]["result"][0]["score"] == pytest.approx(0.75)
    assert results[1]["result"] == [] and results[1]["model_version"] == version  # uncovered: nothing
    answer = client.put("/projects/1/settings", json={"rules": [{"label": "negative", "keyword": "way"}]}).json
    assert answer["settings"]["rules"] == [{"label": "negative", "keyword": "way"}]  # the admin API beats extra_params
    results = client.post("/predict", json={"project": 1, "label_config": LABEL_CONFIG, "tasks": tasks}).json["results"]
    assert results[0]["result"] == [] and results[1]["result"][0]["value"]["choices"] == ["negative"]
    assert results[1]["model_version"] != version
    bad = client.put("/projects/1/settings", json={"rules": [{"label": "negative", "regex": r"(a)\1"}]})
    assert bad.status_code == 400 and "RE2" in bad.json["error"]
    client.put("/projects/1/settings", json={"rules": []})
    results = client.post("/predict", json={"project": 1, "label_config": LABEL_CONFIG, "tasks": tasks}).json["results"]
    assert results[0]["model_version"] == "untrained" and results[0]["result"] == []


def test_a_hostile_pattern_does_not_stall_predict(client):
    client.put("/projects/1/settings", json={"rules": [{"label": "negative", "regex": "(a+)+$"}]})
    tasks = [{"id": i, "data": {"text": "a" * 20_000 + "!"}} for i in range(50)]
    answers = []

    def call():
        answers.append(client.post("/predict", json={"project": 1, "label_config": LABEL_CONFIG, "tasks": tasks}).status_code)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(timeout=10)
    assert answers == [200]


def test_labeling_rules_file_is_every_projects_default(tmp_path):
    from backend.config import Settings
    from backend.policy import defaults, file_rules

    path = tmp_path / "rules.json"
    path.write_text('[{"label": "positive", "keyword": "thanks"}]')
    assert defaults(Settings(labeling_rules_file=str(path))).rules == ({"label": "positive", "keyword": "thanks"},)
    path.write_text('[{"label": "positive", "regex": "(a)\\\\1"}]')
    with pytest.raises(ValueError, match="LABELING_RULES_FILE"):
        file_rules(str(path))
    with pytest.raises(ValueError, match="LABELING_RULES_FILE"):
        file_rules(str(tmp_path / "missing.json"))


def test_rules_report_coverage_conflicts_and_accuracy_against_the_labels(client):
    from tests.conftest import annotation_event

    client.post("/setup", json={"project": 1, "schema": LABEL_CONFIG})
    rules = [*TWEET_RULES, {"label": "meh", "keyword": "meh"}, {"control": "topic", "label": "positive", "keyword": "x"}]
    client.put("/projects/1/settings", json={"rules": rules})
    labeled = [("thanks, great flight", "positive"), ("thanks for nothing, bag lost", "negative"), ("delayed again", "negative")]
    for i, (text, label) in enumerate(labeled):
        client.post("/webhook", json=annotation_event(i + 1, i + 1, text, label))
    pool = [{"id": 100 + i, "data": {"text": text}} for i, text in enumerate(["love it", "on time", "cancelled", "the worst"])]
    client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 1, "label_config": LABEL_CONFIG}, "tasks": pool})
    answer = client.get("/projects/1/rules").json
    by_name = {r["name"]: r for r in answer["rules"]}
    thanks = by_name["positive keyword 'thanks'"]
    assert answer["tasks"] == 7 and answer["labeled"] == 3
    assert thanks["matched"] == 2 and thanks["labeled"] == 2 and thanks["correct"] == 1 and thanks["accuracy"] == 0.5
    assert thanks["conflicts"] == 1  # "lost" votes negative on the second
    assert by_name["negative keyword 'delayed'"]["accuracy"] == 1.0
    assert by_name["negative keyword 'cancelled'"]["matched"] == 1 and by_name["negative keyword 'cancelled'"]["labeled"] == 0
    assert answer["covered"] == pytest.approx(6 / 7, abs=1e-4)
    assert by_name["meh keyword 'meh'"]["problem"] == "no Choices control has this label"
    assert "topic" in by_name["topic:positive keyword 'x'"]["problem"]


def test_the_train_job_records_the_prior_it_chose_from_the_rules(client, tweets):
    from backend.rules import PRIOR_WEIGHTS
    from tests.conftest import wait_for
    from tests.web.test_api import train

    first = train(client, tweets, n=150)
    assert client.get("/projects/1/rules").json["model"] == {"version": first, "rules": {}}
    client.put("/projects/1/settings", json={"rules": TWEET_RULES})  # new rules retrain the project
    record = wait_for(lambda: next((r for r in client.get("/projects/1/models").json["history"] if r.get("rules")), None), timeout=60)
    version = RuleSet(parse_rules(TWEET_RULES)).version
    assert record["rules"] == version
    prior = record["evaluation"]["rules"]["sentiment"]
    assert prior["version"] == version and prior["weight"] in PRIOR_WEIGHTS
    assert set(prior["out_of_fold"]) == {str(w) for w in PRIOR_WEIGHTS}
    if record["decision"] == "promoted":
        assert client.get("/projects/1/rules").json["model"] == {"version": record["version"], "rules": {"sentiment": prior}}


def test_a_bad_labeling_rules_file_stops_the_process_at_start(tmp_path, monkeypatch, capsys):
    from backend.cli import main

    path = tmp_path / "rules.json"
    path.write_text('[{"label": "positive", "regex": "(?=a)"}]')
    monkeypatch.setenv("LABELING_RULES_FILE", str(path))
    with pytest.raises(SystemExit) as stopped:
        main(["models", "--project", "1"])
    assert stopped.value.code == 2 and "LABELING_RULES_FILE" in capsys.readouterr().err
