"""Self-describing checkpoints: state dict + meta, rebuilt from meta alone, loaded weights_only."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import CheckpointError
from ..fsutil import new_file_mode
from .base import LandmarkModel
from .registry import build_model

CHECKPOINT_FORMAT = "landmark-search-checkpoint"
CHECKPOINT_VERSION = 1


def make_meta(model: LandmarkModel, *, arch: str, classes: list[str], display_names: list[str], image_size: int,
              mean: tuple[float, ...], std: tuple[float, ...], head: str, dropout: float,
              train_config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to rebuild and feed the model."""
    return {
        "arch": arch, "classes": list(classes), "display_names": list(display_names),
        "image_size": int(image_size), "mean": [float(v) for v in mean], "std": [float(v) for v in std],
        "embedding_dim": int(model.embedding_dim), "feature_dim": int(model.feature_dim), "head": head,
        "dropout": float(dropout), "train_config": train_config or {}, "metrics": metrics or {},
        "package_version": __version__,
    }


def save_checkpoint(path: str | Path, model: LandmarkModel, meta: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> None:
    """Write atomically: a crash mid-save leaves the previous checkpoint intact."""
    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "meta": meta,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if extra:
        payload.update(extra)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.chmod(tmp, new_file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_WANTED = "use a best.pt/last.pt from `landmark train`, or a TorchScript export from `landmark export`"


def _check_container(path: Path) -> None:
    """Name what a file that is not a torch checkpoint is, before torch.load gives a confusing reason."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if head[:1] == b"\x80":  # a legacy (pre-zip) torch.save file: torch.load judges it
        return
    if head != b"PK\x03\x04":
        raise CheckpointError(f"{path}: not a checkpoint (it is not a file written by torch.save); {_WANTED}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated); {_WANTED}") from None
    if any(name.endswith("serialized_exported_program.json") or "/models/" in name for name in names):
        raise CheckpointError(f"{path}: a torch.export (.pt2) program, which --model does not load; export with "
                              "`landmark export --format torchscript`, or pass the best.pt it came from")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, refusing anything that would need unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint; train one with `landmark train`")
    _check_container(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated)") from None
        raise CheckpointError(f"{path}: refused, it holds Python objects that would run code when loaded; "
                              "only load checkpoints made by landmark-search") from None
    except Exception as exc:  # torch.load raises KeyError, RuntimeError, EOFError... on garbage
        raise CheckpointError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a landmark-search checkpoint (no format marker); "
                              "use a best.pt/last.pt from `landmark train`, or an export from `landmark export`")
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {payload['version']} is newer than this "
                              f"landmark-search ({CHECKPOINT_VERSION}); upgrade landmark-search")
    return payload


def model_from_meta(meta: dict[str, Any]) -> LandmarkModel:
    """Rebuild the architecture without downloading anything: the weights come from the checkpoint."""
    return build_model(meta["arch"], len(meta["classes"]), pretrained=False, head=meta["head"],
                       embedding_dim=meta["embedding_dim"], dropout=meta["dropout"])


def load_checkpoint(path: str | Path) -> tuple[LandmarkModel, dict[str, Any]]:
    """Model in eval mode with its weights, and the checkpoint's meta."""
    payload = read_checkpoint(path)
    meta = payload["meta"]
    model = model_from_meta(meta)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match architecture {meta['arch']} ({str(exc)[:200]})") from None
    return model.eval(), meta
