"""Which model a `--model` value names, and its identity, without importing torch."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError, LandmarkError, ModelNotFoundError
from ..fsutil import file_sha256  # the one streamed file hash, also for callers of modelref

DEFAULT_MODEL = "efficientnet_lite0"


@dataclass(frozen=True)
class ModelRef:
    """A resolved `--model`: built-in name, checkpoint or export, and its content digest."""

    spec: str
    kind: str  # "builtin" | "checkpoint" | "export"
    name: str
    path: Path | None
    sha256: str
    trusted: bool = False  # an export the user allowed to load (TorchScript runs code when loaded)

    @property
    def model_id(self) -> str:
        """What an index records to refuse being searched with another model."""
        return f"builtin:{self.name}" if self.kind == "builtin" else f"sha256:{self.sha256}"


def archive_format(names: list[str]) -> str:
    """What a torch zip archive holds, from its member names: "torchscript", "pt2" or "checkpoint".

    Members sit under one top folder (`archive/`, `model/`). TorchScript has `code/` and `constants.pkl`
    there; a torch.export program has `archive_format`, `models/<name>.json` or (older torch)
    `serialized_exported_program.json`; torch.save writes neither. TorchScript is tested first: its
    code/ paths can contain any folder name, `models/` included.
    """
    rest = [name.split("/")[1:] for name in names]
    if any(r and (r[0] == "code" or r == ["constants.pkl"]) for r in rest):
        return "torchscript"
    if any(r == ["archive_format"] or (len(r) == 2 and r[0] == "models" and r[1].endswith(".json"))
           or (r and r[-1] == "serialized_exported_program.json") for r in rest):
        return "pt2"
    return "checkpoint"


def is_torchscript(path: Path) -> bool:
    """Whether `path` is a TorchScript archive (which can run code when loaded)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return archive_format(zf.namelist()) == "torchscript"
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


# The names `landmark train` gives checkpoints; a TorchScript file under one of them is never an export.
CHECKPOINT_NAMES = ("best.pt", "last.pt")
TRUST_HINT = "pass --trust-export if you made it with `landmark export`, or use the best.pt it came from"


def untrusted_export_error(path: Path | str) -> CheckpointError:
    """The refusal for a TorchScript export the user has not said to trust."""
    return CheckpointError(f"{path}: a TorchScript export, refused because a TorchScript file can run code when "
                           f"loaded; {TRUST_HINT}")


def builtin_weights_file(name: str) -> Path | None:
    """The on-disk ImageNet weights of a built-in model, when they exist without a download."""
    if name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        from .weights import efficientnet_lite_weights

        return efficientnet_lite_weights(int(name[-1]))
    return None


def resolve_model(spec: str | Path | None, *, trust_export: bool = False) -> ModelRef:
    """Turn a `--model` value into a ModelRef; files are hashed, names are checked lazily.

    A checkpoint (or a run folder's best.pt) only ever loads with torch.load(weights_only=True). A
    TorchScript export can run code when loaded, so it resolves only with `trust_export`, and never
    through a run folder or under a checkpoint's name (best.pt, last.pt).
    """
    text = str(spec) if spec else DEFAULT_MODEL
    path = Path(text).expanduser()
    from_run = path.is_dir() and (path / "best.pt").is_file()
    if from_run:
        path = path / "best.pt"
    # A bare word that is also a folder here may still be a built-in name (`-m resnet34`).
    if path.is_dir() and ("/" in text or text.startswith(".") or (path / "config.json").is_file()):
        raise ModelNotFoundError(f"{text}: a folder without best.pt; pass a run folder from `landmark train` "
                                 "(or its best.pt), an export from `landmark export`, or a built-in model name")
    if path.is_file():
        kind = "export" if is_torchscript(path) else "checkpoint"
        if kind == "export" and (from_run or path.name in CHECKPOINT_NAMES):
            raise CheckpointError(f"{path}: a TorchScript file where `landmark train` writes checkpoints; refused "
                                  "because a TorchScript file can run code when loaded (a run's best.pt/last.pt only "
                                  "ever loads as a checkpoint); use the checkpoint `landmark train` wrote (an export "
                                  "you made: rename it, e.g. model.pt, and pass --trust-export)")
        if kind == "export" and not trust_export:
            raise untrusted_export_error(path)
        return ModelRef(text, kind, path.name, path, file_sha256(path), trusted=kind == "export")
    if "/" in text or text.endswith((".pt", ".pth", ".pt2")):
        raise ModelNotFoundError(f"{text}: no such model file; pass RUN/best.pt from `landmark train` "
                                 "or an export from `landmark export`")
    weights = builtin_weights_file(text)
    if weights is not None and weights.is_file():
        return ModelRef(text, "builtin", text, None, file_sha256(weights))
    # Other built-in names: validated (and their weights found or downloaded) by the registry.
    from .registry import get_spec

    try:
        get_spec(text)
    except LandmarkError:
        if path.is_dir():  # `-m myrun` naming a folder here, not a model
            raise ModelNotFoundError(f"{text}: a folder without best.pt, and not a built-in model name; pass a run "
                                     "folder from `landmark train` (or its best.pt), or an export") from None
        raise
    return ModelRef(text, "builtin", text, None, hashlib.sha256(f"builtin:{text}".encode()).hexdigest())
