"""Is a photo one of the known landmarks at all? Open-set confidence from the nearest training photos.

A classifier always names one of its classes; a photo of a cat, or of a landmark it was never shown,
gets "Taj Mahal" at 40 %. The signal that tells a known landmark from anything else is how close the
photo comes to the training photos of the class it was given (kNN out-of-distribution detection, Sun
et al. 2022), measured in the model's pooled backbone features (L2-normalised), not in the trained head
embedding: the head is trained only to separate the known classes, so it pulls unrelated photos towards
them. Two numbers per (photo, class): `sim`, the cosine similarity to the nearest training photo of the
class, and `margin`, how much nearer that class is than the nearest other class. A photo of another
landmark is often as near to one known class as a true photo is (all buildings look alike to an
ImageNet backbone), but it is rarely nearer to one class than to all the others.

Calibration needs no extra photos and no validation split. Every training photo is scored against the
others (leave-one-out): its own class gives a positive ("a known landmark, as a new photo of it looks").
Every class is then left out of the reference set in turn, and its photos, scored against the remaining
classes, play "a landmark I was never shown" (leave-one-class-out negatives). A two-feature logistic
regression on (sim, margin) turns both into one confidence in [0, 1]. The default threshold lets
`unknown_rate` of the leave-one-class-out photos through; `--recall R` instead keeps R of the known
photos. Measured (DEVELOPERS.md, "Open set"): the leave-one-class-out rate predicts the rate at which
photos of a truly unseen landmark set are tagged (india12 <-> wonders7 in both directions).
numpy only: the checkpoint layer converts to and from tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import numpy.typing as npt

from ..errors import LandmarkError
from .verify import CHECK_FROM_QUANTILE, References, at_most_per_class

OPENSET_VERSION = 2
# Of photos of landmarks the model was never shown, at most this share may get a tag (measured on
# leave-one-class-out photos at calibration); the trade against known photos lost is in DEVELOPERS.md.
DEFAULT_UNKNOWN_RATE = 0.05
# `--geotag` writes a position only above the threshold that lets this share of unknown-landmark photos
# through: a wrong position (another continent) is worse than none, so it asks far more than a tag does.
GEOTAG_UNKNOWN_RATE = 0.01
DEFAULT_RECALL = 0.95  # the fraction of known photos `--recall` defaults to where a value is needed (reports)
# Photos less like any known landmark than all but this share of never-shown-landmark photos are "not a landmark"
# where groups of unknown photos are formed (curation/grouping.py): measured, everyday photos had a median
# confidence of 0.002-0.019 and photos of other landmarks 0.127-0.183, this quantile 0.016-0.092.
LANDMARK_LIKE_QUANTILE = 0.05
# A bank larger than this per class is subsampled (seeded): the nearest neighbour of a class with
# thousands of photos changes little, and the bank travels inside every checkpoint.
MAX_BANK_PER_CLASS = 400
# With fewer classes, leaving one out leaves no "other class" to measure a margin against.
MIN_CLASSES_FOR_MARGIN = 3
# Power normalisation (square root, then unit length again; Perronnin et al. 2010): a few large feature
# channels that all outdoor buildings share stop dominating the cosine. Measured on lite0 features at
# 5 % leave-one-class-out: known landmark photos kept 0.62 -> 0.75 (india12), 0.81 -> 0.87 (wonders7) at
# the same or fewer tags on the other set's landmarks; centring the features instead made the
# leave-one-class-out rate stop predicting the other set's (DEVELOPERS.md, "Open set").
POWER = 0.5

Array = npt.NDArray[np.float32]


def check_recall(recall: float | None) -> float | None:
    """A --recall value: a fraction of true landmark photos to keep, in (0, 1]; None means the model's own."""
    if recall is not None and not 0.0 < recall <= 1.0:
        raise LandmarkError(f"--recall {recall}: use a fraction of landmark photos to keep, in (0, 1] "
                            "(leave it out for the model's own threshold)")
    return recall


