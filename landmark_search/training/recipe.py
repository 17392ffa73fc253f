"""The training recipe: TrainConfig + model family resolved once into a frozen Recipe (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import TrainConfig
from ..errors import LandmarkError
from ..models import get_spec
from ..models.registry import ModelSpec

# Defaults per family, from measurements on ../shared/evaldata (see DEVELOPERS.md "Training recipes").
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
# Progressive resizing from 64 px up: five 2x poolings need at least 32 px at the smallest step.
MIN_PROGRESSIVE_SIZE = 64
# `--mix auto` mixes only from-scratch runs at least this long: a regulariser for long runs on small
# sets (with progressive resizing, +7 points test accuracy on wonders7 at 120 epochs), it slows
# learning in short ones.
MIX_MIN_EPOCHS = 40
OPTIMIZERS = ("auto", "lbfgs", "adamw", "adam", "sgd")
SCHEDULERS = ("auto", "plateau", "cosine", "exponential", "none")
MIX_MODES = ("auto", "none", "mixup", "cutmix", "both")
HEADS = ("auto", "embed", "power", "linear")
# A frozen backbone's head, measured on cached lite0 features (DEVELOPERS.md, "Training recipes"; test
# accuracy, mean of 3 seeds, india12 / wonders7): the Linear-BN-ReLU embedding on 80 % of the photos
# 0.945 / 0.995; one linear layer on all of them 0.973 / 0.976; on power-normalised features ("power")
# 0.976 / 1.000. The open-set threshold comes from leave-one-out on every training photo (openset.py), so
# nothing needs a validation split. Trained bodies keep the embedding and the split.
AUTO_HEAD = {"head": "power"}
# The power head is a multinomial logistic regression on fixed features: full-batch L-BFGS solves it exactly
# and deterministically, where minibatch Adam with dropout and early stopping fell short of a plain
# scikit-learn probe (india12 / wonders7 test accuracy, lite0: Adam 0.948 / 1.000, L-BFGS 0.979 / 1.000).
# PROBE_C is the inverse L2 strength in scikit-learn's convention (on unit-length features, summed loss):
# measured 3 -> 0.959, 10 -> 0.979, 30 -> 0.969 on india12 (DEVELOPERS.md, "Training recipes").
PROBE_C = 10.0
LBFGS_LR = 1.0  # a line search picks each step; the rate only scales the first trial
AUTO_VALID_SPLIT = {"head": 0.0}
DEFAULT_VALID_SPLIT = 0.2
TRAIN_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Recipe:
    """Every training choice with the family defaults filled in; nothing left to resolve later."""

    arch: str
    family: str  # "head" (frozen pretrained body), "finetune" or "scratch"
    pretrained: bool
    epochs: int
    lr: float
    batch_size: int
    image_size: int
    time_limit: float | None  # seconds; None: no budget
    optimizer: str  # lbfgs | adamw | adam | sgd
    scheduler: str  # plateau | cosine | exponential | none
    mix: str  # none | mixup | cutmix | both
    progressive: bool
    progressive_scales: tuple[float, float]
    patience: int  # epochs without a 1 % gain before an early stop
    head: str = "embed"  # embed | linear
    valid_split: float = DEFAULT_VALID_SPLIT

    @property
    def frozen(self) -> bool:
        """The pretrained body stays fixed and only the head trains (on cached features)."""
        return self.family == "head"

    @classmethod
    def resolve(cls, cfg: TrainConfig, spec: ModelSpec | None = None) -> "Recipe":
        """The recipe for cfg; spec defaults to the registry's entry for cfg.model."""
        spec = spec or get_spec(cfg.model)
        pretrained = spec.pretrained and cfg.weights != "none"
        family = ("finetune" if cfg.finetune else "head") if pretrained else "scratch"
        scratch = family == "scratch"
        epochs = cfg.epochs or (ARCH_EPOCHS.get(cfg.model) if scratch else None) or DEFAULT_EPOCHS[family]
        image_size = cfg.image_size or spec.image_size
        # From-scratch CNNs get a time budget by default so a laptop run ends in ~15 minutes with
        # an annealed learning rate; --time-limit 0 removes it.
        budget = cfg.time_limit if cfg.time_limit is not None else DEFAULT_TIME_LIMIT.get(family)
        # Measured on wonders7 (DEVELOPERS.md): a one-cycle cosine schedule over a fixed epoch
        # budget beats plateau for from-scratch CNNs; plateau suits heads and fine-tuning.
        head = AUTO_HEAD.get(family, "embed") if cfg.head == "auto" else cfg.head
        optimizer = (("lbfgs" if family == "head" and head == "power" else "adamw") if cfg.optimizer == "auto"
                     else cfg.optimizer)
        if optimizer == "lbfgs" and family != "head":
            raise LandmarkError("--optimizer lbfgs fits a frozen backbone's head on cached features; "
                                "use adamw, adam or sgd with --finetune or from scratch")
        lbfgs = optimizer == "lbfgs"
        scheduler = (("cosine" if scratch else "none" if lbfgs else "plateau") if cfg.scheduler == "auto"
                     else cfg.scheduler)
        mix = ("both" if scratch and epochs >= MIX_MIN_EPOCHS else "none") if cfg.mix == "auto" else cfg.mix
        progressive = (scratch if cfg.progressive is None else cfg.progressive) and image_size >= MIN_PROGRESSIVE_SIZE
        # A one-cycle schedule only pays off once the rate anneals: don't stop it in its noisy middle.
        patience = max(cfg.patience, epochs // 3) if scheduler == "cosine" else cfg.patience
        return cls(arch=cfg.model, family=family, pretrained=pretrained, epochs=epochs,
                   lr=cfg.lr or (LBFGS_LR if lbfgs else DEFAULT_LR[family]),
                   batch_size=cfg.batch_size or DEFAULT_BATCH[family],
                   image_size=image_size, time_limit=budget or None, optimizer=optimizer, scheduler=scheduler,
                   mix=mix, progressive=progressive,
                   progressive_scales=PROGRESSIVE_SCALES.get(cfg.model, PROGRESSIVE_SCALES["scratch"]),
                   patience=patience,
                   head=head,
                   valid_split=(AUTO_VALID_SPLIT.get(family, DEFAULT_VALID_SPLIT) if cfg.valid_split is None
                                else cfg.valid_split))


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
    if cfg.valid_split is not None and not 0 <= cfg.valid_split < 1:
        raise LandmarkError(f"--valid-split {cfg.valid_split}: use a fraction in [0, 1), e.g. 0.2 "
                            "(0 for no validation split)")
    if cfg.patience < 1:
        raise LandmarkError(f"--patience {cfg.patience}: use 1 or more epochs")
    if cfg.head not in HEADS:
        raise LandmarkError(f"unknown --head {cfg.head!r}; use auto, embed, power or linear")
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
