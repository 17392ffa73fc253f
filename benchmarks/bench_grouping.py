"""Grouping without labels: adjusted Rand index of `landmark group` against the class folders, each method
(graph consensus, HDBSCAN, faiss k-means + merging) side by side on the same vectors. Usage:

    python benchmarks/bench_grouping.py [FOLDER ...] [--model NAME|RUN/best.pt] [--min-size 5]

Default folders: wonders7 train and test (a photo's class is its folder's name). Each folder gets its own
index under benchmarks/_work.

Photos in no group count as groups of one (so leaving photos out is not free). Also reported: the ARI
of the grouped photos alone and the fraction grouped. Vectors come from an index in benchmarks/_work
(the built-in model by default: no labels are used anywhere).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, evaldata_set, update_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="*", type=Path)
    parser.add_argument("--model", default=None)
    parser.add_argument("--min-size", type=int, default=5)
    parser.add_argument("--index", default=str(ROOT / "benchmarks" / "_work" / "grouping-index"),
                        help="index folder (a suffix per data folder after the first)")
    args = parser.parse_args()
    folders = args.data or [evaldata_set() / "train", evaldata_set() / "test"]
    results = {}
    for n, data in enumerate(folders):
        index = args.index + (f"-{n}" if n else "")
        results[f"{data.parent.name}/{data.name}"] = measure(data, args.model, index, args.min_size)
    print(json.dumps(results, indent=2))
    update_results("grouping", results)


def measure(data: Path, model: str | None, index: str, min_size: int) -> dict:
    """ARI of every method on one folder's photos, their classes being their folders' names."""
    from sklearn.metrics import adjusted_rand_score

    from landmark_search.config import EmbedConfig
    from landmark_search.curation.grouping import METHODS, cluster
    from landmark_search.search import IndexOptions, indexed_photos

    found = indexed_photos([data], model, index, IndexOptions(), EmbedConfig(progress=False))
    truth = [p.parent.name for p in found.paths]
    result = {"photos": len(truth), "classes": len(set(truth)), "model": found.summary.model_name}
    for method in METHODS:
        t0 = time.perf_counter()
        labels = cluster(found.vectors, min_size, method)
        seconds = time.perf_counter() - t0
        alone = labels.copy()
        alone[alone < 0] = labels.max() + 1 + np.arange((labels < 0).sum())
        grouped = labels >= 0
        result[method] = {"ari": round(adjusted_rand_score(truth, alone), 3),
                          "ari_grouped_only": round(adjusted_rand_score(np.array(truth)[grouped], labels[grouped]), 3),
                          "grouped_fraction": round(float(grouped.mean()), 3), "groups": int(labels.max()) + 1,
                          "seconds": round(seconds, 2)}
    return result


if __name__ == "__main__":
    main()
