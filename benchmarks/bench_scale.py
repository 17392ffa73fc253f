"""Scale-out, measured: `landmark index` on this process vs Ray with 1 and 2 workers, and an IVF-PQ index filled
shard by shard with its recall against exact search.

Throughput: the same photos indexed into fresh indexes by the local path, Ray with 1 worker and Ray with 2 workers
(same model, one run, one Ray started once and timed on its own). Each is run on a small job (--small photos) and on
all photos: the marginal rate (extra photos / extra seconds) cancels the fixed start (model load, Ray actors),
which is reported apart; the overhead per photo is a worker's time per photo minus the local path's.

Simulation (--simulate N): N synthetic 256-d clustered vectors (bench_ann.synthetic), an IVF-PQ index trained on a
sample, then filled shard by shard as Ray workers would (each shard a copy of the trained empty index, filled, then
merged with `merge_from`); recall@10 against exact numpy search, raw and after re-ranking the top `--rerank`
candidates with their float32 vectors (which the manifest keeps), and bytes per vector.

    python benchmarks/bench_scale.py                        # wonders7 (417 photos), default model
    python benchmarks/bench_scale.py --simulate 2000000     # + the IVF-PQ check (~2 GB of vectors)

Results go to benchmarks/results.json under "scale".
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import evaldata_set, previous_result, update_results  # noqa: E402


def _index_seconds(paths: list[Path], model: str | None, cfg: Any, engine: Any) -> float:
    """Wall seconds of build_index over `paths` into a fresh index (model load and Ray actors included)."""
    from landmark_search.search import IndexOptions, build_index

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        summary = build_index(paths, model, Path(tmp) / "idx", IndexOptions(), cfg, engine=engine)
        seconds = time.perf_counter() - t
    assert summary.added + len(summary.failed) == len(paths), summary
    return seconds


def throughput(photos: list[Path], model: str | None, batch_size: int, workers: tuple[int, ...], small: int) -> dict:
    import ray

    from landmark_search.config import EmbedConfig
    from landmark_search.scaleout.ray_index import RayEngine, RayOptions

    cfg = EmbedConfig(batch_size=batch_size, progress=False)
    rows: dict[str, Any] = {"photos": len(photos), "small_job": small}
    t = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    rows["ray_init_s"] = round(time.perf_counter() - t, 2)
    try:
        for name, engine in [("local", None)] + [(f"ray_{n}", RayEngine(RayOptions(workers=n))) for n in workers]:
            few = _index_seconds(photos[:small], model, cfg, engine)
            every = _index_seconds(photos, model, cfg, engine)
            rate = (len(photos) - small) / (every - few)  # the fixed start cancels out
            rows[name] = {"wall_s": round(every, 2), "end_to_end_photos_per_s": round(len(photos) / every, 1),
                          "marginal_photos_per_s": round(rate, 1), "fixed_start_s": round(few - small / rate, 2)}
            print(name, rows[name], flush=True)
    finally:
        ray.shutdown()
    local = rows["local"]["marginal_photos_per_s"]
    for n in workers:
        ray_rate = rows[f"ray_{n}"]["marginal_photos_per_s"]
        rows[f"ray_{n}"]["overhead_ms_per_photo_per_worker"] = round(1000 * (n / ray_rate - 1 / local), 2)
        rows[f"ray_{n}"]["vs_local"] = round(ray_rate / local, 2)
    return rows


def manifest_ingest(n: int, batches: tuple[int, ...]) -> dict:
    """Rows per second the driver commits into a manifest (PhotoIndex.add, one transaction per batch): what bounds
    how many Ray workers one driver can keep up with."""
    from landmark_search.index.store import PhotoIndex, PhotoRecord

    rng = np.random.default_rng(0)
    out = {}
    for batch in batches:
        with tempfile.TemporaryDirectory() as tmp:
            with PhotoIndex.open(Path(tmp) / "idx", model_id="bench", dim=256, index_type="flat") as idx:
                t = time.perf_counter()
                for start in range(0, n, batch):
                    v = rng.standard_normal((min(batch, n - start), 256)).astype(np.float32)
                    v /= np.linalg.norm(v, axis=1, keepdims=True)
                    idx.add([PhotoRecord(f"/library/2026/{start + i:09d}.jpg", 3_000_000, 0, "0" * 32, "label")
                             for i in range(len(v))], v)
                out[f"batch_{batch}_rows_per_s"] = round(n / (time.perf_counter() - t))
    print("manifest ingest", out, flush=True)
    return out


def simulate(n: int, nlist: int, m: int, nprobe: int, shards: int, queries: int, rerank: tuple[int, ...],
             seed: int) -> dict:
    import faiss
    from bench_ann import exact_top_k, recall_at_k, synthetic

    dim, k = 256, 10
    t = time.perf_counter()
    x = synthetic(n, dim, clusters=max(100, n // 1000), spread=(0.3, 1.2), seed=seed)
    q = x[np.random.default_rng(seed + 1).choice(n, queries, replace=False)]
    q = q + np.random.default_rng(seed + 2).standard_normal(q.shape).astype(np.float32) * 0.02
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    make_s = time.perf_counter() - t
    t = time.perf_counter()
    truth = exact_top_k(x, q, k)
    exact_s = time.perf_counter() - t
    # Train on a sample (what the 100M plan does: 64 points per list), then fill shard by shard.
    sample = x[np.random.default_rng(seed + 3).choice(n, min(n, 64 * nlist), replace=False)]
    empty = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
    t = time.perf_counter()
    empty.train(sample)
    train_s = time.perf_counter() - t
    merged = faiss.clone_index(empty)
    t = time.perf_counter()
    bounds = np.linspace(0, n, shards + 1).astype(np.int64)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        shard = faiss.clone_index(empty)  # what each worker would fill and ship
        shard.add_with_ids(x[lo:hi], np.arange(lo, hi, dtype=np.int64))
        merged.merge_from(shard, 0)
    fill_s = time.perf_counter() - t
    merged.nprobe = nprobe
    t = time.perf_counter()
    _, found = merged.search(q, max(k, *rerank))
    search_ms = 1000 * (time.perf_counter() - t) / queries
    recalls = {"recall_at_10_pq": round(recall_at_k(found[:, :k], truth), 4)}
    for depth in rerank:  # re-rank the first `depth` candidates with their exact vectors (the manifest's)
        cand = found[:, :depth]
        exact = np.einsum("qd,qcd->qc", q, x[np.clip(cand, 0, None)])
        exact[cand < 0] = -np.inf
        reranked = np.take_along_axis(cand, np.argsort(-exact, axis=1)[:, :k], axis=1)
        recalls[f"recall_at_10_rerank_{depth}"] = round(recall_at_k(reranked, truth), 4)
    bytes_per_vector = m + 8  # PQ code + the 64-bit id in the inverted lists
    return {"n": n, "dim": dim, "nlist": nlist, "pq_m": m, "nprobe": nprobe, "shards": shards, "queries": queries,
            **recalls,
            "bytes_per_vector": bytes_per_vector, "index_mib": round(n * bytes_per_vector / 2**20, 1),
            "make_s": round(make_s, 1), "exact_search_s": round(exact_s, 1), "train_s": round(train_s, 1),
            "fill_and_merge_s": round(fill_s, 1), "fill_vectors_per_s": round(n / fill_s),
            "search_ms_per_query": round(search_ms, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=None, help="photo folder (default: wonders7, train + test)")
    parser.add_argument("--small", type=int, default=48, help="photos of the small job that measures the fixed start")
    parser.add_argument("--model", default=None, help="model (default: the built-in default)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--ingest", type=int, default=20000, help="rows for the manifest ingest rate (0: skip)")
    parser.add_argument("--simulate", type=int, default=0, help="synthetic vectors for the IVF-PQ check (0: none)")
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--pq-m", type=int, default=64, help="PQ sub-quantizers (bytes per code)")
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--rerank", type=int, nargs="+", default=[100, 300, 1000],
                        help="candidates re-ranked with exact vectors")
    args = parser.parse_args()
    out: dict = {"load_average": os.getloadavg()}
    if not args.skip_throughput:
        photos = sorted((args.photos or evaldata_set()).rglob("*.jpg"))
        out["throughput"] = throughput(photos, args.model, args.batch_size, tuple(args.workers), args.small)
    if args.ingest:
        out["manifest_ingest"] = manifest_ingest(args.ingest, (32, 512))
    if args.simulate:
        out["ivfpq"] = simulate(args.simulate, args.nlist, args.pq_m, args.nprobe, args.shards, args.queries,
                                tuple(args.rerank), seed=0)
        print(out["ivfpq"], flush=True)
    # A partial run (--skip-throughput, --ingest 0) keeps the parts it did not measure again.
    update_results("scale", {**previous_result("scale"), **out})


if __name__ == "__main__":
    main()
