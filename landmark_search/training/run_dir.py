"""The run folder: which files are ours, history.csv, the channel-statistics cache, finding best.pt."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import astuple, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from ..config import RunPaths
from ..data.datasets import Sample, channel_stats
from ..data.transforms import Normalization
from ..errors import DataError, LandmarkError
from ..fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    import torch

# Files that mark a folder as holding a training run, and every file `landmark train` (and the
# evaluate/report commands, beside the checkpoint) may write into one: --overwrite deletes only these.
RUN_MARKERS = ("best.pt", "last.pt", "config.json", "metrics.json", "history.csv")
RUN_EXTRA_FILES = ("test_confusion.png", "test_report.json", "train_confusion.png", "train_report.json",
                   "report.html", "features.pt")
STATS_VERSION = 1  # mean_std.json format
FEATURES_NAME = "features.pt"  # the frozen backbone's features of a transfer run, kept for --resume
FEATURES_VERSION = 1


@dataclass(frozen=True)
class EpochStats:
    """One row of history.csv."""

    epoch: int
    train_loss: float
    train_acc: float
    valid_loss: float
    valid_acc: float
    lr: float
    seconds: float


def write_history(history: Sequence[EpochStats], path: Path) -> None:
    """history.csv, one row per epoch."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([f.name for f in fields(EpochStats)])
    for h in history:
        writer.writerow([h.epoch, f"{h.train_loss:.5f}", f"{h.train_acc:.5f}", f"{h.valid_loss:.5f}",
                         f"{h.valid_acc:.5f}", f"{h.lr:.3g}", f"{h.seconds:.2f}"])
    atomic_write_text(path, buf.getvalue())


