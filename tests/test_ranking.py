"""The queue: cold start by diversity, then the project's strategy over the served model."""

from collections import Counter

import numpy as np

from backend import strategy
from backend.families.base import restrict
from backend.families.crf_spans import CrfSpans
from backend.labelconfig import parse_label_config
from lab.client import ner_config, span_event
from lab.datasets import load_wnut
from tests.conftest import LABEL_CONFIG, annotation_event, wait_for


def pool_event(tweets, start, stop):
    return {
        "action": "TASKS_CREATED",
        "project": {"id": 1, "label_config": LABEL_CONFIG},
        "tasks": [{"id": 10_000 + i, "data": {"text": tweets.texts[i]}} for i in range(start, stop)],
    }


def queue(client, limit=1000):
    return client.get(f"/queue?project=1&limit={limit}").json


def test_cold_start_then_margin_order_over_the_served_model(client, runtime, tweets):
    client.post("/setup", json={"project": 1, "schema": LABEL_CONFIG})
    client.put("/projects/1/settings", json={"retrain_threshold": 100_000})
    client.post("/webhook", json=pool_event(tweets, 1000, 1400))
    cold = wait_for(lambda: (q := queue(client)) and q["tasks"] and q, timeout=120)
    assert cold["strategy"] == "diversity" and cold["version"] == "untrained" and "cold start" in cold["reason"]
    assert len({t["cluster"] for t in cold["tasks"][:20]}) >= 10  # the first tasks spread over clusters

    for i in range(300):
        client.post("/webhook", json=annotation_event(i + 1, i + 1, tweets.texts[i], tweets.labels[i]))
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    warm = wait_for(lambda: (q := queue(client)) and q["strategy"] == "margin" and q, timeout=60)
    served = runtime.cache.get(1)
    assert warm["version"] == served.version
    tasks = warm["tasks"]
    assert [t["position"] for t in tasks] == list(range(len(tasks)))
    assert [t["score"] for t in tasks] == sorted(t["score"] for t in tasks)
    model = served.bundle.controls["sentiment"]
    texts = [tweets.texts[t["task"] - 10_000] for t in tasks]
    expected = strategy.margin(restrict(model.predict_proba(texts), model.labels, ("positive", "negative", "neutral"), False))
    assert np.allclose([t["uncertainty"] for t in tasks], expected, atol=1e-5)
    after_batch = [t["uncertainty"] for t in tasks[20:]]
    assert after_batch == sorted(after_batch, reverse=True)
    assert min(t["uncertainty"] for t in tasks[:20]) >= np.sort(expected)[::-1][40]


def test_queue_drops_tasks_labeled_since_and_validates_its_input(client, tweets):
    client.post("/setup", json={"project": 1, "schema": LABEL_CONFIG})
    client.post("/webhook", json=pool_event(tweets, 1000, 1100))
    first = wait_for(lambda: (q := queue(client, 5)) and q["tasks"] and q, timeout=120)["tasks"][0]["task"]
    client.post("/webhook", json=annotation_event(99_999, first, "x", "positive"))
    assert first not in [t["task"] for t in queue(client, 5)["tasks"]]
    assert client.get("/queue?project=abc").status_code == 400
    assert client.get("/queue?project=1&limit=0").status_code == 400
    unknown = client.get("/queue?project=77")
    assert unknown.status_code == 404 and "unknown" in unknown.json["error"]


def test_a_new_pool_is_pending_then_ranked_at_once_even_while_a_training_runs(client, runtime, tweets, monkeypatch):
    import threading
    import time

    from backend.jobs import entry

    client.post("/setup", json={"project": 1, "schema": LABEL_CONFIG})
    fresh = client.get("/queue?project=1")
    assert fresh.status_code == 200 and fresh.json["pending"] is True and fresh.headers["Retry-After"] == "1"
    wait_for(lambda: queue(client)["pending"] is False, timeout=30)
    assert queue(client)["tasks"] == []  # ranked: nothing to label, which is not "wait"

    release = threading.Event()
    training = threading.Event()
    real = entry.train_project

    def slow_training(*args, **kwargs):
        training.set()
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(entry, "train_project", slow_training)
    for i in range(5):
        client.post("/webhook", json=annotation_event(i + 1, i + 1, tweets.texts[i], tweets.labels[i]))
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert training.wait(30)
    started = time.monotonic()
    answer = client.post("/webhook", json=pool_event(tweets, 1000, 1500)).json
    assert answer["publish"]["enqueued"] and "retrain" not in answer
    assert queue(client)["pending"] is True
    ranked = wait_for(lambda: (q := queue(client)) and not q["pending"] and q["size"] and q, timeout=30)
    waited = time.monotonic() - started
    release.set()
    assert ranked["size"] == 500 and len(ranked["tasks"]) == 500
    assert waited < 10  # ranked while the training still ran (the README's figure is measured by bench)


