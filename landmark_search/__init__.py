"""landmark-search: recognise landmarks in photos, find similar ones, tag photo libraries.

The public API is re-exported lazily so that `import landmark_search` stays cheap (no torch import
until a model is needed).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "LandmarkError": "errors", "TrainConfig": "config", "EmbedConfig": "config",
    "build_model": "models", "list_models": "models", "get_spec": "models", "LandmarkModel": "models",
    "load_checkpoint": "models.checkpoint", "fit": "training", "evaluate": "training",
    "load_model": "embeddings", "embed_paths": "embeddings", "iter_embeddings": "embeddings",
    "PhotoIndex": "index.store", "SearchHit": "index.store", "build_index": "search", "find_similar": "search",
    "classify": "tagging", "tag": "tagging", "TagOptions": "tagging", "export_model": "models.export",
    "make_synthetic_dataset": "data.synth", "download_dataset": "data.download", "load_image": "photos.images",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'landmark_search' has no attribute {name!r}")
