"""Evaluation on labelled photos: predictions through the one inference path, metrics, report files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..config import EmbedConfig
from ..data.datasets import DatasetLayout, Sample, discover
from ..photos.files import ErrorCallback, warn_skipped
from ..errors import DataError
from ..fsutil import atomic_write_bytes, atomic_write_json
from ..render.plots import confusion_png
from .run_dir import checkpoint_in, dataset_dir

if TYPE_CHECKING:
    from ..embeddings import Embedded, LoadedModel
    from .openset_eval import OpenSetResult
    from ..models import LandmarkModel

SPLITS = ("test", "train")


@dataclass(frozen=True)
class EvalResult:
    """Predictions and metrics on one split."""

    accuracy: float
    macro_f1: float
    weighted_f1: float
    y_true: list[int]
    y_pred: list[int]
    probs: np.ndarray
    paths: list[str]
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    skipped: list[str] = field(default_factory=list)
    embedded: "Embedded | None" = None  # the photos' features and checks, for the open-set decisions

    def summary(self) -> dict[str, Any]:
        """JSON-ready metrics (no per-photo arrays)."""
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "weighted_f1": self.weighted_f1,
                "n": len(self.y_true), "per_class": self.per_class, "confusion": self.confusion,
                "skipped": self.skipped}


def class_metrics(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]
                  ) -> tuple[dict, list, float, float]:
    """(per-class precision/recall/F1/support, confusion matrix, macro F1, weighted F1)."""
    from sklearn.metrics import classification_report, confusion_matrix, f1_score

    labels = list(range(len(classes)))
    report = classification_report(y_true, y_pred, labels=labels, target_names=list(classes),
                                   output_dict=True, zero_division=0)
    per_class = {c: {k: float(report[c][k]) for k in ("precision", "recall", "f1-score", "support")}
                 for c in classes}
    confusion = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    macro = float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    weighted = float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0))
    return per_class, confusion, macro, weighted


def _loaded(model: "LandmarkModel | LoadedModel", meta: dict[str, Any] | None) -> "LoadedModel":
    from ..embeddings import LoadedModel, wrap_model

    if isinstance(model, LoadedModel):
        return model
    if meta is None:
        raise TypeError("evaluate needs the checkpoint meta with a bare model")
    return wrap_model(model, meta)


def embed_samples(model: "LandmarkModel | LoadedModel", samples: Sequence[Sample],
                  meta: dict[str, Any] | None = None, *, device: str = "auto", precision: str = "auto",
                  batch_size: int = 64, workers: int = -1, quiet: bool = True,
                  on_error: ErrorCallback | None = None, skipped: list[str] | None = None
                  ) -> tuple["Embedded", list[int]]:
    """The labelled photos that decoded, as embeddings.embed_paths gives them, and their labels.

    The photos go through embeddings.iter_embeddings, as classify/tag/index do (same decoding, crop,
    precision and int8 handling, the same evidence for predict.decide), except that `auto` never picks int8:
    evaluation measures the model. Unreadable photos are reported (on_error) and their paths appended to `skipped`.
    """
    from ..embeddings import embed_paths

    loaded = _loaded(model, meta)
    report = on_error or warn_skipped
    label_of = {Path(path): label for path, label in samples}
    cfg = EmbedConfig(batch_size=batch_size, workers=workers, device=device, precision=precision,
                      progress=not quiet, auto_int8=False)
    out = embed_paths([path for path, _ in samples], loaded, cfg)
    for path, reason in out.failed:
        report(path, reason)
        if skipped is not None:
            skipped.append(str(path))
    return out, [label_of[p] for p in out.paths]


def predict_samples(model: "LandmarkModel | LoadedModel", samples: Sequence[Sample],
                    meta: dict[str, Any] | None = None, **kwargs: Any
                    ) -> tuple[np.ndarray, list[int], list[str], list[str]]:
    """Class probabilities for labelled samples; returns (probs, labels, paths, skipped paths)."""
    skipped: list[str] = []
    out, labels = embed_samples(model, samples, meta, skipped=skipped, **kwargs)
    return out.probs, labels, [str(p) for p in out.paths], skipped


def evaluate(model: "LandmarkModel | LoadedModel", samples: Sequence[Sample], meta: dict[str, Any] | None = None,
             **kwargs: Any) -> EvalResult:
    """Accuracy, macro/weighted F1, per-class table and confusion matrix on labelled samples.

    `model` is a LoadedModel, or a bare model with its checkpoint meta; kwargs go to predict_samples.
    """
    loaded = _loaded(model, meta)
    skipped: list[str] = []
    out, y_true = embed_samples(loaded, samples, skipped=skipped, **kwargs)
    probs, paths = out.probs, [str(p) for p in out.paths]
    if not y_true:
        raise DataError("no readable photos to evaluate")
    y_pred = probs.argmax(1).tolist()
    per_class, confusion, macro, weighted = class_metrics(y_true, y_pred, loaded.class_names)
    accuracy = float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))
    return EvalResult(accuracy, macro, weighted, list(y_true), y_pred, probs, paths, per_class, confusion, skipped,
                      out)


def write_eval_outputs(result: EvalResult, names: Sequence[str], out_dir: Path, split: str = "test") -> dict[str, Path]:
    """`<split>_confusion.png` and `<split>_report.json` in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{split}_confusion.png"
    js = out_dir / f"{split}_report.json"
    title = f"{split}: accuracy {result.accuracy:.3f}, macro-F1 {result.macro_f1:.3f}"
    atomic_write_bytes(png, confusion_png(result.confusion, names, title))
    atomic_write_json(js, {"split": split, "class_names": list(names), **result.summary()})
    return {"confusion": png, "report": js}


