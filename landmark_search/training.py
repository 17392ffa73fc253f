"""fit / train_one_epoch / evaluate: training runs and their metrics."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from .config import RunPaths, TrainConfig
from .data.datasets import (DatasetLayout, ImageDataset, Sample, channel_stats, collate_skip_bad, discover,
                            stratified_split)
from .data.transforms import EvalPreset, Normalization, TrainPreset
from .errors import CheckpointError, DataError, LandmarkError
from .fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text
from .models import LandmarkModel, build_model, get_spec
from .models.checkpoint import load_checkpoint, make_meta, read_checkpoint, save_checkpoint
from .models.runtime import autocast, default_workers, select_device, select_precision, use_channels_last

# Defaults per family, from measurements on ../shared/evaldata (see README "Training recipes").
DEFAULT_EPOCHS = {"head": 60, "scratch": 120, "finetune": 15}
DEFAULT_LR = {"head": 3e-3, "scratch": 2e-3, "finetune": 3e-4}
# Small batches give from-scratch CNNs twice the updates per epoch at the same CPU cost (measured).
DEFAULT_BATCH = {"head": 64, "scratch": 32, "finetune": 64}
DEFAULT_TIME_LIMIT = {"scratch": 780.0}
# Per-architecture overrides for from-scratch training. `residual` costs 2.7x `scratch` per image, so it
# gets fewer epochs that start smaller: its run then fits the time budget instead of being cut by it,
# which keeps the schedule (and the result) independent of machine load.
ARCH_EPOCHS = {"residual": 60}
PROGRESSIVE_SCALES = {"scratch": (0.75, 0.875), "residual": (0.5, 0.75)}  # first 40 %, next 30 %
# Every registered body halves the image five times (total stride 32). Measured: scratch, residual and
# efficientnet_lite0 crash below 32 px (a 0x0 feature map or a kernel larger than the padded input);
# the torchvision bodies still run but pool a single pixel, so 32 is the floor for all of them.
MIN_IMAGE_SIZE = 32
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("auto", "plateau", "cosine", "exponential", "none")
MIX_MODES = ("auto", "none", "mixup", "cutmix", "both")
HEADS = ("embed", "linear")
TRAIN_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Files that mark a folder as holding a training run, and every file `landmark train` (and the
# evaluate/report commands, beside the checkpoint) may write into one: --overwrite deletes only these.
RUN_MARKERS = ("best.pt", "last.pt", "config.json", "metrics.json", "history.csv")
RUN_EXTRA_FILES = ("test_confusion.png", "test_report.json", "train_confusion.png", "train_report.json",
                   "report.html")
STATS_VERSION = 1  # mean_std.json format


@dataclass(frozen=True)
class EpochStats:
    """One row of history.csv."""

    epoch: int
    train_loss: float
    train_acc: float
    valid_loss: float
    valid_acc: float
    lr: float
    seconds: float


@dataclass(frozen=True)
class EvalResult:
    """Predictions and metrics on one split."""

    accuracy: float
    macro_f1: float
    weighted_f1: float
    y_true: list[int]
    y_pred: list[int]
    probs: np.ndarray
    paths: list[str]
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-ready metrics (no per-photo arrays)."""
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "weighted_f1": self.weighted_f1,
                "n": len(self.y_true), "per_class": self.per_class, "confusion": self.confusion,
                "skipped": self.skipped}


@dataclass(frozen=True)
class TrainResult:
    """Where a run's files are and how it scored."""

    paths: RunPaths
    history: list[EpochStats]
    metrics: dict[str, Any]
    seconds: float


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
                drop_last: bool = False) -> DataLoader:
    """A DataLoader that skips bad photos and is seeded."""
    workers = default_workers() if workers < 0 else workers
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      collate_fn=collate_skip_bad, worker_init_fn=_worker_init, generator=gen,
                      persistent_workers=workers > 0, drop_last=drop_last)


def _metrics(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> tuple[dict, list, float, float]:
    from sklearn.metrics import classification_report, confusion_matrix, f1_score

    labels = list(range(len(classes)))
    report = classification_report(y_true, y_pred, labels=labels, target_names=list(classes),
                                   output_dict=True, zero_division=0)
    per_class = {c: {k: float(report[c][k]) for k in ("precision", "recall", "f1-score", "support")}
                 for c in classes}
    confusion = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    macro = float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    weighted = float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0))
    return per_class, confusion, macro, weighted


