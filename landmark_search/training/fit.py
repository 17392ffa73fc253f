"""fit: recipe -> model -> epoch loop -> evaluation of the best weights -> best.pt written with its metrics."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from ..config import RunPaths, TrainConfig
from ..data.datasets import DatasetLayout, ImageDataset, discover, stratified_split
from ..data.transforms import EvalPreset, Normalization, TrainPreset
from ..errors import CheckpointError, DataError, LandmarkError
from ..fsutil import atomic_write_bytes, atomic_write_json
from ..models import build_model, get_spec
from ..models.checkpoint import make_meta, openset_payload, read_checkpoint, save_checkpoint
from ..models.runtime import default_workers
from ..places.table import Place, display_names, resolve_places
from . import distributed
from ..models.openset import calibrate
from .calibrate import calibrate_model, with_references
from .extend import Extension, prepare_extension
from ..render.plots import curves_png
from .loop import (Runtime, extract_features, feature_engine, full_batch_head_epoch, make_loader,
                   seed_everything, train_head_epoch, train_one_epoch, validate, validate_head)
from .metrics import evaluate, write_eval_outputs
from .recipe import PROBE_C, Recipe, check_config
from .run_dir import (EpochStats, cached_channel_stats, cached_features, dataset_dir, default_run_dir, history_rows,
                      prepare_run_dir, stats_fingerprint, write_history)
from .schedule import Progress, Schedule, augment_batch, build_optimizer, make_mixer

log = logging.getLogger(__name__)
# A new best needs the validation loss to drop by more than 1 % (the original project's rule).
BEST_MARGIN = 0.99


@dataclass(frozen=True)
class TrainResult:
    """Where a run's files are and how it scored."""

    paths: RunPaths
    history: list[EpochStats]
    metrics: dict[str, Any]
    seconds: float
    main: bool = True  # False on the torchrun ranks other than 0, which write nothing and report nothing


@dataclass
class _Best:
    """Early stopping and the best weights so far (a CPU copy, written to best.pt when they improve)."""

    loss: float = math.inf
    bad_epochs: int = 0
    weights: dict[str, torch.Tensor] | None = None