@dataclass(frozen=True)
class CheckpointEvaluation:
    """`landmark evaluate`: the result and the files written."""

    checkpoint: Path
    split: str
    result: EvalResult
    files: dict[str, Path]
    open_set: "OpenSetResult | None" = None  # with --distractors
    places: dict = field(default_factory=dict)  # class id -> where that landmark is, as the checkpoint records


def model_labels(layout: DatasetLayout, samples: Sequence[Sample], class_ids: Sequence[str]) -> list[Sample]:
    """The samples labelled with the model's class indices, matched by folder name in any order (an extended
    model, `train --extend`, lists its new classes last); DataError naming folders the model does not know."""
    index = {c: i for i, c in enumerate(class_ids)}
    unknown = [c for c in layout.classes if c not in index]
    if unknown:
        raise DataError(f"{layout.root}: class folder(s) the model does not know ({', '.join(unknown[:3])}"
                        f"{', ...' if len(unknown) > 3 else ''}); evaluate on the landmarks it was trained for")
    return [(path, index[layout.classes[label]]) for path, label in samples]


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, split: str = "test", out: Path | None = None, *,
                        device: str = "auto", precision: str = "auto", quiet: bool = False,
                        distractors: str | Path | None = None, recall: float | None = None) -> CheckpointEvaluation:
    """Evaluate a checkpoint (or its run folder) on a dataset split; writes the PNG and JSON (default: beside it)."""
    from ..embeddings import wrap_model
    from ..models.checkpoint import load_checkpoint

    if split not in SPLITS:
        raise DataError(f"--split {split}: use test or train")
    checkpoint = checkpoint_in(checkpoint)
    loaded = wrap_model(*load_checkpoint(checkpoint), name=checkpoint.name)
    layout = discover(dataset_dir(data))
    samples = layout.test if split == "test" else layout.train
    if not samples:
        raise DataError(f"{data}/{split}: no photos to evaluate")
    samples = model_labels(layout, samples, loaded.class_ids)
    others = _distractor_photos(distractors) if distractors is not None else None
    loaded.features = others is not None and loaded.openset is not None  # the open-set score needs them
    result = evaluate(loaded, samples, device=device, precision=precision, quiet=quiet)
    files = write_eval_outputs(result, loaded.class_names, out or checkpoint.parent, split)
    open_set = None
    if others is not None:
        from ..render.plots import precision_recall_png
        from .openset_eval import evaluate_open_set

        distractors, _ = embed_samples(loaded, [(Path(p), -1) for p in others], device=device,
                                       precision=precision, quiet=quiet)
        open_set = evaluate_open_set(loaded, result, distractors, recall)
        files["pr_curve"] = files["report"].with_name(f"{split}_pr.png")
        atomic_write_bytes(files["pr_curve"], precision_recall_png(
            open_set.precision_curve, open_set.recall_curve,
            (open_set.precision, open_set.recall),
            f"{split} + {open_set.n_distractors} distractors: GAP {open_set.gap:.3f}"))
        report = json.loads(files["report"].read_text(encoding="utf-8"))
        report.update({"gap": open_set.gap, "false_tag_rate": open_set.false_tag_rate, "recall": open_set.recall,
                       "open_set": open_set.summary()})
        atomic_write_json(files["report"], report)
    return CheckpointEvaluation(checkpoint, split, result, files, open_set, dict(loaded.meta.get("places") or {}))


def _distractor_photos(folder: str | Path) -> list[Path]:
    from ..photos.files import iter_photos

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--distractors {folder}: not a folder; pass a folder of photos that show none of the landmarks")
    photos = list(iter_photos([folder], recursive=True))
    if not photos:
        raise DataError(f"--distractors {folder}: no photos found in it")
    return photos
