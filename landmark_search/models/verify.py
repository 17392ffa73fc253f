"""Does a photo show the same place as one of the training photos? Local features under one geometric model.

The open-set score (openset.py) compares whole-photo features, where every stone building resembles every
other: a true photo from an unusual angle, or with people in front, can score below the threshold. A second,
independent test rescues it: SIFT keypoints of the photo matched to those of the few training photos of its
predicted class nearest to it (Lowe's ratio test), and the matches that one affine transform explains
(RANSAC) counted. Dozens of such inliers happen between two photos of the same facade, almost never between
two different buildings (the classic verification step of landmark retrieval: Philbin et al. 2007).

Calibration, like openset.py's, needs no extra photos: every reference photo is matched against the nearest
references of the class its whole-photo features put it nearest to among the *other* classes (a confusable
landmark it is not), and the threshold is set above all but FALSE_MATCH_RATE of those counts, never below
MIN_INLIERS. Measured on india12 (lite0; DEVELOPERS.md, "Open set"): photos tagged right 0.753 -> 0.825 at no
more photos of another landmark set or of everyday scenes tagged (wonders7's missed photos are other views:
0.871 either way).

Only photos the open set leaves just below its threshold are checked (a match costs a second decode and
~50 ms), so a library of everyday photos pays almost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from ..config import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from PIL import Image

VERSION = 1
MAX_SIDE = 640  # pixels of the longer side the keypoints are found at
KEYPOINTS = 500  # the strongest per photo: 500 kept the measured gain of 1000 at half the checkpoint size
NEAREST = 5  # reference photos of the predicted class matched, nearest first by whole-photo features
RATIO = 0.8  # Lowe's ratio test
RANSAC_PIXELS = 10.0  # reprojection error of an inlier, at MAX_SIDE
MIN_INLIERS = 12  # never trust fewer: measured, 12 of 300 everyday photos reached 8-12 by chance
FALSE_MATCH_RATE = 0.01  # of calibration pairs of different landmarks, the share the threshold may pass
REFS_PER_CLASS = 30  # reference photos kept per class (seeded choice when there are more): the checkpoint size
# Photos are checked when their open-set confidence is below the threshold but at or above this quantile
# of the never-shown-landmark calibration confidences: below it, measured, no true photo was rescued, and
# 99 % of everyday photos fall there (they are never decoded twice).
CHECK_FROM_QUANTILE = 0.25


@dataclass(frozen=True)
class LocalFeatures:
    """SIFT keypoints of one photo: positions (n, 2) at MAX_SIDE and descriptors (n, 128) as SIFT's bytes."""

    xy: npt.NDArray[np.float32]
    desc: npt.NDArray[np.uint8]


def local_features(img: "Image.Image") -> LocalFeatures:
    """The photo's strongest KEYPOINTS SIFT keypoints, found on its grey image at MAX_SIDE."""
    import cv2
    from PIL import Image

    scale = MAX_SIDE / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    kp, desc = cv2.SIFT_create(nfeatures=KEYPOINTS).detectAndCompute(np.asarray(img.convert("L")), None)
    if desc is None:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))
    return LocalFeatures(np.array([k.pt for k in kp], np.float32).reshape(-1, 2),
                         np.clip(np.rint(desc), 0, 255).astype(np.uint8))


