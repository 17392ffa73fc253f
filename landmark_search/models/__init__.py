"""Model registry: scratch, residual, torchvision and offline pretrained backbones."""

from .base import LandmarkModel
from .registry import ModelSpec, build_model, get_spec, list_models, register_model

__all__ = ["LandmarkModel", "ModelSpec", "build_model", "get_spec", "list_models", "register_model"]
