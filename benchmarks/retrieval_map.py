"""Retrieval quality on a train/test class-folder set: index train/, query every test photo.

mAP over the full ranking (relevant = same class folder) and top-1 same-class rate, computed from
`landmark similar --json`-equivalent library calls. Usage:

    python benchmarks/retrieval_map.py DATA --model RUN/best.pt [--index DIR] [--cli]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import update_results  # noqa: E402


def average_precision(relevant: list[bool], n_relevant: int) -> float:
    """AP of one ranked list (full ranking)."""
    hits, total = 0, 0.0
    for rank, rel in enumerate(relevant, 1):
        if rel:
            hits += 1
            total += hits / rank
    return total / max(n_relevant, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--index", type=Path, default=None)
    parser.add_argument("--cli", action="store_true", help="call `landmark similar --json` per query (slow)")
    parser.add_argument("--key", default="retrieval")
    args = parser.parse_args()

    from landmark_search.config import EmbedConfig
    from landmark_search.search import IndexOptions, build_index, find_similar

    index = args.index or Path(tempfile.mkdtemp()) / "idx"
    t0 = time.time()
    built = build_index([args.data / "train"], args.model, index, IndexOptions(), EmbedConfig(progress=False))
    build_s = time.time() - t0
    gallery = {p: p.parent.name for p in (args.data / "train").rglob("*.jpg")}
    per_class = {}
    for c in gallery.values():
        per_class[c] = per_class.get(c, 0) + 1
    aps, top1 = [], []
    queries = sorted((args.data / "test").rglob("*.jpg"))
    t0 = time.time()
    for q in queries:
        if args.cli:
            out = subprocess.run(["landmark", "similar", str(q), "--index", str(index), "-k", str(built.total), "--json"],
                                 check=True, capture_output=True, text=True).stdout
            hits = [Path(h["path"]) for h in json.loads(out)["hits"]]
        else:
            res = find_similar(q, index, k=built.total, cfg=EmbedConfig(progress=False, workers=0))
            hits = [Path(h.path) for h in res.hits]
        rel = [h.parent.name == q.parent.name for h in hits]
        aps.append(average_precision(rel, per_class.get(q.parent.name, 0)))
        top1.append(rel[0] if rel else False)
    result = {"model": args.model, "mAP": round(float(np.mean(aps)), 4), "top1": round(float(np.mean(top1)), 4),
              "queries": len(queries), "gallery": built.total, "index_seconds": round(build_s, 1),
              "query_seconds": round((time.time() - t0) / max(len(queries), 1), 3)}
    print(json.dumps(result, indent=2))
    update_results(args.key, result)


if __name__ == "__main__":
    main()