@dataclass(frozen=True)
class OpenSet:
    """What a checkpoint needs to say "not one of my landmarks": training features and the calibration."""

    bank: Array  # (N, D) L2-normalised pooled backbone features of training photos
    labels: npt.NDArray[np.int64]  # (N,) class index of each bank row
    weights: tuple[float, float]  # confidence = sigmoid(w_sim * sim + w_margin * margin + intercept)
    intercept: float
    threshold: float  # confidence below this: unknown
    unknown_rate: float  # share of leave-one-class-out photos the threshold lets through
    validation: Array  # sorted confidences of known photos (leave-one-out): --recall reads its quantiles
    unknowns: Array  # sorted confidences of leave-one-class-out photos
    power: float = POWER  # features are raised to this power (elementwise) and L2-normalised again
    references: References | None = None  # local features of training photos (verify.py); None: no second test

    def prepare(self, emb: npt.ArrayLike) -> Array:
        """Backbone features as the bank holds them: power-normalised, unit length."""
        return _power_normalise(_as_matrix(emb, self.bank.shape[1]), self.power)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def class_similarity(self, emb: Array, num_classes: int | None = None) -> Array:
        """(B, C) cosine similarity of each embedding to the nearest bank photo of every class (-1: none)."""
        return _class_max(self.prepare(emb) @ self.bank.T, self.labels, num_classes or self.num_classes)

    def similarity(self, emb: Array, classes: npt.NDArray[np.int64]) -> Array:
        """Cosine similarity of each embedding to the nearest bank photo of the matching class.

        `classes` is (B,) or (B, K): one or several candidate classes per photo.
        """
        classes = np.asarray(classes)
        sims = self.class_similarity(emb, max(self.num_classes, int(classes.max(initial=0)) + 1))
        flat = classes.reshape(len(sims), -1)
        return np.take_along_axis(sims, flat, 1).reshape(classes.shape)

    def confidence(self, emb: Array, classes: npt.NDArray[np.int64]) -> Array:
        """Confidence in [0, 1] that each photo shows the given class at all; classes (B,) or (B, K)."""
        classes = np.asarray(classes)
        sims = self.class_similarity(emb, max(self.num_classes, int(classes.max(initial=0)) + 1))
        flat = classes.reshape(len(sims), -1)
        return self._from_sims(sims, flat).reshape(classes.shape)

    def _from_sims(self, sims: Array, classes: npt.NDArray[np.int64]) -> Array:
        own = np.take_along_axis(sims, classes, 1)
        margin = own - _best_other(sims, classes)
        return _sigmoid(self.weights[0] * own + self.weights[1] * margin + self.intercept)

    def verified(self, inliers: int | None) -> bool:
        """Whether a photo's geometric check (verify.py) shows it is the same place as a training photo."""
        return self.references is not None and inliers is not None and inliers >= self.references.min_inliers

    def check_window(self) -> tuple[float, float]:
        """The confidences whose photos get the geometric check: below the threshold, not hopelessly far."""
        lower = float(np.quantile(self.unknowns, CHECK_FROM_QUANTILE)) if len(self.unknowns) else 0.0
        return min(lower, self.threshold), self.threshold

    def landmark_floor(self) -> float:
        """The confidence below which a photo looks like no landmark at all (LANDMARK_LIKE_QUANTILE)."""
        return float(np.quantile(self.unknowns, LANDMARK_LIKE_QUANTILE)) if len(self.unknowns) else 0.0

    def threshold_for(self, recall: float | None) -> float:
        """The confidence that keeps `recall` of known photos (the calibrated threshold when None)."""
        if recall is None:
            return self.threshold
        if not 0.0 < recall <= 1.0:
            raise ValueError(f"recall {recall}: use a fraction in (0, 1]")
        return float(np.quantile(self.validation, 1.0 - recall, method="lower")) if len(self.validation) else 0.0

    def geotag_threshold(self, tag_threshold: float) -> float:
        """The confidence a photo's landmark needs before its place is written: at least the tag threshold and
        the one that lets GEOTAG_UNKNOWN_RATE of unknown-landmark photos through (halfway to 1 without those)."""
        if len(self.unknowns):
            strict = float(np.quantile(self.unknowns, 1.0 - GEOTAG_UNKNOWN_RATE, method="higher")) + 1e-6
        else:
            strict = (tag_threshold + 1.0) / 2
        return max(tag_threshold, min(strict, 1.0))

    def rates(self, threshold: float) -> dict[str, float]:
        """At a threshold: the share of known photos kept and of unknown-landmark photos tagged (calibration)."""
        keep = float((self.validation >= threshold).mean()) if len(self.validation) else 1.0
        unknown = float((self.unknowns >= threshold).mean()) if len(self.unknowns) else 0.0
        return {"known_kept": round(keep, 4), "unknown_tagged": round(unknown, 4)}

    def to_state(self) -> dict[str, Any]:
        """Plain arrays and numbers, for the checkpoint."""
        return {"version": OPENSET_VERSION, "bank": self.bank.astype(np.float16), "labels": self.labels,
                "weights": np.asarray(self.weights, np.float64), "intercept": self.intercept,
                "threshold": self.threshold, "unknown_rate": self.unknown_rate, "validation": self.validation,
                "unknowns": self.unknowns, "power": self.power,
                **({f"refs_{k}": v for k, v in self.references.to_state().items()} if self.references else {})}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "OpenSet":
        """Inverse of to_state (arrays may arrive as tensors' .numpy()); version 1 (similarity only) reads too."""
        version = int(state.get("version", 0))
        if version not in (1, OPENSET_VERSION):
            raise ValueError(f"open-set calibration version {version}, expected {OPENSET_VERSION}")
        if version == 1:
            weights, intercept = (float(state["slope"]), 0.0), float(state["intercept"])
            unknowns, rate, power = np.zeros(0, np.float32), float("nan"), 1.0
        else:
            w = np.asarray(state["weights"], np.float64)
            weights, intercept = (float(w[0]), float(w[1])), float(state["intercept"])
            unknowns, rate = np.asarray(state["unknowns"], np.float32), float(state["unknown_rate"])
            power = float(state["power"])
        bank = np.asarray(state["bank"], np.float32)
        refs = {k[len("refs_"):]: v for k, v in state.items() if k.startswith("refs_")}
        references = References.from_state(refs) if refs else None
        if references is not None and (references.feats.shape[1] != bank.shape[1]
                                       or references.labels.max(initial=0) > np.max(state["labels"], initial=0)
                                       or references.labels.min(initial=0) < 0):
            raise ValueError("verification references do not match the open-set bank")
        return cls(bank=bank, labels=np.asarray(state["labels"], np.int64),
                   weights=weights, intercept=intercept, threshold=float(state["threshold"]), unknown_rate=rate,
                   validation=np.sort(np.asarray(state["validation"], np.float32)), unknowns=np.sort(unknowns),
                   power=power, references=references)


