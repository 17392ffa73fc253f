"""One self-contained HTML report for a training run: curves, metrics, confusions, mistakes, then the config."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..config import RunPaths
from ..errors import BadImageError, DataError, LandmarkError
from ..fsutil import atomic_write_text, read_json
from .plots import confusion_png, curves_png
from .images import THUMB, data_uri, image_data_uri, placeholder, thumbnail
from .templating import environment

if TYPE_CHECKING:
    from ..embeddings import LoadedModel
    from ..training import EvalResult

REPORT_NAME = "report.html"
MAX_MISTAKES = 24  # the grid shows the most confident mistakes; more would bloat the file
TOP_PAIRS = 10


class _Missing(Exception):
    """A report section cannot be drawn; the message says why and what to do."""


Block = dict[str, Any]  # one piece of a section, drawn by the macro of its kind in templates/report.html


@dataclass(frozen=True)
class _Section:
    anchor: str
    title: str
    blocks: list[Block]


@dataclass
class _Evaluation:
    """best.pt re-run on the test photos: what the misclassified grid needs."""

    loaded: "LoadedModel"
    result: "EvalResult"


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise _Missing(f"{path.name} is missing from the run folder")
    data = read_json(path, lambda why: _Missing(f"{path.name} is unreadable ({why})"))
    if not isinstance(data, dict):
        raise _Missing(f"{path.name} does not hold a JSON object")
    return data


def _read_json_or(path: Path, default: Any) -> Any:
    """_read_json, or `default` when the file is missing or unreadable."""
    try:
        return _read_json(path)
    except _Missing:
        return default


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else str(value)


def _kv_table(rows: Sequence[tuple[str, Any]]) -> Block:
    return {"kind": "kv", "rows": [(str(k), _fmt(v)) for k, v in rows]}


def _png_img(data: bytes, alt: str, cls: str = "") -> Block:
    return {"kind": "img", "src": data_uri(data, "image/png"), "alt": alt, "cls": cls}


def _text(text: str, cls: str = "") -> Block:
    return {"kind": "p", "text": text, "cls": cls}


def _cards(cards: Sequence[tuple[str, str]]) -> Block:
    return {"kind": "cards", "cards": list(cards)}


# ------------------------------------------------------------------------------------------ sections


def _config_section(paths: RunPaths) -> list[Block]:
    cfg = _read_json(paths.config)
    return [_kv_table(sorted(cfg.items()))]


def _read_history(path: Path) -> list:
    from ..training import read_history

    if not path.is_file():
        raise _Missing("curves.png and history.csv are both missing from the run folder")
    try:
        return read_history(path)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise _Missing(f"history.csv is unreadable ({exc})") from None


def _curves_section(paths: RunPaths) -> list[Block]:
    history = _read_history(paths.history) if paths.history.is_file() else []
    best_epoch = _read_json_or(paths.metrics, {}).get("best_epoch")  # the epoch best.pt holds
    if paths.curves.is_file():
        png = paths.curves.read_bytes()
    else:
        if not history:
            raise _Missing("curves.png and history.csv are both missing from the run folder")
        png = curves_png(history, best_epoch if isinstance(best_epoch, int) else None)
    blocks = []
    if history:
        best = next((h for h in history if h.epoch == best_epoch), None) or min(history, key=lambda h: h.valid_loss)
        config = _read_json_or(paths.config, {})
        config = config if isinstance(config, dict) else {}
        if config.get("optimizer") == "lbfgs":  # full batch, no augmentation, and (by default) no validation split
            how = ("The head was fitted by full-batch L-BFGS on every training photo's features: the loss is that "
                   "fit's after each epoch" + ("" if config.get("valid_split") else
                                               ", and with no validation split the validation curve is the same "
                                               "photos: the test metrics below measure the model") + ".")
        else:
            how = ("Train values are means over each epoch while the weights moved (with augmentation), so they are "
                   "drawn half an epoch earlier.")
        blocks.append(_text(f"{len(history)} epochs; best.pt holds epoch {best.epoch}: validation loss "
                            f"{best.valid_loss:.4f}, accuracy {best.valid_acc:.3f}. {how}"))
    return blocks + [_png_img(png, "loss and accuracy per epoch", "curves")]


def _open_set_section(paths: RunPaths, test_report: dict | None) -> list[Block]:
    """GAP, false-tag rate and recall with distractors (`landmark evaluate --distractors`), and the PR curve."""
    metrics = _read_json_or(paths.metrics, {})
    scores = (test_report or {}).get("open_set")
    threshold = metrics.get("openset_threshold")
    if scores is None:
        note = (f"The model says \"unknown\" below confidence {float(threshold):.3f} (in calibration it keeps "
                f"{float(metrics.get('openset_known_kept', 0.0)):.0%} of its landmarks' photos and tags "
                f"{float(metrics.get('openset_unknown_tagged', 0.0)):.0%} of photos of landmarks it was not "
                "shown). "
                if threshold is not None else "This run has no open-set calibration (trained before it existed). ")
        raise _Missing(note + "Measure it on photos of anything else with `landmark evaluate RUN --data DIR "
                       "--distractors OTHER/`")
    cards = _cards([(f"{scores['gap']:.3f}", "GAP (landmarks + distractors)"),
                    (f"{scores['false_tag_rate']:.1%}", f"of {scores['n_distractors']} distractors tagged"),
                    (f"{scores['recall']:.1%}", f"of {scores['n_landmarks']} landmark photos right")])
    png = paths.root / "test_pr.png"
    curve = [_png_img(png.read_bytes(), "precision-recall of landmark tags", "curves")] if png.is_file() else []
    return [cards, _kv_table([("score", scores.get("score")), ("threshold", scores.get("threshold")),
                              ("precision at the threshold", scores.get("precision")),
                              ("photos kept below it by matched keypoints", scores.get("verified"))]), *curve]


def _metrics_section(paths: RunPaths, test_report: dict | None, evaluation: _Evaluation | None) -> list[Block]:
    metrics = _read_json_or(paths.metrics, {})
    acc = metrics.get("test_accuracy", (test_report or {}).get("accuracy"))
    f1 = metrics.get("test_macro_f1", (test_report or {}).get("macro_f1"))
    if acc is None and evaluation is not None:
        acc, f1 = evaluation.result.accuracy, evaluation.result.macro_f1
    if acc is None:
        why = "metrics.json is missing" if not metrics else "the run has no test scores (its dataset had no test/ split)"
        raise _Missing(f"{why}; evaluate with `landmark evaluate RUN/best.pt --data DIR`")
    cards = _cards([(f"{float(acc):.1%}", "test accuracy"), (f"{float(f1):.3f}", "macro-F1")])
    extra = [(k, metrics[k]) for k in ("test_weighted_f1", "n_test", "epochs_run", "best_valid_loss", "train_seconds",
                                       "total_seconds") if k in metrics]
    if metrics.get("test_skipped"):
        extra.append(("unreadable test photos", len(metrics["test_skipped"])))
    return [cards] + ([_kv_table(extra)] if extra else [])


def _per_class_section(per_class: dict[str, dict[str, float]]) -> list[Block]:
    rows = []
    for name, row in per_class.items():
        f1 = row.get("f1-score", row.get("f1", 0.0))
        # A light red tint on weak classes: the eye finds them before any sorting.
        tint = f"{max(0.0, 0.6 - f1) / 1.5:.2f}" if f1 < 0.6 else None
        rows.append({"name": name, "tint": tint, "cells": [f"{row['precision']:.3f}", f"{row['recall']:.3f}",
                                                             f"{f1:.3f}", str(int(row["support"]))]})
    return [_text("Click a column heading to sort; click again to reverse.", "hint"), {"kind": "per_class", "rows": rows}]


def _confusion_section(paths: RunPaths, confusion: list[list[int]] | None, names: Sequence[str] | None
                       ) -> list[Block]:
    png_path = paths.root / "test_confusion.png"
    if png_path.is_file():
        png = png_path.read_bytes()
    elif confusion is not None and names is not None:
        png = confusion_png(confusion, names)
    else:
        raise _Missing("test_confusion.png is missing and there is no test evaluation to draw it from")
    # Shown at its natural size in a scrolling box: with 50 classes, shrinking it to the page
    # width would make the class names unreadable. A click toggles fit-to-width.
    return [_text("Rows are true classes, columns predicted, each row normalised. "
                  "Scroll to pan; click the image to toggle fit-to-width.", "hint"),
            {**_png_img(png, "confusion matrix", "confusion"), "scroll": True}]


def confused_pairs(confusion: Sequence[Sequence[int]], names: Sequence[str], top: int = TOP_PAIRS
                   ) -> list[tuple[str, str, int, float]]:
    """The largest off-diagonal cells: (true, predicted, count, share of the true class)."""
    cm = np.asarray(confusion, dtype=np.int64)
    support = cm.sum(1)
    off = [(int(cm[i, j]), i, j) for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j] > 0]
    off.sort(key=lambda t: (-t[0], -t[0] / max(support[t[1]], 1), t[1], t[2]))
    return [(names[i], names[j], n, n / max(int(support[i]), 1)) for n, i, j in off[:top]]


def _pairs_section(confusion: list[list[int]], names: Sequence[str]) -> list[Block]:
    pairs = confused_pairs(confusion, names)
    if not pairs:
        return [_text("No confusions: every test photo was classified correctly.")]
    return [{"kind": "pairs", "rows": [(t, p, n, f"{share:.1%}") for t, p, n, share in pairs]}]


def _mistake_card(evaluation: _Evaluation, index: int, device) -> dict:
    from PIL import Image

    from .explain import colorize, explain_image

    res, loaded = evaluation.result, evaluation.loaded
    path = Path(res.paths[index])
    true, pred = res.y_true[index], res.y_pred[index]
    prob = float(res.probs[index, pred])
    try:
        photo = thumbnail(path, THUMB)
        crop, cam, _, _ = explain_image(loaded, path, pred, device)
        heat = Image.fromarray(colorize(crop, cam)).resize((THUMB, THUMB), Image.Resampling.BICUBIC)
    except BadImageError:
        photo = heat = placeholder(THUMB)
    names = loaded.class_names
    return {"photo": image_data_uri(photo), "heat": image_data_uri(heat), "path": str(path),
            "short": str(Path(path.parent.name, path.name)), "true": names[true], "pred": names[pred],
            "prob": f"{prob:.3f}"}


def _mistakes_section(evaluation: _Evaluation | None, why: str, device: str) -> list[Block]:
    from ..models.runtime import select_device

    if evaluation is None:
        raise _Missing(why)
    res = evaluation.result
    wrong = [i for i, (t, p) in enumerate(zip(res.y_true, res.y_pred)) if t != p]
    if not wrong:
        return [_text(f"No misclassified photos among the {len(res.y_true)} test photos.")]
    # Most confident mistakes first: they say the most about what the model has learnt wrong.
    wrong.sort(key=lambda i: -float(res.probs[i, res.y_pred[i]]))
    shown = wrong[:MAX_MISTAKES]
    dev = select_device(device)
    cards = [_mistake_card(evaluation, i, dev) for i in shown]
    note = (f"{len(wrong)} of {len(res.y_true)} test photos are misclassified"
            + (f"; the {len(shown)} most confident mistakes are shown" if len(shown) < len(wrong) else "")
            + ". Each shows the photo and the Grad-CAM heat map of the predicted class: what the model looked at.")
    return [_text(note), {"kind": "mistakes", "cards": cards}]


# ------------------------------------------------------------------------------------------ evaluation


def _resolve_data(paths: RunPaths, data: Path | None) -> Path:
    if data is not None:
        return Path(data)
    try:
        cfg_data = _read_json(paths.config).get("data")
    except _Missing as exc:
        raise _Missing(f"no data folder: {exc}; pass --data DIR") from None
    if not cfg_data:
        raise _Missing("no data folder: config.json names none; pass --data DIR")
    return Path(cfg_data)


def _evaluate(paths: RunPaths, data: Path | None, device: str) -> _Evaluation:
    from ..data.datasets import discover
    from ..embeddings import load_model
    from ..training import evaluate
    from ..training.metrics import model_labels

    if not paths.best.is_file():
        raise _Missing("best.pt is missing from the run folder, so the test photos cannot be re-classified")
    root = _resolve_data(paths, data)
    if not root.is_dir():
        raise _Missing(f"the data folder {root} does not exist here; pass --data DIR")
    try:
        layout = discover(root)
    except DataError as exc:
        raise _Missing(str(exc)) from None
    if not layout.test:
        raise _Missing(f"{root} has no test/ split, so there are no test photos to show")
    loaded = load_model(paths.best)
    try:
        samples = model_labels(layout, layout.test, loaded.class_ids)
    except DataError as exc:
        raise _Missing(f"{exc} (pass the dataset the model was trained on with --data)") from None
    # Worker processes cost more than they save on a small test split.
    workers = 0 if len(samples) < 500 else -1
    result = evaluate(loaded, samples, device=device, workers=workers, quiet=True)
    return _Evaluation(loaded, result)


# ------------------------------------------------------------------------------------------ page


def _render(title: str, subtitle: str, sections: Sequence[_Section]) -> str:
    return environment().get_template("report.html").render(title=title, subtitle=subtitle, sections=sections)


def _section(anchor: str, title: str, build: Callable[[], list[Block]]) -> _Section:
    try:
        return _Section(anchor, title, build())
    except _Missing as exc:
        return _Section(anchor, title, [_text(str(exc), "missing")])
    except (LandmarkError, OSError, ValueError, KeyError, IndexError, TypeError, RuntimeError) as exc:
        # A report is a by-product of training: one broken piece must not lose the others.
        return _Section(anchor, title, [_text(f"this section could not be built ({type(exc).__name__}: {exc})",
                                              "missing")])


def write_report(run_dir: Path, data: Path | None = None, out: Path | None = None, *,
                 device: str = "auto") -> Path:
    """Write one self-contained HTML report for a training run (default RUN/report.html)."""
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise DataError(f"{paths.root}: no such run folder; pass the folder `landmark train` wrote (runs/<model>-<time>)")
    if not any(p.is_file() for p in (paths.config, paths.metrics, paths.best, paths.history)):
        raise DataError(f"{paths.root}: not a training run (no config.json, metrics.json, history.csv or best.pt)")
    out = Path(out) if out is not None else paths.root / REPORT_NAME
    if out.is_dir():
        out = out / REPORT_NAME

    test_report: dict | None = _read_json_or(paths.root / "test_report.json", None)
    evaluation: _Evaluation | None = None
    why_no_eval = ""
    try:
        evaluation = _evaluate(paths, data, device)
    except _Missing as exc:
        why_no_eval = str(exc)
    except LandmarkError as exc:
        why_no_eval = f"the test photos could not be re-classified: {exc}"

    per_class = confusion = names = None
    if test_report and {"per_class", "confusion", "class_names"} <= test_report.keys():
        per_class, confusion, names = test_report["per_class"], test_report["confusion"], test_report["class_names"]
    elif evaluation is not None:
        res = evaluation.result
        per_class, confusion, names = res.per_class, res.confusion, evaluation.loaded.class_names
    no_test = ("test_report.json is missing and " + (why_no_eval or "there is no test evaluation")
               + "; evaluate with `landmark evaluate RUN/best.pt --data DIR`")

    def need(value: Any) -> Any:
        if value is None:
            raise _Missing(no_test)
        return value

    # Results first; the configuration (30-odd rows) is reference, at the end.
    sections = [
        _section("curves", "Training curves", lambda: _curves_section(paths)),
        _section("metrics", "Test metrics", lambda: _metrics_section(paths, test_report, evaluation)),
        _section("open-set", "Photos of anything else (open set)", lambda: _open_set_section(paths, test_report)),
        _section("per-class", "Per-class precision, recall and F1", lambda: _per_class_section(need(per_class))),
        _section("confusion", "Confusion matrix", lambda: _confusion_section(paths, confusion, names)),
        _section("pairs", "Most-confused class pairs", lambda: _pairs_section(need(confusion), need(names))),
        _section("mistakes", "Misclassified test photos", lambda: _mistakes_section(evaluation, why_no_eval, device)),
        _section("config", "Configuration", lambda: _config_section(paths)),
    ]
    cfg = _read_json_or(paths.config, {})
    n_classes = len(names) if names is not None else "?"
    subtitle = (f"model {cfg.get('model', '?')} · {n_classes} classes · data {cfg.get('data', '?')} · "
                f"generated {datetime.now().strftime('%Y-%m-%d %H:%M')}")
    page = _render(f"Training report: {paths.root.resolve().name}", subtitle, sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return out