class _Run:
    """One training run: the model, its optimiser and schedule, and the files it keeps up to date."""

    def __init__(self, cfg: TrainConfig, layout: DatasetLayout, paths: RunPaths, resume: dict[str, Any] | None,
                 display_names: list[str], ranks: distributed.Ranks = distributed.Ranks(),
                 extra: dict[str, torch.Tensor] | None = None):
        self.cfg, self.layout, self.paths, self.ranks = cfg, layout, paths, ranks
        self.extra = extra  # cached features of photos that are gone (train --extend), extension.FEATURE_KEYS
        self.display_names = display_names  # places.display_names: the one name of each class
        self.photo_features: tuple[np.ndarray, np.ndarray] | None = None  # fit_head's, for the calibration
        spec = get_spec(cfg.model)
        self.recipe = recipe = Recipe.resolve(cfg, spec)
        self.rt = Runtime.select(cfg.device, cfg.precision)
        self.train_samples, self.valid_samples = stratified_split(layout.train, recipe.valid_split, cfg.seed)
        if resume:  # the weights were trained with the checkpoint's normalisation, whatever the data holds now
            self.norm = Normalization(tuple(resume["meta"]["mean"]), tuple(resume["meta"]["std"]))
        elif spec.mean is not None:
            self.norm = Normalization(tuple(spec.mean), tuple(spec.std))
        else:  # scratch models: this dataset's own channel statistics (rank 0 computes and keeps them)
            self.norm = distributed.from_main(ranks, lambda: cached_channel_stats(
                paths, self.train_samples, recipe.image_size, cfg.seed, layout.root))
        # Seeded after the set-up above (its first run in a process imports scikit-learn, which draws Python random
        # numbers), so that the same seed gives the same run whatever the process did before; the same weights on
        # every rank (L-BFGS heads are not broadcast).
        seed_everything(cfg.seed)
        self.model = build_model(cfg.model, len(layout.classes), pretrained=recipe.pretrained, head=recipe.head,
                                 embedding_dim=cfg.embedding_dim, dropout=cfg.dropout).to(self.rt.device)
        if self.rt.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(recipe, self._param_groups(), cfg.weight_decay)
        self.progress = Progress(recipe.epochs, recipe.time_limit)
        self.schedule = Schedule(recipe, self.optimizer, self.progress)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.mixer = make_mixer(recipe.mix, len(layout.classes))
        self.history: list[EpochStats] = []
        self.best = _Best()
        self.stopped_early: int | None = None  # the epoch at which --patience epochs had brought no gain
        self.converged: int | None = None  # the epoch after which L-BFGS no longer moved the head
        self.start_epoch = 1
        if resume:
            self._resume(resume)

    def _param_groups(self) -> list[dict[str, Any]]:
        model, recipe = self.model, self.recipe
        head = list(model.head.parameters()) + list(model.classifier.parameters())
        if recipe.frozen:
            model.body.requires_grad_(False)
            return [{"params": head}]
        if recipe.pretrained:  # fine-tuning: the pretrained body moves 10x slower than the new head
            return [{"params": model.body.parameters(), "lr": recipe.lr * 0.1}, {"params": head}]
        return [{"params": model.parameters()}]

    def _resume(self, payload: dict[str, Any]) -> None:
        state = payload.get("train_state")
        if not state:
            raise CheckpointError(f"{self.paths.last}: no training state to resume from")
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = [EpochStats(*row) for row in state["history"]]
        self.progress.epochs_done = len(self.history)
        self.progress.seconds = sum(h.seconds for h in self.history)
        self.schedule.load_state_dict(state["scheduler"])
        self.best = _Best(state["best_loss"], state["bad_epochs"])
        if self.paths.best.is_file():
            self.best.weights = read_checkpoint(self.paths.best)["state_dict"]
        self.start_epoch = state["epoch"] + 1

    def meta(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """Checkpoint meta for the current model."""
        cfg = self.cfg
        return make_meta(self.model, arch=cfg.model, classes=list(self.layout.classes),
                         display_names=self.display_names, image_size=self.recipe.image_size,
                         mean=self.norm.mean, std=self.norm.std, head=self.recipe.head, dropout=cfg.dropout,
                         train_config=cfg.to_dict(), metrics=metrics)

    def config_record(self) -> dict[str, Any]:
        """config.json: what ran (the recipe's resolved values, the device and precision used), and under
        "requested" the options that asked for a default or "auto"."""
        r, given = self.recipe, self.cfg.to_dict()
        ran = {"epochs": r.epochs, "lr": r.lr, "image_size": r.image_size, "family": r.family,
               "batch_size": r.batch_size, "optimizer": r.optimizer, "scheduler": r.scheduler, "mix": r.mix,
               "progressive": r.progressive, "time_limit": r.time_limit, "patience": r.patience,
               "head": r.head, "valid_split": r.valid_split,
               "device": self.rt.device.type,
               "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.rt.dtype,
                                                                                            str(self.rt.dtype))}
        requested = {k: given[k] for k in ran if k in given and given[k] != ran[k]}
        return {**given, **ran, "processes": self.ranks.world, "requested": requested}

    def end_epoch(self, stats: EpochStats) -> bool:
        """Record an epoch and keep the run's files current; True when the run should stop."""
        # NaN, or an infinite training loss, means the weights are gone: stop before saving them. (An
        # infinite validation loss alone is validate()'s "no readable validation photo".)
        if not math.isfinite(stats.train_loss) or math.isnan(stats.valid_loss):
            loss = stats.train_loss if not math.isfinite(stats.train_loss) else stats.valid_loss
            raise LandmarkError(f"training diverged at epoch {stats.epoch} (loss {loss}); lower --lr")
        self.history.append(stats)
        self.schedule.epoch_done(stats.seconds, stats.valid_loss)
        writes = self.ranks.main  # every rank keeps the same state; rank 0 alone writes the run folder
        if stats.valid_loss < self.best.loss * BEST_MARGIN:
            self.best = _Best(stats.valid_loss, 0, {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()})
            if writes:
                save_checkpoint(self.paths.best, self.model, self.meta())  # a usable model even if the run is stopped
        else:
            self.best.bad_epochs += 1
        if writes:
            train_state = {"epoch": stats.epoch, "optimizer": self.optimizer.state_dict(),
                           "scheduler": self.schedule.state_dict(), "best_loss": self.best.loss,
                           "bad_epochs": self.best.bad_epochs, "history": history_rows(self.history)}
            save_checkpoint(self.paths.last, self.model, self.meta(), extra={"train_state": train_state})
            write_history(self.history, self.paths.history)
        if self.best.bad_epochs >= self.recipe.patience:
            self.stopped_early = stats.epoch
        return self.stopped_early is not None or self.progress.finished

    def _stats(self, epoch: int, start: float, train: tuple[float, float], valid: tuple[float, float]) -> EpochStats:
        """The epoch's row; with several processes the losses are already means over the ranks, and rank 0's
        clock counts for all, so that every rank takes the same early-stop and schedule decisions."""
        stats = EpochStats(epoch, *train, *valid, self.optimizer.param_groups[-1]["lr"], time.time() - start)
        return distributed.from_main(self.ranks, lambda: stats)

    @property
    def workers(self) -> int:
        """DataLoader workers of this process: the machine's share when several processes train on it."""
        if self.cfg.workers >= 0 or not self.ranks.active:
            return self.cfg.workers
        return default_workers() // self.ranks.world

    def fit_head(self) -> None:
        """Train head + classifier on cached frozen features (seconds instead of minutes)."""
        cfg, r, ranks = self.cfg, self.recipe, self.ranks
        engine = feature_engine(self.model, r.image_size, self.norm.mean, self.norm.std, self.rt, cfg.precision)
        common = dict(image_size=r.image_size, batch_size=r.batch_size, workers=self.workers,
                      seed=cfg.seed + ranks.rank, quiet=cfg.quiet, engine=engine)

        def extract() -> dict[str, torch.Tensor]:
            # Several processes: each extracts its share of the photos, and every rank gets them all.
            train = distributed.shard(self.train_samples, ranks)
            valid = distributed.shard(self.valid_samples, ranks)
            if cfg.feature_views == 0:  # the photos as tag and classify see them: the one inference path
                train_f, train_y = self._inference_features(train)
                valid_f, valid_y = self._inference_features(valid) if valid else (train_f[:0], train_y[:0])
            else:
                train_f, train_y = extract_features(self.model, train, TrainPreset(r.image_size, self.norm),
                                                    cfg.feature_views, self.rt, desc="features (train views)",
                                                    **common)
                valid_f, valid_y = (extract_features(self.model, valid, EvalPreset(r.image_size, self.norm),
                                                     1, self.rt, desc="features (valid)", **common)
                                    if valid else (train_f[:0], train_y[:0]))
            feats = {name: distributed.gather(t, ranks) for name, t in
                     (("train_f", train_f), ("train_y", train_y), ("valid_f", valid_f), ("valid_y", valid_y))}
            # Features of photos that are gone join them, and stay in this run's features.pt for a later --extend.
            return {k: torch.cat([t, self.extra[k].to(t.dtype)]) for k, t in feats.items()} if self.extra else feats

        key = (f"{cfg.model}|{cfg.weights}|{cfg.feature_views or 'inference'}|{self.norm}|{self.rt.device.type}|"
               f"{self.rt.dtype}|{engine.route if engine else 'torch'}|"
               f"{stats_fingerprint(self.train_samples, r.image_size, cfg.seed)}|"
               f"{stats_fingerprint(self.valid_samples, r.image_size, cfg.seed)}")
        # --resume reuses them (float16 both times); rank 0 keeps them
        feats = cached_features(self.paths.root, key, extract, write=ranks.main)
        train_f, train_y, valid_f, valid_y = (feats["train_f"].float(), feats["train_y"], feats["valid_f"].float(),
                                              feats["valid_y"])
        if cfg.feature_views == 0:  # the open-set calibration needs these very features (calibrate.py)
            self.photo_features = (torch.cat([train_f, valid_f]).numpy(), torch.cat([train_y, valid_y]).numpy())
        gen = torch.Generator().manual_seed(cfg.seed)
        data = TensorDataset(train_f, train_y)
        sampler, batch, mine = distributed.share(data, r.batch_size, ranks, seed=cfg.seed)
        loader = DataLoader(data, batch_size=batch, shuffle=sampler is None, sampler=sampler, generator=gen,
                            drop_last=mine > batch)
        head = nn.Sequential(self.model.head, self.model.classifier).to(self.rt.device)
        # L-BFGS needs no gradient exchange (each rank fits the same full batch); the others share gradients
        trained = head if r.optimizer == "lbfgs" else distributed.wrap(head, ranks)
        # disable=None: no bar when stderr is not a terminal (a log file), as with --quiet
        bar = tqdm(range(self.start_epoch, r.epochs + 1), desc="train head", disable=True if cfg.quiet else None)
        for epoch in bar:
            start = time.time()
            if sampler is not None:
                sampler.set_epoch(epoch)
            if r.optimizer == "lbfgs":  # every rank holds all features and takes the same deterministic step
                train = full_batch_head_epoch(head, train_f, train_y, self.optimizer, self.criterion, PROBE_C,
                                              self.rt.device)
            else:
                train = distributed.mean(train_head_epoch(trained, loader, self.optimizer, self.criterion,
                                                          self.rt.device), mine, ranks)
            valid = validate_head(head, valid_f, valid_y, self.rt.device) if len(valid_f) else train
            stats = self._stats(epoch, start, train, valid)
            bar.set_postfix(loss=f"{stats.train_loss:.3f}", val_loss=f"{stats.valid_loss:.3f}",
                            val_acc=f"{stats.valid_acc:.3f}")
            stop = self.end_epoch(stats)
            if not stop and r.optimizer == "lbfgs" and self._lbfgs_converged():
                self.converged = stop = epoch
            if stop:
                bar.total = bar.n = epoch - self.start_epoch + 1  # an early stop ends the bar full, not at 9/60
                bar.refresh()
                break

    def _lbfgs_converged(self) -> bool:
        """The full-batch fit did not move in its last epoch: every later epoch would repeat it."""
        if len(self.history) < 2:
            return False
        before, now = self.history[-2].train_loss, self.history[-1].train_loss
        return math.isclose(before, now, rel_tol=1e-6, abs_tol=1e-9)

    def _inference_features(self, samples: list) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised pooled features of the photos through embeddings' inference path (decoding, crop,
        engine), so the head trains on what a photo gives at `tag` time."""
        from ..embeddings import wrap_model
        from .metrics import embed_samples

        loaded = wrap_model(self.model, self.meta())
        loaded.features = True
        out, labels = embed_samples(loaded, samples, device=self.cfg.device, precision=self.cfg.precision,
                                    batch_size=self.recipe.batch_size, workers=self.workers, quiet=True)
        feats = out.features
        if feats is None or not len(feats):
            raise DataError("no readable photos to train on")
        return torch.from_numpy(np.ascontiguousarray(feats, np.float32)), torch.as_tensor(labels, dtype=torch.long)

    def augment(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return augment_batch(x, y, self.progress.fraction, self.recipe, self.mixer, self.rt.channels_last)

    def fit_full(self) -> None:
        """Train the whole network end to end (scratch models, --finetune, --weights none)."""
        cfg, r, ranks = self.cfg, self.recipe, self.ranks
        small = len(self.train_samples) <= 20000
        train_ds = ImageDataset(self.train_samples, TrainPreset(r.image_size, self.norm), r.image_size, preload=small)
        # Several processes: each validates its share, and the losses are averaged over the ranks.
        valid_ds = ImageDataset(distributed.shard(self.valid_samples, ranks), EvalPreset(r.image_size, self.norm),
                                r.image_size, preload=small)
        sampler, batch, mine = distributed.share(train_ds, r.batch_size, ranks, seed=cfg.seed)
        train_loader = make_loader(train_ds, batch, shuffle=True, workers=self.workers, seed=cfg.seed + ranks.rank,
                                   drop_last=mine > batch, sampler=sampler)
        valid_loader = make_loader(valid_ds, r.batch_size * 2, shuffle=False, workers=self.workers)
        model = distributed.wrap(self.model, ranks)
        # The same weights everywhere (DDP broadcast them), different augmentations per rank; seeded again here so
        # that nothing the set-up drew (photo loading, statistics) moves them.
        seed_everything(cfg.seed + ranks.rank)
        for epoch in range(self.start_epoch, r.epochs + 1):
            start = time.time()
            if sampler is not None:
                sampler.set_epoch(epoch)
            train = distributed.mean(train_one_epoch(model, train_loader, self.optimizer, self.criterion, self.rt,
                                                     augment=self.augment, desc=f"epoch {epoch}", quiet=cfg.quiet),
                                     mine, ranks)
            valid = (distributed.mean(validate(self.model, valid_loader, self.rt), len(valid_ds), ranks)
                     if self.valid_samples else train)
            stats = self._stats(epoch, start, train, valid)
            if not cfg.quiet:
                log.info("epoch %d/%d: loss %.3f acc %.3f | valid loss %.3f acc %.3f | %.1fs", epoch, r.epochs,
                         stats.train_loss, stats.train_acc, stats.valid_loss, stats.valid_acc, stats.seconds)
            if self.end_epoch(stats):
                break

    def use_best_weights(self) -> None:
        """Put the best weights back into the model (the last ones when no epoch improved on inf)."""
        if self.best.weights is not None:
            self.model.load_state_dict(self.best.weights)


def _resume_payload(cfg: TrainConfig, resume: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The run's own settings from its last.pt (only the epoch budget may be extended), and last.pt itself."""
    resume = Path(resume)
    payload = read_checkpoint(resume / "last.pt")
    saved = payload["meta"]["train_config"]
    # The run's own dataset unless --data names where it is now.
    cfg = replace(TrainConfig.from_dict(saved), epochs=cfg.epochs or saved.get("epochs"), quiet=cfg.quiet,
                  out=str(resume), data=cfg.data or saved.get("data", ""))
    return cfg, payload


