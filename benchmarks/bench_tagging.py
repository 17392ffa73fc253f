"""Re-tagging an unchanged folder vs tagging it the first time: `landmark tag DIR`, twice, as subprocesses.

The photos are a fresh copy of wonders7's test/ (70 photos) and of the 300 everyday distractor photos in
benchmarks/_work/tag_photos; the model is bench_transfer.py's checkpoint (benchmarks/_work/transfer/best.pt)
when it exists, else the built-in default. Each round copies the folder afresh, tags it (first run: loads the
model, embeds every photo, writes sidecars for the photos with a tag and remembers the others as checked),
then runs the same command again (unchanged: reads the sidecars and the checked-photos cache, does no model
work, writes nothing). The two runs alternate within each round; the figures are the medians over rounds, and
the counts of each run are checked, not assumed.

    python benchmarks/bench_tagging.py           # 3 rounds, ~3 min on 2 cores
    python benchmarks/bench_tagging.py --quick   # smoke test: 6 photos, 1 round
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import evaldata_set, update_results  # noqa: E402
from run_all import WORK, landmark_cmd, run_measured, summary_row, use_results_file  # noqa: E402

GOAL = 20.0


def fresh_copy(dest: Path, limit: int | None) -> int:
    """Copy the test photos (without any sidecars) into dest; returns how many."""
    if dest.exists():
        shutil.rmtree(dest)  # made by this script
    sources = (evaldata_set() / "test", evaldata_set("distractors_imagenet"))
    photos = [(root, p) for root in sources for p in sorted(root.rglob("*.jpg"))]
    if limit:
        photos = photos[:: max(1, len(photos) // limit)][:limit]
    for root, p in photos:
        target = dest / root.name / p.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)
    return len(photos)


def tag_once(folder: Path, model: Path | None) -> dict:
    cmd = [*landmark_cmd(), "tag", str(folder), "--quiet", "--json", *(["--model", str(model)] if model else [])]
    run = run_measured(cmd, capture=True)
    if run["rc"] != 0:
        sys.exit(f"{' '.join(cmd)} failed ({run['rc']}):\n{run['stderr'][-2000:]}")
    counts = json.loads(run["stdout"])
    return {"seconds": run["seconds"], "peak_rss_mib": run["peak_rss_mib"], "foreign_cores": run["foreign_cores"],
            "tagged": counts["tagged"], "no_tag": counts["no_tag"], "no_sidecar": counts["no_sidecar"],
            "unchanged": counts["unchanged"], "failed": counts["failed"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke test: 6 photos, one round")
    args = parser.parse_args()
    use_results_file(args.quick)

    ckpt = WORK / ("transfer_quick" if args.quick else "transfer") / "best.pt"
    model = ckpt if ckpt.exists() else None
    folder = WORK / "tag_photos"
    rounds = 1 if args.quick else args.rounds
    first, rerun = [], []
    for r in range(rounds):
        n = fresh_copy(folder, 6 if args.quick else None)
        a = tag_once(folder, model)
        b = tag_once(folder, model)
        if (a["tagged"] + a["no_tag"], a["failed"], b["tagged"], b["no_tag"], b["unchanged"]) != (n, 0, 0, 0, n):
            sys.exit(f"unexpected counts: first run {a}, re-run {b} for {n} photos")
        first.append(a)
        rerun.append(b)
        print(f"  round {r + 1}/{rounds}: first {a['seconds']:.2f} s, unchanged re-run {b['seconds']:.2f} s",
              file=sys.stderr, flush=True)
    t_first = statistics.median(x["seconds"] for x in first)
    t_rerun = statistics.median(x["seconds"] for x in rerun)
    ratio = t_first / t_rerun
    result = {
        "photos": n, "rounds": rounds,
        "model": str(model.relative_to(ROOT)) if model else "built-in default (efficientnet_lite0, ImageNet labels)",
        "first_seconds": round(t_first, 2), "rerun_seconds": round(t_rerun, 2), "ratio": round(ratio, 1),
        "first_img_s": round(n / t_first, 1), "tagged": first[-1]["tagged"], "no_sidecar": first[-1]["no_sidecar"],
        "first_seconds_all": [round(x["seconds"], 2) for x in first],
        "rerun_seconds_all": [round(x["seconds"], 2) for x in rerun],
        "peak_rss_mib": {"first": round(max(x["peak_rss_mib"] for x in first)),
                         "rerun": round(max(x["peak_rss_mib"] for x in rerun))},
        "max_foreign_cores": round(max(x["foreign_cores"] for x in first + rerun), 2),
        "command": f"landmark tag {folder.relative_to(ROOT)} --quiet --json"
                   + (f" --model {model.relative_to(ROOT)}" if model else ""),
    }
    result["summary"] = [summary_row(
        "tagging", f"re-tag unchanged folder ({n} photos): first run / re-run wall time", result["ratio"],
        f">= {GOAL:g}x", ratio >= GOAL,
        f"{t_first:.2f} s vs {t_rerun:.2f} s, peak RSS {result['peak_rss_mib']['first']} vs "
        f"{result['peak_rss_mib']['rerun']} MiB", foreign=result["max_foreign_cores"])]
    print(f"tagging: first run {t_first:.2f} s, unchanged re-run {t_rerun:.2f} s, ratio {ratio:.1f}x "
          f"(goal >= {GOAL:g}x)", flush=True)
    update_results("tagging", result)


if __name__ == "__main__":
    main()
