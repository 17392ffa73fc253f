"""Epoch loops as functions: train_one_epoch / validate on photos, and their cached-feature versions."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from ..data.datasets import ImageDataset, Sample, collate_skip_bad
from ..errors import DataError
from ..models import LandmarkModel
from ..models.engine import Engine
from ..models.runtime import autocast, default_workers, select_device, select_precision, use_channels_last

Augment = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def seed_everything(seed: int) -> None:
    """Python, numpy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % (2 ** 32)
    random.seed(seed)
    np.random.seed(seed)


def make_loader(dataset, batch_size: int, *, shuffle: bool, workers: int, seed: int = 0,
                drop_last: bool = False, sampler: Sampler | None = None) -> DataLoader:
    """A DataLoader that skips bad photos and is seeded; `sampler` (a rank's share, distributed.share) shuffles
    instead of the loader."""
    workers = default_workers() if workers < 0 else workers
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers,
                      collate_fn=collate_skip_bad, worker_init_fn=_worker_init, generator=gen,
                      persistent_workers=workers > 0, drop_last=drop_last)


@dataclass(frozen=True)
class Runtime:
    """Where and in which precision a run computes."""

    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None: fp32

    @classmethod
    def select(cls, device: str = "auto", precision: str = "auto") -> "Runtime":
        dev = select_device(device)
        return cls(dev, select_precision(precision, dev))

    @property
    def channels_last(self) -> bool:
        return use_channels_last(self.device, self.dtype)

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch on the device, channels_last where that pays."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self):
        return autocast(self.device, self.dtype)

    def batches(self, loader: Iterable) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) on the device, skipping the batches in which no photo could be read."""
        for batch in loader:
            if batch is not None:
                x, y = batch
                yield self.images(x), y.to(self.device)


class Tally:
    """Running loss sum, correct predictions and photos seen over an epoch."""

    def __init__(self) -> None:
        self.loss_sum, self.correct, self.seen = 0.0, 0, 0

    def add(self, loss_sum: float, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += loss_sum
        self.correct += (logits.argmax(1) == y).sum().item()
        self.seen += len(y)

    @property
    def loss(self) -> float:
        return self.loss_sum / self.seen

    @property
    def accuracy(self) -> float:
        return self.correct / self.seen


def _optimise(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor, optimizer: torch.optim.Optimizer,
              criterion: nn.Module, tally: Tally) -> None:
    """One optimiser step on these logits' loss against target (labels or soft targets)."""
    loss = criterion(logits.float(), target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    tally.add(loss.item() * len(y), logits, y)


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                    rt: Runtime, *, augment: Augment | None = None, desc: str = "train",
                    quiet: bool = True) -> tuple[float, float]:
    """One pass over the photos; (mean loss, accuracy). Unreadable photos arrive as None batches."""
    model.train()
    tally = Tally()
    bar = tqdm(loader, desc=desc, disable=True if quiet else None, leave=False)  # None: no bar into a log file
    for x, y in rt.batches(bar):
        x, target = augment(x, y) if augment else (x, y)
        with rt.autocast():
            logits = model(x)
        _optimise(logits, y, target, optimizer, criterion, tally)
        bar.set_postfix(loss=f"{tally.loss:.3f}", acc=f"{tally.accuracy:.3f}")
    if tally.seen == 0:
        raise DataError("no readable photos in the training set")
    return tally.loss, tally.accuracy


def validate(model: nn.Module, loader: DataLoader, rt: Runtime) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on the validation photos; (inf, 0) when none could be read."""
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    with torch.inference_mode():
        for x, y in rt.batches(loader):
            with rt.autocast():
                logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            total += len(y)
    return (loss_sum / total, correct / total) if total else (float("inf"), 0.0)


def feature_engine(model: LandmarkModel, image_size: int, mean: Sequence[float], std: Sequence[float], rt: Runtime,
                   precision: str) -> Engine | None:
    """The frozen body in the runtime `landmark index` would use for it (models/engine.py), or None: eager."""
    from ..models.engine import has_depthwise, requested_backend, routes_for, select_engine

    if rt.device.type != "cpu" or not has_depthwise(model.body):
        return None
    return select_engine(model.body, image_size, mean, std, routes_for(requested_backend(), precision))


def extract_features(model: LandmarkModel, samples: Sequence[Sample], transform: Callable, views: int, rt: Runtime, *,
                     image_size: int, batch_size: int, workers: int, seed: int, desc: str,
                     quiet: bool = True, engine: Engine | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-backbone features for `views` transformed copies of every sample (CPU tensors); `engine` runs
    the body when given (feature_engine)."""
    ds = ImageDataset(samples, transform, image_size, preload=views > 1, views=views)
    feats, labels = [], []
    model.body.eval()
    with torch.inference_mode():
        for batch in tqdm(make_loader(ds, batch_size, shuffle=False, workers=workers, seed=seed), desc=desc,
                          disable=True if quiet else None, leave=False):
            if batch is None:
                continue
            x, y = batch
            if engine is not None:
                f = engine(x)
            else:
                with rt.autocast():
                    f = model.features(rt.images(x))
            feats.append(f.float().cpu())
            labels.append(y)
    if not feats:
        raise DataError(f"no readable photos for {desc}")
    return torch.cat(feats), torch.cat(labels)


def train_head_epoch(head: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                     device: torch.device) -> tuple[float, float]:
    """One pass of the head over cached features (fp32); (mean loss, accuracy)."""
    head.train()
    tally = Tally()
    for f, y in loader:
        f, y = f.to(device), y.to(device)
        _optimise(head(f), y, y, optimizer, criterion, tally)
    return tally.loss, tally.accuracy


def full_batch_head_epoch(head: nn.Module, features: torch.Tensor, labels: torch.Tensor,
                          optimizer: torch.optim.Optimizer, criterion: nn.Module, c: float,
                          device: torch.device) -> tuple[float, float]:
    """One L-BFGS step over all cached features: the multinomial logistic regression that scikit-learn's
    LogisticRegression(C=c) fits, on the head's (power-normalised, scaled) features. Dropout is off (eval
    mode): a full-batch objective must be the same function at every line-search trial. (loss, accuracy)."""
    head.eval()
    x, y = features.to(device), labels.to(device)
    classifier = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
    # scikit-learn penalises ||w||^2 / (2C) beside the summed loss, on unit-length features; per photo, and
    # for features the head scales by `scale`, that is scale^2 / (C n) on the weights it multiplies.
    scale = float(next((m.scale for m in head.modules() if hasattr(m, "scale")), 1.0))
    strength = scale ** 2 / (c * len(x))

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = criterion(head(x), y) + 0.5 * strength * classifier.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    with torch.inference_mode():
        logits = head(x)
        return criterion(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def validate_head(head: nn.Module, features: torch.Tensor, labels: torch.Tensor,
                  device: torch.device) -> tuple[float, float]:
    """(cross-entropy, accuracy) of the head on cached validation features."""
    head.eval()
    with torch.inference_mode():
        logits = head(features.to(device))
        loss = F.cross_entropy(logits, labels.to(device)).item()
        accuracy = (logits.argmax(1).cpu() == labels).float().mean().item()
    return loss, accuracy
