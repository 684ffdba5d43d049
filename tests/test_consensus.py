import numpy as np
import pytest

from backend.consensus import SUBMITTED, Consensus, TaskVotes, Vote, for_policy, gold_tasks, majority, resolve
from backend.labelconfig import parse_label_config
from backend.policy import Policy
from lab.annotators import label_accuracy, model_accuracy, simulate_votes
from lab.client import ner_config
from tests.conftest import LABEL_CONFIG

C = "sentiment"


def task(task_id: int, *votes: tuple) -> TaskVotes:
    """votes: (annotation, author, updated_at, choices[, ground_truth])"""
    return TaskVotes(task_id, {"text": f"t{task_id}"}, tuple(Vote(a, who, at, {C: list(ch)}, *gt) for a, who, at, ch, *gt in votes))


def outcome(found: Consensus, task_id: int) -> tuple[list[str] | None, str]:
    for t in found.tasks:
        if t.task == task_id:
            return t.labels[C], t.outcomes[C]
    assert task_id in found.disputed.get(C, [])
    return None, "disputed"


def test_majority_one_vote_per_annotator_and_ties_are_disputed():
    tasks = [
        task(1, (1, "a", 1.0, ["pos"])),
        task(2, (2, "a", 1.0, ["pos"]), (3, "b", 2.0, ["pos"])),
        task(3, (4, "a", 1.0, ["pos"]), (5, "b", 2.0, ["neg"]), (6, "c", 3.0, ["pos"])),
        task(4, (7, "a", 1.0, ["pos"]), (8, "b", 2.0, ["neg"])),
        # the same annotator twice: their latest annotation is their one vote
        task(5, (9, "a", 1.0, ["neg"]), (10, "b", 2.0, ["pos"]), (11, "a", 3.0, ["pos"])),
        # no completed_by: each annotation is a voter of its own
        task(6, (12, None, 1.0, ["neg"]), (13, None, 2.0, ["neg"]), (14, "a", 3.0, ["pos"])),
    ]
    found = resolve(tasks, "majority")
    assert outcome(found, 1) == (["pos"], "single")
    assert outcome(found, 2) == (["pos"], "unanimous")
    assert outcome(found, 3) == (["pos"], "vote")
    assert outcome(found, 4) == (None, "disputed")
    assert outcome(found, 5) == (["pos"], "unanimous")
    assert outcome(found, 6) == (["neg"], "vote")
    assert found.counts[C] == {"single": 1, "unanimous": 2, "vote": 2, "disputed": 1}
    assert {t.task: t.annotations[C] for t in found.tasks}[3] == 6  # the latest agreeing annotation


def test_latest_lets_the_last_vote_win_and_disputes_nothing():
    tasks = [
        task(4, (7, "a", 1.0, ["pos"]), (8, "b", 2.0, ["neg"])),
        task(3, (4, "a", 1.0, ["pos"]), (5, "b", 2.0, ["neg"]), (6, "c", 3.0, ["neg"])),
    ]
    found = resolve(tasks, "latest")
    assert outcome(found, 4) == (["neg"], "latest")
    assert found.disputed == {}


def test_multi_label_votes_per_label():
    assert majority([["a", "b"], ["a"], ["a", "c"]], multiple=True) == ["a"]
    assert majority([["a", "b"], ["a", "b"], ["a"]], multiple=True) == ["a", "b"]
    assert majority([["a", "b"], ["a"]], multiple=True) is None  # b: one of two voters
    assert majority([["a"], ["b"], ["a"]], multiple=False) == ["a"]
    found = resolve([task(1, (1, "x", 1, ["a", "b"]), (2, "y", 2, ["a"]), (3, "z", 3, ["a", "b"]))], "majority", multiple={C})
    assert outcome(found, 1) == (["a", "b"], "vote")


def test_ground_truth_overrides_the_votes_and_forms_the_gold_set_once_enough_exist():
    tasks = [task(1, (1, "a", 1.0, ["neg"]), (2, "b", 2.0, ["neg"]), (3, "admin", 0.5, ["pos"], True)), task(2, (4, "a", 1.0, ["neg"]))]
    found = resolve(tasks, "majority")
    assert outcome(found, 1) == (["pos"], "ground_truth")
    assert found.gold == {1}
    assert gold_tasks(found, Policy(gold_set=True, gold_min=1)) == {1}
    assert gold_tasks(found, Policy(gold_set=True, gold_min=2)) == set()  # too few: trained on
    assert gold_tasks(found, Policy(gold_set=False, gold_min=1)) == set()  # off by default


def test_for_policy_reads_the_method_and_the_multi_label_controls():
    config = parse_label_config(LABEL_CONFIG.replace('choice="single"', 'choice="multiple"'))
    tasks = [task(1, (1, "a", 1.0, ["positive"]), (2, "b", 2.0, ["negative"]))]
    assert resolve(tasks, "majority").disputed == {C: [1]}
    assert for_policy(tasks, Policy(consensus="latest"), config).tasks[0].labels == {C: ["negative"]}
    with pytest.raises(ValueError):
        resolve(tasks, "loudest")


