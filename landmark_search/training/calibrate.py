"""Open-set calibration at the end of `landmark train`: what the checkpoint needs to say "not a landmark"."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..data.datasets import Sample
from ..models.openset import DEFAULT_UNKNOWN_RATE, OpenSet, calibrate
from .metrics import embed_samples

if TYPE_CHECKING:
    from ..models import LandmarkModel
    from ..models.verify import References


def calibrate_model(model: "LandmarkModel", meta: dict[str, Any], train: Sequence[Sample], valid: Sequence[Sample],
                    *, unknown_rate: float = DEFAULT_UNKNOWN_RATE, seed: int = 0,
                    extra: dict[str, np.ndarray] | None = None, **kwargs: Any) -> OpenSet:
    """Embed every training photo (train and valid alike: the bank and its leave-one-out calibration).

    The photos go through the one inference path with the evaluation crop, as tag and classify will
    see them; kwargs (device, precision, batch_size, workers, quiet) go to embed_samples. `extra`: the cached
    pooled features of photos that are gone (`train --extend`; extend.FEATURE_KEYS), joining them.
    """
    from ..embeddings import wrap_model

    loaded = wrap_model(model, meta)
    loaded.features = True  # the score lives in the pooled backbone features (openset.py)
    out, labels = embed_samples(loaded, [*train, *valid], **kwargs)
    feats = out.features
    if feats is None:
        feats = np.zeros((0, model.feature_dim), np.float32)
    labels = np.asarray(labels, np.int64)
    if extra is not None:
        for f, y in (("train_f", "train_y"), ("valid_f", "valid_y")):
            feats, labels = _joined(feats, labels, extra[f], extra[y])
    return calibrate(feats, labels, len(meta["classes"]), unknown_rate=unknown_rate, seed=seed)


def with_references(model: "LandmarkModel", meta: dict[str, Any], samples: Sequence[Sample], openset: OpenSet, *,
                    seed: int = 0, carried: "References | None" = None, **kwargs: Any) -> OpenSet:
    """`openset` with the geometric check's references (models/verify.py): up to REFS_PER_CLASS training photos
    per class, their whole-photo features through the one inference path and their local features, plus the
    `carried` references of landmarks whose photos are gone (train --extend); the check's threshold calibrated
    on them. kwargs go to embed_samples."""
    from ..embeddings import wrap_model
    from ..models.verify import build_references, choose_references, photo_local_features

    chosen = [samples[i] for i in choose_references([label for _, label in samples], seed)]
    loaded = wrap_model(model, meta)
    loaded.features = True
    out, labels = embed_samples(loaded, chosen, **kwargs)
    feats = out.features if out.features is not None else np.zeros((0, model.feature_dim), np.float32)
    parts = [photo_local_features(path) for path in out.paths]
    return replace(openset, references=build_references(openset.prepare(feats), labels, parts, carried))


def _joined(feats: np.ndarray, labels: np.ndarray, more: np.ndarray, more_labels: np.ndarray):
    """Embedded features followed by cached ones, L2-normalised as the inference path gives them."""
    more = np.asarray(more, np.float32)
    more = more / np.maximum(np.linalg.norm(more, axis=1, keepdims=True), 1e-12)
    return np.concatenate([feats, more]), np.concatenate([labels, np.asarray(more_labels, np.int64)])
