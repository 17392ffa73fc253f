"""Open-set calibration at the end of `landmark train`: what the checkpoint needs to say "not a landmark"."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..data.datasets import Sample
from ..models.openset import DEFAULT_RECALL, OpenSet, calibrate
from .metrics import embed_samples

if TYPE_CHECKING:
    from ..models import LandmarkModel


def calibrate_model(model: "LandmarkModel", meta: dict[str, Any], train: Sequence[Sample], valid: Sequence[Sample],
                    *, recall: float = DEFAULT_RECALL, seed: int = 0, extra: dict[str, np.ndarray] | None = None,
                    **kwargs: Any) -> OpenSet:
    """Embed the training photos (the bank) and the validation photos (the threshold) with the final weights.

    The photos go through the one inference path with the evaluation crop, as tag and classify will
    see them; kwargs (device, precision, batch_size, workers, quiet) go to embed_samples. `extra`: the cached
    pooled features of photos that are gone (`train --extend`; extend.FEATURE_KEYS), joining bank and threshold.
    """
    from ..embeddings import wrap_model

    loaded = wrap_model(model, meta)
    loaded.features = True  # the score lives in the pooled backbone features (openset.py)
    _, _, train_y, train_f = embed_samples(loaded, train, **kwargs)
    if valid:
        _, _, valid_y, valid_f = embed_samples(loaded, valid, **kwargs)
    else:
        valid_y, valid_f = [], np.zeros((0, model.feature_dim), np.float32)
    if train_f is None:
        train_f = np.zeros((0, model.feature_dim), np.float32)
    if valid_f is None:
        valid_f = train_f[:0]
    train_y, valid_y = np.asarray(train_y, np.int64), np.asarray(valid_y, np.int64)
    if extra is not None:
        train_f, train_y = _joined(train_f, train_y, extra["train_f"], extra["train_y"])
        valid_f, valid_y = _joined(valid_f, valid_y, extra["valid_f"], extra["valid_y"])
    return calibrate(train_f, train_y, valid_f, valid_y, len(meta["classes"]), recall_target=recall, seed=seed)


def _joined(feats: np.ndarray, labels: np.ndarray, more: np.ndarray, more_labels: np.ndarray):
    """Embedded features followed by cached ones, L2-normalised as the inference path gives them."""
    more = np.asarray(more, np.float32)
    more = more / np.maximum(np.linalg.norm(more, axis=1, keepdims=True), 1e-12)
    return np.concatenate([feats, more]), np.concatenate([labels, np.asarray(more_labels, np.int64)])
