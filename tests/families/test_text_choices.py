"""The built-in family: hashed n-grams and a linear model per Choices control."""

import numpy as np

from backend.families.hashing import hash_texts
from backend.families.text_choices import TextChoices, unseen_share
from backend.labelconfig import parse_label_config
from tests.conftest import LABEL_CONFIG

CONTROL = parse_label_config(LABEL_CONFIG).controls[0]


def test_unseen_share_counts_word_ngrams_no_training_text_had(tweets):
    model = TextChoices().fit(CONTROL, tweets.texts[:300], [[y] for y in tweets.labels[:300]])
    seen = unseen_share(model, hash_texts([tweets.texts[0]]))[0]
    nonsense = "zyxqv plorkish wubbalubba frobnicated quuxle gribbet snorfle vazzik trundlewump blarfen xoqqa mimsyborogove"
    novel = unseen_share(model, hash_texts([nonsense]))[0]
    empty = unseen_share(model, hash_texts([""]))[0]
    assert seen == 0.0 and novel > 0.8 and empty == 0.0
    assert TextChoices().predict(model, CONTROL, [nonsense], 0.5)[0].novelty == novel


def test_weights_change_the_fit_and_a_committee_is_kept_in_the_dump(tweets):
    family = TextChoices()
    texts, targets = tweets.texts[:300], [[y] for y in tweets.labels[:300]]
    plain = family.fit(CONTROL, texts, targets)
    weights = np.where(np.array(tweets.labels[:300]) == "neutral", 5.0, 1.0)
    weighed = family.fit(CONTROL, texts, targets, weights)
    neutral = CONTROL.labels.index("neutral")
    probe = tweets.texts[1000:1200]
    assert family.predict_proba(weighed, CONTROL, probe)[:, neutral].mean() > family.predict_proba(plain, CONTROL, probe)[:, neutral].mean()
    voted = family.fit(CONTROL, texts, targets, committee=3)
    assert family.committee(voted) == 3 and family.committee(family.load(family.dump(voted))) == 3
    assert family.uncertainty(voted, CONTROL, probe, "vote_entropy").shape == (200,)
