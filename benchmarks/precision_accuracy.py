"""Accuracy cost of each inference precision and engine: torch fp32 / bf16 / int8 and the engine routes.

Embeds train/ (the gallery) and test/ (the queries) with `iter_embeddings` at each `--precision`, then
reports retrieval mAP (relevant = same class folder), test accuracy of the checkpoint's classifier, top-1
agreement with fp32 and the mean cosine between each precision's embeddings and fp32's. This is the
figure that decides where `--precision auto` may use int8, and which engine route `auto` takes for
depthwise models (models/engine.AUTO_ROUTES: at most 1 point lost). Usage:

    python benchmarks/precision_accuracy.py DATA --model RUN/best.pt [--model OTHER/best.pt ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import previous_result, update_results  # noqa: E402

# Each side: the EmbedConfig it runs with. fp32/bf16/int8 are torch (eager; int8 = FX quantization);
# the engine sides (models/engine.py) run the body in ONNX Runtime or OpenVINO (skipped when not installed).
SIDES = {"fp32": dict(precision="fp32", backend="torch"), "bf16": dict(precision="bf16", backend="torch"),
         "int8": dict(precision="int8", backend="torch"), "ort-fp32": dict(precision="fp32", backend="onnxruntime"),
         "ort-int8": dict(precision="auto", backend="onnxruntime"),
         "ov-bf16": dict(precision="bf16", backend="openvino"), "auto": dict(precision="auto")}


def mean_average_precision(gallery: np.ndarray, gallery_labels: np.ndarray, queries: np.ndarray,
                           query_labels: np.ndarray) -> float:
    """mAP over the full cosine ranking of the gallery for every query."""
    sims = queries @ gallery.T
    aps = []
    for row, label in zip(sims, query_labels):
        relevant = gallery_labels[np.argsort(-row)] == label
        hits = np.cumsum(relevant)
        aps.append(float((hits[relevant] / (np.flatnonzero(relevant) + 1)).mean()) if relevant.any() else 0.0)
    return float(np.mean(aps))


def measure(spec: str, data: Path, sides: list[str]) -> dict:
    from landmark_search.config import EmbedConfig
    from landmark_search.embeddings import embed_paths, load_model

    train = sorted(p for p in (data / "train").rglob("*") if p.is_file())
    test = sorted(p for p in (data / "test").rglob("*") if p.is_file())
    runs = {}
    for side in sides:
        options = SIDES[side]
        model = load_model(None if spec == "default" else spec)
        cfg = EmbedConfig(progress=False, auto_int8=False, **options)
        start = time.perf_counter()
        gallery = embed_paths(train, model, cfg)
        if side.startswith(("ort", "ov")) and model.route != side:  # known once the first call chose its route
            print(f"{spec} {side}: not available here (ran {model.route or 'torch'}), skipped", flush=True)
            continue
        queries = embed_paths(test, model, cfg)
        seconds = time.perf_counter() - start
        g_labels = np.array([p.parent.name for p in gallery.paths])
        q_labels = np.array([p.parent.name for p in queries.paths])
        top = queries.probs.argmax(1)
        runs[side] = {
            "route": model.route or options["precision"],
            "vectors": np.vstack([gallery.embeddings, queries.embeddings]),
            "top": np.concatenate([gallery.probs.argmax(1), top]),
            "mAP": mean_average_precision(gallery.embeddings, g_labels, queries.embeddings, q_labels),
            "test_accuracy": (float(np.mean(np.array(model.class_ids)[top] == q_labels))
                              if model.kind == "checkpoint" else None),
            "seconds": round(seconds, 2)}
    ref = runs["fp32"]
    out = {}
    for precision, r in runs.items():
        out[precision] = {"mAP": round(r["mAP"], 4), "test_accuracy": r["test_accuracy"],
                          "top1_agreement_with_fp32": round(float(np.mean(r["top"] == ref["top"])), 4),
                          "mean_cosine_to_fp32": round(float(np.mean(np.sum(r["vectors"] * ref["vectors"], 1))), 4),
                          "seconds": r["seconds"], "route": r["route"]}
        print(f"{spec} {precision}: mAP {out[precision]['mAP']:.4f}  test acc {r['test_accuracy']}  "
              f"top-1 agreement {out[precision]['top1_agreement_with_fp32']:.3f}  "
              f"cosine to fp32 {out[precision]['mean_cosine_to_fp32']:.4f}  {r['seconds']:.1f} s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", action="append", required=True, help="checkpoint, export or built-in name")
    parser.add_argument("--sides", nargs="+", choices=list(SIDES), default=list(SIDES),
                        help="which precisions / engine routes to run (fp32 always runs: the reference)")
    args = parser.parse_args()
    sides = ["fp32"] + [s for s in args.sides if s != "fp32"]
    results = {spec: measure(spec, args.data, sides) for spec in args.model}
    # Models measured by an earlier run (e.g. the built-in one alone) stay beside these.
    earlier = previous_result("precision")
    models = {**earlier.get("models", {}), **results} if earlier.get("data") == str(args.data) else results
    update_results("precision", {"data": str(args.data), "models": models,
                                 "command": "python benchmarks/precision_accuracy.py " + " ".join(sys.argv[1:])})


if __name__ == "__main__":
    main()