def read_history(path: Path) -> list[EpochStats]:
    """history.csv back as rows; OSError, KeyError or ValueError when it is missing or damaged."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [EpochStats(int(r["epoch"]), *(float(r[f.name]) for f in fields(EpochStats)[1:])) for r in rows]


def history_rows(history: Sequence[EpochStats]) -> list[list]:
    """The history as plain lists, as last.pt stores it."""
    return [list(astuple(h)) for h in history]


def _written_by_us(path: Path) -> bool:
    """True when a run-folder file that users might also name so (config.json, report.html...) is ours."""
    try:
        head = path.read_bytes()[:4096] if path.suffix in (".csv", ".html") else b""
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            return isinstance(data, dict) and ({"model", "data", "epochs"} <= data.keys()  # config.json
                                               or {"epochs_run", "best_valid_loss"} <= data.keys()  # metrics
                                               or {"mean", "std"} <= data.keys()  # mean_std.json
                                               or "accuracy" in data)  # test/train_report.json
    except (OSError, ValueError):
        return False
    if path.suffix == ".csv":
        return head.startswith(b"epoch,train_loss,")
    if path.suffix == ".html":  # the generator tag, or the title of reports made before it existed
        return b"content='landmark-search'" in head or b"<title>Training report: " in head
    return True  # checkpoints and plots go by their names alone


def prepare_run_dir(paths: RunPaths, overwrite: bool = False) -> None:
    """Refuse a folder that already holds a run; with overwrite, delete only the files landmark wrote there.

    A file that only shares a name with ours (a user's own config.json or report.html) is never
    deleted or replaced: the folder is refused, --overwrite or not.
    """
    root = paths.root
    if root.exists() and not root.is_dir():
        raise LandmarkError(f"--out {root} is a file; pass a folder for the run")
    owned = [getattr(paths, f.name).name for f in fields(paths) if f.name != "root"]
    ours = [root / name for name in (*owned, *RUN_EXTRA_FILES) if (root / name).is_file()]
    foreign = [path.name for path in ours if not _written_by_us(path)]
    if foreign:
        raise LandmarkError(f"--out {root} holds {', '.join(foreign)} that landmark-search did not write; "
                            "pick another --out (nothing was changed)")
    if overwrite:
        for path in ours:
            path.unlink(missing_ok=True)
        for name in (*owned, *RUN_EXTRA_FILES):
            for tmp in root.glob(f".{name}.*.tmp"):  # left by an interrupted atomic write
                tmp.unlink(missing_ok=True)
        return
    held = [name for name in RUN_MARKERS if (root / name).exists()]
    if held:
        hint = f"continue it with --resume {root}, " if "last.pt" in held else ""
        raise LandmarkError(f"--out {root} already holds a training run ({', '.join(held)}); {hint}"
                            "replace it with --overwrite, or pick a new --out")


def default_run_dir(model: str) -> Path:
    """runs/<model>-<timestamp>."""
    return Path("runs") / f"{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def checkpoint_in(path: str | Path) -> Path:
    """A checkpoint path, or the best.pt of the run folder it names."""
    path = Path(path)
    return path / "best.pt" if path.is_dir() and (path / "best.pt").is_file() else path


def dataset_dir(data: str | Path) -> Path:
    """A --data folder as a Path, refusing an empty or missing one (discover() would blame a missing train/)."""
    if not str(data):
        raise DataError("no dataset folder given; pass --data DIR (a folder with train/<class>/ photos)")
    root = Path(data)
    if not root.exists():
        raise DataError(f"--data {root}: no such folder; make a dataset with `landmark data synth DIR` "
                        "or `landmark data download DIR`")
    return root


def stats_fingerprint(samples: Sequence[Sample], image_size: int, seed: int) -> str:
    """sha256 naming the photos (path, label, size, mtime), image size and seed that channel stats came from."""
    digest = hashlib.sha256(f"{STATS_VERSION}|{image_size}|{seed}".encode())
    for path, label in sorted((os.path.abspath(p), label) for p, label in samples):
        try:
            st = os.stat(path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size = mtime = -1
        digest.update(f"{path}|{label}|{size}|{mtime}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def cached_channel_stats(paths: RunPaths, samples: Sequence[Sample], image_size: int, seed: int,
                         data_root: Path) -> Normalization:
    """Per-channel statistics of the training photos, computed once and kept in mean_std.json.

    The cache is reused only for the same training photos at the same size (its fingerprint says which).
    """
    key = stats_fingerprint(samples, image_size, seed)
    try:
        stats = json.loads(paths.stats.read_text())
        if stats.get("version") == STATS_VERSION and stats.get("fingerprint") == key:
            return Normalization(tuple(stats["mean"]), tuple(stats["std"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # missing, unreadable or from another version: recompute
    mean, std = channel_stats(samples, image_size, seed=seed)
    paths.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(paths.stats, {"version": STATS_VERSION, "mean": mean, "std": std, "data": str(data_root),
                                    "image_size": image_size, "fingerprint": key})
    return Normalization(mean, std)


def cached_features(root: Path, key: str, compute: Callable[[], dict[str, "torch.Tensor"]], *,
                    write: bool = True) -> dict[str, "torch.Tensor"]:
    """Frozen-backbone features of a transfer run, computed once and kept in RUN/features.pt.

    They are reused (by --resume) only when `key` matches: the same photos, model, size, views, seed and
    normalisation give the same features, so extending a run by an epoch costs an epoch, not a re-extraction.
    Float tensors are kept (and returned) in float16, so a resumed run trains on exactly what the first one did.
    `write=False` (a training process other than rank 0) computes them without keeping them.
    """
    import torch

    path = root / FEATURES_NAME
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if (isinstance(cached, dict) and cached.get("version") == FEATURES_VERSION and cached.get("key") == key
                and all(isinstance(cached.get(k), torch.Tensor) for k in ("train_f", "train_y", "valid_f", "valid_y"))):
            return cached
    except FileNotFoundError:
        pass
    except Exception:  # unreadable or from another version: computed again
        pass
    fresh = {k: v.half() if v.is_floating_point() else v for k, v in compute().items()}
    if not write:
        return fresh
    buf = io.BytesIO()
    torch.save({"version": FEATURES_VERSION, "key": key, **fresh}, buf)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return fresh