def test_limit_gives_k_tasks_while_k_ranked_tasks_are_unlabeled(client, tweets):
    client.post("/setup", json={"project": 1, "schema": LABEL_CONFIG})
    client.put("/projects/1/settings", json={"retrain_threshold": 100_000})
    client.post("/webhook", json=pool_event(tweets, 1000, 1800))
    ranked = wait_for(lambda: (q := queue(client, 1000)) and not q["pending"] and q["size"] == 800 and q, timeout=60)
    order = [t["task"] for t in ranked["tasks"]]
    assert len(order) == 800
    for n, task in enumerate(order[:700]):  # annotated since the ranking, which is not redone
        client.post("/webhook", json=annotation_event(50_000 + n, task, "x", "positive"))
    left = queue(client, 100)
    assert [t["task"] for t in left["tasks"]] == order[700:]
    assert [t["position"] for t in left["tasks"]] == list(range(700, 800))
    assert len(queue(client, 1000)["tasks"]) == 100


def test_settings_api_and_extra_params(client):
    client.post("/setup", json={"project": 1, "schema": LABEL_CONFIG, "extra_params": {"strategy": "entropy", "batch_size": 10}})
    assert client.get("/projects/1/settings").json["settings"]["strategy"] == "entropy"
    response = client.put("/projects/1/settings", json={"strategy": "least_confidence", "retrain_threshold": 2})
    assert response.status_code == 200 and response.json["settings"]["strategy"] == "least_confidence"
    assert response.json["settings"]["batch_size"] == 10
    assert client.put("/projects/1/settings", json={"strategy": "psychic"}).status_code == 400
    assert client.put("/projects/1/settings", json=[1]).status_code == 400


def test_stopping_signal_is_recorded_per_promotion(client, tweets):
    client.post("/setup", json={"project": 1, "schema": LABEL_CONFIG})
    client.put("/projects/1/settings", json={"retrain_threshold": 100_000})
    client.post("/webhook", json=pool_event(tweets, 2000, 2300))
    for stop in (150, 300):
        for i in range(stop - 150, stop):
            client.post("/webhook", json=annotation_event(i + 1, i + 1, tweets.texts[i], tweets.labels[i]))
        client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
        wait_for(
            lambda: (
                any(h.get("agreement_kappa") is not None for h in client.get("/projects/1/stopping").json["history"])
                if stop == 300
                else client.get("/projects/1/stopping").json["history"]
            ),
            timeout=60,
        )
    body = client.get("/projects/1/stopping").json
    latest = body["history"][-1]
    assert 0 <= latest["mean_uncertainty"] <= 1 and -1 <= latest["agreement_kappa"] <= 1
    assert body["stable"] in (True, False) and body["advice"]


def test_ranking_with_the_pool_cache_is_the_ranking_without_it(tmp_path, tweets):
    from backend.families import ModelBundle
    from backend.families.estimator import ControlModel
    from backend.families.pool import cache_for, features
    from backend.labelconfig import parse_label_config
    from backend.policy import Policy
    from backend.ranking import rank

    config = parse_label_config(LABEL_CONFIG)
    labels = ("positive", "negative", "neutral")
    bundle = ModelBundle({"sentiment": ControlModel.fit(tweets.texts[:400], [[x] for x in tweets.labels[:400]], labels, False)})
    tasks = [{"id": 10_000 + i, "data": {"text": tweets.texts[1000 + i % 700]}} for i in range(1500)]  # near-duplicates
    tasks.append({"id": 5, "data": {"text": ""}})
    cache = cache_for(tmp_path)
    for warm in (False, True, True):
        cached = rank(tasks, config, Policy(), bundle, "v", warm, cache=cache)
        assert cached.entries == rank(tasks, config, Policy(), bundle, "v", warm).entries
    texts = [t["data"]["text"] for t in tasks[:-1]]
    uncertainty = strategy.margin(restrict(bundle.controls["sentiment"].predict_proba(texts), labels, labels, False))
    first = strategy.select_batch(uncertainty, features(texts), 20)
    assert [e.task for e in cached.entries[:20]] == [tasks[i]["id"] for i in first]
    assert np.allclose([e.uncertainty for e in cached.entries[:20]], uncertainty[first], atol=1e-6)