@pytest.fixture(scope="module")
def simulated(tweets):
    order = np.random.default_rng(0).permutation(len(tweets.texts))[:3000]
    texts, labels = [tweets.texts[i] for i in order], [tweets.labels[i] for i in order]
    return texts, labels, {i + 1: label for i, label in enumerate(labels)}


def test_majority_and_dawid_skene_recover_true_labels_better_than_latest(simulated):
    texts, labels, truth = simulated
    votes = simulate_votes(texts, labels, seed=0)
    accuracy = {m: label_accuracy(resolve(votes, m), truth) for m in ("latest", "majority", "dawid_skene")}
    assert accuracy["majority"] > accuracy["latest"] + 0.05, accuracy
    assert accuracy["dawid_skene"] > accuracy["majority"], accuracy  # it also corrects the poor annotator's lone labels
    estimated = resolve(votes, "dawid_skene").accuracy[C]
    assert min(estimated, key=estimated.get) == "ann-poor", estimated
    assert estimated["ann-a"] > estimated["ann-b"] > estimated["ann-poor"]


def test_dawid_skene_weighs_an_unreliable_annotators_lone_labels_less(simulated):
    texts, labels, _ = simulated
    found = resolve(simulate_votes(texts, labels, seed=0), "dawid_skene")
    lone = {t.task: t for t in found.tasks}
    votes = {t.task: t.votes for t in simulate_votes(texts, labels, seed=0)}
    poor = [lone[i].weights[C] for i, v in votes.items() if len(v) == 1 and v[0].author == "ann-poor" and i in lone]
    good = [lone[i].weights[C] for i, v in votes.items() if len(v) == 1 and v[0].author == "ann-a" and i in lone]
    assert np.mean(poor) < np.mean(good)


def test_a_model_trained_on_the_default_consensus_beats_one_trained_on_the_latest_vote(simulated, tweets):
    texts, labels, _ = simulated
    held = np.random.default_rng(1).permutation(len(tweets.texts))[:2000]
    used = set(texts)
    held = [i for i in held if tweets.texts[i] not in used]
    held_texts, held_labels = [tweets.texts[i] for i in held], [tweets.labels[i] for i in held]
    runs = {
        (method, seed): model_accuracy(resolve(simulate_votes(texts, labels, seed=seed), method), held_texts, held_labels)
        for method in ("latest", Policy().consensus)
        for seed in (0, 1)
    }
    spread = abs(runs[(Policy().consensus, 0)] - runs[(Policy().consensus, 1)])
    assert runs[(Policy().consensus, 0)] - runs[("latest", 0)] > spread, runs
    assert runs[(Policy().consensus, 1)] > runs[("latest", 1)], runs


def span_task(task_id: int, *votes: tuple) -> TaskVotes:
    """votes: (annotation, author, spans or None for a skip[, ground_truth]); a submission with no
    span carries only the SUBMITTED mark, as `parse_annotation` stores it."""
    out = []
    for n, (a, who, found, *gt) in enumerate(votes):
        labels = {} if found is None else {SUBMITTED: [], **({"ner": sorted(found)} if found else {})}
        out.append(Vote(a, who, float(n), labels, *gt))
    return TaskVotes(task_id, {"text": "Ann met Bob in Rome"}, tuple(out))


def test_spans_are_voted_one_by_one_and_a_submission_without_spans_votes_for_none():
    ann, bob, rome = "0,3,PER", "8,11,PER", "15,19,LOC"
    tasks = [
        span_task(1, (1, "a", [ann, rome]), (2, "b", [ann, bob, rome]), (3, "c", [ann])),  # ann 3/3, rome 2/3, bob 1/3
        span_task(2, (4, "a", []), (5, "b", []), (6, "c", [bob])),  # two say "no entities"
        span_task(3, (7, "a", [ann]), (8, "b", [])),  # a tie on ann: disputed
        span_task(4, (9, "a", None), (10, "b", [rome])),  # a skip is no vote
        span_task(5, (11, "a", [bob]), (12, "b", [ann], True)),  # ground truth overrides
        span_task(6, (13, "a", [])),  # a single submission without spans: "no entities"
    ]
    for method in ("majority", "dawid_skene"):
        found = resolve(tasks, method, multiple={"ner"}, spans={"ner"})
        by_task = {t.task: (t.labels["ner"], t.outcomes["ner"]) for t in found.tasks}
        assert by_task[1] == (sorted([ann, rome]), "vote")
        assert by_task[2] == ([], "vote")
        assert 3 in found.disputed["ner"] and 3 not in by_task
        assert by_task[4] == ([rome], "single")
        assert by_task[5] == ([ann], "ground_truth")
        assert by_task[6] == ([], "single")
    assert 6 not in {t.task for t in resolve(tasks, "majority", multiple={"ner"}).tasks}  # not a span control: no vote


def test_for_policy_reads_the_span_controls_from_the_config():
    config = parse_label_config(ner_config(["PER", "LOC"]))
    found = for_policy([span_task(1, (1, "a", []))], Policy(), config)
    assert found.tasks[0].labels == {"ner": []}
