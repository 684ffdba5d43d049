"""Text classifiers for one Choices control, in scikit-learn's `fit` / `predict_proba` shape.

A fitted model is kept, served and stored as a `SparseLinear`: the weights of the hashed columns
some training text had (every other column has coefficient exactly 0 and the largest idf), which
predicts what the fitted scikit-learn classifier does, bit for bit, without importing scikit-learn.
Artifacts hold only arrays, lists, dicts and strings, so `skops.io` loads them with no trusted
types beyond its safe defaults (and `registry` reads them without importing skops or scikit-learn).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from ..rules import RulePrior
from . import hashing
from .hashing import BLOCKS, N_FEATURES, hash_texts

MIN_CLASSES = 2
FORMAT = 3  # artifact layout: 3 = `SparseLinear` weights over `hash_texts` features
LEGACY_FORMAT = 2  # TF-IDF weightings + a scikit-learn classifier (still loaded, converted on load)
ALPHA = 1e-5  # SGD's regularisation once there are many labels (from 20,000 on, with PRIOR)
PRIOR = 0.2  # the weight of a fixed prior over the summed loss: alpha = PRIOR / examples, within bounds
MAX_ALPHA = 1e-4  # the best fixed alpha of 1e-5..1e-4 below 2,000 tweets
MULTICLASS, MULTILABEL = "multiclass", "multilabel"  # how decision values become probabilities
COMMITTEE_SIZE = 3  # members fitted for the committee strategies (`strategy.COMMITTEE_STRATEGIES`)


def alpha_for(examples: int, prior: float = PRIOR, floor: float = ALPHA) -> float:
    """SGD's alpha for a model fitted on `examples` texts. SGD minimises the mean loss plus alpha
    times the penalty, so a prior of fixed weight over the summed loss is alpha = prior / examples:
    strong while labels are few (at most MAX_ALPHA), fading as they grow (never below `floor`)."""
    return max(floor, min(MAX_ALPHA, prior / examples)) if prior and examples > 0 else floor


def build_classifier(multiple: bool = False, alpha: float = ALPHA) -> Any:
    """Logistic regression fitted by SGD (one-vs-rest for multi-label)."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.multiclass import OneVsRestClassifier

    classifier: Any = SGDClassifier(loss="log_loss", alpha=alpha, max_iter=100, tol=1e-4, random_state=0)
    return OneVsRestClassifier(classifier) if multiple else classifier


def fit_classifier(classifier: Any, features: Any, y: Any, weights: np.ndarray | None) -> Any:
    """`classifier.fit`, each example weighing `weights` (one-vs-rest passes them to every label's
    model through scikit-learn's metadata routing)."""
    if weights is None:
        return classifier.fit(features, y)
    from sklearn import config_context

    weights = np.asarray(weights, dtype=float)
    if hasattr(classifier, "estimator"):
        with config_context(enable_metadata_routing=True):
            classifier.estimator.set_fit_request(sample_weight=True)
            return classifier.fit(features, y, sample_weight=weights)
    return classifier.fit(features, y, sample_weight=weights)


def fit_weighting(features: sp.csr_matrix) -> np.ndarray:
    """Inverse document frequencies of every column of `hash_texts` features (scikit-learn's
    smoothed idf), fitted per block."""
    from sklearn.feature_extraction.text import TfidfTransformer

    return np.concatenate([TfidfTransformer(sublinear_tf=True).fit(features[:, block]).idf_ for block in BLOCKS]).astype(np.float32)


def weigh(idf: np.ndarray, features: sp.csr_matrix) -> sp.csr_matrix:
    """Sublinear TF-IDF with each block (words, characters) scaled to unit length, so both weigh
    the same. The same arithmetic as `TfidfTransformer` per block, without slicing columns.

    This model scores 0.771 accuracy on the full tweets pool (word 1-2-grams alone: 0.760; the
    official example's pipeline: 0.756) and fits it in about 4 s. Hashing keeps no vocabulary, so
    artifacts stay a few MB (a fitted TfidfVectorizer made 100 MB artifacts at 10k tweets).
    """
    features = sp.csr_matrix(features, dtype=np.float32)  # the counts are read, never changed
    return _weigh_entries(idf[features.indices], features)


