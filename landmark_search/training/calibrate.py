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
                    *, recall: float = DEFAULT_RECALL, seed: int = 0, **kwargs: Any) -> OpenSet:
    """Embed the training photos (the bank) and the validation photos (the threshold) with the final weights.

    The photos go through the one inference path with the evaluation crop, as tag and classify will
    see them; kwargs (device, precision, batch_size, workers, quiet) go to embed_samples.
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
    return calibrate(train_f, np.asarray(train_y), valid_f if valid_f is not None else train_f[:0],
                     np.asarray(valid_y), len(meta["classes"]), recall_target=recall, seed=seed)
