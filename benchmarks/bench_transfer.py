"""Frozen-backbone transfer training end to end: `landmark train --model efficientnet_lite0` on wonders7.

Runs, as a subprocess (so the figures include interpreter start, imports and model loading):

    landmark train --model efficientnet_lite0 --data ../shared/evaldata/wonders7_hoodiinii \\
        --quiet --no-report --out benchmarks/_work/transfer

and reports wall time, peak RSS and the test accuracy from the run's metrics.json. The goal is
absolute (<= 60 s, >= 0.97 test accuracy), so there is no baseline side; the run folder is kept
for bench_tagging.py, which tags with its best.pt.

    python benchmarks/bench_transfer.py                    # ~1 min on 2 cores
    python benchmarks/bench_transfer.py --quick            # smoke test: 5 photos per class, 2 epochs, 1 view
    python benchmarks/bench_transfer.py --synthetic 5000   # the same on N rendered 320 px photos (50 classes;
                                                           # 80 % train), for the large-dataset time (not in make bench)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import evaldata_set, update_results  # noqa: E402
from run_all import WORK, landmark_cmd, run_measured, summary_row, use_results_file  # noqa: E402

OUT = WORK / "transfer"
GOAL_SECONDS = 60.0
SYNTHETIC_GOAL_SECONDS = 600.0  # 5,000 photos (issue 16)
GOAL_ACCURACY = 0.97


def tiny_copy(dest: Path, per_class: int) -> Path:
    """A few photos per class of wonders7 (train/ and test/), for smoke tests."""
    if dest.exists():
        shutil.rmtree(dest)
    for split, n in (("train", per_class), ("test", 1)):
        for cls in sorted(p for p in (evaldata_set() / split).iterdir() if p.is_dir()):
            (dest / split / cls.name).mkdir(parents=True)
            for photo in sorted(cls.glob("*.jpg"))[:n]:
                shutil.copy2(photo, dest / split / cls.name / photo.name)
    return dest


def synthetic(n: int):
    """N seeded rendered photos at 320 px in 50 classes (or fewer), generated once into _work/ (a later call
    reuses them, refusing a folder made with other parameters or left incomplete)."""
    from landmark_search.data.synth import make_synthetic_dataset

    classes = min(50, max(2, n // 20))
    return make_synthetic_dataset(WORK / f"synthetic_{n}", classes=classes, per_class=n // classes, image_size=320,
                                  seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test on a tiny copy of the data")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="train on N rendered photos instead of wonders7 (results under transfer_synthetic)")
    args = parser.parse_args()
    use_results_file(args.quick)

    if args.synthetic:
        made = synthetic(args.synthetic)
        data = made.root
        out = WORK / "transfer_synthetic"
    else:
        data = tiny_copy(WORK / "transfer_quick_data", 5) if args.quick else evaldata_set()
        out = WORK / "transfer_quick" if args.quick else OUT
    if out.exists():
        shutil.rmtree(out)  # a run folder this script made; stale files must not survive
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*landmark_cmd(), "train", "--model", "efficientnet_lite0", "--data", str(data),
           "--quiet", "--no-report", "--out", str(out)]
    if args.quick:
        cmd += ["--epochs", "2", "--feature-views", "1"]
    print(" ".join(cmd), file=sys.stderr, flush=True)
    run = run_measured(cmd)
    if run["rc"] != 0:
        sys.exit(f"landmark train failed with exit code {run['rc']}")
    metrics = json.loads((out / "metrics.json").read_text())
    history = (out / "history.csv").read_text().splitlines()
    result = {
        "command": " ".join(str(c) for c in cmd[len(landmark_cmd()):]),
        "wall_seconds": round(run["seconds"], 1), "train_seconds_in_process": metrics.get("train_seconds"),
        "total_seconds_in_process": metrics.get("total_seconds"), "epochs_run": metrics.get("epochs_run"),
        "test_accuracy": metrics.get("test_accuracy"), "test_macro_f1": metrics.get("test_macro_f1"),
        "n_test": metrics.get("n_test"), "cpu_seconds": round(run["user_s"] + run["sys_s"], 1),
        "peak_rss_mib": round(run["peak_rss_mib"]), "peak_tree_rss_mib": round(run["peak_tree_rss_mib"]),
        "history_rows": len(history) - 1, "run_dir": str(out.relative_to(ROOT)),
        "foreign_cores": round(run["foreign_cores"], 2),
    }
    acc = float(result["test_accuracy"] or 0.0)
    if args.synthetic:
        n = made.n_train + made.n_test
        result["photos"] = n
        result["summary"] = [summary_row("transfer", f"efficientnet_lite0 frozen-backbone train on {n} synthetic "
                                         "photos, wall seconds", result["wall_seconds"],
                                         f"<= {SYNTHETIC_GOAL_SECONDS:g} s at 5000",
                                         result["wall_seconds"] <= SYNTHETIC_GOAL_SECONDS if n >= 5000 else None,
                                         f"{result['epochs_run']} epochs, test accuracy {acc:.3f}",
                                         foreign=result["foreign_cores"])]
        print(f"transfer on {n} synthetic photos: {result['wall_seconds']:.1f} s wall, test accuracy {acc:.4f}")
        update_results("transfer_synthetic", result)
        return
    result["summary"] = [
        summary_row("transfer", "efficientnet_lite0 frozen-backbone train, wall seconds", result["wall_seconds"],
                    f"<= {GOAL_SECONDS:g} s", result["wall_seconds"] <= GOAL_SECONDS,
                    f"{result['epochs_run']} epochs, peak RSS {result['peak_rss_mib']} MiB",
                    foreign=result["foreign_cores"]),
        summary_row("transfer", "efficientnet_lite0 test accuracy (wonders7)", round(acc, 4),
                    f">= {GOAL_ACCURACY:g}", acc >= GOAL_ACCURACY, f"n={result['n_test']}"),
    ]
    print(f"transfer: {result['wall_seconds']:.1f} s wall (goal <= {GOAL_SECONDS:g}), test accuracy {acc:.4f} "
          f"(goal >= {GOAL_ACCURACY:g}), peak RSS {result['peak_rss_mib']} MiB", flush=True)
    update_results("transfer", result)


if __name__ == "__main__":
    main()