def calibrate(emb: Array, labels: npt.ArrayLike, num_classes: int, *,
              unknown_rate: float = DEFAULT_UNKNOWN_RATE, seed: int = 0) -> OpenSet:
    """Fit the confidence on leave-one-out (known) and leave-one-class-out (unknown) photos; set the threshold.

    `emb` are the training photos' L2-normalised backbone features, all of them: no photo is held back.
    """
    if not 0.0 <= unknown_rate <= 1.0:
        raise ValueError(f"unknown rate {unknown_rate}: use a fraction in [0, 1]")
    bank, labels = _subsample(_power_normalise(_as_matrix(emb), POWER), np.asarray(labels, np.int64), seed)
    sims = bank @ bank.T
    np.fill_diagonal(sims, -1.0)  # leave-one-out: a photo is not its own neighbour
    per_class = _class_max(sims, labels, num_classes)
    own_cls = labels[:, None]
    pos = np.stack([np.take_along_axis(per_class, own_cls, 1)[:, 0],
                    (np.take_along_axis(per_class, own_cls, 1) - _best_other(per_class, own_cls))[:, 0]], 1)
    # Leave-one-class-out: the class's own column is gone; the photo's best remaining class is its guess.
    hidden = per_class.copy()
    hidden[np.arange(len(labels)), labels] = -1.0
    present = np.bincount(labels, minlength=num_classes) > 0
    hidden[:, ~present] = -1.0
    guess = hidden.argmax(1)[:, None]
    neg = np.stack([np.take_along_axis(hidden, guess, 1)[:, 0],
                    (np.take_along_axis(hidden, guess, 1) - _best_other(hidden, guess))[:, 0]], 1)
    neg = neg[np.take_along_axis(hidden, guess, 1)[:, 0] > -1.0]  # a class alone in the bank has no guess
    use_margin = int(present.sum()) >= MIN_CLASSES_FOR_MARGIN
    weights, intercept = _logistic(pos, neg, use_margin)
    probe = OpenSet(bank, labels, weights, intercept, 0.0, unknown_rate, np.zeros(0, np.float32),
                    np.zeros(0, np.float32))
    validation = np.sort(_score(probe, pos))
    unknowns = np.sort(_score(probe, neg))
    if len(unknowns):  # the lowest threshold that lets at most unknown_rate of them through
        threshold = float(np.quantile(unknowns, 1.0 - unknown_rate, method="higher")) + 1e-6
    else:  # one class: nothing plays "unknown"; keep the default share of its own photos
        threshold = float(np.quantile(validation, 1.0 - DEFAULT_RECALL, method="lower")) if len(validation) else 0.5
    return OpenSet(bank, labels, weights, intercept, min(threshold, 1.0), unknown_rate, validation, unknowns)


