"""Train jobs on the consensus: what the version record says about it, the gold set, and the
settings that change them (webhooks are applied without an app, so no worker races the job)."""

import json

import numpy as np
import pytest

from backend.jobs.promotion import train_project
from backend.payload import parse_webhook
from backend.web import ingest
from backend.web.app import create_app
from lab.annotators import simulate_votes
from tests.conftest import annotation_event


@pytest.fixture
def voted(runtime, tweets):
    """Project 1: 400 tweets labeled by the simulated team (60% by all three), as LS sends them."""
    order = np.random.default_rng(3).permutation(len(tweets.texts))[:400]
    tasks = simulate_votes([tweets.texts[i] for i in order], [tweets.labels[i] for i in order], seed=3)
    for task in tasks:
        for vote in task.votes:
            stamp = f"2026-01-01T00:{vote.annotation // 60 % 60:02d}:{vote.annotation % 60:02d}Z"
            event = annotation_event(
                vote.annotation, task.task, task.data["text"], vote.labels["sentiment"][0], author=vote.author, updated_at=stamp
            )
            ingest.handle(runtime, parse_webhook(event))
    return tasks


def settle(runtime, **settings):
    runtime.store.set_meta(1, settings=json.dumps(settings))
    return train_project(runtime, 1, "test")


def record(runtime):
    return runtime.registry.history(1)[-1]


def test_the_record_says_how_each_task_was_resolved_and_majority_sets_ties_aside(runtime, voted):
    settle(runtime)
    made = record(runtime)
    counts = made["consensus"]["tasks"]["sentiment"]
    assert made["consensus"]["method"] == "majority"
    assert counts["single"] > 100 and counts["vote"] > 50 and counts["disputed"] > 0
    assert made["set_aside"]["disputed"] == counts["disputed"]
    assert made["examples"] == 400 - counts["disputed"]
    settle(runtime, consensus="latest")
    latest = record(runtime)
    assert "disputed" not in latest["consensus"]["tasks"]["sentiment"] and latest["examples"] == 400
    settle(runtime, consensus="dawid_skene", dispute_confidence=0.99)
    strict = record(runtime)["consensus"]["tasks"]["sentiment"]
    settle(runtime, consensus="dawid_skene", dispute_confidence=0.0)
    assert strict.get("disputed", 0) > record(runtime)["consensus"]["tasks"]["sentiment"].get("disputed", 0)


def test_ground_truth_forms_the_gold_set_once_on_and_large_enough(runtime, voted, tweets):
    for task in voted[:40]:
        event = annotation_event(10_000 + task.task, task.task, task.data["text"], "neutral", author="reviewer", ground_truth=True)
        ingest.handle(runtime, parse_webhook(event))
    settle(runtime)
    assert record(runtime)["gold_tasks"] == 0  # off by default: trained on, overriding the votes
    assert record(runtime)["consensus"]["tasks"]["sentiment"]["ground_truth"] == 40
    settle(runtime, gold_set=True, gold_min=50)
    assert record(runtime)["gold_tasks"] == 0  # too few yet
    settle(runtime, gold_set=True, gold_min=30)
    made = record(runtime)
    assert made["gold_tasks"] == 40 and made["examples"] < 400 - 40 + 1
    assert made["evaluation"]["gold"]["challenger"]["sentiment"]["n"] == 40
    assert "gold set" in made["reason"]


def test_agreement_names_each_annotator_and_the_poor_one_scores_lowest(runtime, voted):
    client = create_app(runtime=runtime).test_client()
    body = client.get("/projects/1/agreement").get_json()
    sentiment = body["controls"]["sentiment"]
    assert set(sentiment["per_annotator"]) == {"ann-a", "ann-b", "ann-poor"}
    people = sentiment["per_annotator"]
    assert min(people, key=lambda p: people[p]["agreement"]) == "ann-poor"
    assert len(sentiment["kappa"]) == 3 and sentiment["alpha"] is not None
    assert body["consensus"] == "majority" and body["disputed"] == sentiment["consensus"]["disputed"]
    assert client.put("/projects/1/settings", json={"kappa_min_shared": 10_000}).status_code == 200
    assert client.get("/projects/1/agreement").get_json()["controls"]["sentiment"]["kappa"] == []
    assert client.put("/projects/1/settings", json={"consensus": "loudest"}).status_code == 400


def test_disputes_go_to_the_review_queue_and_the_audit_trail(runtime, voted):
    settle(runtime)
    client = create_app(runtime=runtime).test_client()
    review = client.get("/queue", query_string={"project": 1, "purpose": "review", "limit": 5}).get_json()
    disputed = record(runtime)["consensus"]["tasks"]["sentiment"]["disputed"]
    assert review["total"] == disputed and len(review["tasks"]) == 5
    assert all(t["reason"] == "tie" and t["certainty"] == 0.0 and sum(t["votes"].values()) >= 2 for t in review["tasks"])
    events = client.get("/projects/1/audit", query_string={"kind": "dispute"}).get_json()["events"]
    assert events and len(events[0]["details"]["tasks"]) == min(disputed, 100)
    tie = review["tasks"][0]
    task = next(t for t in voted if t.task == tie["task"])
    decider = annotation_event(99_999, tie["task"], task.data["text"], "neutral", author="reviewer", ground_truth=True)
    ingest.handle(runtime, parse_webhook(decider))
    settle(runtime)
    (resolved,) = client.get("/projects/1/audit", query_string={"kind": "resolution"}).get_json()["events"]
    assert resolved["details"]["tasks"] == [{"task": tie["task"], "control": "sentiment", "outcome": "ground_truth", "label": ["neutral"]}]
    assert client.get("/queue", query_string={"project": 1, "purpose": "review"}).get_json()["total"] == disputed - 1
    assert client.get("/queue", query_string={"project": 1, "purpose": "gossip"}).status_code == 400


def test_metrics_show_each_controls_alpha_and_disputed_tasks(runtime, voted):
    from prometheus_client.parser import text_string_to_metric_families

    from backend.web import prometheus

    settle(runtime)
    made = record(runtime)["consensus"]
    assert -1.0 < made["alpha"]["sentiment"] < 1.0
    families = {f.name: f for f in text_string_to_metric_families(prometheus.exposition(runtime)[0].decode())}
    assert [(s.labels, s.value) for s in families["lsb_annotator_alpha"].samples] == [
        ({"project": "1", "control": "sentiment"}, made["alpha"]["sentiment"])
    ]
    assert families["lsb_disputed_tasks"].samples[0].value == made["tasks"]["sentiment"]["disputed"]
