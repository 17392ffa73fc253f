"""Grouping without labels: adjusted Rand index of `landmark group` (grouping.group_indexed, the one grouping the
CLI and the web Review page share) against the class folders, on real landmark photos and on landmark photos
mixed with everyday ones; each clustering method side by side on the same vectors. Usage:

    python benchmarks/bench_grouping.py [--sets wonders7 india12 india12+distractors] [--model NAME|RUN/best.pt]
    python benchmarks/bench_grouping.py FOLDER ...   # other sets: a photo's class is its folder's name

(`python benchmarks/bench_duplicates.py --grouping` runs the same.) One index under benchmarks/_work holds every
photo (the built-in model by default: no labels are used anywhere); each set is read back from it.

Photos in no group count as groups of one (leaving photos out is not free). An everyday photo (the ImageNet
distractors) is a class of its own: the ideal leaves it ungrouped. Also reported: the ARI over the landmark photos
alone, the share of landmark and of everyday photos that were grouped, and the seconds each took.
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

SETS = {"wonders7": ["wonders7_hoodiinii"], "india12": ["india12_Abinaya27m"],
        "india12+distractors": ["india12_Abinaya27m", "distractors_imagenet"]}
EVERYDAY = "distractors_imagenet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="*", type=Path)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--model", default=None)
    parser.add_argument("--min-size", type=int, default=5)
    parser.add_argument("--index", default=str(ROOT / "benchmarks" / "_work" / "grouping-index"))
    args = parser.parse_args()
    results = measure_sets(args.sets, args.model, args.index, args.min_size, args.data)
    print(json.dumps(results, indent=2))
    update_results("grouping", results)


def measure_sets(sets: list[str], model: str | None, index: str, min_size: int = 5,
                 folders: list[Path] | None = None) -> dict:
    """{set: {method: scores}} for the named evaldata sets (or the given folders, one set each)."""
    from landmark_search.config import EmbedConfig
    from landmark_search.search import IndexOptions, indexed_photos

    chosen = {str(f): [f] for f in folders} if folders else {
        name: [evaldata_set(part) for part in SETS[name]] for name in sets}
    roots = sorted({f for parts in chosen.values() for f in parts})
    found = indexed_photos(roots, model, index, IndexOptions(), EmbedConfig(progress=False))
    results = {}
    for name, parts in chosen.items():
        rows = [i for i, p in enumerate(found.paths) if any(p.is_relative_to(part) for part in parts)]
        results[name] = measure([found.paths[i] for i in rows], [found.records[i] for i in rows],
                                found.vectors[rows], found.model_kind, min_size)
        results[name]["model"] = found.summary.model_name
    return results


def measure(paths: list[Path], records: list, vectors: np.ndarray, model_kind: str, min_size: int) -> dict:
    """ARI of `landmark group` and of each bare clustering method on one set's photos."""
    from landmark_search.curation.grouping import METHODS, GroupOptions, cluster, group_indexed

    truth = np.array([f"{EVERYDAY}:{p.name}" if EVERYDAY in p.parts else p.parent.name for p in paths])
    everyday = np.char.startswith(truth, EVERYDAY)
    result = {"photos": len(truth), "classes": len(set(truth[~everyday])), "everyday_photos": int(everyday.sum())}
    t0 = time.perf_counter()
    report = group_indexed(paths, records, vectors, model_kind, GroupOptions(min_size=min_size))
    seconds = time.perf_counter() - t0
    row = {p: i for i, p in enumerate(paths)}
    labels = np.full(len(paths), -1)
    for g, group in enumerate(report.groups):
        labels[[row[p] for p in group.paths]] = g
    result["landmark group"] = scores(truth, labels, everyday, seconds)
    for method in METHODS:
        t0 = time.perf_counter()
        labels = cluster(vectors, min_size, method)
        result[method] = scores(truth, labels, everyday, time.perf_counter() - t0)
    return result


def scores(truth: np.ndarray, labels: np.ndarray, everyday: np.ndarray, seconds: float) -> dict:
    from sklearn.metrics import adjusted_rand_score

    alone = labels.copy()
    alone[alone < 0] = labels.max() + 1 + np.arange((labels < 0).sum())
    out = {"ari": round(adjusted_rand_score(truth, alone), 3), "groups": int(labels.max()) + 1,
           "landmarks_grouped": round(float((labels[~everyday] >= 0).mean()), 3), "seconds": round(seconds, 2)}
    if everyday.any():
        out["ari_landmarks"] = round(adjusted_rand_score(truth[~everyday], alone[~everyday]), 3)
        out["everyday_grouped"] = round(float((labels[everyday] >= 0).mean()), 3)
    return out


if __name__ == "__main__":
    main()