def _score(model: OpenSet, feats: np.ndarray) -> Array:
    return _sigmoid(model.weights[0] * feats[:, 0] + model.weights[1] * feats[:, 1] + model.intercept)


def _class_max(sims: np.ndarray, labels: npt.NDArray[np.int64], num_classes: int) -> Array:
    out = np.full((len(sims), num_classes), -1.0, np.float32)
    for c in np.unique(labels):
        out[:, c] = sims[:, labels == c].max(1)
    return out


def _best_other(sims: Array, classes: npt.NDArray[np.int64]) -> Array:
    """(B, K): for each candidate class, the highest similarity among the other classes (-1 when none)."""
    if sims.shape[1] < 2:
        return np.full(classes.shape, -1.0, np.float32)
    top2 = np.sort(sims, 1)[:, -2:]  # second best, best
    is_best = classes == sims.argmax(1)[:, None]
    return np.where(is_best, top2[:, :1], top2[:, 1:2]).astype(np.float32)


def _logistic(positives: np.ndarray, negatives: np.ndarray, use_margin: bool) -> tuple[tuple[float, float], float]:
    """A balanced logistic regression on (sim, margin), or on sim alone; a fixed ramp when one side is empty."""
    if len(positives) == 0 or len(negatives) == 0:
        return (10.0, 0.0), -5.0  # similarity 0.5 -> confidence 0.5
    from sklearn.linear_model import LogisticRegression

    cols = [0, 1] if use_margin else [0]
    x = np.concatenate([positives[:, cols], negatives[:, cols]])
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    fit = LogisticRegression(class_weight="balanced", C=10.0).fit(x, y)
    coef = fit.coef_[0]
    return (float(coef[0]), float(coef[1]) if use_margin else 0.0), float(fit.intercept_[0])


def _subsample(emb: Array, labels: npt.NDArray[np.int64], seed: int) -> tuple[Array, npt.NDArray[np.int64]]:
    rows = at_most_per_class(labels, MAX_BANK_PER_CLASS, seed)
    return emb[rows].astype(np.float32), labels[rows]


def _power_normalise(emb: Array, power: float) -> Array:
    if power == 1.0:
        return emb
    out = np.power(np.maximum(emb, 0.0), power)
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _as_matrix(emb: npt.ArrayLike, dim: int | None = None) -> Array:
    arr = np.asarray(emb, np.float32)
    if arr.ndim != 2 or (dim is not None and arr.shape[1] != dim):
        raise TypeError(f"embeddings must be (n, {dim or 'd'}) float32, got shape {arr.shape}")
    return arr


def _sigmoid(x: npt.ArrayLike) -> Array:
    return (1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))).astype(np.float32)
