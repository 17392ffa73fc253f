"""Peak memory of `landmark index` stays flat as the folder grows.

Generates 10,000 seeded photo-like 640x480 JPEGs once (benchmarks/_work/mem/photos), makes folders
of the first N of them (hard links, no copies), and runs `landmark index FOLDER --index NEW` with
the default model (efficientnet_lite0) in a subprocess per N. Reported per N: peak RSS (ru_maxrss
from wait4: the largest process of the tree, i.e. the main process), the largest sampled sum over
the process tree (main + DataLoader workers), wall time and img/s; and peak(largest N) / peak(smallest N).

    python benchmarks/bench_memory.py                 # N = 1000, 3000, 10000 (~6 min on 2 cores)
    python benchmarks/bench_memory.py --quick         # N = 200, 600, 2000 (what `make bench` runs, ~1 min)
    python benchmarks/bench_memory.py --smoke         # N = 8, 16, 32, results to _work/ (a smoke test)
    python benchmarks/bench_memory.py --sizes 500 5000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import update_results  # noqa: E402
from run_all import WORK, landmark_cmd, run_measured, summary_row, use_results_file  # noqa: E402

MEM = WORK / "mem"
PHOTOS = MEM / "photos"
GOAL = 1.10  # peak(max N) / peak(min N): "flat" allows 10 % of allocator and page-cache noise


def _photo(index: int) -> None:
    """One seeded 640x480 photo-like JPEG (gradient sky, ground, shapes, noise)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(index)
    w, h = 640, 480
    ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    top, bottom = rng.integers(40, 255, 3), rng.integers(0, 200, 3)
    col = (top[None, :] * (1 - ramp) + bottom[None, :] * ramp).astype(np.uint8)
    img = Image.fromarray(np.broadcast_to(col[:, None, :], (h, w, 3)).copy())
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(h // 5, h))
        box = [x0, y0, x0 + int(rng.integers(20, 300)), y0 + int(rng.integers(20, 250))]
        fill = tuple(int(v) for v in rng.integers(0, 255, 3))
        (draw.rectangle if rng.integers(0, 2) else draw.ellipse)(box, fill=fill)
    arr = np.clip(np.asarray(img, np.int16) + rng.integers(-6, 7, (h, w, 3), dtype=np.int16), 0, 255)
    out = PHOTOS / f"p{index:05d}.jpg"
    Image.fromarray(arr.astype(np.uint8)).save(out, "JPEG", quality=90)


def ensure_photos(n: int) -> None:
    PHOTOS.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(n) if not (PHOTOS / f"p{i:05d}.jpg").exists()]
    if missing:
        print(f"generating {len(missing)} 640x480 JPEGs into {PHOTOS} (once) ...", file=sys.stderr, flush=True)
        with multiprocessing.get_context("fork").Pool(multiprocessing.cpu_count()) as pool:
            pool.map(_photo, missing, chunksize=64)


def folder_of(n: int) -> Path:
    """A folder holding hard links to the first n photos."""
    folder = MEM / f"n{n}"
    if folder.exists() and len(list(folder.iterdir())) == n:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i in range(n):
        os.link(PHOTOS / f"p{i:05d}.jpg", folder / f"p{i:05d}.jpg")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 200, 600, 2000 (what `make bench` runs)")
    parser.add_argument("--smoke", action="store_true", help="N = 8, 16, 32; results go to _work/, not results.json")
    parser.add_argument("--sizes", type=int, nargs="+", help="folder sizes (overrides --quick)")
    args = parser.parse_args()
    use_results_file(args.smoke)

    sizes = sorted(args.sizes or ([8, 16, 32] if args.smoke else [200, 600, 2000] if args.quick else [1000, 3000, 10000]))
    ensure_photos(max(sizes))
    rows = []
    for n in sizes:
        folder = folder_of(n)
        index = MEM / f"index_{n}"
        if index.exists():
            shutil.rmtree(index)  # made by this script: every run indexes from scratch
        cmd = [*landmark_cmd(), "index", str(folder), "--index", str(index), "--quiet", "--json"]
        run = run_measured(cmd, capture=True)
        if run["rc"] != 0:
            sys.exit(f"{' '.join(cmd)} failed ({run['rc']}):\n{run['stderr'][-2000:]}")
        out = json.loads(run["stdout"])
        if out["added"] != n or out["failed"]:
            sys.exit(f"unexpected index summary for {n} photos: {out}")
        row = {"n": n, "peak_rss_mib": round(run["peak_rss_mib"]), "peak_tree_rss_mib": round(run["peak_tree_rss_mib"]),
               "seconds": round(run["seconds"], 1), "img_s": round(n / run["seconds"], 1),
               "foreign_cores": round(run["foreign_cores"], 2)}
        rows.append(row)
        print(f"  N={n}: peak RSS {row['peak_rss_mib']} MiB (tree {row['peak_tree_rss_mib']} MiB), "
              f"{row['seconds']} s, {row['img_s']} img/s", file=sys.stderr, flush=True)
    ratio = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    tree_ratio = rows[-1]["peak_tree_rss_mib"] / max(rows[0]["peak_tree_rss_mib"], 1)
    result = {"model": "efficientnet_lite0 (default)", "photo_size": [640, 480], "runs": rows,
              "ratio": round(ratio, 3), "tree_ratio": round(tree_ratio, 3), "goal": GOAL,
              "command": "landmark index benchmarks/_work/mem/nN --index benchmarks/_work/mem/index_N --quiet --json"}
    result["summary"] = [summary_row(
        "memory", f"landmark index peak RSS, N={rows[-1]['n']} / N={rows[0]['n']} photos", result["ratio"],
        f"<= {GOAL:g}", ratio <= GOAL,
        ", ".join(f"N={r['n']}: {r['peak_rss_mib']} MiB" for r in rows)
        + f"; whole tree ratio {tree_ratio:.2f}; {rows[-1]['img_s']} img/s",
        foreign=max(r["foreign_cores"] for r in rows))]
    print(f"memory: peak RSS {' / '.join(str(r['peak_rss_mib']) for r in rows)} MiB for N = "
          f"{' / '.join(str(r['n']) for r in rows)}; ratio {ratio:.3f} (goal <= {GOAL:g})", flush=True)
    update_results("memory", result)


if __name__ == "__main__":
    main()
