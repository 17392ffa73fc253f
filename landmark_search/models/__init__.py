"""Model registry: scratch, residual, torchvision and offline pretrained backbones.

The registry imports without torch (`landmark models` lists it in well under a second); LandmarkModel,
which is torch, loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .registry import ModelSpec, build_model, get_spec, list_models, register_model

if TYPE_CHECKING:
    from .base import LandmarkModel

__all__ = ["LandmarkModel", "ModelSpec", "build_model", "get_spec", "list_models", "register_model"]


def __getattr__(name: str) -> Any:
    if name == "LandmarkModel":
        from .base import LandmarkModel

        return LandmarkModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
