"""ImageFolder-style datasets: train/ and test/ with one folder per class."""

from __future__ import annotations

import math
import re

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import BadImageError, DataError
from ..photos.files import PHOTO_EXTENSIONS, warn_skipped
from ..photos.images import load_image
from .transforms import resize_size

Sample = tuple[Path, int]


@dataclass(frozen=True)
class DatasetLayout:
    """Where a dataset's splits live and which classes it has."""

    root: Path
    classes: tuple[str, ...]
    train_split: tuple[Sample, ...] | None  # None: no train/ folder (a test-only folder: evaluation only)
    test: tuple[Sample, ...]
    unnamed: tuple[str, ...] = ()  # group-NN folders of `landmark group --out` nobody named: not classes

    @property
    def train(self) -> tuple[Sample, ...]:
        """The training photos; DataError for a folder with only test/ (training needs train/)."""
        if self.train_split is None:
            raise DataError(_no_train(self.root))
        return self.train_split


def _list_split(split_dir: Path, classes: Sequence[str]) -> tuple[Sample, ...]:
    samples: list[Sample] = []
    for index, cls in enumerate(classes):
        folder = split_dir / cls
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() not in PHOTO_EXTENSIONS:
                continue
            if path.is_file():
                samples.append((path, index))
    return tuple(samples)


def _no_train(root: Path) -> str:
    """Why `root` is no dataset to train on, and what to pass instead."""
    if root.is_file():
        return f"{root} is a file; pass the dataset folder (train/<class>/ photos, + test/<class>/)"
    if root.name in ("train", "test") and (root.parent / "train").is_dir():
        return f"{root}: no train/ folder in it; pass the dataset folder above it: --data {root.parent}"
    return (f"{root}: no train/ folder; a dataset is train/<class>/*.jpg (+ test/<class>/), "
            "e.g. made by `landmark data synth DIR` or `landmark data download DIR`")


# `landmark group --out` names its folders group-01, group-02...; one still so named was never looked at.
UNNAMED_GROUP = re.compile(r"group-\d+")


def _class_folders(split_dir: Path) -> tuple[str, ...]:
    return tuple(sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                        and not UNNAMED_GROUP.fullmatch(p.name)))


def unnamed_groups(root: str | Path) -> tuple[str, ...]:
    """The group-NN folders under root/train that discover() leaves out (nobody named them)."""
    train_dir = Path(root) / "train"
    if not train_dir.is_dir():
        return ()
    return tuple(sorted(p.name for p in train_dir.iterdir() if p.is_dir() and UNNAMED_GROUP.fullmatch(p.name)))


def discover(root: str | Path, min_classes: int = 2) -> DatasetLayout:
    """Read a `train/` (+ optional `test/`) class-folder tree; a folder with only `test/` serves evaluation.

    A classifier needs 2 classes; `train --extend` adds 1 or more to those a model knows (min_classes=1).
    """
    root = Path(root)
    train_dir, test_dir = root / "train", root / "test"
    if not train_dir.is_dir():
        if not test_dir.is_dir() or root.name in ("train", "test"):
            raise DataError(_no_train(root))
        # Evaluation needs no training photos; its classes are checked against the model's by the caller.
        classes = _class_folders(test_dir)
        return DatasetLayout(root=root, classes=classes, train_split=None, test=_list_split(test_dir, classes))
    classes = _class_folders(train_dir)
    if len(classes) < min_classes:
        hint = (" (group-NN folders are left out until named: `landmark group --name` or rename them)"
                if unnamed_groups(root) else "")
        raise DataError(f"{train_dir}: found {len(classes)} class folder(s); a classifier needs at least "
                        f"{min_classes}{hint}")
    train = _list_split(train_dir, classes)
    if not train:
        raise DataError(f"{train_dir}: the class folders hold no photos")
    test = _list_split(test_dir, classes) if test_dir.is_dir() else ()
    return DatasetLayout(root=root, classes=classes, train_split=train, test=test, unnamed=unnamed_groups(root))


def stratified_split(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split samples into (train, valid), keeping class proportions; seeded."""
    if fraction <= 0:
        return list(samples), []
    from sklearn.model_selection import train_test_split

    labels = [label for _, label in samples]
    n_valid = math.ceil(fraction * len(labels))
    if fraction >= 1 or n_valid >= len(labels):
        raise DataError(f"--valid-split {fraction} leaves no training photos ({len(labels)} in train/); "
                        "use a fraction such as 0.2, or 0 for no validation split")
    counts = np.bincount(labels)
    n_classes = int((counts > 0).sum())
    # Stratifying needs 2+ photos per class and room for every class on both sides; small sets
    # fall back to a plain seeded shuffle split instead of failing.
    can_stratify = counts[counts > 0].min() >= 2 and min(n_valid, len(labels) - n_valid) >= n_classes
    stratify = labels if can_stratify else None
    train, valid = train_test_split(list(samples), test_size=fraction, random_state=seed, stratify=stratify)
    return train, valid


class ImageDataset(Dataset):
    """Decodes photos on demand (in DataLoader workers); a bad photo yields None and a warning."""

    def __init__(self, samples: Sequence[Sample], transform: Callable, image_size: int,
                 preload: bool = False, views: int = 1):
        self.samples = list(samples)
        self.transform = transform
        self.min_side = resize_size(image_size)
        self.views = views
        self._cache: list | None = None
        if preload:
            # Small datasets: decode once at the resized scale and keep the pixels, so epochs
            # spend their time on augmentation and the model, not on JPEG decoding.
            self._cache = [self._decode(path) for path, _ in self.samples]

    def _decode(self, path: Path):
        try:
            img = load_image(path, min_side=self.min_side)
        except BadImageError as exc:
            warn_skipped(path, str(exc))
            return None
        if min(img.size) > self.min_side * 1.5:
            scale = self.min_side / min(img.size)
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                             resample=3, reducing_gap=2.0)
        return img

    def __len__(self) -> int:
        return len(self.samples) * self.views

    def __getitem__(self, index: int):
        path, label = self.samples[index % len(self.samples)]
        img = self._cache[index % len(self.samples)] if self._cache is not None else self._decode(path)
        if img is None:
            return None
        return self.transform(img), label


def collate_skip_bad(batch: list):
    """Default collation minus the photos that failed to decode."""
    batch = [item for item in batch if item is not None]
    if not batch:
        return None
    images = torch.stack([item[0] for item in batch])
    labels = torch.tensor([item[1] for item in batch])
    return images, labels


def channel_stats(samples: Sequence[Sample], image_size: int, limit: int = 512, seed: int = 0
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std over (up to `limit`) photos at the training scale."""
    rng = np.random.default_rng(seed)
    chosen = list(samples)
    if len(chosen) > limit:
        chosen = [chosen[i] for i in sorted(rng.choice(len(chosen), limit, replace=False))]
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for path, _ in chosen:
        try:
            img = load_image(path, min_side=image_size)
        except BadImageError:
            continue
        img.thumbnail((image_size * 2, image_size * 2))
        arr = np.asarray(img, dtype=np.float64).reshape(-1, 3) / 255.0
        total += arr.sum(0)
        total_sq += (arr ** 2).sum(0)
        count += len(arr)
    if count == 0:
        raise DataError("no readable photos to compute channel statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-8))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
