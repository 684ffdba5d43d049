"""The annotation store, on fakeredis and on a real redis-server (same Lua scripts)."""

import fakeredis
import pytest
import redis

from backend.state.store import Annotation, Store, texts_of
from tests.conftest import labeled


@pytest.fixture(params=["fakeredis", "redis-server"])
def store(request):
    if request.param == "fakeredis":
        return Store(fakeredis.FakeRedis())
    client = redis.Redis.from_url(request.getfixturevalue("redis_server"))
    client.flushall()
    return Store(client)


def ann(id_, task, label, ts=1.0, data=None, author="1"):
    return Annotation(
        id=id_,
        task=task,
        updated_at=ts,
        labels={"sentiment": [label]} if label else {},
        author=author,
        data=data if data is not None else {"text": f"text {task}"},
    )


def test_duplicate_deliveries_are_idempotent(store):
    assert store.upsert(1, ann(1, 1, "positive")) == 1
    assert store.upsert(1, ann(1, 1, "positive")) == 0
    assert store.change_seq(1) == 1
    assert [t.labels for t in labeled(store, 1)] == [{"sentiment": ["positive"]}]


def test_an_older_update_never_wins(store):
    store.upsert(1, ann(1, 1, "positive", ts=10))
    assert store.upsert(1, ann(1, 1, "negative", ts=5)) == 0
    assert labeled(store, 1)[0].labels == {"sentiment": ["positive"]}
    assert store.upsert(1, ann(1, 1, "negative", ts=20)) == 2
    assert labeled(store, 1)[0].labels == {"sentiment": ["negative"]}


def test_deletions_remove_labels_and_beat_late_updates(store):
    store.upsert(1, ann(1, 1, "positive"))
    store.upsert(1, ann(2, 2, "negative"))
    assert store.delete(1, [1, 99]) == 3  # the new change sequence: one real removal; 99 was never seen
    assert [t.task for t in labeled(store, 1)] == [2]
    assert store.upsert(1, ann(1, 1, "neutral", ts=100)) == 0  # the tombstone wins
    assert store.delete(1, [12345]) == 0
    assert [t.task for t in labeled(store, 1)] == [2]


def test_deleted_tasks_lose_texts_at_once_and_annotations_at_the_purge(store):
    for i, task in enumerate((1, 1, 2, 3), start=1):
        store.upsert(1, ann(i, task, "positive", author=str(i)))
    store.remember_tasks(1, {7: {"text": "unlabeled"}, 8: {"text": "kept"}})
    store.remember_predictions(1, "v1", {1: {"sentiment": ["positive"]}, 3: {"sentiment": ["negative"]}})
    seq = store.change_seq(1)
    store.delete_tasks(1, [1, 7])
    assert [t.task for t in labeled(store, 1)] == [2, 3]  # training leaves task 1 out from now on
    assert store.annotated(1, [1, 2, 3]) == {2, 3} and store.pool(1) == {8: {"text": "kept"}}
    assert not store.redis.hexists("lsb:1:predicted", 1) and store.redis.hexists("lsb:1:predicted", 3)
    assert store.deleted_tasks(1) == {1, 7}
    store.remember_tasks(1, {7: {"text": "unlabeled"}})  # a listing that ran before the webhook puts it back
    store.purge_deleted_tasks(1, {1, 7})
    assert store.annotation_ids(1) == {3, 4} and store.change_seq(1) == seq + 2  # two labels gone: a change
    assert store.pool(1) == {8: {"text": "kept"}} and store.deleted_tasks(1) == set()
    assert store.upsert(1, ann(1, 1, "neutral", ts=100)) == 0


def test_skips_are_not_labels_and_a_skip_after_a_label_removes_it(store):
    assert store.upsert(1, ann(1, 1, None)) == 0
    assert labeled(store, 1) == []
    store.upsert(1, ann(2, 2, "positive", ts=1))
    assert store.upsert(1, ann(2, 2, None, ts=2)) > 0
    assert labeled(store, 1) == []


def test_every_vote_is_kept_with_its_annotator_and_projects_are_separate(store):
    store.upsert(1, ann(1, 7, "positive", ts=1, author="1"))
    store.upsert(1, ann(2, 7, "negative", ts=2, author="2"))
    (stored,) = store.task_votes(1)
    assert [(v.annotation, v.author, v.labels) for v in stored.votes] == [
        (1, "1", {"sentiment": ["positive"]}),
        (2, "2", {"sentiment": ["negative"]}),
    ]
    (task,) = labeled(store, 1, "latest")
    assert task.labels == {"sentiment": ["negative"]} and task.annotations == {"sentiment": 2}
    assert task.data == {"text": "text 7"}
    assert labeled(store, 1) == []  # the default, majority: one vote each, a tie
    assert labeled(store, 2) == []


def test_a_new_ground_truth_mark_or_annotator_counts_as_a_change(store):
    assert store.upsert(1, ann(1, 7, "positive", author="1")) == 1
    assert store.upsert(1, ann(1, 7, "positive", ts=2, author="1")) == 0  # nothing consensus reads changed
    marked = Annotation(id=1, task=7, updated_at=3, labels={"sentiment": ["positive"]}, author="1", ground_truth=True)
    assert store.upsert(1, marked) == 2
    assert store.task_votes(1)[0].votes[0].ground_truth


def test_odd_text_survives_the_round_trip(store):
    store.upsert(1, ann(1, 1, "positive", data={"text": "lone \ud800 surrogate and ünïcode 😀"}))
    assert labeled(store, 1)[0].data["text"] == "lone \ud800 surrogate and ünïcode 😀"


def test_meta_and_pool(store):
    store.set_meta(3, label_config="<View/>", access_token="t", hostname=None)
    assert store.meta(3) == {"label_config": "<View/>", "access_token": "t"}
    assert 3 in store.projects()
    store.remember_tasks(3, {5: {"text": "a"}, 6: {"text": "b"}})
    store.forget_tasks(3, [5])
    assert store.pool(3) == {6: {"text": "b"}}


def test_texts_of_keeps_only_what_the_config_reads():
    task = {"data": {"text": "x" * 50, "other": "y", "n": 5, "flag": True, "nested": {"a": 1}}}
    assert texts_of(task, ("text",), 10) == {"text": "x" * 10}
    assert texts_of(task, None, 100) == {"text": "x" * 50, "other": "y", "n": "5"}
    assert texts_of({"data": "nope"}, None, 10) == {}


def test_quarantine_and_the_lost_labels_signal(store):
    store.quarantine(1, {7: "abc", 9: "def"})
    assert store.quarantined(1) == {7: "abc", 9: "def"} and store.quarantined(2) == {}
    assert store.raise_change_seq(1, 40) and store.change_seq(1) == 40  # Redis had lost labels
    assert not store.raise_change_seq(1, 40) and not store.raise_change_seq(1, 10)
