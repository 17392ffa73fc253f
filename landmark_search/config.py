"""Frozen configuration dataclasses passed explicitly through the library."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

# Normalisation of torchvision's ImageNet weights (the registry and the transform presets share it).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TrainConfig:
    """Everything `landmark train` needs; stored in the checkpoint so a run can be reproduced."""

    model: str = "efficientnet_lite0"
    data: str = ""
    out: str = ""
    epochs: int | None = None  # None: the model family's default (see training.default_epochs)
    batch_size: int | None = None  # None: the family's default (64; 32 when training from scratch)
    lr: float | None = None  # None: the model family's default
    optimizer: str = "auto"  # lbfgs for a frozen backbone's power head, adamw otherwise (training.recipe)
    weight_decay: float = 5e-4
    dropout: float = 0.3
    scheduler: str = "auto"  # cosine for from-scratch training, plateau otherwise
    image_size: int | None = None  # None: the model's native size
    valid_split: float | None = None  # None: 0 for a frozen backbone's head (see training.recipe), else 0.2
    patience: int = 8
    head: str = "auto"  # "embed": Linear-BN-ReLU embedding, classifier; "linear"; "power"; "auto": see recipe
    embedding_dim: int = 256
    finetune: bool = False
    weights: str = "default"  # "default" (pretrained when the model has weights) or "none"
    device: str = "auto"
    precision: str = "auto"
    label_smoothing: float = 0.1
    # Augmented views cached per photo when the backbone is frozen; 0: the evaluation crop alone, as tag and
    # classify see a photo. Measured on india12 real photos (power head, 3 seeds): 0.976 with the evaluation
    # crop, 0.945 with 4 augmented views, 0.952 with both: the augmentation moves frozen features away from
    # what a photo gives at inference. (On 5,000 rendered photos 8 views beat 4: 0.857 vs 0.826.)
    feature_views: int = 0
    workers: int = -1  # -1: pick from the CPU count
    seed: int = 0
    quiet: bool = False
    time_limit: float | None = None  # seconds; stop after the epoch that crosses it
    mix: str = "auto"  # batch mixing: auto (cutmix/mixup from scratch, none otherwise)|none|mixup|cutmix|both
    progressive: bool | None = None  # progressive resizing; None: on for from-scratch training
    places: str | None = None  # CSV class,latitude,longitude[,name,city,country]; None: DATA/places.csv when present

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON and checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Rebuild from `to_dict`, ignoring keys a newer version may have added."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


# Pillow's own decompression-bomb error threshold (2x its ~89 MP warning limit).
DEFAULT_MAX_PIXELS = 178_956_970
# What ONNX Runtime's int8 artefact (models/engine.py) is made of beyond the quantizer's defaults; an index
# records it with its route (embeddings.vector_route), so a change of recipe re-embeds its photos. The stem
# convolution (the first layer, which sees the normalised photo) stays float: quantizing it alone took the
# cosine between int8 and fp32 vectors from 0.965 to 0.915 on evaldata photos and lowered `landmark group`'s ARI
# by 0.04-0.09 on three of four evaldata libraries (DEVELOPERS.md); no other single layer moved the cosine by
# more than 0.015.
INT8_RECIPE = "float-stem"


@dataclass(frozen=True)
class EmbedConfig:
    """How images are turned into vectors."""

    batch_size: int = 32
    workers: int = -1
    device: str = "auto"
    precision: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    progress: bool = True
    # `--precision auto` may pick int8 for large CPU jobs; evaluation measures the float model instead.
    auto_int8: bool = True
    # Which engine runs the model body on a CPU: auto (another runtime where it pays, see models/engine.py),
    # torch, onnxruntime or openvino.
    backend: str = "auto"


# The settings that make each route of embeddings.vector_route: an index's new photos and its queries take
# the route of its stored vectors (search._index_config).
ROUTE_SETTINGS = {"torch": {"backend": "torch", "auto_int8": False}, "torch-int8": {"precision": "int8"},
                  "ort-fp32": {"backend": "onnxruntime", "precision": "fp32"},
                  f"ort-int8+{INT8_RECIPE}": {"backend": "onnxruntime", "precision": "auto", "auto_int8": False},
                  "ov-f32": {"backend": "openvino", "precision": "fp32"},
                  "ov-bf16": {"backend": "openvino", "precision": "bf16"}}


def route_config(route: str | None, cfg: EmbedConfig) -> EmbedConfig:
    """`cfg` set to embed with `route` (vector_route's names) where the user chose no backend or precision;
    unchanged for any other value (an int8 recipe this version no longer makes, or a damaged model.json)."""
    settings = ROUTE_SETTINGS.get(route) if isinstance(route, str) else None
    if settings is None or cfg.backend != "auto" or cfg.precision != "auto" or os.environ.get("LANDMARK_BACKEND"):
        return cfg
    return replace(cfg, **settings)


@dataclass(frozen=True)
class RunPaths:
    """The files of a training run directory."""

    root: Path
    best: Path = field(init=False)
    last: Path = field(init=False)
    history: Path = field(init=False)
    curves: Path = field(init=False)
    metrics: Path = field(init=False)
    stats: Path = field(init=False)
    config: Path = field(init=False)

    def __post_init__(self) -> None:
        root = Path(self.root)
        object.__setattr__(self, "root", root)
        for name, file in (("best", "best.pt"), ("last", "last.pt"), ("history", "history.csv"),
                           ("curves", "curves.png"), ("metrics", "metrics.json"),
                           ("stats", "mean_std.json"), ("config", "config.json")):
            object.__setattr__(self, name, root / file)
