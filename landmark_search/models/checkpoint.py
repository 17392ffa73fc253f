"""Self-describing checkpoints: state dict + meta, rebuilt from meta alone, loaded weights_only."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import CheckpointError
from ..fsutil import atomic_writer
from ..fsutil import human_size as _size
from .ref import archive_format
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
    with atomic_writer(path) as fh:
        torch.save(payload, fh)


_WANTED = "use a best.pt/last.pt from `landmark train`, or a TorchScript export from `landmark export`"

# torch.save and torch.jit.save store members uncompressed, so a real archive declares about its own
# size (ratio <= 1). A deflated zip bomb declares far more: a 3 MB file held a 3 GiB data.pkl
# (1000x) that torch.load inflates into memory at once, so the declared sizes are checked first.
MAX_ARCHIVE_RATIO = 50
MAX_ARCHIVE_BYTES = 4 << 30  # 40x the largest built-in model's checkpoint (resnet50, ~100 MB)
MAX_BYTES_ENV = "LANDMARK_MAX_CHECKPOINT_BYTES"
_SLACK = 1 << 20  # tiny archives: small members may compress a little without being a bomb


def max_archive_bytes() -> int:
    """The absolute cap on what a model archive may declare; LANDMARK_MAX_CHECKPOINT_BYTES raises it."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return MAX_ARCHIVE_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise CheckpointError(f"{MAX_BYTES_ENV}={raw!r}: use a positive whole number of bytes "
                              f"(default {MAX_ARCHIVE_BYTES})")
    return int(raw)


def _zip_members(path: Path, what: str) -> list[zipfile.ZipInfo]:
    """The zip's member list (its central directory only), or a CheckpointError naming `what` it should be."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise CheckpointError(f"{path}: not a readable {what} (corrupt or truncated); {_WANTED}") from None


def check_archive_sizes(path: Path, infos: list[zipfile.ZipInfo] | None = None) -> None:
    """Refuse a zip whose declared uncompressed sizes would take far more memory than the file (a zip bomb).

    Only the central directory is read. torch's reader allocates each member at its declared size, so
    what is declared is what loading would cost.
    """
    if infos is None:
        infos = _zip_members(path, "model archive")
    file_bytes = path.stat().st_size
    declared = sum(info.file_size for info in infos)
    deflated = [info for info in infos if info.compress_type != zipfile.ZIP_STORED]
    inflated, packed = sum(i.file_size for i in deflated), sum(i.compress_size for i in deflated)
    if declared > MAX_ARCHIVE_RATIO * file_bytes + _SLACK or inflated > MAX_ARCHIVE_RATIO * packed + _SLACK:
        raise CheckpointError(f"{path}: refused, a zip bomb: declares {_size(declared)} uncompressed in a "
                              f"{_size(file_bytes)} file (torch writes models uncompressed); {_WANTED}")
    limit = max_archive_bytes()
    if declared > limit:
        raise CheckpointError(f"{path}: declares {_size(declared)} uncompressed, over the {_size(limit)} limit for a "
                              f"model; if you trust it, set {MAX_BYTES_ENV} to a larger number of bytes")


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
    infos = _zip_members(path, "checkpoint")
    kind = archive_format([info.filename for info in infos])
    if kind == "torchscript":
        raise CheckpointError(f"{path}: a TorchScript export (from `landmark export`), not a checkpoint; pass the "
                              "best.pt it was exported from (RUN/best.pt)")
    if kind == "pt2":
        raise CheckpointError(f"{path}: a torch.export (.pt2) program, which --model does not load; export with "
                              "`landmark export --format torchscript`, or pass the best.pt it came from")
    check_archive_sizes(path, infos)


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
    state = openset_state(payload)
    if state is not None:
        meta = {**meta, "openset": state}
    return model.eval(), meta


def openset_state(payload: dict[str, Any]) -> dict[str, Any] | None:
    """A read checkpoint's open-set calibration (see openset.py) with its arrays as numpy, for
    OpenSet.from_state; None when it has none. The inverse of openset_payload."""
    state = payload.get("openset")
    if not isinstance(state, dict):
        return None
    return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def openset_payload(state: dict[str, Any]) -> dict[str, Any]:
    """An OpenSet.to_state() with its arrays as tensors, for save_checkpoint(extra={"openset": ...})."""
    return {k: torch.from_numpy(v) if hasattr(v, "dtype") and hasattr(v, "shape") else v for k, v in state.items()}
