"""`landmark train --extend RUN/best.pt --data NEW`: a model that knows the old run's landmarks and NEW's.

The head of a frozen backbone trains in seconds, so extending is the ordinary head training again on
everything: the old classes keep their indices, NEW's classes not among them follow, and a NEW class named as
an old one (the same folder name, or the name the old model shows for it) adds its photos to it. The old
landmarks come from their photos when the old run's data folder is still there (embedded again, their test
photos scored too), else from the frozen features the old run cached in RUN/features.pt. A model whose body was
trained (scratch, --finetune) has no frozen features to share.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import TrainConfig
from ..data.datasets import DatasetLayout, Sample, discover
from ..errors import DataError, LandmarkError
from ..models.checkpoint import openset_state, read_checkpoint
from ..places.table import clean_name
from .recipe import Recipe
from .run_dir import FEATURES_NAME, checkpoint_in, dataset_dir

if TYPE_CHECKING:
    import torch

    from ..models.verify import References

FEATURE_KEYS = ("train_f", "train_y", "valid_f", "valid_y")


@dataclass(frozen=True)
class Extension:
    """What an extended run starts from: the merged layout, and the old photos' features when their photos are gone."""

    checkpoint: Path
    layout: DatasetLayout
    old_classes: int
    source: str  # "photos" (the old data folder) or "features" (the old run's cached features)
    where: Path  # the old data folder, or RUN/features.pt
    features: dict[str, "torch.Tensor"] | None = None  # FEATURE_KEYS of the old run's features.pt (fp32 / int64)
    places: dict[str, Any] | None = None  # the old checkpoint's class -> place
    references: "References | None" = None  # the old checkpoint's geometric-check references, when photos are gone
    joined: tuple[tuple[str, str], ...] = ()  # (NEW's folder, the old class it adds photos to)

    def record(self) -> dict[str, Any]:
        """metrics.json's "extended": where the old landmarks came from."""
        return {"checkpoint": str(self.checkpoint), "old_classes": self.old_classes,
                "new_classes": len(self.layout.classes) - self.old_classes, "old_from": self.source,
                "old_where": str(self.where), "joined": [list(pair) for pair in self.joined]}


def prepare_extension(checkpoint: str | Path, cfg: TrainConfig) -> tuple[TrainConfig, Extension]:
    """The run's settings (the old run's recipe, with cfg's data, out and runtime) and the merged layout;
    LandmarkError for a model with a trained body, or when the old landmarks are neither photos nor features."""
    checkpoint = checkpoint_in(checkpoint)
    payload = read_checkpoint(checkpoint)
    meta = payload["meta"]
    saved = meta.get("train_config") or {}
    if not saved or not Recipe.resolve(TrainConfig.from_dict(saved)).frozen:
        raise LandmarkError(f"--extend {checkpoint}: only a model on a frozen pretrained backbone can learn more "
                            "landmarks (this one trained its body); train one model on all the landmarks' folders")
    new = discover(dataset_dir(cfg.data), min_classes=1)
    run_cfg = replace(TrainConfig.from_dict(saved), data=cfg.data, out=cfg.out, quiet=cfg.quiet, places=cfg.places,
                      epochs=cfg.epochs or saved.get("epochs"), device=cfg.device, precision=cfg.precision,
                      workers=cfg.workers)
    old_classes = list(meta["classes"])
    same = _same_landmarks(old_classes, meta.get("display_names") or [], new.classes)
    classes = (*old_classes, *(c for c in new.classes if c not in same))
    index = {c: i for i, c in enumerate(classes)} | {c: old_classes.index(o) for c, o in same.items()}
    joined = tuple(sorted(same.items()))

    def moved(samples: tuple[Sample, ...], layout: DatasetLayout) -> tuple[Sample, ...]:
        return tuple((path, index[layout.classes[label]]) for path, label in samples)

    old_root = Path(saved.get("data") or "")
    old = _old_layout(old_root)
    places = meta.get("places") or None
    if old is not None and list(old.classes) == old_classes:
        layout = DatasetLayout(root=new.root, classes=classes, train_split=moved(old.train, old) + moved(new.train, new),
                               test=moved(old.test, old) + moved(new.test, new), unnamed=new.unnamed)
        return run_cfg, Extension(checkpoint, layout, len(old_classes), "photos", old_root, places=places,
                                  joined=joined)
    cached = checkpoint.parent / FEATURES_NAME
    features = _cached_features(cached, len(old_classes))
    if features is None:
        raise LandmarkError(f"--extend {checkpoint}: its training photos are gone ({old_root or 'not recorded'}) "
                            f"and {cached} is missing or unreadable; put the old dataset back at {old_root} and retry")
    layout = DatasetLayout(root=new.root, classes=classes, train_split=moved(new.train, new),
                           test=moved(new.test, new), unnamed=new.unnamed)
    return run_cfg, Extension(checkpoint, layout, len(old_classes), "features", cached, features, places,
                              _old_references(payload), joined)


def _same_landmarks(old: list[str], old_names: list[str], new: tuple[str, ...]) -> dict[str, str]:
    """NEW's folders that name an old landmark -> that landmark's class: the same folder name, or the same name as
    the old model shows it (its display name, or the cleaned folder name; case and `_` vs space ignored), so a
    group named "Chichen Itza" joins the old `Chichen_Itza` instead of becoming a second landmark of that name."""
    def key(name: str) -> str:
        return clean_name(name).casefold()

    by_key: dict[str, str] = {}
    for i, c in enumerate(old):
        for name in (c, *(old_names[i:i + 1])):
            by_key.setdefault(key(name), c)
    return {c: c if c in old else by_key[key(c)] for c in new if c in old or key(c) in by_key}


def _old_references(payload: dict[str, Any]) -> "References | None":
    """The geometric-check references in an old checkpoint (None when it has none, or they do not read)."""
    from ..models.openset import OpenSet

    state = openset_state(payload)
    if state is None:
        return None
    try:
        return OpenSet.from_state(state).references
    except (ValueError, KeyError, TypeError):
        return None


def _old_layout(root: Path) -> DatasetLayout | None:
    if not str(root) or not (root / "train").is_dir():
        return None
    try:
        return discover(root)
    except DataError:
        return None


def _cached_features(path: Path, n_classes: int) -> dict[str, "torch.Tensor"] | None:
    """The old run's cached features (fp32 features, int64 labels), or None when missing or not ours."""
    import torch

    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # missing, damaged, or not a tensor file
        return None
    if not isinstance(cached, dict) or not all(isinstance(cached.get(k), torch.Tensor) for k in FEATURE_KEYS):
        return None
    labels = torch.cat([cached["train_y"], cached["valid_y"]])
    if len(cached["train_f"]) == 0 or (len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < n_classes):
        return None
    return {k: cached[k].float() if cached[k].is_floating_point() else cached[k].long() for k in FEATURE_KEYS}