def predict_samples(model: LandmarkModel, samples: Sequence[Sample], meta: dict[str, Any], *,
                    device: str = "auto", precision: str = "auto", batch_size: int = 64, workers: int = -1,
                    quiet: bool = True, desc: str = "evaluate") -> tuple[np.ndarray, list[int], list[str], list[str]]:
    """Class probabilities for labelled samples; returns (probs, labels, paths, skipped paths)."""
    dev = select_device(device)
    int8 = precision == "int8"
    dtype = None if int8 else select_precision(precision, dev)
    preset = EvalPreset(meta["image_size"], Normalization(tuple(meta["mean"]), tuple(meta["std"])))
    indexed = [(path, i) for i, (path, _) in enumerate(samples)]
    ds = ImageDataset(indexed, preset, meta["image_size"])
    model = model.to(dev).eval()
    if int8:
        from .models.quantize import int8_model, require_cpu

        require_cpu(dev)
        model = int8_model(model, meta["image_size"], meta["mean"], meta["std"])
    elif use_channels_last(dev, dtype):
        model = model.to(memory_format=torch.channels_last)
    probs, order = [], []
    with torch.inference_mode():
        for batch in tqdm(make_loader(ds, batch_size, shuffle=False, workers=workers), desc=desc,
                          disable=quiet, leave=False):
            if batch is None:
                continue
            x, idx = batch
            x = x.to(dev)
            if use_channels_last(dev, dtype):
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(dev, dtype):
                logits = model(x)
            probs.append(logits.float().softmax(1).cpu().numpy())
            order.extend(idx.tolist())
    done = set(order)
    skipped = [str(samples[i][0]) for i in range(len(samples)) if i not in done]
    probs_arr = np.concatenate(probs) if probs else np.zeros((0, len(meta["classes"])), np.float32)
    return probs_arr, [samples[i][1] for i in order], [str(samples[i][0]) for i in order], skipped


def evaluate(model: LandmarkModel, samples: Sequence[Sample], meta: dict[str, Any], **kwargs: Any) -> EvalResult:
    """Accuracy, macro/weighted F1, per-class table and confusion matrix on labelled samples."""
    probs, y_true, paths, skipped = predict_samples(model, samples, meta, **kwargs)
    if not y_true:
        raise DataError("no readable photos to evaluate")
    y_pred = probs.argmax(1).tolist()
    per_class, confusion, macro, weighted = _metrics(y_true, y_pred, meta["display_names"])
    accuracy = float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))
    return EvalResult(accuracy, macro, weighted, list(y_true), y_pred, probs, paths, per_class, confusion, skipped)


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: Path) -> None:
    """Render to PNG and write it atomically."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_confusion(confusion: Sequence[Sequence[int]], names: Sequence[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix; the figure grows with the class count so 50 classes stay legible."""
    plt = _pyplot()
    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(names)
    size = max(6.0, 0.32 * n + 3)
    fig, ax = plt.subplots(figsize=(size, size), dpi=110)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    font = 10 if n <= 15 else 7
    ax.set_xticks(range(n), [s[:28] for s in names], rotation=90, fontsize=font)
    ax.set_yticks(range(n), [s[:28] for s in names], fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=font - 1,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix (row-normalised)")
    _save_figure(fig, path)


def plot_curves(history: Sequence[EpochStats], path: Path) -> None:
    """Loss and accuracy per epoch, train vs validation."""
    plt = _pyplot()
    epochs = [h.epoch for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    ax1.plot(epochs, [h.train_loss for h in history], label="train")
    ax1.plot(epochs, [h.valid_loss for h in history], label="valid")
    ax1.set_title("loss")
    ax2.plot(epochs, [h.train_acc for h in history], label="train")
    ax2.plot(epochs, [h.valid_acc for h in history], label="valid")
    ax2.set_title("accuracy")
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    _save_figure(fig, path)


def write_history(history: Sequence[EpochStats], path: Path) -> None:
    """history.csv, one row per epoch."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(list(EpochStats.__dataclass_fields__))
    for h in history:
        writer.writerow([h.epoch, f"{h.train_loss:.5f}", f"{h.train_acc:.5f}", f"{h.valid_loss:.5f}",
                         f"{h.valid_acc:.5f}", f"{h.lr:.3g}", f"{h.seconds:.2f}"])
    atomic_write_text(path, buf.getvalue())


def write_eval_outputs(result: EvalResult, names: Sequence[str], out_dir: Path, split: str = "test") -> dict[str, Path]:
    """`<split>_confusion.png` and `<split>_report.json` in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{split}_confusion.png"
    js = out_dir / f"{split}_report.json"
    plot_confusion(result.confusion, names, png, f"{split}: accuracy {result.accuracy:.3f}, macro-F1 {result.macro_f1:.3f}")
    atomic_write_json(js, {"split": split, "class_names": list(names), **result.summary()})
    return {"confusion": png, "report": js}


class WarmupCosine:
    """LR = base x (warm-up, then cosine to 1 %) of the training progress.

    Progress is the larger of epochs done / epoch budget and seconds spent / time budget, so a run
    capped by --time-limit still anneals fully instead of stopping at a high learning rate.
    """

    WARMUP = 0.05

    def __init__(self, optimizer: torch.optim.Optimizer, epochs: int, time_limit: float | None):
        self.optimizer = optimizer
        self.epochs = epochs
        self.time_limit = time_limit
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.epochs_done = 0
        self.seconds = 0.0
        self._apply()

    @property
    def progress(self) -> float:
        done = self.epochs_done / self.epochs
        if self.time_limit:
            done = max(done, self.seconds / self.time_limit)
        return min(1.0, done)

    def factor(self) -> float:
        p = self.progress
        if p < self.WARMUP:
            return max(0.1, p / self.WARMUP)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (p - self.WARMUP) / (1 - self.WARMUP)))

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.factor()

    def step(self, seconds: float) -> None:
        self.epochs_done += 1
        self.seconds += seconds
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": self.base_lrs, "epochs_done": self.epochs_done, "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lrs = list(state["base_lrs"])
        self.epochs_done = int(state["epochs_done"])
        self.seconds = float(state["seconds"])
        self._apply()


