"""Training curves and confusion matrices as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _pyplot().close(fig)
    return buf.getvalue()


def confusion_png(confusion: Sequence[Sequence[int]], names: Sequence[str], title: str = "") -> bytes:
    """Row-normalised confusion matrix; the figure grows with the class count so 50 classes stay legible."""
    plt = _pyplot()
    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(names)
    size = max(6.0, 0.32 * n + 3)
    fig, ax = plt.subplots(figsize=(size, size), dpi=110)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    font = 10 if n <= 15 else 7
    ax.set_xticks(range(n), [s[:28] for s in names], rotation=90, fontsize=font)
    ax.set_yticks(range(n), [s[:28] for s in names], fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=font - 1,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix (row-normalised)")
    return _png(fig)


def curve_series(history: Sequence[Any], best_epoch: int | None = None) -> dict[str, Any]:
    """What curves_png draws, as data: per metric, (x, y) of train and valid, and the best epoch.

    A train value is the mean over its epoch, measured while the weights still moved (and with the
    augmentation, mixing and dropout of training); a valid value is measured once, after the epoch.
    So train points sit half an epoch earlier: plotted at the epoch's end, the lagging train loss looks
    higher than the valid loss, as if the model underfitted.
    """
    epochs = [h.epoch for h in history]
    if best_epoch is None and history:
        best_epoch = min(history, key=lambda h: h.valid_loss).epoch
    series: dict[str, Any] = {"best_epoch": best_epoch}
    for what in ("loss", "acc"):
        series[what] = {"train": ([e - 0.5 for e in epochs], [getattr(h, f"train_{what}") for h in history]),
                        "valid": (epochs, [getattr(h, f"valid_{what}") for h in history])}
    return series


def curves_png(history: Sequence[Any], best_epoch: int | None = None) -> bytes:
    """Loss and accuracy per epoch, train vs validation (history.csv's rows: training.EpochStats), with the
    epoch best.pt holds marked (default: the lowest validation loss)."""
    plt = _pyplot()
    data = curve_series(history, best_epoch)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, what in ((ax1, "loss"), (ax2, "acc")):
        ax.plot(*data[what]["train"], label="train (mean over each epoch, augmented)")
        ax.plot(*data[what]["valid"], label="valid (after each epoch)", marker="." if len(history) < 40 else None)
        best = data["best_epoch"]
        if best is not None:
            ax.axvline(best, color="crimson", lw=1, ls="--", label=f"best.pt (epoch {best})")
        values = [*data[what]["train"][1], *data[what]["valid"][1]]
        if values and max(values) - min(values) < 1e-3:  # flat (a converged full-batch fit): a readable axis
            pad = max(abs(max(values)) * 0.05, 0.01)
            ax.set_ylim(min(values) - pad, max(values) + pad)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_title("loss" if what == "loss" else "accuracy")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _png(fig)


def precision_recall_png(precision: Sequence[float], recall: Sequence[float], point: tuple[float, float] | None = None,
                         title: str = "") -> bytes:
    """Precision against recall of landmark tags as the confidence threshold falls; `point` marks the one in use."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(recall, precision, lw=2)
    if point is not None:
        ax.plot([point[1]], [point[0]], "o", color="crimson", label="threshold in use")
        ax.legend(loc="lower left")
    ax.set(xlabel="recall (landmark photos with their right tag)", ylabel="precision (tags that are right)",
           xlim=(0, 1.01), ylim=(0, 1.01), title=title)
    ax.grid(alpha=0.3)
    return _png(fig)