def test_every_accepted_strategy_is_the_one_the_queue_reports_and_ranks_its_own_way(client, runtime, tweets):
    from backend.policy import STRATEGY_NAMES

    client.post("/setup", json={"project": 1, "schema": LABEL_CONFIG})
    client.put("/projects/1/settings", json={"retrain_threshold": 100_000, "cold_start_total": 0, "cold_start_per_class": 0})
    client.post("/webhook", json=pool_event(tweets, 1000, 1300))
    for i in range(300):
        client.post("/webhook", json=annotation_event(i + 1, i + 1, tweets.texts[i], tweets.labels[i]))
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    margin = wait_for(lambda: (q := queue(client)) and q["strategy"] == "margin" and q, timeout=60)
    margin_order = [t["task"] for t in margin["tasks"]]
    for name in STRATEGY_NAMES:
        if name == "margin":
            continue
        answer = client.put("/projects/1/settings", json={"strategy": name}).json
        assert answer["retrain"]["job_id"]  # the queue follows the new strategy without waiting for labels
        ranked = wait_for(lambda: (q := queue(client)) and q["strategy"] == name and q, timeout=120)
        order = [t["task"] for t in ranked["tasks"]]
        assert sorted(order) == sorted(margin_order) and order != margin_order, name
        assert order[:20] != margin_order[:20], name
        if name in strategy.COMMITTEE_STRATEGIES:
            model = runtime.cache.get(1).bundle.controls["sentiment"]
            assert len(model.members) >= 2 and ranked["version"] == runtime.cache.get(1).version
            assert "committee disagreement" in ranked["reason"]
    history = client.get("/projects/1/models").json["history"]
    assert [r["committee"] for r in history if r["committee"]]  # members were trained, recorded per version


def test_a_committee_strategy_without_members_says_it_ranks_by_margin(tweets):
    from backend.families import ModelBundle
    from backend.families.estimator import ControlModel
    from backend.labelconfig import parse_label_config
    from backend.policy import Policy
    from backend.ranking import rank

    config = parse_label_config(LABEL_CONFIG)
    labels = ("positive", "negative", "neutral")
    targets = [[x] for x in tweets.labels[:300]]
    plain = ControlModel.fit(tweets.texts[:300], targets, labels, False)
    tasks = [{"id": 10_000 + i, "data": {"text": tweets.texts[1000 + i]}} for i in range(300)]
    lacking = rank(tasks, config, Policy(strategy="vote_entropy"), ModelBundle({"sentiment": plain}), "v", True)
    assert lacking.strategy == "margin" and "needs committee members" in lacking.reason
    assert lacking.entries == rank(tasks, config, Policy(), ModelBundle({"sentiment": plain}), "v", True).entries

    from backend.families.hashing import hash_texts

    voted = ControlModel.fit(tweets.texts[:300], targets, labels, False).with_committee(targets, hash_texts(tweets.texts[:300]))
    assert len(voted.members) == 3 and all(set(m.columns) == set(voted.columns) for m in voted.members)
    ranked = rank(tasks, config, Policy(strategy="vote_entropy"), ModelBundle({"sentiment": voted}), "v", True)
    assert ranked.strategy == "vote_entropy" and [e.task for e in ranked.entries] != [e.task for e in lacking.entries]


