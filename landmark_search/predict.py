"""The one decision from a photo's class probabilities and backbone features to "this landmark" or "unknown".

classify, tag, index, similar, evaluate, report and explain all call `decide`, so one photo gets one label and
one confidence whatever command shows it. A landmark model's classes exclude each other: a photo shows at most
one landmark, so at most one is kept, the most probable, and only when the open-set calibration
(openset.py) is confident that the photo shows it at all. The built-in ImageNet model names objects, which
do not exclude each other: every one of its top-k at or above `min_score` is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from .embeddings import LoadedModel


@dataclass(frozen=True)
class Prediction:
    """One label with its probability among the known classes and, for a calibrated model, its confidence."""

    label: str
    id: str
    score: float  # softmax share among the model's classes
    confidence: float | None = None  # that the photo shows this class at all (openset.py); None: not calibrated

    @property
    def value(self) -> float:
        """The one number shown for this label everywhere: the open-set confidence, else the softmax share."""
        return self.score if self.confidence is None else self.confidence


@dataclass(frozen=True)
class Decision:
    """What a photo shows: the candidates (most probable first) and those kept as its labels."""

    predictions: list[Prediction]
    kept: list[Prediction]  # a landmark model: at most one; the built-in model: its confident objects
    unknown: bool = False  # a calibrated model is not confident the photo shows its most probable class
    inliers: int | None = None  # the geometric check's count (models/verify.py), when the photo was checked
    verified: bool = False  # kept below the confidence threshold: the check matched it to a training photo

    @property
    def label(self) -> str | None:
        """The photo's label (its landmark), None for "none of these"."""
        return self.kept[0].label if self.kept else None

    @property
    def confidence(self) -> float | None:
        """The number that goes with the decision: the kept label's, else the most probable class's."""
        top = self.kept[0] if self.kept else self.predictions[0] if self.predictions else None
        return None if top is None else top.value

    @property
    def runner_ups(self) -> list[Prediction]:
        """The candidates not kept, most probable first."""
        kept = {p.id for p in self.kept}
        return [p for p in self.predictions if p.id not in kept]


def decide(probs: npt.NDArray[np.float32], feats: npt.NDArray[np.float32] | None, model: "LoadedModel", *,
           top_k: int = 1, min_score: float = 0.0, recall: float | None = None,
           inliers: int | None = None) -> Decision:
    """Decide what one photo shows from its class probabilities and (calibrated models) its backbone features.

    `recall` is the fraction of known landmark photos the threshold keeps (openset.py); None: the model's own
    threshold. A photo below the threshold is still its landmark when its geometric check (`inliers`, from
    Embedded.inliers; -1 or None: not checked) matched it to a training photo of that class (verify.py).
    `min_score` is a floor on the softmax share; `top_k` how many candidates to report.
    """
    if not len(probs):
        return Decision([], [])
    order = np.argsort(-np.asarray(probs), kind="stable")[:max(1, top_k)]
    openset = model.openset if feats is not None else None
    conf = (openset.confidence(np.asarray(feats)[None, :], order[None, :])[0] if openset is not None
            else [None] * len(order))
    preds = [Prediction(model.class_names[i], model.class_ids[i], round(float(probs[i]), 6),
                        None if c is None else round(float(c), 6)) for i, c in zip(order, conf)]
    if model.kind == "builtin":
        return Decision(preds, [p for p in preds if p.score >= min_score])
    top = preds[0]
    checked = None if inliers is None or inliers < 0 else int(inliers)
    below = openset is not None and top.confidence < openset.threshold_for(recall)
    verified = below and openset.verified(checked)
    unknown = below and not verified
    kept = [top] if not unknown and top.score >= min_score else []
    return Decision(preds, kept, unknown, checked, verified)