# `--mix auto` mixes only from-scratch runs at least this long: a regulariser for long runs on small
# sets (with progressive resizing, +7 points test accuracy on wonders7 at 120 epochs), it slows
# learning in short ones.
MIX_MIN_EPOCHS = 40


def make_mixer(mode: str, num_classes: int, long_scratch_run: bool) -> Callable | None:
    """CutMix and/or MixUp on whole batches (torchvision v2); auto: both for long from-scratch runs."""
    from torchvision.transforms import v2 as T

    if mode == "auto":
        mode = "both" if long_scratch_run else "none"
    if mode == "none":
        return None
    choices = {"mixup": [T.MixUp(alpha=0.2, num_classes=num_classes)],
               "cutmix": [T.CutMix(alpha=1.0, num_classes=num_classes)]}
    if mode == "both":
        return T.RandomChoice(choices["mixup"] + choices["cutmix"])
    if mode not in choices:
        raise LandmarkError(f"unknown --mix {mode!r}; use auto, none, mixup, cutmix or both")
    return choices[mode][0]


class _Trainer:
    """State of one run: model, optimiser, scheduler, early stopping, checkpoints."""

    def __init__(self, cfg: TrainConfig, layout: DatasetLayout, paths: RunPaths):
        self.cfg = cfg
        self.layout = layout
        self.paths = paths
        self.spec = get_spec(cfg.model)
        self.device = select_device(cfg.device)
        self.dtype = select_precision(cfg.precision, self.device)
        self.channels_last = use_channels_last(self.device, self.dtype)
        pretrained = self.spec.pretrained and cfg.weights != "none"
        self.frozen = pretrained and not cfg.finetune
        self.family = "head" if self.frozen else ("finetune" if pretrained else "scratch")
        arch_epochs = ARCH_EPOCHS.get(cfg.model) if self.family == "scratch" else None
        self.epochs = cfg.epochs or arch_epochs or DEFAULT_EPOCHS[self.family]
        self.lr = cfg.lr or DEFAULT_LR[self.family]
        self.batch_size = cfg.batch_size or DEFAULT_BATCH[self.family]
        self.image_size = cfg.image_size or self.spec.image_size
        # From-scratch CNNs get a time budget by default so a laptop run ends in ~15 minutes with
        # an annealed learning rate; --time-limit 0 removes it.
        budget = cfg.time_limit if cfg.time_limit is not None else DEFAULT_TIME_LIMIT.get(self.family)
        self.time_limit = budget or None
        self.train_samples, self.valid_samples = stratified_split(layout.train, cfg.valid_split, cfg.seed)
        self.norm = self._normalization()
        self.model = build_model(cfg.model, len(layout.classes), pretrained=pretrained, head=cfg.head,
                                 embedding_dim=cfg.embedding_dim, dropout=cfg.dropout).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.history: list[EpochStats] = []
        self.best_loss = float("inf")
        self.bad_epochs = 0
        self.start_epoch = 1
        if self.frozen:
            self.model.body.requires_grad_(False)
            params = [{"params": list(self.model.head.parameters()) + list(self.model.classifier.parameters())}]
        elif pretrained:
            params = [{"params": self.model.body.parameters(), "lr": self.lr * 0.1},
                      {"params": list(self.model.head.parameters()) + list(self.model.classifier.parameters())}]
        else:
            params = [{"params": self.model.parameters()}]
        self.optimizer = self._optimizer(params)
        self.scheduler = self._scheduler()
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        scratch = self.family == "scratch"
        # Progressive resizing from 64 px up: five 2x poolings need at least 32 px at the smallest step.
        self.progressive = (scratch if cfg.progressive is None else cfg.progressive) and self.image_size >= 64
        self.mixer = make_mixer(cfg.mix, len(layout.classes), scratch and self.epochs >= MIX_MIN_EPOCHS)

    def _normalization(self) -> Normalization:
        if self.spec.mean is not None:
            return Normalization(tuple(self.spec.mean), tuple(self.spec.std))
        # Scratch models: per-channel statistics of this dataset, computed once and cached; the cache
        # is reused only for the same training photos at the same size (its fingerprint says which).
        key = stats_fingerprint(self.train_samples, self.image_size, self.cfg.seed)
        try:
            stats = json.loads(self.paths.stats.read_text())
            if stats.get("version") == STATS_VERSION and stats.get("fingerprint") == key:
                return Normalization(tuple(stats["mean"]), tuple(stats["std"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # missing, unreadable or from another version: recompute
        mean, std = channel_stats(self.train_samples, self.image_size, seed=self.cfg.seed)
        self.paths.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.paths.stats, {"version": STATS_VERSION, "mean": mean, "std": std,
                                             "data": str(self.layout.root), "image_size": self.image_size,
                                             "fingerprint": key})
        return Normalization(mean, std)

    def _optimizer(self, params) -> torch.optim.Optimizer:
        name = self.cfg.optimizer
        if name in ("adam", "adamw"):
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.cfg.weight_decay)
        if name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=0.9, nesterov=True, weight_decay=self.cfg.weight_decay)
        raise LandmarkError(f"unknown optimizer {name!r}; use adam, adamw or sgd")

    def _scheduler(self):
        name = self.cfg.scheduler
        if name == "auto":
            # Measured on wonders7 (DEVELOPERS.md): a one-cycle cosine schedule over a fixed epoch
            # budget beats plateau for from-scratch CNNs; plateau suits heads and fine-tuning.
            name = "cosine" if self.family == "scratch" else "plateau"
        if name == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, factor=0.3, patience=max(1, self.cfg.patience // 3))
        if name == "exponential":
            return torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=0.95)
        if name == "cosine":
            return WarmupCosine(self.optimizer, self.epochs, self.time_limit)
        if name == "none":
            return None
        raise LandmarkError(f"unknown scheduler {name!r}; use auto, plateau, cosine, exponential or none")

    def meta(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """Checkpoint meta for the current model."""
        return make_meta(self.model, arch=self.cfg.model, classes=list(self.layout.classes),
                         display_names=list(self.layout.display_names), image_size=self.image_size,
                         mean=self.norm.mean, std=self.norm.std, head=self.cfg.head, dropout=self.cfg.dropout,
                         train_config=self.cfg.to_dict(), metrics=metrics)

    def save(self, path: Path, epoch: int) -> None:
        state = {"epoch": epoch, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                 "best_loss": self.best_loss, "bad_epochs": self.bad_epochs,
                 "history": [list(h.__dict__.values()) for h in self.history]}
        save_checkpoint(path, self.model, self.meta(), extra={"train_state": state})

    def resume(self, path: Path) -> None:
        payload = read_checkpoint(path)
        self.model.load_state_dict(payload["state_dict"])
        # The weights were trained with the checkpoint's normalisation, whatever the data holds now.
        meta = payload["meta"]
        self.norm = Normalization(tuple(meta["mean"]), tuple(meta["std"]))
        state = payload.get("train_state")
        if not state:
            raise CheckpointError(f"{path}: no training state to resume from")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        self.best_loss = state["best_loss"]
        self.bad_epochs = state["bad_epochs"]
        self.history = [EpochStats(*row) for row in state["history"]]
        self.start_epoch = state["epoch"] + 1

    def step_scheduler(self, valid_loss: float) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(valid_loss)
        elif isinstance(self.scheduler, WarmupCosine):
            self.scheduler.step(self.history[-1].seconds)
        elif self.scheduler is not None:
            self.scheduler.step()

    def end_epoch(self, stats: EpochStats) -> bool:
        """Record an epoch, save checkpoints; True when training should stop early."""
        # NaN, or an infinite training loss, means the weights are gone: stop before saving them. (An
        # infinite validation loss alone is validate()'s "no readable validation photo".)
        if not math.isfinite(stats.train_loss) or math.isnan(stats.valid_loss):
            loss = stats.train_loss if not math.isfinite(stats.train_loss) else stats.valid_loss
            raise LandmarkError(f"training diverged at epoch {stats.epoch} (loss {loss}); lower --lr")
        self.history.append(stats)
        self.step_scheduler(stats.valid_loss)
        # The original rule: a new best only when validation loss drops by more than 1 %.
        if stats.valid_loss < self.best_loss * 0.99:
            self.best_loss = stats.valid_loss
            self.bad_epochs = 0
            self.save(self.paths.best, stats.epoch)
        else:
            self.bad_epochs += 1
        self.save(self.paths.last, stats.epoch)
        write_history(self.history, self.paths.history)
        # A one-cycle schedule only pays off once the rate anneals: don't stop it in its noisy middle.
        patience = self.cfg.patience
        if isinstance(self.scheduler, WarmupCosine):
            patience = max(patience, self.epochs // 3)
        return self.bad_epochs >= patience

    @property
    def progress(self) -> float:
        """Fraction of the training budget spent (epochs or time, whichever runs out first)."""
        if isinstance(self.scheduler, WarmupCosine):
            return self.scheduler.progress
        return len(self.history) / self.epochs

    def _batch_to(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def extract(self, samples: Sequence[Sample], transform: Callable, views: int, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen-backbone features for `views` transformed copies of every sample."""
        ds = ImageDataset(samples, transform, self.image_size, preload=views > 1, views=views)
        feats, labels = [], []
        self.model.body.eval()
        with torch.inference_mode():
            for batch in tqdm(make_loader(ds, self.batch_size, shuffle=False, workers=self.cfg.workers,
                                          seed=self.cfg.seed), desc=desc, disable=self.cfg.quiet, leave=False):
                if batch is None:
                    continue
                x, y = batch
                with autocast(self.device, self.dtype):
                    f = self.model.features(self._batch_to(x))
                feats.append(f.float().cpu())
                labels.append(y)
        if not feats:
            raise DataError(f"no readable photos for {desc}")
        return torch.cat(feats), torch.cat(labels)

    def fit_head(self) -> None:
        """Train head + classifier on cached frozen features (seconds instead of minutes)."""
        cfg = self.cfg
        train_f, train_y = self.extract(self.train_samples, TrainPreset(self.image_size, self.norm),
                                        max(1, cfg.feature_views), "features (train views)")
        eval_preset = EvalPreset(self.image_size, self.norm)
        valid_f, valid_y = (self.extract(self.valid_samples, eval_preset, 1, "features (valid)")
                            if self.valid_samples else (train_f[:0], train_y[:0]))
        gen = torch.Generator().manual_seed(cfg.seed)
        loader = DataLoader(TensorDataset(train_f, train_y), batch_size=self.batch_size, shuffle=True,
                            generator=gen, drop_last=len(train_f) > self.batch_size)
        head = nn.Sequential(self.model.head, self.model.classifier).to(self.device)
        bar = tqdm(range(self.start_epoch, self.epochs + 1), desc="train head", disable=cfg.quiet)
        for epoch in bar:
            start = time.time()
            head.train()
            tally = [0.0, 0, 0]
            for f, y in loader:
                f, y = f.to(self.device), y.to(self.device)
                self._optimise(head(f), y, tally)
            loss_sum, correct, total = tally
            head.eval()
            with torch.inference_mode():
                if len(valid_f):
                    vlogits = head(valid_f.to(self.device))
                    vloss = F.cross_entropy(vlogits, valid_y.to(self.device)).item()
                    vacc = (vlogits.argmax(1).cpu() == valid_y).float().mean().item()
                else:
                    vloss, vacc = loss_sum / total, correct / total
            stats = EpochStats(epoch, loss_sum / total, correct / total, vloss, vacc,
                               self.optimizer.param_groups[-1]["lr"], time.time() - start)
            bar.set_postfix(loss=f"{stats.train_loss:.3f}", val_loss=f"{vloss:.3f}", val_acc=f"{vacc:.3f}")
            if self.end_epoch(stats) or self._out_of_time():
                break

    def _out_of_time(self) -> bool:
        if isinstance(self.scheduler, WarmupCosine):
            return self.scheduler.progress >= 1.0
        return bool(self.time_limit) and sum(h.seconds for h in self.history) >= self.time_limit

    def fit_full(self) -> None:
        """Train the whole network end to end (scratch models, --finetune, --weights none)."""
        cfg = self.cfg
        small = len(self.train_samples) <= 20000
        train_ds = ImageDataset(self.train_samples, TrainPreset(self.image_size, self.norm), self.image_size, preload=small)
        valid_ds = ImageDataset(self.valid_samples, EvalPreset(self.image_size, self.norm), self.image_size, preload=small)
        train_loader = make_loader(train_ds, self.batch_size, shuffle=True, workers=cfg.workers, seed=cfg.seed,
                                   drop_last=len(train_ds) > self.batch_size)
        valid_loader = make_loader(valid_ds, self.batch_size * 2, shuffle=False, workers=cfg.workers)
        for epoch in range(self.start_epoch, self.epochs + 1):
            start = time.time()
            train_loss, train_acc = self.train_one_epoch(train_loader, epoch)
            valid_loss, valid_acc = self.validate(valid_loader) if len(valid_ds) else (train_loss, train_acc)
            stats = EpochStats(epoch, train_loss, train_acc, valid_loss, valid_acc,
                               self.optimizer.param_groups[-1]["lr"], time.time() - start)
            if not cfg.quiet:
                print(f"epoch {epoch}/{self.epochs}: loss {train_loss:.3f} acc {train_acc:.3f} | "
                      f"valid loss {valid_loss:.3f} acc {valid_acc:.3f} | {stats.seconds:.1f}s", file=sys.stderr)
            if self.end_epoch(stats) or self._out_of_time():
                break

    def augment_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch-level augmentation of from-scratch training: progressive resizing and CutMix/MixUp.

        Progressive resizing trains the first 40 % of the budget at 3/4 of the image size and the
        next 30 % at 7/8 (about 1.8x and 1.3x faster steps; PROGRESSIVE_SCALES per architecture),
        ending at full size; mixing stops for the last 15 % so the final epochs see clean photos.
        Returns the batch and its (soft) targets.
        """
        p = self.progress
        if self.progressive:
            first, second = PROGRESSIVE_SCALES.get(self.cfg.model, PROGRESSIVE_SCALES["scratch"])
            scale = first if p < 0.4 else second if p < 0.7 else 1.0
            size = int(round(self.image_size * scale / 8)) * 8
            if size < x.shape[-1]:
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
        if self.mixer is None or p >= 0.85 or len(y) < 2:
            return x, y
        x, target = self.mixer(x, y)
        return (x.contiguous(memory_format=torch.channels_last) if self.channels_last else x), target

    def _optimise(self, logits: torch.Tensor, y: torch.Tensor, tally: list, target: torch.Tensor | None = None) -> None:
        """One optimiser step on these logits' loss against target (default y); adds (loss sum, correct, seen) to tally."""
        loss = self.criterion(logits.float(), y if target is None else target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        tally[0] += loss.item() * len(y)
        tally[1] += (logits.argmax(1) == y).sum().item()
        tally[2] += len(y)

    def train_one_epoch(self, loader: DataLoader, epoch: int) -> tuple[float, float]:
        self.model.train()
        if self.frozen:
            self.model.body.eval()
        tally = [0.0, 0, 0]  # loss sum, correct, seen
        bar = tqdm(loader, desc=f"epoch {epoch}", disable=self.cfg.quiet, leave=False)
        for batch in bar:
            if batch is None:
                continue
            x, y = batch
            x, y = self._batch_to(x), y.to(self.device)
            x, target = self.augment_batch(x, y)
            with autocast(self.device, self.dtype):
                logits = self.model(x)
            self._optimise(logits, y, tally, target)
            bar.set_postfix(loss=f"{tally[0] / tally[2]:.3f}", acc=f"{tally[1] / tally[2]:.3f}")
        loss_sum, correct, total = tally
        if total == 0:
            raise DataError("no readable photos in the training set")
        return loss_sum / total, correct / total

    def validate(self, loader: DataLoader) -> tuple[float, float]:
        self.model.eval()
        total, correct, loss_sum = 0, 0, 0.0
        with torch.inference_mode():
            for batch in loader:
                if batch is None:
                    continue
                x, y = batch
                x, y = self._batch_to(x), y.to(self.device)
                with autocast(self.device, self.dtype):
                    logits = self.model(x).float()
                loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(1) == y).sum().item()
                total += len(y)
        return (loss_sum / total, correct / total) if total else (float("inf"), 0.0)


def check_config(cfg: TrainConfig) -> None:
    """Refuse an option torch would only reject deep inside training (or silently replace); LandmarkError."""
    spec = get_spec(cfg.model)  # an unknown name lists the known ones
    if cfg.epochs is not None and cfg.epochs < 1:
        raise LandmarkError(f"--epochs {cfg.epochs}: use 1 or more (leave it out for the model's default)")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise LandmarkError(f"--batch-size {cfg.batch_size}: use 1 or more (leave it out for the default)")
    if cfg.lr is not None and not (0 < cfg.lr < math.inf):
        raise LandmarkError(f"--lr {cfg.lr}: use a positive learning rate such as 1e-3")
    if not 0 <= cfg.weight_decay < math.inf:
        raise LandmarkError(f"--weight-decay {cfg.weight_decay}: use 0 or more, e.g. 5e-4")
    if not 0 <= cfg.dropout < 1:
        raise LandmarkError(f"--dropout {cfg.dropout}: use a value in [0, 1), e.g. 0.3")
    if not 0 <= cfg.label_smoothing < 1:
        raise LandmarkError(f"--label-smoothing {cfg.label_smoothing}: use a value in [0, 1), e.g. 0.1")
    if not 0 <= cfg.valid_split < 1:
        raise LandmarkError(f"--valid-split {cfg.valid_split}: use a fraction in [0, 1), e.g. 0.2 "
                            "(0 for no validation split)")
    if cfg.patience < 1:
        raise LandmarkError(f"--patience {cfg.patience}: use 1 or more epochs")
    if cfg.head not in HEADS:
        raise LandmarkError(f"unknown --head {cfg.head!r}; use embed or linear")
    if cfg.embedding_dim < 1:
        raise LandmarkError(f"--embedding-dim {cfg.embedding_dim}: use 1 or more, e.g. 256")
    if cfg.image_size is not None and cfg.image_size < MIN_IMAGE_SIZE:
        raise LandmarkError(f"--image-size {cfg.image_size} is too small for {cfg.model}, which halves the image "
                            f"5 times; use at least {MIN_IMAGE_SIZE} (its default is {spec.image_size})")
    if cfg.time_limit is not None and not cfg.time_limit >= 0:
        raise LandmarkError(f"--time-limit {cfg.time_limit}: use seconds > 0, or 0 for no limit")
    if cfg.weights not in ("default", "none"):
        raise LandmarkError(f"--weights {cfg.weights}: use default or none")
    for option, value, known in (("optimizer", cfg.optimizer, OPTIMIZERS), ("scheduler", cfg.scheduler, SCHEDULERS),
                                 ("mix", cfg.mix, MIX_MODES), ("precision", cfg.precision, TRAIN_PRECISIONS)):
        if value not in known:
            raise LandmarkError(f"unknown --{option} {value!r}; use {', '.join(known)}")


def _written_by_us(path: Path) -> bool:
    """True when a run-folder file that users might also name so (config.json, report.html...) is ours."""
    try:
        head = path.read_bytes()[:4096] if path.suffix in (".csv", ".html") else b""
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            return isinstance(data, dict) and ({"model", "data", "epochs"} <= data.keys()  # config.json
                                               or {"epochs_run", "best_valid_loss"} <= data.keys()  # metrics
                                               or {"mean", "std"} <= data.keys()  # mean_std.json
                                               or "accuracy" in data)  # test/train_report.json
    except (OSError, ValueError):
        return False
    if path.suffix == ".csv":
        return head.startswith(b"epoch,train_loss,")
    if path.suffix == ".html":  # the generator tag, or the title of reports made before it existed
        return b"content='landmark-search'" in head or b"<title>Training report: " in head
    return True  # checkpoints and plots go by their names alone


def prepare_run_dir(paths: RunPaths, overwrite: bool = False) -> None:
    """Refuse a folder that already holds a run; with overwrite, delete only the files landmark wrote there.

    A file that only shares a name with ours (a user's own config.json or report.html) is never
    deleted or replaced: the folder is refused, --overwrite or not.
    """
    root = paths.root
    if root.exists() and not root.is_dir():
        raise LandmarkError(f"--out {root} is a file; pass a folder for the run")
    owned = [getattr(paths, f.name).name for f in fields(paths) if f.name != "root"]
    ours = [root / name for name in (*owned, *RUN_EXTRA_FILES) if (root / name).is_file()]
    foreign = [path.name for path in ours if not _written_by_us(path)]
    if foreign:
        raise LandmarkError(f"--out {root} holds {', '.join(foreign)} that landmark-search did not write; "
                            "pick another --out (nothing was changed)")
    if overwrite:
        for path in ours:
            path.unlink(missing_ok=True)
        for name in (*owned, *RUN_EXTRA_FILES):
            for tmp in root.glob(f".{name}.*.tmp"):  # left by an interrupted atomic write
                tmp.unlink(missing_ok=True)
        return
    held = [name for name in RUN_MARKERS if (root / name).exists()]
    if held:
        hint = f"continue it with --resume {root}, " if "last.pt" in held else ""
        raise LandmarkError(f"--out {root} already holds a training run ({', '.join(held)}); {hint}"
                            "replace it with --overwrite, or pick a new --out")


def dataset_dir(data: str | Path) -> Path:
    """A --data folder as a Path, refusing an empty or missing one (discover() would blame a missing train/)."""
    if not str(data):
        raise DataError("no dataset folder given; pass --data DIR (a folder with train/<class>/ photos)")
    root = Path(data)
    if not root.exists():
        raise DataError(f"--data {root}: no such folder; make a dataset with `landmark data synth DIR` "
                        "or `landmark data download DIR`")
    return root


def stats_fingerprint(samples: Sequence[Sample], image_size: int, seed: int) -> str:
    """sha256 naming the photos (path, label, size, mtime), image size and seed that channel stats came from."""
    digest = hashlib.sha256(f"{STATS_VERSION}|{image_size}|{seed}".encode())
    for path, label in sorted((os.path.abspath(p), label) for p, label in samples):
        try:
            st = os.stat(path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size = mtime = -1
        digest.update(f"{path}|{label}|{size}|{mtime}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def default_run_dir(model: str) -> Path:
    """runs/<model>-<timestamp>."""
    return Path("runs") / f"{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def fit(cfg: TrainConfig, resume: str | Path | None = None, overwrite: bool = False) -> TrainResult:
    """Train a model on cfg.data, write the run directory, evaluate best.pt on test/ when present.

    A cfg.out that already holds a run is refused unless `overwrite` (which deletes only the files
    landmark writes there); `resume` continues the run in that folder instead.
    """
    t0 = time.time()
    if resume and overwrite:
        raise LandmarkError("--resume continues a run and --overwrite replaces one; use one of them")
    if resume:
        resume = Path(resume)
        last = resume / "last.pt"
        saved = read_checkpoint(last)["meta"]["train_config"]
        # Resuming keeps the run's own settings; only the epoch budget may be extended.
        cfg = replace(TrainConfig.from_dict(saved), epochs=cfg.epochs or saved.get("epochs"), quiet=cfg.quiet,
                      out=str(resume))
    # Everything that can be refused is refused before the run folder is touched.
    check_config(cfg)
    seed_everything(cfg.seed)
    layout = discover(dataset_dir(cfg.data))
    out = Path(cfg.out) if cfg.out else default_run_dir(cfg.model)
    cfg = replace(cfg, out=str(out))
    paths = RunPaths(out)
    if not resume:
        prepare_run_dir(paths, overwrite)
    trainer = _Trainer(cfg, layout, paths)
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        trainer.resume(paths.last)
    atomic_write_json(paths.config, {**cfg.to_dict(), "epochs": trainer.epochs, "lr": trainer.lr,
                                     "image_size": trainer.image_size, "family": trainer.family,
                                     "batch_size": trainer.batch_size})
    if trainer.frozen:
        trainer.fit_head()
    else:
        trainer.fit_full()
    plot_curves(trainer.history, paths.curves)
    train_seconds = time.time() - t0
    metrics: dict[str, Any] = {"train_seconds": round(train_seconds, 1), "epochs_run": len(trainer.history),
                               "best_valid_loss": trainer.best_loss}
    if not paths.best.exists():  # no epoch improved on inf: keep the last weights as best
        trainer.save(paths.best, len(trainer.history))
    model, meta = load_checkpoint(paths.best)
    if layout.test:
        result = evaluate(model, layout.test, meta, device=cfg.device, precision=cfg.precision,
                          batch_size=trainer.batch_size, workers=cfg.workers, quiet=cfg.quiet)
        write_eval_outputs(result, meta["display_names"], out, "test")
        metrics.update({"test_accuracy": result.accuracy, "test_macro_f1": result.macro_f1,
                        "test_weighted_f1": result.weighted_f1, "n_test": len(result.y_true),
                        "test_skipped": result.skipped})
    metrics["total_seconds"] = round(time.time() - t0, 1)
    atomic_write_json(paths.metrics, metrics)
    # The best checkpoint carries its own scores, so `landmark classify` can show them.
    payload = read_checkpoint(paths.best)
    payload["meta"]["metrics"] = {k: v for k, v in metrics.items() if not isinstance(v, list)}
    model.load_state_dict(payload["state_dict"])
    # best.pt is the deliverable: its optimiser state (2x the weights) stays in last.pt only.
    save_checkpoint(paths.best, model, payload["meta"], extra={k: v for k, v in payload.items() if k not in
                                                               ("meta", "state_dict", "format", "version", "train_state")})
    return TrainResult(paths, trainer.history, metrics, time.time() - t0)