def _weigh_entries(entry_idf: np.ndarray, features: sp.csr_matrix) -> sp.csr_matrix:
    """`weigh` given the idf of each stored entry of float32 `features`."""
    data = np.log(features.data)
    data += 1.0
    data *= entry_idf
    cell = np.repeat(np.arange(0, 2 * features.shape[0], 2), np.diff(features.indptr))  # (row, block)
    cell += features.indices >= BLOCKS[1].start
    norms = np.sqrt(np.bincount(cell, weights=data * data, minlength=2 * features.shape[0]))
    np.divide(data, norms[cell], out=data, casting="same_kind")
    weighed = sp.csr_matrix((data, features.indices, features.indptr), shape=features.shape)
    weighed.has_sorted_indices = features.has_sorted_indices
    return weighed


def _block_of(columns: np.ndarray) -> np.ndarray:
    """The `BLOCKS` index of each hashed column."""
    return np.searchsorted([block.stop for block in BLOCKS], columns, side="right")


@dataclass(frozen=True)
class SparseLinear:
    """A fitted logistic model (SGD log-loss, one-vs-rest for multi-label) over sublinear TF-IDF of
    `hash_texts` features, reduced to what predicts.

    SGD only ever moves the weight of a feature some training text had, so every other hashed
    column has coefficient exactly 0 and the block's largest idf (document frequency 0): storing
    `seen` columns only (about 100k of 524k at 2,000 tweets) keeps 2 instead of 8.4 MB per model
    and predicts the same values, computed in the same order and dtype as scikit-learn does.
    """

    seen: np.ndarray  # int32, sorted: the hashed columns some training text had
    idf: np.ndarray  # float32, the idf of each `seen` column
    unseen_idf: np.ndarray  # float32, one per block: the idf of a column no training text had
    coef: np.ndarray  # len(seen) x outputs, the classifier's dtype (float32), C-ordered
    intercept: np.ndarray  # outputs
    link: str  # MULTICLASS: normalised one-vs-all sigmoids (binary: [1 - p, p]); MULTILABEL: sigmoids
    _bits: np.ndarray = field(init=False, repr=False, compare=False)  # bit c: column c is seen (64 KB)
    _ranks: np.ndarray = field(init=False, repr=False, compare=False)  # seen columns before each 64-bit word
    _idf: np.ndarray = field(init=False, repr=False, compare=False)  # `idf`, then `unseen_idf`
    _coef: np.ndarray = field(init=False, repr=False, compare=False)  # `coef`, then a zero row per block

    def __post_init__(self) -> None:
        """A bitmap of `seen` with its running counts, so a column's position among `seen` takes two
        lookups and a popcount (7x faster than a binary search on 1,000 tweets, and 96 KB), and
        weights extended by the unseen columns of each block (`idf` and `coef` become views)."""
        flags = np.zeros(N_FEATURES, dtype=bool)
        flags[self.seen] = True
        bits = np.packbits(flags, bitorder="little").view("<u8")
        extended_idf = np.concatenate([self.idf, self.unseen_idf])
        extended_coef = np.zeros((len(self.seen) + len(BLOCKS), self.coef.shape[1]), dtype=self.coef.dtype)
        extended_coef[: len(self.seen)] = self.coef
        for name, value in (
            ("_bits", bits),
            ("_ranks", np.concatenate([[0], np.cumsum(np.bitwise_count(bits))[:-1]]).astype(np.int64)),
            ("_idf", extended_idf),
            ("idf", extended_idf[: len(self.seen)]),
            ("_coef", extended_coef),
            ("coef", extended_coef[: len(self.seen)]),
        ):
            object.__setattr__(self, name, value)

    def seen_columns(self, columns: np.ndarray) -> np.ndarray:
        """Whether some training text had each hashed column (else its idf is the block's largest)."""
        return ((self._bits[columns >> 6] >> (columns & 63).astype(np.uint64)) & np.uint64(1)).astype(bool)

    def positions(self, columns: np.ndarray) -> np.ndarray:
        """Each hashed column's row in the extended weights: its position in `seen`, else its block's
        unseen row after them."""
        word, bit = columns >> 6, (columns & 63).astype(np.uint64)
        bits = self._bits[word]
        known = ((bits >> bit) & np.uint64(1)).astype(bool)
        position = self._ranks[word] + np.bitwise_count(bits & ((np.uint64(1) << bit) - np.uint64(1)))
        return np.where(known, position, len(self.seen) + (columns >= BLOCKS[1].start))

    @classmethod
    def from_classifier(cls, idf: np.ndarray, classifier: Any, multiple: bool) -> SparseLinear:
        """The weights of a fitted `build_classifier` model and its `fit_weighting` idf."""
        estimators = list(getattr(classifier, "estimators_", [classifier]))
        coef = np.vstack([np.asarray(e.coef_) for e in estimators])
        intercept = np.concatenate([np.ravel(np.asarray(e.intercept_)) for e in estimators])
        idf = np.asarray(idf, dtype=np.float32)
        if coef.shape[1] != N_FEATURES or idf.shape != (N_FEATURES,):
            raise ValueError("classifier does not read hash_texts features")
        unseen_idf = np.array([idf[block].max(initial=0.0) for block in BLOCKS], dtype=np.float32)
        seen = np.flatnonzero((idf < unseen_idf[_block_of(np.arange(N_FEATURES))]) | (coef != 0).any(axis=0))
        return cls(
            seen.astype(np.int32),
            idf[seen],
            unseen_idf,
            np.ascontiguousarray(coef[:, seen].T),
            intercept,
            MULTILABEL if multiple else MULTICLASS,
        )

    def full_idf(self) -> np.ndarray:
        """The idf of every hashed column."""
        idf = np.repeat(self.unseen_idf, [block.stop - block.start for block in BLOCKS])
        idf[self.seen] = self.idf
        return idf

    def full_coef(self) -> np.ndarray:
        """Coefficients over every hashed column, outputs x `N_FEATURES` (scikit-learn's `coef_`)."""
        coef = np.zeros((self.coef.shape[1], N_FEATURES), dtype=self.coef.dtype, order="F")
        coef[:, self.seen] = self.coef.T
        return coef

    def predict_proba(self, features: sp.csr_matrix) -> np.ndarray:
        """Probabilities per output column (binary: the two classes), as the classifier gives them."""
        return self.probabilities(self.decision_function(features))

    def decision_function(self, features: sp.csr_matrix) -> np.ndarray:
        """Decision values (rows x outputs) of `hash_texts` counts, as the classifier gives them:
        computed by the compiled kernel where it is built (3-4x faster on 1,000 tweets), else numpy."""
        counts = sp.csr_matrix(features, dtype=np.float32)
        if hashing.compiled is not None and self._coef.dtype == np.float32:
            logs = np.log(np.arange(1, int(counts.data.max(initial=1)) + 1, dtype=np.float32))  # numpy's, to round alike
            raw = hashing.compiled.linear_scores(
                counts.indptr.astype(np.int64),
                counts.indices.astype(np.int32, copy=False),
                counts.data,
                self._bits,
                self._ranks,
                self._idf,
                self._coef,
                logs,
                counts.shape[0],
                len(self.seen),
                self._coef.shape[1],
                BLOCKS[1].start,
            )
            scores = np.frombuffer(raw, dtype=np.float32).reshape(counts.shape[0], self._coef.shape[1])
        else:
            extended = self.positions(counts.indices)
            weighed = _weigh_entries(self._idf[extended], counts)
            scores = sp.csr_matrix((weighed.data, extended, counts.indptr), shape=(counts.shape[0], len(self._coef))) @ self._coef
        return scores + self.intercept

    def probabilities(self, decision: np.ndarray) -> np.ndarray:
        """Decision values (rows x outputs) -> probabilities per output column (binary: the two
        classes), as the classifier gives them. Overwrites `decision`."""
        proba = expit(decision, out=decision)
        if self.link == MULTILABEL:
            return proba
        if proba.shape[1] == 1:
            return np.column_stack([1 - proba[:, 0], proba[:, 0]])
        total = proba.sum(axis=1)
        zero = total == 0
        proba[zero], total[zero] = 1, proba.shape[1]
        return proba / total.reshape(-1, 1)

    def to_artifact(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "idf": self.idf,
            "unseen_idf": self.unseen_idf,
            "coef": self.coef,
            "intercept": self.intercept,
            "link": self.link,
        }

    @classmethod
    def from_artifact(cls, data: dict[str, Any]) -> SparseLinear:
        """The weights of an artifact, after checking they fit together (ValueError otherwise)."""
        seen = np.asarray(data["seen"])
        idf, unseen_idf = np.asarray(data["idf"], dtype=np.float32), np.asarray(data["unseen_idf"], dtype=np.float32)
        coef, intercept = np.ascontiguousarray(data["coef"]), np.asarray(data["intercept"])
        link = str(data["link"])
        if (
            seen.dtype.kind not in "iu"
            or seen.ndim != 1
            or (seen.size and (seen[0] < 0 or seen[-1] >= N_FEATURES))
            or np.any(np.diff(seen) <= 0)
        ):
            raise ValueError("artifact columns are not sorted hashed columns")
        if (
            coef.dtype.kind != "f"
            or intercept.dtype.kind != "f"
            or coef.ndim != 2
            or coef.shape[0] != seen.size
            or intercept.shape != (coef.shape[1],)
            or idf.shape != seen.shape
            or unseen_idf.shape != (len(BLOCKS),)
        ):
            raise ValueError("artifact weights do not fit together")
        if link not in (MULTICLASS, MULTILABEL):
            raise ValueError("artifact has an unknown link")
        return cls(seen.astype(np.int32), idf, unseen_idf, coef, intercept, link)