def test_class_balance_gives_the_starved_label_places_in_the_first_batches(tweets):
    from backend.families import ModelBundle
    from backend.families.estimator import ControlModel
    from backend.labelconfig import parse_label_config
    from backend.policy import Policy
    from backend.ranking import BALANCED_BATCHES, rank

    config = parse_label_config(LABEL_CONFIG)
    labels = ("positive", "negative", "neutral")
    rare = [i for i in range(3000) if tweets.labels[i] == "positive"][:8]
    chosen = [i for i in range(3000) if tweets.labels[i] != "positive"][:192] + rare
    model = ControlModel.fit([tweets.texts[i] for i in chosen], [[tweets.labels[i]] for i in chosen], labels, False)
    bundle = ModelBundle({"sentiment": model})
    tasks = [{"id": 10_000 + i, "data": {"text": tweets.texts[3000 + i]}} for i in range(2000)]
    counts = {"sentiment": {label: sum(tweets.labels[i] == label for i in chosen) for label in labels}}
    likely = model.predict_proba([t["data"]["text"] for t in tasks])[:, list(model.labels).index("positive")]
    head = 20 * BALANCED_BATCHES

    def positives(queue):
        return float(np.mean([likely[e.task - 10_000] for e in queue.entries[:head]]))

    off = rank(tasks, config, Policy(), bundle, "v", True, counts=counts, labeled=200)
    uniform = rank(tasks, config, Policy(class_balance="uniform"), bundle, "v", True, counts=counts, labeled=200)
    assert "class-aware" not in off.reason and "class-aware batches" in uniform.reason
    assert positives(off) < positives(uniform)
    assert off.entries == rank(tasks, config, Policy(class_balance="uniform"), bundle, "v", True).entries  # no counts: no balance
    cold = rank(tasks, config, Policy(class_balance="uniform", cold_start_per_class=20), bundle, "v", False, counts=counts, labeled=200)
    assert positives(cold) > positives(rank(tasks, config, Policy(cold_start_per_class=20), bundle, "v", False, counts=counts, labeled=200))


def test_labeling_rules_fill_cold_start_batches_with_tasks_they_give_each_label(tweets):
    from backend.labelconfig import parse_label_config
    from backend.policy import Policy
    from backend.ranking import rank

    config = parse_label_config(LABEL_CONFIG)
    marks = ["", "", "", " zzgood", " zzbad", "", "", "", "", ""]  # a tenth of the tasks per rule
    texts = [tweets.texts[i] + marks[i % 10] for i in range(400)]
    tasks = [{"id": i + 1, "data": {"text": t}} for i, t in enumerate(texts)]
    rules = ({"label": "positive", "keyword": "zzgood"}, {"label": "negative", "keyword": "zzbad"})

    def first_batch(queue):
        return [marks[(e.task - 1) % 10] for e in queue.entries[:20]]

    ruled = rank(tasks, config, Policy(rules=rules), None, "untrained", False, counts={}, labeled=0)
    assert first_batch(ruled).count(" zzgood") >= 5 and first_batch(ruled).count(" zzbad") >= 5
    assert "labeling rules" in ruled.reason
    plain = rank(tasks, config, Policy(), None, "untrained", False, counts={}, labeled=0)
    assert "labeling rules" not in plain.reason and first_batch(plain).count(" zzgood") < 5


def test_span_projects_start_by_diversity_then_rank_by_the_crf_margin(client, runtime):
    data = load_wnut()
    config = ner_config(data.labels)
    client.post("/setup", json={"project": 7, "schema": config})
    client.put("/projects/7/settings", json={"retrain_threshold": 100_000})
    pool = [{"id": 10_000 + i, "data": {"text": data.texts[i]}} for i in range(1500, 1900)]
    client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 7, "label_config": config}, "tasks": pool})
    cold = wait_for(lambda: (q := client.get("/queue?project=7&limit=1000").json) and q["tasks"] and q, timeout=120)
    assert cold["strategy"] == "diversity" and len({t["cluster"] for t in cold["tasks"][:20]}) >= 10

    labeled = range(200)  # the cold-start rule waits for 50 labeled tasks, not for 5 spans of every type
    assert min(Counter(label for i in labeled for _, _, label in data.spans[i]).values()) < 5
    for i in labeled:
        client.post("/webhook", json=span_event(i + 1, i + 1, data.texts[i], data.spans[i], config=config, project=7))
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 7}})
    warm = wait_for(lambda: (q := client.get("/queue?project=7&limit=1000").json) and q["strategy"] == "margin" and q, timeout=120)
    served = runtime.cache.get(7)
    assert warm["version"] == served.version and served.bundle.family_of("ner") == "crf-spans"
    tasks = warm["tasks"]
    texts = [data.texts[t["task"] - 10_000] for t in tasks]
    control = parse_label_config(config).controls[0]
    expected = CrfSpans().uncertainty(served.bundle.controls["ner"], control, texts, "margin")
    assert np.allclose([t["uncertainty"] for t in tasks], expected, atol=1e-5)
    after_batch = [t["uncertainty"] for t in tasks[20:]]
    assert after_batch == sorted(after_batch, reverse=True)