def photo_local_features(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> LocalFeatures | None:
    """local_features of a photo file, None when it does not decode (the caller has already reported it).
    `max_pixels` is the run's decoding limit, so a photo the run embedded is checked too."""
    import cv2

    from ..photos.images import BadImageError, load_image

    try:
        return local_features(load_image(path, min_side=MAX_SIDE, max_pixels=max_pixels))
    except (BadImageError, OSError, ValueError, cv2.error):
        return None


def inliers(a: LocalFeatures, b: LocalFeatures) -> int:
    """How many of a's ratio-test matches in b one affine transform explains (RANSAC; seeded); 0 for a pair
    OpenCV cannot match: such a photo is simply not verified, and the batch goes on."""
    import cv2

    if len(a.desc) < 3 or len(b.desc) < 3:
        return 0
    try:
        pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(_root_sift(a.desc), _root_sift(b.desc), k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
        if len(good) < 3:
            return 0
        src = a.xy[[m.queryIdx for m in good]]
        dst = b.xy[[m.trainIdx for m in good]]
        cv2.setRNGSeed(0)
        _, mask = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS)
    except cv2.error:
        return 0
    return int(mask.sum()) if mask is not None else 0


def _root_sift(desc: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, square root; L2 then compares like Hellinger."""
    d = desc.astype(np.float32)
    return np.sqrt(d / np.maximum(d.sum(1, keepdims=True), 1e-7))


@dataclass(frozen=True)
class References:
    """The training photos a photo is verified against: whole-photo features, classes and local features."""

    feats: npt.NDArray[np.float32]  # (R, D) as OpenSet.prepare gives them: the nearest ones are matched
    labels: npt.NDArray[np.int64]  # (R,)
    offsets: npt.NDArray[np.int64]  # (R + 1,): reference r's keypoints are rows offsets[r]:offsets[r + 1]
    xy: npt.NDArray[np.float32]
    desc: npt.NDArray[np.uint8]
    min_inliers: int

    def photo(self, r: int) -> LocalFeatures:
        lo, hi = int(self.offsets[r]), int(self.offsets[r + 1])
        return LocalFeatures(self.xy[lo:hi], self.desc[lo:hi])

    def best_inliers(self, query: LocalFeatures, feat: npt.NDArray[np.float32], cls: int,
                     skip: int | None = None) -> int:
        """The most inliers between the photo and the NEAREST references of class `cls` (`skip`: one left out)."""
        rows = np.flatnonzero(self.labels == cls)
        if skip is not None:
            rows = rows[rows != skip]
        nearest = rows[np.argsort(-(self.feats[rows] @ feat), kind="stable")[:NEAREST]]
        return max((inliers(query, self.photo(int(r))) for r in nearest), default=0)

    def to_state(self) -> dict[str, Any]:
        return {"version": VERSION, "feats": self.feats.astype(np.float16), "labels": self.labels,
                "offsets": self.offsets, "xy": self.xy.astype(np.float16), "desc": self.desc,
                "min_inliers": self.min_inliers}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "References":
        """Inverse of to_state; ValueError for anything that is not a consistent set of references."""
        if int(state.get("version", 0)) != VERSION:
            raise ValueError(f"verification references version {state.get('version')}, expected {VERSION}")
        refs = cls(feats=np.asarray(state["feats"], np.float32), labels=np.asarray(state["labels"], np.int64),
                   offsets=np.asarray(state["offsets"], np.int64), xy=np.asarray(state["xy"], np.float32),
                   desc=np.asarray(state["desc"], np.uint8), min_inliers=int(state["min_inliers"]))
        n = len(refs.labels)
        if (refs.feats.ndim != 2 or len(refs.feats) != n or refs.offsets.shape != (n + 1,) or refs.desc.ndim != 2
                or refs.desc.shape[1] != 128 or refs.xy.shape != (len(refs.desc), 2) or refs.offsets[0] != 0
                or refs.offsets[-1] != len(refs.desc) or np.any(np.diff(refs.offsets) < 0)
                or refs.min_inliers < MIN_INLIERS):
            raise ValueError("verification references are inconsistent")
        return refs


def _pack(feats: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], parts: Sequence[LocalFeatures],
          min_inliers: int) -> References:
    offsets = np.concatenate([[0], np.cumsum([len(p.desc) for p in parts])]).astype(np.int64)
    xy = np.concatenate([p.xy for p in parts]) if parts else np.zeros((0, 2), np.float32)
    desc = np.concatenate([p.desc for p in parts]) if parts else np.zeros((0, 128), np.uint8)
    return References(np.asarray(feats, np.float32).reshape(len(parts), -1), np.asarray(labels, np.int64),
                      offsets, xy.astype(np.float32), desc, min_inliers)


def choose_references(labels: Sequence[int], seed: int = 0) -> npt.NDArray[np.int64]:
    """Indices of the photos kept as references: all of a class up to REFS_PER_CLASS, else a seeded choice."""
    return at_most_per_class(labels, REFS_PER_CLASS, seed)


def at_most_per_class(labels: Sequence[int], cap: int, seed: int = 0) -> npt.NDArray[np.int64]:
    """Sorted indices keeping every row of a class up to `cap` rows, else a seeded choice of `cap`."""
    labels = np.asarray(labels, np.int64)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        keep.append(rows if len(rows) <= cap else np.sort(rng.choice(rows, cap, replace=False)))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def build_references(feats: npt.NDArray[np.float32], labels: Sequence[int], parts: Sequence[LocalFeatures | None],
                     carried: References | None = None) -> References | None:
    """References from photos' prepared whole-photo features, classes and local features (None: undecodable,
    left out), after the `carried` ones (an extended model's old landmarks whose photos are gone); the
    threshold calibrated on them all. None when fewer than two classes have references (no calibration)."""
    ok = [i for i, p in enumerate(parts) if p is not None and len(p.desc)]
    feats, labels = np.asarray(feats, np.float32)[ok], np.asarray(labels, np.int64)[ok]
    photos = [parts[i] for i in ok]
    if carried is not None and len(carried.labels):
        feats = np.concatenate([carried.feats, feats.reshape(-1, carried.feats.shape[1])])
        labels = np.concatenate([carried.labels, labels])
        photos = [carried.photo(r) for r in range(len(carried.labels))] + photos
    if len(np.unique(labels)) < 2:
        return None
    refs = _pack(feats, labels, photos, MIN_INLIERS)
    return _pack(feats, labels, photos, _threshold(refs))


def _threshold(refs: References) -> int:
    """Above all but FALSE_MATCH_RATE of the inlier counts between references of different, confusable classes."""
    counts = []
    for r in range(len(refs.labels)):
        sims = refs.feats @ refs.feats[r]
        sims[refs.labels == refs.labels[r]] = -np.inf
        counts.append(refs.best_inliers(refs.photo(r), refs.feats[r], int(refs.labels[int(np.argmax(sims))])))
    return max(MIN_INLIERS, int(np.quantile(counts, 1.0 - FALSE_MATCH_RATE, method="higher")) + 1)


def check(paths: Sequence[Path], classes: npt.NDArray[np.int64], feats: npt.NDArray[np.float32],
          confidence: npt.NDArray[np.float32], lower: float, upper: float, refs: References,
          local: Callable[[Path], LocalFeatures | None] = photo_local_features) -> npt.NDArray[np.int64]:
    """Inliers of each photo against its class's references: -1 where not checked (confidence outside
    [lower, upper)), 0 when it does not decode again. `feats` are prepared (OpenSet.prepare)."""
    out = np.full(len(paths), -1, np.int64)
    for i in np.flatnonzero((confidence >= lower) & (confidence < upper)):
        query = local(paths[i])
        out[i] = 0 if query is None else refs.best_inliers(query, feats[i], int(classes[i]))
    return out