@dataclass
class ControlModel:
    """A fitted model for one control, returning probabilities over `labels` in that order."""

    labels: list[str]
    multiple: bool
    linear: SparseLinear | None = None  # None: every label is constant
    columns: list[str] = field(default_factory=list)  # labels the classifier models, in its output order
    constant: dict[str, float] = field(default_factory=dict)  # multi-label: labels always on / off
    fitted: Any = field(default=None, repr=False)  # the scikit-learn classifier `fit` produced, if this process fitted it
    members: list[ControlModel] = field(default_factory=list)  # a committee (`with_committee`), each over `labels`
    prior: RulePrior | None = None  # labeling rules mixed into the probabilities (`TextChoices.label_proba`)

    @property
    def idf(self) -> np.ndarray:
        """The idf of every hashed column (a new array on every call)."""
        return self.linear.full_idf() if self.linear is not None else np.zeros(0, dtype=np.float32)

    @classmethod
    def fit(
        cls,
        texts: Sequence[str] | None,
        targets: Sequence[Sequence[str]],
        labels: Sequence[str],
        multiple: bool,
        alpha: float | None = None,
        features: Any = None,
        weights: np.ndarray | None = None,
    ) -> ControlModel | None:
        """Fit on texts (or their `hash_texts` features) and their label lists, with `alpha_for`
        their number unless `alpha` is given, each example weighing `weights` (None: 1); None when
        the data cannot support a model."""
        labels = list(labels)
        if multiple:
            matrix = np.array([[label in set(t) for label in labels] for t in targets], dtype=int)
            if len(targets) < MIN_CLASSES:
                return None
            varying = [i for i in range(len(labels)) if 0 < matrix[:, i].sum() < len(targets)]
            constant = {labels[i]: float(matrix[0, i]) for i in range(len(labels)) if i not in varying}
            if not varying:
                return None
            y: Any = matrix[:, varying]
            columns = [labels[i] for i in varying]
        else:
            y = [t[0] for t in targets]
            if len(set(y)) < MIN_CLASSES:
                return None
            constant, columns = {}, []
        features = features if features is not None else hash_texts(texts or [])
        idf = fit_weighting(features)
        alpha = alpha_for(len(targets)) if alpha is None else alpha
        classifier = fit_classifier(build_classifier(multiple, alpha), weigh(idf, features), y, weights)
        if not multiple:
            columns = [str(c) for c in classifier.classes_]
        return cls(labels, multiple, SparseLinear.from_classifier(idf, classifier, multiple), columns, constant, classifier)

    def with_committee(
        self, targets: Sequence[Sequence[str]], features: Any, size: int = COMMITTEE_SIZE, seed: int = 0, weights: np.ndarray | None = None
    ) -> ControlModel:
        """This model with `size` committee members, each fitted like it on a bootstrap resample of
        the same examples (`hash_texts` features and label lists). Single-choice resamples draw
        within each class, so every member knows every class the model knows; a resample that
        cannot support a model is drawn again (a few times at most)."""
        rng = np.random.default_rng(seed)
        n = len(targets)
        by_class: dict[str, np.ndarray] = {}
        if not self.multiple:
            first = np.array([t[0] for t in targets])
            by_class = {label: np.flatnonzero(first == label) for label in np.unique(first)}
        members: list[ControlModel] = []
        for _ in range(4 * size):
            if len(members) == size:
                break
            if by_class:
                rows = np.sort(np.concatenate([rng.choice(r, len(r), replace=True) for r in by_class.values()]))
            else:
                rows = np.sort(rng.choice(n, n, replace=True))
            member = ControlModel.fit(
                None,
                [targets[i] for i in rows],
                self.labels,
                self.multiple,
                alpha_for(n),
                features=features[rows],
                weights=None if weights is None else np.asarray(weights)[rows],
            )
            if member is not None:
                member.fitted = None  # only the weights are kept
                members.append(member)
        self.members = members
        return self

    def predict_proba(self, texts: Sequence[str] | None = None, features: Any = None) -> np.ndarray:
        """Probabilities, one row per text, one column per label in `labels` (0 for unseen labels)."""
        n = features.shape[0] if features is not None else len(texts or [])
        if self.linear is None or not n:
            return self.by_label(np.zeros((n, 0)))
        return self.by_label(self.linear.predict_proba(features if features is not None else hash_texts(texts or [])))

    def by_label(self, proba: np.ndarray) -> np.ndarray:
        """The classifier's output columns (`columns`, in order) placed under `labels`, with the
        constant labels filled in and 0 for labels never seen."""
        out = np.zeros((proba.shape[0], len(self.labels)), dtype=float)
        index = {label: i for i, label in enumerate(self.labels)}
        for label, values in zip(self.columns, proba.T):
            if label in index:
                out[:, index[label]] = values
        for label, value in self.constant.items():
            if label in index:
                out[:, index[label]] = value
        return out

    def to_artifact(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "multiple": self.multiple,
            "linear": self.linear.to_artifact() if self.linear is not None else None,
            "columns": list(self.columns),
            "constant": {k: float(v) for k, v in self.constant.items()},
            "members": [member.to_artifact() for member in self.members],
            "prior": self.prior.to_json() if self.prior is not None else None,
        }

    @classmethod
    def from_artifact(cls, data: dict[str, Any], layout: int = FORMAT) -> ControlModel:
        multiple = bool(data["multiple"])
        if layout == LEGACY_FORMAT:  # the classifier is converted, then dropped: it held every hashed column
            classifier = data["classifier"]
            linear = SparseLinear.from_classifier(data["idf"], classifier, multiple) if classifier is not None else None
        else:
            linear = SparseLinear.from_artifact(data["linear"]) if data["linear"] is not None else None
        columns = [str(x) for x in data["columns"]]
        if linear is not None and linear.coef.shape[1] != (1 if len(columns) == 2 and not multiple else len(columns)):
            raise ValueError("artifact weights do not match its labels")
        return cls(
            labels=[str(x) for x in data["labels"]],
            multiple=multiple,
            linear=linear,
            columns=columns,
            constant={str(k): float(v) for k, v in data["constant"].items()},
            members=[cls.from_artifact(member, layout) for member in data.get("members") or []],
            prior=RulePrior.from_json(data["prior"]) if data.get("prior") else None,
        )
