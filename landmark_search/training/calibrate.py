"""Open-set calibration at the end of `landmark train`: what the checkpoint needs to say "not a landmark"."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..data.datasets import Sample
from ..models.openset import DEFAULT_UNKNOWN_RATE, OpenSet, calibrate
from .metrics import embed_samples

if TYPE_CHECKING:
    from ..models import LandmarkModel


def calibrate_model(model: "LandmarkModel", meta: dict[str, Any], samples: Sequence[Sample], *,
                    unknown_rate: float = DEFAULT_UNKNOWN_RATE, seed: int = 0,
                    extra: tuple[np.ndarray, np.ndarray] | None = None, **kwargs: Any) -> OpenSet:
    """Embed every training photo (the bank, and its leave-one-out calibration) with the final weights.

    The photos go through the one inference path with the evaluation crop, as tag and classify will
    see them; kwargs (device, precision, batch_size, workers, quiet) go to embed_samples. `extra`: pooled
    features and labels of photos that are no longer there (`train --extend` from cached features).
    """
    from ..embeddings import wrap_model

    loaded = wrap_model(model, meta)
    loaded.features = True  # the score lives in the pooled backbone features (openset.py)
    _, _, labels, feats = embed_samples(loaded, samples, **kwargs)
    if feats is None:
        feats = np.zeros((0, model.feature_dim), np.float32)
    if extra is not None:
        more = np.asarray(extra[0], np.float32)
        feats = np.concatenate([feats, more / np.maximum(np.linalg.norm(more, axis=1, keepdims=True), 1e-12)])
        labels = [*labels, *np.asarray(extra[1]).tolist()]
    return calibrate(feats, np.asarray(labels), len(meta["classes"]), unknown_rate=unknown_rate, seed=seed)
