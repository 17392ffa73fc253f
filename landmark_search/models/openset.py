"""Is a photo one of the known landmarks at all? Open-set confidence from the nearest training photos.

A classifier always names one of its classes; a photo of a cat gets "Taj Mahal" at 40 %. The
signal that tells a known landmark from anything else is how close the photo comes to the training
photos of the class it was given (kNN out-of-distribution detection, Sun et al. 2022), measured in
the model's pooled backbone features (L2-normalised), not in the trained 256-d head embedding: the
head is trained only to separate the known classes, so it pulls unrelated photos towards them.
Measured on wonders7 + 300 everyday photos (DEVELOPERS.md, "Open-set scores"): false tags at 95 %
recall 0.000 (backbone kNN) vs 0.007 (head kNN), 0.020 (softmax), 0.030 (max-logit), 0.063 (energy).

Calibration needs no extra photos: at the end of `landmark train`, validation photos give positives
(their similarity to their own class) and negatives (their similarity to every other class: "not
this landmark"); a one-feature logistic regression turns the similarity into a confidence in
[0, 1], and the threshold is the confidence that keeps `recall_target` of the validation photos.
numpy only: the checkpoint layer converts to and from tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import numpy.typing as npt

from ..errors import LandmarkError

OPENSET_VERSION = 1
DEFAULT_RECALL = 0.95  # of true landmark photos kept, measured on the validation split
# A bank larger than this per class is subsampled (seeded): the nearest neighbour of a class with
# thousands of photos changes little, and the bank travels inside every checkpoint.
MAX_BANK_PER_CLASS = 400
MIN_VALIDATION = 5  # fewer validation photos than this: the threshold comes from leave-one-out on train

Array = npt.NDArray[np.float32]


def check_recall(recall: float | None) -> float | None:
    """A --recall value: a fraction of true landmark photos to keep, in (0, 1]; None means the model's own."""
    if recall is not None and not 0.0 < recall <= 1.0:
        raise LandmarkError(f"--recall {recall}: use a fraction of landmark photos to keep, in (0, 1] "
                            f"(default {DEFAULT_RECALL})")
    return recall


@dataclass(frozen=True)
class OpenSet:
    """What a checkpoint needs to say "not a landmark": training embeddings and the calibration."""

    bank: Array  # (N, D) L2-normalised pooled backbone features of training photos
    labels: npt.NDArray[np.int64]  # (N,) class index of each bank row
    slope: float  # confidence = sigmoid(slope * similarity + intercept)
    intercept: float
    threshold: float  # confidence below this: unknown
    recall_target: float
    validation: Array  # sorted confidences of the validation photos' true class (for other targets)

    def similarity(self, emb: Array, classes: npt.NDArray[np.int64]) -> Array:
        """Cosine similarity of each embedding to the nearest bank photo of the matching class.

        `classes` is (B,) or (B, K): one or several candidate classes per photo.
        """
        emb = _as_matrix(emb, self.bank.shape[1])
        sims = emb @ self.bank.T  # (B, N)
        classes = np.asarray(classes)
        flat = classes.reshape(len(emb), -1)
        out = np.full(flat.shape, -1.0, np.float32)
        for c in np.unique(flat):
            cols = self.labels == c
            if cols.any():
                best = sims[:, cols].max(1)
                out = np.where(flat == c, best[:, None], out)
        return out.reshape(classes.shape)

    def confidence(self, emb: Array, classes: npt.NDArray[np.int64]) -> Array:
        """Confidence in [0, 1] that each photo shows the given class at all."""
        return _sigmoid(self.slope * self.similarity(emb, classes) + self.intercept)

    def threshold_for(self, recall: float | None) -> float:
        """The confidence that keeps `recall` of true landmark photos (the calibrated one when None)."""
        if recall is None or recall == self.recall_target:
            return self.threshold
        if not 0.0 < recall <= 1.0:
            raise ValueError(f"recall {recall}: use a fraction in (0, 1]")
        return float(np.quantile(self.validation, 1.0 - recall, method="lower")) if len(self.validation) else 0.0

    def to_state(self) -> dict[str, Any]:
        """Plain arrays and numbers, for the checkpoint."""
        return {"version": OPENSET_VERSION, "bank": self.bank.astype(np.float16), "labels": self.labels,
                "slope": self.slope, "intercept": self.intercept, "threshold": self.threshold,
                "recall_target": self.recall_target, "validation": self.validation}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "OpenSet":
        """Inverse of to_state (arrays may arrive as tensors' .numpy())."""
        if int(state.get("version", 0)) != OPENSET_VERSION:
            raise ValueError(f"open-set calibration version {state.get('version')}, expected {OPENSET_VERSION}")
        return cls(bank=np.asarray(state["bank"], np.float32), labels=np.asarray(state["labels"], np.int64),
                   slope=float(state["slope"]), intercept=float(state["intercept"]),
                   threshold=float(state["threshold"]), recall_target=float(state["recall_target"]),
                   validation=np.sort(np.asarray(state["validation"], np.float32)))


