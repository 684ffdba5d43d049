"""The built-in family: a linear model over hashed word and character n-grams per `Choices` control
(`estimator.ControlModel`), with committee members for the committee strategies and the pool
cache's precomputed counts for ranking large pools."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .. import faults
from .. import strategy as strategies
from ..labelconfig import ChoicesControl
from ..rules import RulePrior
from .base import DEFAULT_FAMILY, ChoicesFamily, Prediction, restrict
from .estimator import FORMAT, ControlModel
from .hashing import BLOCKS, hash_texts


class TextChoices(ChoicesFamily):
    name = DEFAULT_FAMILY

    def fit(
        self, control: ChoicesControl, texts: Sequence[str], targets: Sequence[Any], weights: np.ndarray | None = None, committee: int = 0
    ) -> ControlModel | None:
        """Features are computed even when the targets cannot support a model, so the train job's
        poison search finds texts that break them."""
        faults.poison(texts)
        features = hash_texts(texts)
        model = ControlModel.fit(None, targets, control.labels, control.multiple, features=features, weights=weights)
        return model.with_committee(targets, features, committee, weights=weights) if model is not None and committee else model

    def predict_proba(self, model: ControlModel, control: ChoicesControl, texts: Sequence[str], features: Any = None) -> np.ndarray:
        return self.label_proba(model, control, texts, features=features)

    def uncertainty(
        self, model: ControlModel, control: ChoicesControl, texts: Sequence[str], strategy: str, pool: Any = None
    ) -> np.ndarray:
        """`pool`: the pool cache's features of exactly these texts (scored without hashing them again)."""
        features = None if pool is not None else hash_texts(texts)
        if strategy in strategies.COMMITTEE_STRATEGIES:
            members = [self.label_proba(m, control, texts, pool, features) for m in model.members]
            return strategies.disagreement(members, strategy, control.multiple)
        return strategies.uncertainty(self.label_proba(model, control, texts, pool, features), strategy, control.multiple)

    def label_proba(
        self, model: ControlModel, control: ChoicesControl, texts: Sequence[str], pool: Any = None, features: Any = None
    ) -> np.ndarray:
        """`pool`: as for `uncertainty`; `features`: these texts' hashed counts, when the caller has them."""
        if pool is not None:
            raw = pool.predict_proba(model)
        else:
            raw = model.predict_proba(features=hash_texts(texts) if features is None else features)
        proba = restrict(raw, model.labels, control.labels, control.multiple)
        return model.prior.apply(proba, control, texts) if model.prior is not None else proba

    def with_prior(self, model: ControlModel, prior: RulePrior) -> ControlModel:
        return replace(model, prior=prior, members=[replace(member, prior=prior) for member in model.members])

    def committee(self, model: ControlModel) -> int:
        return len(model.members)

    def predict(self, model: ControlModel, control: ChoicesControl, texts: Sequence[str], threshold: float) -> list[Prediction]:
        features = hash_texts(texts)
        proba = self.predict_proba(model, control, texts, features)
        return self.predictions(control, proba, threshold, unseen_share(model, features).tolist())

    def dump(self, model: ControlModel) -> dict[str, Any]:
        return model.to_artifact()

    def load(self, data: dict[str, Any], layout: int = FORMAT) -> ControlModel:
        return ControlModel.from_artifact(data, layout)


def unseen_share(model: ControlModel, features: Any) -> np.ndarray:
    """Per row: the share of word n-grams whose hash bucket no training text had (idf at its maximum).
    Read off the CSR arrays as they are: a column slice of the word block would copy every row."""
    n = features.shape[0]
    if n == 0 or model.linear is None:
        return np.zeros(n)
    words = features.indices < BLOCKS[0].stop
    rows = np.repeat(np.arange(n), np.diff(features.indptr))[words]
    total = np.bincount(rows, minlength=n)
    unseen = np.bincount(rows, weights=~model.linear.seen_columns(features.indices[words]), minlength=n)
    return np.where(total > 0, unseen / np.maximum(total, 1), 0.0)
