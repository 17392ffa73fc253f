"""Frozen-backbone transfer training end to end: `landmark train --model efficientnet_lite0` on wonders7.

Runs, as a subprocess (so the figures include interpreter start, imports and model loading):

    landmark train --model efficientnet_lite0 --data ../shared/evaldata/wonders7_hoodiinii \\
        --quiet --no-report --out benchmarks/_work/transfer

and reports wall time, peak RSS and the test accuracy from the run's metrics.json. The goal is
absolute (<= 90 s, >= 0.97 test accuracy), so there is no baseline side; the run folder is kept
for bench_tagging.py, which tags with its best.pt.

    python benchmarks/bench_transfer.py           # ~1 min on 2 cores
    python benchmarks/bench_transfer.py --quick   # smoke test: 5 photos per class, 2 epochs, 1 view
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
GOAL_SECONDS = 90.0
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test on a tiny copy of the data")
    args = parser.parse_args()
    use_results_file(args.quick)

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
