"""Indexing throughput: the original project's predictor vs `iter_embeddings`, side by side in one run.

Baseline (what the original app does per photo): PIL full decode, torchvision Resize(256) ->
CenterCrop(224) -> ToTensor -> Normalize, an fp32 TorchScript ResNet34 + softmax, one image at a time.
Ours: `landmark_search.embeddings.iter_embeddings` with a random-weight ResNet34, twice:
"ours" with the default EmbedConfig on a chunk (batch 32, decode threads auto, JPEG draft decoding,
bf16 autocast + channels_last where the CPU has bf16: what `auto` does for jobs under 256 photos), and
"ours_int8" with `precision="int8"` (what `auto` picks for 256+ new photos of a plain-conv model on a
VNNI/AMX CPU, i.e. what `landmark index` does for a library; the one-off quantization is timed apart as
int8_first_batch_seconds). All sides process the same photos; the photo list is split into chunks and
the sides alternate chunk by chunk (rotating who goes first), so machine drift hits all of them.

Photo sets: "wonders7" (all ~417 jpgs of ../shared/evaldata/wonders7_hoodiinii, <= 320 px) and
"12mp" (200 seeded photo-like 4000x3000 JPEGs, generated once into benchmarks/_work/12mp).

    python benchmarks/bench_indexing.py               # both sets, ~4 min on 2 cores
    python benchmarks/bench_indexing.py --set 12mp    # one set
    python benchmarks/bench_indexing.py --breakdown   # also time each stage (decode, resize, model) alone
    python benchmarks/bench_indexing.py --quick       # smoke test: a handful of photos
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from _common import evaldata_set, update_results  # noqa: E402
from run_all import WORK, Phase, summary_row, use_results_file  # noqa: E402

LARGE_DIR = WORK / "12mp"
LARGE_SIZE = (4000, 3000)
GOALS = {"wonders7": 5.0, "12mp": 10.0}


# -------------------------------------------------------------------------------------------- photo sets

def _photo(index: int) -> None:
    """One seeded photo-like 12 MP JPEG: sky/ground gradients, shapes, fine noise (about 4 MB at q90)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(1000 + index)
    w, h = LARGE_SIZE
    horizon = int(h * rng.uniform(0.4, 0.7))
    top, bottom = rng.integers(40, 255, 3), rng.integers(0, 200, 3)
    ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    col = (top[None, :] * (1 - ramp) + bottom[None, :] * ramp).astype(np.uint8)  # (h, 3)
    img = Image.fromarray(np.broadcast_to(col[:, None, :], (h, w, 3)).copy())
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, horizon, w, h], fill=tuple(int(v) for v in rng.integers(20, 160, 3)))
    for _ in range(int(rng.integers(15, 40))):  # buildings, hills, windows
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(h // 5, h))
        x1, y1 = x0 + int(rng.integers(50, 1200)), y0 + int(rng.integers(50, 900))
        fill = tuple(int(v) for v in rng.integers(0, 255, 3))
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.rectangle([x0, y0, x1, y1], fill=fill)
        elif shape == 1:
            draw.ellipse([x0, y0, x1, y1], fill=fill)
        else:
            draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=fill)
    img = img.filter(ImageFilter.BoxBlur(2))
    # Sensor-like noise: a seeded 509x509 tile, tiled (JPEG cost is per 8x8 block, repetition is free).
    tile = rng.integers(-10, 11, (509, 509, 3), dtype=np.int16)
    noise = np.tile(tile, (h // 509 + 1, w // 509 + 1, 1))[:h, :w]
    arr = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    out = LARGE_DIR / f"photo_{index:04d}.jpg"
    tmp = out.with_suffix(".tmp")
    Image.fromarray(arr).save(tmp, "JPEG", quality=90)
    tmp.replace(out)


def large_photos(n: int) -> list[Path]:
    """The first n generated 12 MP photos, generating the missing ones (in parallel, once)."""
    LARGE_DIR.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(n) if not (LARGE_DIR / f"photo_{i:04d}.jpg").exists()]
    if missing:
        print(f"generating {len(missing)} 4000x3000 JPEGs into {LARGE_DIR} (once) ...", file=sys.stderr, flush=True)
        with multiprocessing.get_context("fork").Pool(min(len(missing), multiprocessing.cpu_count())) as pool:
            pool.map(_photo, missing, chunksize=1)
    return [LARGE_DIR / f"photo_{i:04d}.jpg" for i in range(n)]


def photo_set(name: str, quick: bool) -> list[Path]:
    if name == "wonders7":
        paths = sorted(evaldata_set().rglob("*.jpg"))
        return paths[:: max(1, len(paths) // 12)][:12] if quick else paths
    return large_photos(6 if quick else 200)


def warm_page_cache(paths: list[Path]) -> None:
    """Read every file once so neither side pays the first disk read."""
    for p in paths:
        p.read_bytes()


# -------------------------------------------------------------------------------------------- the two sides

def make_baseline():
    """The original app's predictor: fp32 TorchScript ResNet34 + softmax, and its transforms."""
    import torch
    import torch.nn.functional as F
    import torchvision
    from torch import nn

    class Predictor(nn.Module):
        def __init__(self, model: nn.Module):
            super().__init__()
            self.model = model.eval()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return F.softmax(self.model(x), dim=1)

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = torch.jit.script(Predictor(torchvision.models.resnet34(weights=None, num_classes=50))).eval()
    return predictor, seed_transform()


def seed_transform():
    """The original app's transforms: Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize (ImageNet)."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


def run_baseline(paths: list[Path], predictor, transform) -> int:
    from PIL import Image

    for p in paths:
        img = Image.open(p).convert("RGB")
        predictor(transform(img).unsqueeze(0))
    return len(paths)


def make_ours():
    """A LoadedModel for a random-weight ResNet34 (50 classes), as a checkpoint would give."""
    import torch
    from landmark_search.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from landmark_search.embeddings import LoadedModel
    from landmark_search.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet34", 50, pretrained=False).eval()
    classes = [f"{i:02d}.class_{i}" for i in range(50)]
    return LoadedModel(name="resnet34-random", kind="checkpoint", model_id="bench", sha256="bench",
                       image_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, class_ids=classes,
                       class_names=classes, embedding_dim=model.embedding_dim, module=model, arch="resnet34")


def run_ours(paths: list[Path], loaded, cfg) -> int:
    from landmark_search.embeddings import iter_embeddings

    n = 0
    for batch in iter_embeddings(paths, loaded, cfg):
        if batch.failed:
            raise RuntimeError(f"ours failed on {batch.failed[:2]}")
        n += len(batch.paths)
    return n


# -------------------------------------------------------------------------------------------- measuring

def measure_set(name: str, paths: list[Path], chunks: int, sides: dict) -> dict:
    """Alternate the sides (name -> fn(photos) -> count) over chunks of the same photos.

    Reports img/s per side and each side's ratio to the baseline: the median of the per-chunk
    ratios, so a chunk that another process disturbed (recorded as foreign_cores) moves it less
    than it moves the totals. The order of the sides rotates from chunk to chunk.
    """
    warm_page_cache(paths)
    bounds = np.linspace(0, len(paths), chunks + 1).astype(int)
    names = list(sides)
    secs, count, peak, extra = ({s: 0.0 for s in names} for _ in range(4))
    per_chunk = []
    for c in range(chunks):
        part = paths[bounds[c]:bounds[c + 1]]
        order = names[c % len(names):] + names[:c % len(names)]
        row: dict = {"photos": len(part)}
        for side in order:
            with Phase() as ph:
                n = sides[side](part)
            secs[side] += ph.seconds
            count[side] += n
            peak[side] = max(peak[side], ph.peak_mib)
            extra[side] = max(extra[side], ph.delta_mib)
            row[f"{side}_img_s"] = round(n / ph.seconds, 2)
            row[f"{side}_foreign_cores"] = round(ph.foreign_cores, 2)
        for side in names[1:]:
            row[f"{side}_ratio"] = round(row[f"{side}_img_s"] / row["baseline_img_s"], 2)
        per_chunk.append(row)
        print(f"  {name} chunk {c + 1}/{chunks} ({len(part)} photos): "
              + ", ".join(f"{side} {row[f'{side}_img_s']:.1f} img/s" for side in names)
              + f" (other processes: up to {max(row[f'{s}_foreign_cores'] for s in names):.2f} cores)",
              file=sys.stderr, flush=True)
    out: dict = {"photos": len(paths), "chunks": chunks, "goal": GOALS[name], "per_chunk": per_chunk,
                 "max_foreign_cores": max(r[f"{s}_foreign_cores"] for r in per_chunk for s in names)}
    for side in names:
        out[f"{side}_img_s"] = round(count[side] / secs[side], 2)
        out[f"{side}_seconds"] = round(secs[side], 2)
    for side in names[1:]:
        out[f"{side}_ratio"] = round(float(np.median([r[f"{side}_ratio"] for r in per_chunk])), 2)
        out[f"{side}_ratio_of_totals"] = round(out[f"{side}_img_s"] / out["baseline_img_s"], 2)
    out["ratio"] = out["ours_ratio"]
    # One process holds every model, so the peaks overlap; the extra RSS each side's phase added
    # (decoded photos, activations) is its own.
    out["peak_rss_mib"] = {s: round(peak[s]) for s in names}
    out["phase_extra_rss_mib"] = {s: round(extra[s]) for s in names}
    return out


def breakdown(paths: list[Path], loaded, cfg, sample: int, baseline, loaded_int8, int8_cfg) -> dict:
    """Time each stage alone (one core for decode/resize, all threads for the model).

    `loaded` is the bf16/fp32 side (never quantized here: every call names its precision), `loaded_int8`
    the already-quantized int8 side; the decode-thread variants run the int8 library path.
    """
    import torch
    from PIL import Image
    from torchvision import transforms as T

    from landmark_search.photos.images import load_image
    from landmark_search.data.transforms import resize_size
    from landmark_search.embeddings import iter_embeddings, prepare_uint8
    from landmark_search.models.runtime import select_device, select_precision

    some = paths[:sample]
    out: dict = {"sample": len(some), "torch_threads": torch.get_num_threads()}

    def per_image_ms(fn) -> float:
        t = time.perf_counter()
        for p in some:
            fn(p)
        return round((time.perf_counter() - t) * 1e3 / len(some), 2)

    base_tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                         T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    out["full_decode_ms"] = per_image_ms(lambda p: Image.open(p).convert("RGB"))
    out["draft_decode_ms"] = per_image_ms(lambda p: load_image(p, min_side=resize_size(224)))
    decoded = [load_image(p, min_side=resize_size(224)) for p in some]
    out["draft_decoded_size"] = list(decoded[0].size)
    t = time.perf_counter()
    for img in decoded:
        prepare_uint8(img, 224)
    out["ours_resize_crop_ms"] = round((time.perf_counter() - t) * 1e3 / len(decoded), 2)
    full = [Image.open(p).convert("RGB") for p in some[:8]]
    t = time.perf_counter()
    for img in full:
        base_tf(img)
    out["baseline_transform_ms"] = round((time.perf_counter() - t) * 1e3 / len(full), 2)

    device = select_device(cfg.device)
    dtype = select_precision(cfg.precision, device)
    loaded.prepare(device, dtype)
    x = torch.randint(0, 256, (cfg.batch_size, 3, 224, 224), dtype=torch.uint8)

    def model_seconds(model, model_dtype) -> float:
        with torch.inference_mode():
            model.infer(x, device, model_dtype)
            reps = 3
            t = time.perf_counter()
            for _ in range(reps):
                model.infer(x, device, model_dtype)
        return (time.perf_counter() - t) / (reps * cfg.batch_size)

    model_s = model_seconds(loaded, dtype)
    int8_s = model_seconds(loaded_int8, None)
    out["ours_model_img_s"] = round(1 / model_s, 1)
    out["ours_int8_model_img_s"] = round(1 / int8_s, 1)
    # Where the model-side gain comes from: batching alone (fp32 NCHW, batch 32), then bf16 + channels_last.
    import copy

    fp32 = copy.deepcopy(loaded.module).float().to(memory_format=torch.contiguous_format).eval()
    xf = torch.randn(cfg.batch_size, 3, 224, 224)
    with torch.inference_mode():
        fp32.embed_and_logits(xf)
        t = time.perf_counter()
        fp32.embed_and_logits(xf)
        out["fp32_nchw_batch_model_img_s"] = round(cfg.batch_size / (time.perf_counter() - t), 1)
    predictor = baseline[0]  # the measured one: already past TorchScript's profiling runs
    x1 = torch.randn(1, 3, 224, 224)
    for _ in range(3):
        predictor(x1)
    t = time.perf_counter()
    for _ in range(8):
        predictor(x1)
    out["baseline_model_batch1_img_s"] = round(8 / (time.perf_counter() - t), 1)
    out["ours_model_dtype"] = str(dtype)
    flops = 7.3e9  # ResNet34 at 224 px: 3.6 GMACs
    out["ours_model_tflops"] = round(flops / model_s / 1e12, 3)
    out["ours_int8_model_tops"] = round(flops / int8_s / 1e12, 3)
    # Pipeline bound if decode+resize (1 core each) and the model (all cores) packed perfectly.
    cores = torch.get_num_threads()
    prep_core_s = (out["draft_decode_ms"] + out["ours_resize_crop_ms"]) / 1e3
    out["ideal_pipeline_img_s"] = round(cores / (prep_core_s + cores * model_s), 1)
    out["ideal_int8_pipeline_img_s"] = round(cores / (prep_core_s + cores * int8_s), 1)
    out["prep_only_img_s_all_cores"] = round(cores / prep_core_s, 1)

    # The same pipeline with 0 (inline), 1 and 2 decode threads (how much overlapping decode buys).
    from dataclasses import replace

    variants = {}
    for workers in (0, 1, 2):
        c = replace(int8_cfg, workers=workers)
        run_ours(paths[: min(len(paths), 2 * cfg.batch_size)], loaded_int8, c)  # warm
        t = time.perf_counter()
        n = sum(len(b.paths) for b in iter_embeddings(paths, loaded_int8, c))
        variants[f"decode_threads={workers}"] = round(n / (time.perf_counter() - t), 1)
    out["ours_int8_img_s_by_decode_threads"] = variants
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("wonders7", "12mp", "both"), default="both")
    parser.add_argument("--chunks", type=int, default=4, help="alternating chunks per photo set")
    parser.add_argument("--breakdown", action="store_true", help="also time decode, resize and model alone")
    parser.add_argument("--quick", action="store_true", help="smoke test: a handful of photos")
    args = parser.parse_args()
    use_results_file(args.quick)

    from dataclasses import replace

    import torch

    from landmark_search.config import EmbedConfig
    from landmark_search.models.runtime import cpu_has_fast_bf16

    cfg = EmbedConfig(progress=False)
    int8_cfg = EmbedConfig(progress=False, precision="int8")
    names = ["wonders7", "12mp"] if args.set == "both" else [args.set]
    sets = {name: photo_set(name, args.quick) for name in names}
    baseline, ours, ours_int8 = make_baseline(), make_ours(), make_ours()
    # Warm-up outside the clock: TorchScript's profiling runs, oneDNN primitive creation.
    warm = sets[names[0]][:4]
    run_baseline(warm[:3], *baseline)
    run_baseline(warm[:3], *baseline)
    run_ours(sets[names[0]][: cfg.batch_size], ours, cfg)
    t0 = time.perf_counter()
    run_ours(sets[names[0]][: cfg.batch_size], ours_int8, int8_cfg)  # quantizes once (calibration)
    quantize_seconds = time.perf_counter() - t0
    sides = {"baseline": lambda part: run_baseline(part, *baseline), "ours": lambda part: run_ours(part, ours, cfg),
             "ours_int8": lambda part: run_ours(part, ours_int8, int8_cfg)}

    result: dict = {"torch_threads": torch.get_num_threads(), "embed_config": {
        "batch_size": cfg.batch_size, "workers": cfg.workers, "precision": cfg.precision},
        "int8_first_batch_seconds": round(quantize_seconds, 2), "sets": {}}
    summary = []
    for name in names:
        paths = sets[name]
        print(f"{name}: {len(paths)} photos", file=sys.stderr, flush=True)
        res = measure_set(name, paths, 1 if args.quick else args.chunks, sides)
        if args.breakdown:
            res["breakdown"] = breakdown(paths, ours, replace(cfg, precision=cfg.precision if cfg.precision != "auto"
                                                              else "bf16" if cpu_has_fast_bf16() else "fp32"),
                                         min(len(paths), 6 if args.quick else 24), baseline, ours_int8, int8_cfg)
        result["sets"][name] = res
        label = f"wonders7 ({len(paths)} jpgs <= 320 px)" if name == "wonders7" else f"{len(paths)} JPEGs 4000x3000"
        summary.append(summary_row("indexing", f"{label}: ours bf16 / original predictor img/s", res["ratio"],
                                   f">= {GOALS[name]:g}x", res["ratio"] >= GOALS[name],
                                   f"{res['ours_img_s']:.1f} vs {res['baseline_img_s']:.1f} img/s, median of "
                                   f"{res['chunks']} chunk ratios", foreign=res["max_foreign_cores"]))
        summary.append(summary_row("indexing", f"{label}: ours int8 (auto for 256+ photos) / original predictor img/s",
                                   res["ours_int8_ratio"], f">= {GOALS[name]:g}x", res["ours_int8_ratio"] >= GOALS[name],
                                   f"{res['ours_int8_img_s']:.1f} vs {res['baseline_img_s']:.1f} img/s, median of "
                                   f"{res['chunks']} chunk ratios", foreign=res["max_foreign_cores"]))
        print(f"{name}: baseline {res['baseline_img_s']:.1f} img/s, ours {res['ours_img_s']:.1f} img/s "
              f"(ratio {res['ratio']:.2f}x), ours int8 {res['ours_int8_img_s']:.1f} img/s "
              f"(ratio {res['ours_int8_ratio']:.2f}x; goal >= {GOALS[name]:g}x)", flush=True)
    result["peak_rss_mib_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["command"] = "python benchmarks/bench_indexing.py " + " ".join(sys.argv[1:])
    result["summary"] = summary
    update_results("indexing", result)


if __name__ == "__main__":
    main()