def calibrate(train_emb: Array, train_labels: npt.ArrayLike, valid_emb: Array, valid_labels: npt.ArrayLike,
              num_classes: int, recall_target: float = DEFAULT_RECALL, seed: int = 0) -> OpenSet:
    """Fit the confidence and its threshold; validation photos are held out from the bank.

    With fewer than MIN_VALIDATION validation photos, each training photo is scored against the
    others instead (leave-one-out), which is optimistic but never empty.
    """
    if not 0.0 < recall_target <= 1.0:
        raise ValueError(f"recall target {recall_target}: use a fraction in (0, 1]")
    train_emb = _as_matrix(train_emb)
    train_labels = np.asarray(train_labels, np.int64)
    valid_emb = _as_matrix(valid_emb, train_emb.shape[1])
    valid_labels = np.asarray(valid_labels, np.int64)
    bank, labels = _subsample(train_emb, train_labels, seed)
    probe = OpenSet(bank, labels, 1.0, 0.0, 0.0, recall_target, np.zeros(0, np.float32))
    if len(valid_emb) >= MIN_VALIDATION:
        all_classes = np.broadcast_to(np.arange(num_classes), (len(valid_emb), num_classes))
        sims = probe.similarity(valid_emb, all_classes)
        true = valid_labels
    else:  # leave-one-out: the photo itself is masked from its own row
        sims = _leave_one_out(train_emb, train_labels, num_classes)
        true = train_labels
    own = sims[np.arange(len(true)), true]
    others = np.delete(sims, true + num_classes * np.arange(len(true))).reshape(-1)
    others = others[others > -1.0]  # classes with no bank photo
    slope, intercept = _logistic(own, others)
    validation = np.sort(_sigmoid(slope * own + intercept).astype(np.float32))
    threshold = float(np.quantile(validation, 1.0 - recall_target, method="lower")) if len(validation) else 0.5
    return OpenSet(bank, labels, slope, intercept, threshold, recall_target, validation)


def _leave_one_out(emb: Array, labels: npt.NDArray[np.int64], num_classes: int) -> Array:
    sims = emb @ emb.T
    np.fill_diagonal(sims, -1.0)
    out = np.full((len(emb), num_classes), -1.0, np.float32)
    for c in range(num_classes):
        cols = labels == c
        if cols.any():
            out[:, c] = sims[:, cols].max(1)
    return out


def _logistic(positives: Array, negatives: Array) -> tuple[float, float]:
    """A balanced one-feature logistic regression (scikit-learn); a fixed ramp when one side is empty."""
    if len(positives) == 0 or len(negatives) == 0:
        return 10.0, -5.0  # similarity 0.5 -> confidence 0.5
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([positives, negatives]).reshape(-1, 1)
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    fit = LogisticRegression(class_weight="balanced", C=10.0).fit(x, y)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def _subsample(emb: Array, labels: npt.NDArray[np.int64], seed: int) -> tuple[Array, npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        keep.append(rows if len(rows) <= MAX_BANK_PER_CLASS else np.sort(rng.choice(rows, MAX_BANK_PER_CLASS,
                                                                                    replace=False)))
    rows = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    return emb[rows].astype(np.float32), labels[rows]


def _as_matrix(emb: npt.ArrayLike, dim: int | None = None) -> Array:
    arr = np.asarray(emb, np.float32)
    if arr.ndim != 2 or (dim is not None and arr.shape[1] != dim):
        raise TypeError(f"embeddings must be (n, {dim or 'd'}) float32, got shape {arr.shape}")
    return arr


def _sigmoid(x: npt.ArrayLike) -> Array:
    return (1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))).astype(np.float32)
