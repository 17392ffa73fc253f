"""`landmark train --extend RUN/best.pt --data NEW`: a model that knows the old run's landmarks and NEW's.

The head of a frozen backbone trains in seconds, so extending is training again on everything: the old
classes keep their indices, NEW's classes not among them follow. The old landmarks come from their photos
when the old run's data folder is still there (then they are embedded again, and their test photos are
scored too), else from the frozen features the old run cached in RUN/features.pt (only for a frozen-backbone
run with the evaluation crop, whose cached features are exactly what a photo gives at inference).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..data.datasets import DatasetLayout, Sample, discover
from ..errors import DataError, LandmarkError
from ..models.checkpoint import read_checkpoint
from .run_dir import FEATURES_NAME, dataset_dir


@dataclass(frozen=True)
class Extension:
    """What an extended run starts from: the merged layout, and the old photos' features when their photos are gone."""

    layout: DatasetLayout
    old_classes: int
    source: str  # "photos" (the old data folder) or "features" (the old run's cached features)
    where: Path  # the old data folder, or RUN/features.pt
    features: Any = None  # (N, D) float tensor of the old training photos' pooled features, or None
    labels: Any = None  # (N,) their class indices
    places: dict | None = None  # the old checkpoint's class -> place


def prepare_extension(checkpoint: str | Path, cfg: TrainConfig) -> tuple[TrainConfig, Extension]:
    """The run's settings (the old run's, with cfg's data and out) and the merged layout; LandmarkError if the
    old landmarks can be found neither as photos nor as cached features."""
    import torch

    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "best.pt"
    meta = read_checkpoint(checkpoint)["meta"]
    saved = meta.get("train_config") or {}
    old_classes = list(meta["classes"])
    new = discover(dataset_dir(cfg.data), min_classes=1)
    run_cfg = replace(TrainConfig.from_dict(saved), data=cfg.data, out=cfg.out, quiet=cfg.quiet,
                      places=cfg.places, epochs=cfg.epochs or saved.get("epochs"))
    added = [c for c in new.classes if c not in old_classes]
    classes = (*old_classes, *added)
    index = {c: i for i, c in enumerate(classes)}

    def moved(samples: tuple[Sample, ...], layout: DatasetLayout) -> tuple[Sample, ...]:
        return tuple((path, index[layout.classes[label]]) for path, label in samples)

    old_root = Path(saved.get("data") or "")
    old = _old_layout(old_root)
    if old is not None and list(old.classes) == old_classes:
        layout = DatasetLayout(root=new.root, classes=classes, train_split=moved(old.train, old) + moved(new.train, new),
                               test=moved(old.test, old) + moved(new.test, new), unnamed=new.unnamed)
        return run_cfg, Extension(layout, len(old_classes), "photos", old_root, places=meta.get("places"))
    cached = checkpoint.parent / FEATURES_NAME
    frozen_crop = saved.get("feature_views", 8) == 0 and not saved.get("finetune") and meta.get("head") == "power"
    if not (cached.is_file() and frozen_crop):
        why = (f"{cached} is missing" if not cached.is_file() else
               "its cached features are augmented views or come from a trained body, not what a photo gives")
        raise LandmarkError(f"--extend {checkpoint}: its training photos are gone ({old_root or 'not recorded'}) "
                            f"and {why}; put the old dataset back at {old_root} and retry")
    feats = torch.load(cached, map_location="cpu", weights_only=True)
    features = torch.cat([feats["train_f"], feats["valid_f"]]).float()
    labels = torch.cat([feats["train_y"], feats["valid_y"]]).long()
    layout = DatasetLayout(root=new.root, classes=classes, train_split=moved(new.train, new),
                           test=moved(new.test, new), unnamed=new.unnamed)
    return run_cfg, Extension(layout, len(old_classes), "features", cached, features, labels, meta.get("places"))


def _old_layout(root: Path) -> DatasetLayout | None:
    if not str(root) or not (root / "train").is_dir():
        return None
    try:
        return discover(root)
    except DataError:
        return None