def fit(cfg: TrainConfig, resume: str | Path | None = None, overwrite: bool = False,
        extend: str | Path | None = None) -> TrainResult:
    """Train a model on cfg.data, write the run directory, evaluate the best weights on test/ when present.

    A cfg.out that already holds a run is refused unless `overwrite` (which deletes only the files
    landmark writes there); `resume` continues the run in that folder instead. Under torchrun (WORLD_SIZE > 1)
    the processes train together (distributed.py) and rank 0 alone writes the run; the others return empty
    metrics. `extend` (an earlier run's best.pt) trains a model that knows its classes and cfg.data's (extend.py).
    """
    ranks = distributed.start(cfg.device)
    try:
        return _fit(cfg, resume, overwrite, ranks, extend)
    finally:
        distributed.stop(ranks)


def _fit(cfg: TrainConfig, resume: str | Path | None, overwrite: bool, ranks: distributed.Ranks,
         extend: str | Path | None = None) -> TrainResult:
    t0 = time.time()
    if resume and overwrite:
        raise LandmarkError("--resume continues a run and --overwrite replaces one; use one of them")
    if resume and extend:
        raise LandmarkError("--resume continues a run and --extend starts one from another; use one of them")
    payload, ext = None, None
    if resume:
        cfg, payload = _resume_payload(cfg, resume)
    if extend:
        cfg, ext = prepare_extension(extend, cfg)
    # Everything that can be refused is refused before the run folder is touched.
    check_config(cfg)
    layout = ext.layout if ext else discover(dataset_dir(cfg.data))
    out = Path(cfg.out) if cfg.out else default_run_dir(cfg.model)
    cfg = replace(cfg, out=str(out))
    paths = RunPaths(out)
    # Where each landmark is (places.py); a bad places.csv is refused before anything trains.
    places = resolve_places(layout.classes, layout.train, layout.root, Path(cfg.places) if cfg.places else None)
    if ext and ext.places:  # the old landmarks keep the places their run found
        places = {**places, **{c: Place.from_dict(p) for c, p in ext.places.items() if c in layout.classes}}
    names = display_names(layout.classes, places)
    places = {c: replace(p, name=names[layout.classes.index(c)]) for c, p in places.items()}
    if not ranks.main:
        cfg = replace(cfg, quiet=True)  # one progress bar, rank 0's
    if not resume:
        distributed.from_main(ranks, lambda: prepare_run_dir(paths, overwrite))
    run = _Run(cfg, layout, paths, payload, names, ranks, extra=ext.features if ext else None)
    if ranks.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(paths.config, run.config_record())
    if run.recipe.frozen:
        run.fit_head()
    else:
        run.fit_full()
    if not ranks.main:  # calibration, evaluation and best.pt are rank 0's
        return TrainResult(paths, run.history, {}, time.time() - t0, main=False)
    # The epoch whose weights best.pt holds (the last that beat the best by the margin).
    best_epoch = next((h.epoch for h in reversed(run.history) if h.valid_loss == run.best.loss), None)
    atomic_write_bytes(paths.curves, curves_png(run.history, best_epoch))
    metrics: dict[str, Any] = {"train_seconds": round(time.time() - t0, 1), "epochs_run": len(run.history),
                               "best_valid_loss": run.best.loss, "best_epoch": best_epoch,
                               "epochs_planned": run.recipe.epochs, "patience": run.recipe.patience}
    if run.stopped_early is not None:
        metrics["stopped_early_at"] = run.stopped_early
    if run.converged is not None:
        metrics["converged_at"] = run.converged
    run.use_best_weights()
    # What says "not a landmark" for photos of anything else (openset.py), from the final weights.
    if run.photo_features is not None:  # the frozen features the head trained on: no second pass
        openset = calibrate(*run.photo_features, len(layout.classes), seed=cfg.seed)
    else:
        openset = calibrate_model(run.model, run.meta(), run.train_samples, run.valid_samples, seed=cfg.seed,
                                  device=cfg.device, precision=cfg.precision, batch_size=run.recipe.batch_size,
                                  workers=cfg.workers, quiet=True,
                                  extra={k: t.numpy() for k, t in run.extra.items()} if run.extra else None)
    openset = with_references(run.model, run.meta(), [*run.train_samples, *run.valid_samples], openset,
                              seed=cfg.seed, carried=ext.references if ext else None, device=cfg.device,
                              precision=cfg.precision, batch_size=run.recipe.batch_size, workers=cfg.workers,
                              quiet=True)
    if ext:
        metrics["extended"] = ext.record()
    if openset.references is not None:  # the geometric check (models/verify.py): how many photos, what it asks
        metrics["verify_references"] = len(openset.references.labels)
        metrics["verify_min_inliers"] = openset.references.min_inliers
    metrics["openset_threshold"] = round(openset.threshold, 6)
    metrics["openset_unknown_rate"] = openset.unknown_rate
    # what the threshold costs: known photos kept and unknown-landmark photos let through (leave-one-out)
    metrics.update({f"openset_{k}": v for k, v in openset.rates(openset.threshold).items()})
    if layout.test:
        result = evaluate(run.model, layout.test, run.meta(), device=cfg.device, precision=cfg.precision,
                          batch_size=run.recipe.batch_size, workers=cfg.workers, quiet=cfg.quiet)
        write_eval_outputs(result, names, out, "test")
        metrics.update({"test_accuracy": result.accuracy, "test_macro_f1": result.macro_f1,
                        "test_weighted_f1": result.weighted_f1, "n_test": len(result.y_true),
                        "test_skipped": result.skipped})
    metrics["total_seconds"] = round(time.time() - t0, 1)
    atomic_write_json(paths.metrics, metrics)
    # best.pt is the deliverable: its own scores (so `landmark classify` can show them), no optimiser
    # state (2x the weights; that stays in last.pt).
    meta = run.meta({k: v for k, v in metrics.items() if not isinstance(v, list)})
    meta["places"] = {cls: place.to_dict() for cls, place in places.items()}
    save_checkpoint(paths.best, run.model, meta, extra={"openset": openset_payload(openset.to_state())})
    return TrainResult(paths, run.history, metrics, time.time() - t0)
