"""Exact flat search vs the ANN index `auto` picks for large indexes, measured side by side.

Each index type is built in its own subprocess from the same seeded synthetic data (gaussian
clusters of varying size and spread, L2-normalised), so peak RSS is per type. Reported per
type: build time, peak RSS, single-query latency (one query at a time), recall@k against an
exact numpy brute force, and the flat/ANN latency ratio from the same run. The FAISS indexes
are built with landmark_search.index.vectors's own builder, so the parameters are the shipped ones.
``--end-to-end`` also times the whole PhotoIndex path (SQLite ingest, save, reopen, search).

    python benchmarks/bench_ann.py                 # 1M x 256 (takes minutes)
    python benchmarks/bench_ann.py --n 100000      # quick run

Results go to benchmarks/results.json under the key "ann" (other benchmarks share the file).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from landmark_search.index import vectors as index_mod  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results.json"


def synthetic(n: int, dim: int, clusters: int, spread: tuple[float, float], seed: int) -> np.ndarray:
    """``n`` L2-normalised vectors from gaussian clusters with log-normal sizes and varied spread."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.lognormal(0.0, 1.0, clusters)
    sigma = rng.uniform(spread[0], spread[1], clusters).astype(np.float32)
    labels = rng.choice(clusters, size=n, p=weights / weights.sum())
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # chunks keep the temporaries small at 1M
        lab = labels[start : start + 100_000]
        noise = rng.standard_normal((len(lab), dim), dtype=np.float32)
        x[start : start + len(lab)] = centres[lab] + noise * (sigma[lab, None] / np.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def exact_top_k(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of the exact top-k inner products, by numpy in chunks (independent of faiss)."""
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    for start in range(0, len(x), 100_000):
        sims = q @ x[start : start + 100_000].T
        part = np.argpartition(-sims, min(k, sims.shape[1] - 1), axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(sims, part, axis=1)], axis=1)
        best_i = np.concatenate([best_i, part + start], axis=1)
        keep = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(best_s, keep, axis=1)
        best_i = np.take_along_axis(best_i, keep, axis=1)
    return best_i


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k found."""
    k = truth.shape[1]
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / k for f, t in zip(found, truth)]))


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_single_queries(search: Any, q: np.ndarray) -> dict[str, float]:
    """Median and p90 latency of searching the queries one at a time, after a warm-up."""
    for i in range(min(10, len(q))):
        search(q[i : i + 1])
    times = []
    for i in range(len(q)):
        start = time.perf_counter()
        search(q[i : i + 1])
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90))}


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Build one index type over the seeded data and measure it (runs in its own process)."""
    index_mod.configure_threads()
    data = synthetic(args.n + args.queries, args.dim, args.clusters, tuple(args.spread), args.seed)
    x, q = data[: args.n], data[args.n :]  # queries are held out: not in the index
    del data
    rss_data = peak_rss_mib()
    kind = args.worker
    out: dict[str, Any] = {"type": kind}

    start = time.perf_counter()
    # The module's own builder: the shipped nlist / nprobe / HNSW parameters.
    vectors = index_mod.build_vector_index(kind, args.dim, np.arange(args.n, dtype=np.int64), x)
    out["build_s"] = time.perf_counter() - start
    out["peak_rss_mib"] = peak_rss_mib()
    out["rss_over_data_mib"] = out["peak_rss_mib"] - rss_data
    inner = index_mod.faiss.downcast_index(vectors.index.index)
    if kind == "ivf":
        out["params"] = {"nlist": int(inner.nlist), "nprobe": index_mod.ivf_nprobe(inner.nlist)}
    elif kind == "hnsw":
        out["params"] = {"M": index_mod.HNSW_M, "efConstruction": index_mod.HNSW_EF_CONSTRUCTION,
                         "efSearch": index_mod.HNSW_EF_SEARCH}
    out.update(time_single_queries(lambda one: vectors.search(one, args.k), q))
    _, found = vectors.search(q, args.k)
    truth = exact_top_k(x, q, args.k)
    out["recall_at_k"] = recall_at_k(found, truth)
    if kind != "flat":
        out["paired"] = paired_latency(args, x, q, vectors)

    if args.end_to_end:
        del vectors
        out["end_to_end"] = end_to_end(args, kind, x, q, truth)
    return out


def paired_latency(args: argparse.Namespace, x: np.ndarray, q: np.ndarray, approx: Any) -> dict[str, float]:
    """Flat and ANN single-query latency alternated query by query, so load from other
    processes on the machine hits both alike; the ratio of medians is the fairest speed-up."""
    flat = index_mod.build_vector_index("flat", args.dim, np.arange(len(x), dtype=np.int64), x)
    for i in range(min(10, len(q))):
        flat.search(q[i : i + 1], args.k)
        approx.search(q[i : i + 1], args.k)
    t_flat, t_approx = [], []
    for i in range(len(q)):
        start = time.perf_counter()
        flat.search(q[i : i + 1], args.k)
        middle = time.perf_counter()
        approx.search(q[i : i + 1], args.k)
        t_flat.append(middle - start)
        t_approx.append(time.perf_counter() - middle)
    flat_ms, approx_ms = float(np.median(t_flat)) * 1e3, float(np.median(t_approx)) * 1e3
    return {"flat_median_ms": flat_ms, "approx_median_ms": approx_ms, "speedup": flat_ms / approx_ms}


def end_to_end(args: argparse.Namespace, kind: str, x: np.ndarray, q: np.ndarray,
               truth: np.ndarray) -> dict[str, Any]:
    """Time the PhotoIndex path: batched SQLite ingest, save, reader reopen, search with paths."""
    from landmark_search.index.store import PhotoIndex, PhotoRecord

    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        start = time.perf_counter()
        with PhotoIndex.open(tmp, model_id="bench", dim=args.dim, index_type=kind) as idx:
            for lo in range(0, len(x), 1024):
                hi = min(lo + 1024, len(x))
                recs = [PhotoRecord(f"/photos/{i}.jpg", 1, 1, "h") for i in range(lo, hi)]
                idx.add(recs, x[lo:hi])
            result["ingest_s"] = time.perf_counter() - start
            start = time.perf_counter()
            idx.save()
            result["save_s"] = time.perf_counter() - start
        start = time.perf_counter()
        reader = PhotoIndex.open(tmp, model_id="bench", dim=args.dim, lock=False)
        result["active_type"] = reader.active_type
        result["open_and_load_s"] = time.perf_counter() - start
        result.update(time_single_queries(lambda one: reader.search(one, args.k), q))
        hits = reader.search(q, args.k)
        found = np.array([[int(Path(h.path).stem) for h in row] for row in hits])
        result["recall_at_k"] = recall_at_k(found, truth)
        result["manifest_mib"] = os.path.getsize(Path(tmp) / "manifest.sqlite") / 2**20
        result["cache_mib"] = os.path.getsize(Path(tmp) / "vectors.faiss") / 2**20
        reader.close()
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def run_worker(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """Run ``worker`` for one type in a fresh process and return its measurements."""
    cmd = [sys.executable, __file__, "--worker", kind, "--n", str(args.n), "--dim", str(args.dim),
           "--clusters", str(args.clusters), "--spread", *map(str, args.spread),
           "--queries", str(args.queries), "--k", str(args.k), "--seed", str(args.seed)]
    if args.end_to_end:
        cmd += ["--end-to-end"]
    if args.tmpdir:
        cmd += ["--tmpdir", args.tmpdir]
    print(f"building {kind} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def update_results(entry: dict[str, Any]) -> None:
    """Read-modify-write the shared results file atomically, touching only the "ann" key."""
    data: dict[str, Any] = {}
    if RESULTS.exists():
        data = json.loads(RESULTS.read_text())
    data["ann"] = entry
    fd, tmp = tempfile.mkstemp(prefix=".results.", suffix=".tmp", dir=RESULTS.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, RESULTS)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="indexed vectors")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--spread", type=float, nargs=2, default=(0.5, 1.5), metavar=("LO", "HI"),
                        help="per-cluster noise norm range (larger: harder for ANN)")
    parser.add_argument("--queries", type=int, default=200, help="held-out single queries")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ann", choices=("auto", "ivf", "hnsw"), default="auto",
                        help="ANN type to compare with flat (auto: what `auto` uses above "
                             f"{index_mod.EXACT_MAX_VECTORS} vectors)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="also time SQLite ingest, save, reopen and PhotoIndex.search")
    parser.add_argument("--tmpdir", default=None, help="where --end-to-end builds its index")
    parser.add_argument("--no-save", action="store_true", help="do not update results.json")
    parser.add_argument("--worker", choices=("flat", "ivf", "hnsw"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args)))
        return

    ann = args.ann
    if ann == "auto":
        ann = index_mod.choose_index_type("auto", max(args.n, index_mod.EXACT_MAX_VECTORS + 1))
    auto_here = index_mod.choose_index_type("auto", args.n)
    flat = run_worker(args, "flat")
    approx = run_worker(args, ann)
    speedup = flat["median_ms"] / approx["median_ms"]

    print(f"\n{args.n:,} vectors x {args.dim}, {args.clusters} clusters, spread {args.spread}, "
          f"{args.queries} held-out queries, k={args.k}, {index_mod.cpu_count()} CPU threads")
    print(f"{'type':<6} {'build s':>9} {'peak RSS MiB':>13} {'median ms':>10} {'p90 ms':>8} "
          f"{'recall@' + str(args.k):>10}  params")
    for row in (flat, approx):
        print(f"{row['type']:<6} {row['build_s']:>9.2f} {row['peak_rss_mib']:>13.0f} "
              f"{row['median_ms']:>10.3f} {row['p90_ms']:>8.3f} {row['recall_at_k']:>10.4f}  "
              f"{row.get('params', '')}")
    paired = approx["paired"]
    print(f"single-query speed-up of {ann} over exact flat: {speedup:.1f}x from the rows above, "
          f"{paired['speedup']:.1f}x alternating queries in one process "
          f"({paired['flat_median_ms']:.3f} vs {paired['approx_median_ms']:.3f} ms); "
          f"auto would use {auto_here} at this size")
    if args.end_to_end:
        for row in (flat, approx):
            e2e = row["end_to_end"]
            print(f"end-to-end {row['type']}: ingest {e2e['ingest_s']:.1f}s, save {e2e['save_s']:.1f}s, "
                  f"reopen+load {e2e['open_and_load_s']:.1f}s, PhotoIndex.search median "
                  f"{e2e['median_ms']:.3f} ms, recall@{args.k} {e2e['recall_at_k']:.4f}, "
                  f"manifest {e2e['manifest_mib']:.0f} MiB, cache {e2e['cache_mib']:.0f} MiB")
        print(f"end-to-end speed-up: "
              f"{flat['end_to_end']['median_ms'] / approx['end_to_end']['median_ms']:.1f}x")

    if not args.no_save:
        update_results({
            "command": "python benchmarks/bench_ann.py " + " ".join(sys.argv[1:]),
            "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpu_threads": index_mod.cpu_count(), "processor": platform.processor()
                        or platform.machine(), "python": platform.python_version(),
                        "faiss": index_mod.faiss.__version__},
            "config": {"n": args.n, "dim": args.dim, "clusters": args.clusters,
                       "spread": list(args.spread), "queries": args.queries, "k": args.k,
                       "seed": args.seed},
            "auto_type_at_n": auto_here,
            "exact_max_vectors": index_mod.EXACT_MAX_VECTORS,
            "flat": flat,
            "approx": approx,
            "speedup_single_query": speedup,
            "speedup_single_query_paired": paired["speedup"],
        })
        print(f"wrote {RESULTS.relative_to(ROOT)} [\"ann\"]")


if __name__ == "__main__":
    main()
