"""Evaluation that counts distractors: landmark photos and photos of anything else, as a real library mixes them.

Global Average Precision (GAP, the Google Landmark Recognition metric): one prediction and one
confidence per query, queries sorted by confidence, GAP = sum over ranks of precision@i x correct_i,
divided by the number of landmark queries; a distractor is never correct. At the threshold in use:
the false-tag rate (distractors that get a landmark tag) and the recall (landmark photos that keep
their right landmark as a tag).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt


if TYPE_CHECKING:
    from ..embeddings import Embedded, LoadedModel
    from .metrics import EvalResult


@dataclass(frozen=True)
class OpenSetResult:
    """Scores on landmark photos + distractors."""

    gap: float
    false_tag_rate: float
    recall: float
    precision: float  # of the tags given at the threshold
    threshold: float
    n_landmarks: int
    n_distractors: int
    score: str  # "open-set confidence", or "softmax" for a model without calibration
    precision_curve: list[float]
    recall_curve: list[float]
    verified: int = 0  # photos kept below the threshold by the geometric check (models/verify.py)

    def summary(self) -> dict[str, Any]:
        """JSON-ready (curves left out)."""
        return {"gap": self.gap, "false_tag_rate": self.false_tag_rate, "recall": self.recall,
                "precision": self.precision,
                "threshold": self.threshold, "n_landmarks": self.n_landmarks, "n_distractors": self.n_distractors,
                "score": self.score, "verified": self.verified}


def global_average_precision(confidence: npt.ArrayLike, correct: npt.ArrayLike, n_landmarks: int) -> float:
    """GAP of one (prediction, confidence) per query; `correct` is False for every distractor."""
    conf = np.asarray(confidence, np.float64)
    hit = np.asarray(correct, bool)[np.argsort(-conf, kind="stable")]
    if n_landmarks <= 0:
        return 0.0
    precision = np.cumsum(hit) / np.arange(1, len(hit) + 1)
    return float((precision * hit).sum() / n_landmarks)


def open_set_scores(confidence: npt.ArrayLike, correct: npt.ArrayLike, is_landmark: npt.ArrayLike,
                    threshold: float, score: str, tagged: npt.ArrayLike | None = None) -> OpenSetResult:
    """GAP, false-tag rate and recall of the photos `tagged` (default: confidence >= `threshold`), and the
    precision-recall curve."""
    conf = np.asarray(confidence, np.float64)
    hit = np.asarray(correct, bool)
    land = np.asarray(is_landmark, bool)
    n_land, n_dist = int(land.sum()), int((~land).sum())
    tagged = conf >= threshold if tagged is None else np.asarray(tagged, bool)
    order = np.argsort(-conf, kind="stable")
    tp = np.cumsum(hit[order])
    precision = tp / np.arange(1, len(order) + 1)
    recall = tp / max(n_land, 1)
    return OpenSetResult(gap=global_average_precision(conf, hit, n_land),
                         false_tag_rate=float(tagged[~land].mean()) if n_dist else 0.0,
                         recall=float((tagged & hit)[land].mean()) if n_land else 0.0,
                         precision=float((tagged & hit).sum() / tagged.sum()) if tagged.any() else 1.0,
                         threshold=float(threshold),
                         n_landmarks=n_land, n_distractors=n_dist, score=score,
                         precision_curve=precision.round(5).tolist(), recall_curve=recall.round(5).tolist())


def evaluate_open_set(loaded: "LoadedModel", landmarks: "EvalResult", distractors: "Embedded",
                      recall: float | None = None) -> OpenSetResult:
    """Score the landmark photos already evaluated (`landmarks`, with their embedded evidence) with the
    distractors embedded through the one inference path by the caller. A photo counts as tagged when
    predict.decide keeps a landmark for it; GAP ranks photos by the confidence it reports.

    A model without open-set calibration is scored with its softmax and --min-score's default 0.2.
    """
    all_probs = np.concatenate([landmarks.probs, distractors.probs])
    pred = all_probs.argmax(1)
    n = len(landmarks.y_true)
    correct = np.concatenate([pred[:n] == np.asarray(landmarks.y_true, np.int64), np.zeros(len(pred) - n, bool)])
    is_landmark = np.arange(len(pred)) < n
    if loaded.openset is None or landmarks.embedded is None:
        return open_set_scores(all_probs.max(1), correct, is_landmark, 0.2, "softmax")
    decisions = [e.decide(i, loaded, recall=recall) for e in (landmarks.embedded, distractors)
                 for i in range(len(e.paths))]
    scores = open_set_scores([d.confidence for d in decisions], correct, is_landmark,
                             loaded.openset.threshold_for(recall), "open-set confidence",
                             tagged=[bool(d.kept) for d in decisions])
    return replace(scores, verified=sum(d.verified for d in decisions))
