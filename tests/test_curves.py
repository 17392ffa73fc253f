"""Training curves and the run's record say what ran."""

from __future__ import annotations

import json

from landmark_search.render.plots import curve_series, curves_png
from landmark_search.training.run_dir import EpochStats


def _history() -> list[EpochStats]:
    # A healthy run: the mean train loss of an epoch (weights still moving, augmented) lags the valid loss.
    losses = [(2.0, 1.2), (1.1, 0.8), (0.8, 0.7), (0.7, 0.72)]
    return [EpochStats(i, tl, 0.5, vl, 0.7, 1e-3, 1.0) for i, (tl, vl) in enumerate(losses, 1)]


def test_train_points_sit_mid_epoch_and_the_best_epoch_is_marked():
    data = curve_series(_history(), best_epoch=3)
    assert data["loss"]["train"] == ([0.5, 1.5, 2.5, 3.5], [2.0, 1.1, 0.8, 0.7])
    assert data["loss"]["valid"] == ([1, 2, 3, 4], [1.2, 0.8, 0.7, 0.72])
    assert data["best_epoch"] == 3
    assert curve_series(_history())["best_epoch"] == 3  # default: the lowest validation loss
    assert curves_png(_history(), 3)[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_run_records_what_ran_and_which_epoch_best_pt_holds(trained_run, synth_data, tmp_path):
    config = json.loads((trained_run / "config.json").read_text())
    # A frozen power head resolves "auto" to full-batch L-BFGS, which needs no schedule and no mixing; the
    # request is kept apart.
    assert (config["optimizer"], config["scheduler"], config["mix"], config["family"]) == ("lbfgs", "none", "none", "head")
    assert config["precision"] in ("fp32", "bf16", "fp16") and config["device"] == "cpu"
    assert config["requested"]["scheduler"] == "auto" and config["requested"]["precision"] == "auto"
    assert config["requested"]["optimizer"] == "auto"
    metrics = json.loads((trained_run / "metrics.json").read_text())
    rows = (trained_run / "history.csv").read_text().splitlines()[1:]
    best = [int(r.split(",")[0]) for r in rows if abs(float(r.split(",")[3]) - metrics["best_valid_loss"]) < 1e-5]
    assert best and metrics["best_epoch"] in best  # L-BFGS may converge at once: ties are any of the equal epochs
    # the full-batch fit stops once an epoch no longer moves it, long before the 12 epochs asked for
    assert metrics["converged_at"] == len(rows) == metrics["epochs_run"] < 12, (metrics, rows)
    from landmark_search.render.report import write_report

    html = write_report(trained_run, synth_data, tmp_path / "report.html").read_text()
    assert "fitted by full-batch L-BFGS" in html and "the validation curve is the same photos" in html
