"""The default model (efficientnet_lite0) indexing: seed-style predictor vs today's eager path vs the engine, in one run.

Three measurements, each side by side in this one run:

1. In process, on all ~417 wonders7 photos split into chunks, alternating (rotating who goes first):
   "baseline" the seed-style predictor with the default model (PIL full decode, torchvision Resize(256)
   -> CenterCrop(224) -> ToTensor -> Normalize, fp32 eager model + softmax, one photo at a time),
   "today" `iter_embeddings` with backend="torch" (eager bf16 + channels_last where the CPU has bf16,
   what `landmark index` did before the engines), "ours" `iter_embeddings` as `landmark index` runs it now
   (models/engine.py picks the route). Ratios are medians of the chunk ratios.
2. Whole process: `landmark index wonders7 --index NEW` as a subprocess, three sides in rotation, median
   of the rounds (interpreter start, imports, model load, decode, model, writing the index: what a user
   waits for): "filed" the code of main when issue 16 was filed (FILED_AT, run from a temporary git
   worktree: the throughput the issue's 2x goal is measured against), "today" this code with
   LANDMARK_BACKEND=torch (the eager path, with every other improvement since), "ours" this code as is.
   The engine's one-off export is made before the first round and timed apart (first_run_seconds).
3. Ceiling: the chosen route's pure forward on pre-decoded, pre-normalised tensors at batch 32
   (nothing else running: no decode, no Python around it). The model stage (LoadedModel.infer on the
   same photos as uint8 batches: normalisation, engine, head, softmax) is reported as a fraction of it,
   and so is the whole pipeline (decode threads and model sharing the cores).

    python benchmarks/bench_default_model.py          # ~4 min on 2 cores
    python benchmarks/bench_default_model.py --quick  # smoke test: a handful of photos, one round
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from _common import evaldata_set, update_results  # noqa: E402
from bench_indexing import measure_set, photo_set, run_baseline, run_ours, seed_transform  # noqa: E402
from run_all import landmark_cmd, run_measured, summary_row, use_results_file  # noqa: E402

GOAL_WHOLE = 2.0  # whole-process throughput vs the code when issue 16 was filed
FILED_AT = "d6ccef2"  # main when issue 16 ("... >= 2x its current whole-process throughput") was filed
GOAL_CEILING = 0.8  # model stage as a fraction of the best route's pure forward
BATCH = 32


def make_seed_predictor():
    """The original app's way of running a model (bench_indexing's baseline loop and transforms), with the
    default model: fp32, batch 1, softmax."""
    import torch

    from landmark_search.embeddings import load_model

    model = load_model(None).module.float().eval()

    def predictor(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(model(x), 1)

    transform = seed_transform()
    return lambda paths: run_baseline(paths, predictor, transform)


def in_process(paths: list[Path], chunks: int) -> tuple[dict, object]:
    from landmark_search.config import EmbedConfig
    from landmark_search.embeddings import load_model

    today_cfg = EmbedConfig(progress=False, backend="torch")
    ours_cfg = EmbedConfig(progress=False)
    today, ours = load_model(None), load_model(None)
    seed = make_seed_predictor()
    warm = paths[:BATCH]
    seed(warm[:3])
    run_ours(warm, today, today_cfg)
    t = time.perf_counter()
    run_ours(paths[:max(BATCH, 64)], ours, ours_cfg)  # 64+ photos: auto exports (or loads the cached export)
    ours_first = time.perf_counter() - t
    sides = {"baseline": seed, "today": lambda part: run_ours(part, today, today_cfg),
             "ours": lambda part: run_ours(part, ours, ours_cfg)}
    res = measure_set("wonders7", paths, chunks, sides)
    res["ours_route"] = ours.route or "torch"
    res["ours_first_call_seconds"] = round(ours_first, 2)
    res["ours_vs_today_ratio"] = round(float(np.median([r["ours_img_s"] / r["today_img_s"]
                                                        for r in res["per_chunk"]])), 2)
    return res, ours


def ceiling(paths: list[Path], model, reps: int) -> dict:
    """Pure forward of the engine (or eager, when no engine loaded) vs LoadedModel.infer vs the pipeline."""
    import torch

    from landmark_search.config import EmbedConfig
    from landmark_search.photos.images import load_image
    from landmark_search.data.transforms import normalize_uint8, resize_size
    from landmark_search.embeddings import iter_embeddings, prepare_uint8

    some = (paths * (BATCH // max(len(paths), 1) + 1))[:BATCH]
    images = torch.stack([prepare_uint8(load_image(p, min_side=resize_size(224)), 224) for p in some])
    x = normalize_uint8(images, model.mean, model.std)
    device = torch.device("cpu")
    forward = model.engine if model.engine is not None else model.module.features

    def best_of(fn) -> float:
        with torch.inference_mode():
            fn()
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        return BATCH / statistics.median(times)

    sides = {"forward": lambda: forward(x), "stage": lambda: model.infer(images, device, None)}
    results: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(3):  # alternate, so drift hits both
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            results[name].append(best_of(sides[name]))
    forward_s, stage_s = (statistics.median(results[k]) for k in ("forward", "stage"))
    cfg = EmbedConfig(progress=False)
    t = time.perf_counter()
    n = sum(len(b.paths) for b in iter_embeddings(paths, model, cfg))
    pipeline = n / (time.perf_counter() - t)
    return {"route": model.route or "torch", "batch": BATCH, "ceiling_forward_img_s": round(forward_s, 1),
            "model_stage_img_s": round(stage_s, 1), "model_stage_fraction": round(stage_s / forward_s, 3),
            "pipeline_img_s": round(pipeline, 1), "pipeline_fraction": round(pipeline / forward_s, 3)}


def _worktree(rev: str, where: Path) -> Path | None:
    """A checkout of `rev` at `where` (None where git or the revision is missing, e.g. a shallow clone)."""
    run = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(where), rev],
                         capture_output=True, text=True)
    return where if run.returncode == 0 else None


def whole_process(data: Path, rounds: int) -> dict:
    """`landmark index DATA --index NEW`: the code at FILED_AT, LANDMARK_BACKEND=torch, default; in rotation."""
    work = Path(tempfile.mkdtemp(prefix="bench-default-"))
    base_env = {k: v for k, v in os.environ.items() if k != "LANDMARK_BACKEND"}
    cmds = {"today": landmark_cmd(), "ours": landmark_cmd()}
    envs = {"today": {**base_env, "LANDMARK_BACKEND": "torch"}, "ours": base_env}
    filed = _worktree(FILED_AT, work / "filed-src")
    if filed is not None:  # its package first on the path (ahead of this checkout's editable install)
        # -P: not the current folder's package ahead of PYTHONPATH; the assert proves which code ran.
        cmds["filed"] = [sys.executable, "-P", "-c", "import os, sys, landmark_search; "
                         "assert landmark_search.__file__.startswith(os.environ['PYTHONPATH']), landmark_search.__file__; "
                         "from landmark_search.cli import app; sys.argv[0] = 'landmark'; app()"]
        envs["filed"] = {**base_env, "PYTHONPATH": str(filed)}
    count = len(list(data.rglob("*.jpg")))

    def once(side: str, i: int, photos: Path = data) -> dict:
        run = run_measured([*cmds[side], "index", str(photos), "--index", str(work / f"{side}{i}"), "--quiet"],
                           env=envs[side], capture=True)
        if run["rc"] != 0:
            raise SystemExit(f"landmark index ({side}) failed: {run['stderr'][-400:]}")
        shutil.rmtree(work / f"{side}{i}", ignore_errors=True)
        return run

    try:
        first = once("ours", 0)  # the engine's export, once per machine (a no-op when already cached)
        # Start-up: the same command on one photo (interpreter, imports, model load, engine session, index files).
        one = work / "one"
        one.mkdir()
        shutil.copy(next(data.rglob("*.jpg")), one / "photo.jpg")
        startup = {side: statistics.median(once(side, 100 + i, one)["seconds"] for i in range(2)) for side in cmds}
        secs: dict[str, list[float]] = {side: [] for side in cmds}
        foreign = 0.0
        for i in range(rounds):
            order = list(cmds)[i % len(cmds):] + list(cmds)[:i % len(cmds)]
            for side in order:
                run = once(side, i + 1)
                secs[side].append(run["seconds"])
                foreign = max(foreign, run["foreign_cores"])
    finally:
        if filed is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(filed)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    def ratio(base: str) -> float:
        return round(statistics.median(b / o for b, o in zip(secs[base], secs["ours"])), 2)

    return {"photos": count, "rounds": rounds, "first_run_seconds": round(first["seconds"], 1),
            "filed_at": FILED_AT if filed is not None else None,
            **{f"{side}_seconds": [round(s, 1) for s in v] for side, v in secs.items()},
            **{f"{side}_img_s": round(count / statistics.median(v), 1) for side, v in secs.items()},
            "ratio_vs_filed": ratio("filed") if filed is not None else None, "ratio_vs_today": ratio("today"),
            "foreign_cores": round(foreign, 2), "startup_seconds": {side: round(v, 2) for side, v in startup.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: a handful of photos, one round")
    parser.add_argument("--rounds", type=int, default=3, help="whole-process rounds per side")
    args = parser.parse_args()
    use_results_file(args.quick)
    warnings.simplefilter("ignore")

    paths = photo_set("wonders7", args.quick)
    inproc, ours_model = in_process(paths, 1 if args.quick else 4)
    limit = ceiling(paths, ours_model, 3 if args.quick else 8)
    whole = whole_process(evaldata_set() / "test" if args.quick else evaldata_set(), 1 if args.quick else args.rounds)
    result = {"in_process": inproc, "ceiling": limit, "whole_process": whole,
              "command": "python benchmarks/bench_default_model.py " + " ".join(sys.argv[1:])}
    load = inproc["max_foreign_cores"]
    route = inproc["ours_route"]
    result["summary"] = [
        summary_row("default model", f"`landmark index` wonders7, whole process: ours ({route}) / main when "
                    f"issue 16 was filed ({whole['filed_at']})", whole["ratio_vs_filed"], f">= {GOAL_WHOLE:g}x",
                    None if whole["ratio_vs_filed"] is None else whole["ratio_vs_filed"] >= GOAL_WHOLE,
                    f"{whole['ours_img_s']} vs {whole.get('filed_img_s')} img/s incl. start-up (one photo: "
                    f"{whole['startup_seconds']['ours']} vs {whole['startup_seconds'].get('filed')} s), median of "
                    f"{whole['rounds']} rounds in rotation", foreign=whole["foreign_cores"]),
        summary_row("default model", f"`landmark index` wonders7, whole process: ours ({route}) / this code's "
                    "eager path (LANDMARK_BACKEND=torch)", whole["ratio_vs_today"], "-", None,
                    f"{whole['ours_img_s']} vs {whole['today_img_s']} img/s; one photo: "
                    f"{whole['startup_seconds']['ours']} vs {whole['startup_seconds']['today']} s",
                    foreign=whole["foreign_cores"]),
        summary_row("default model", f"embedding wonders7 in process: ours ({route}) / seed-style predictor",
                    inproc["ours_ratio"], "-", None, f"{inproc['ours_img_s']} vs {inproc['baseline_img_s']} img/s; "
                    f"today / seed-style {inproc['today_ratio']}x, ours / today {inproc['ours_vs_today_ratio']}x; "
                    f"median of {inproc['chunks']} chunk ratios", foreign=load),
        summary_row("default model", f"model stage / ceiling ({route} pure forward, batch {BATCH})",
                    limit["model_stage_fraction"], f">= {GOAL_CEILING:g}",
                    limit["model_stage_fraction"] >= GOAL_CEILING,
                    f"{limit['model_stage_img_s']} vs {limit['ceiling_forward_img_s']} img/s; whole pipeline "
                    f"{limit['pipeline_img_s']} img/s = {limit['pipeline_fraction']:.2f} of the ceiling"),
    ]
    print(f"default model ({route}): whole process {whole['ratio_vs_filed']}x the code when issue 16 was filed, "
          f"{whole['ratio_vs_today']}x this code's eager path ({whole['ours_img_s']} vs {whole.get('filed_img_s')} vs "
          f"{whole['today_img_s']} img/s); in process {inproc['ours_ratio']}x the seed-style predictor, "
          f"{inproc['ours_vs_today_ratio']}x today's; model stage {limit['model_stage_fraction']:.2f} of the ceiling "
          f"({limit['ceiling_forward_img_s']} img/s), pipeline {limit['pipeline_fraction']:.2f}", flush=True)
    update_results("default_model", result)


if __name__ == "__main__":
    main()
