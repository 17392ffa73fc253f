"""Duplicates: precision and recall per tier on a generated near-duplicate set, against a perceptual-hash
baseline on the same photos; the keep rule on derivative sets; the neighbour search at 100k photos. Usage:

    python benchmarks/bench_duplicates.py [--quick] [--originals 120] [--model NAME|RUN/best.pt]
    python benchmarks/bench_duplicates.py --keeper [--originals 40]   # which copy is kept, and why
    python benchmarks/bench_duplicates.py --scale 10000 30000 100000   # synthetic vectors: time and memory
    python benchmarks/bench_duplicates.py --photos 100000   # that many photo files: first run, rerun, phash
    python benchmarks/bench_duplicates.py --grouping   # `landmark group`'s ARI (benchmarks/bench_grouping.py)

Timing (quality run): the first run (embedding), a rerun on the built index (remembered pixel checks: only
new candidates are checked) and imagehash's phash over the same photos from scratch, side by side in one
process; the rerun must give the same groups.

The keeper set (dupset.make_keeper_set): each original (q92, camera EXIF) with its exact copy, q50, q75,
50 % resize, 10 % crop and EXIF-stripped copy. A group's keeper is right when it has the original's bytes.

The set (benchmarks/dupset.py) is made from wonders7 (+ the ImageNet distractors as photos of nothing):
each chosen photo with an exact copy, JPEG q50, 50 % resize, 10 % crop, +20 % brightness, a screenshot
border and a metadata-only edit; the other photos of each landmark are the hard negatives; 40 simulated
bursts (two 80 % windows of one photo, 1 s apart in EXIF) are the same-scene truth. Pairs are counted:
a predicted pair is two photos in one group of the tier (near: exact and near groups together, since an
exact copy is a near duplicate too). Baseline: imagehash.phash, Hamming distance <= 10 (imagededup's
default threshold for PHash), every pair compared.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, evaldata_set, update_results  # noqa: E402
from dupset import make_keeper_set, make_large_set, make_set  # noqa: E402

PHASH_THRESHOLD = 10


def _pairs(groups: list[list[str]]) -> set[frozenset]:
    return {frozenset(p) for g in groups for p in itertools.combinations(sorted(set(g)), 2)}


def _pr(predicted: set, truth: set) -> dict:
    tp = len(predicted & truth)
    return {"precision": round(tp / len(predicted), 4) if predicted else 1.0,
            "recall": round(tp / len(truth), 4) if truth else 1.0, "predicted_pairs": len(predicted),
            "true_pairs": len(truth), "false_pairs": len(predicted - truth)}


def _clusters(report, tiers: tuple[str, ...]) -> list[list[str]]:
    """Photos joined by groups of `tiers` (a group's keeper links it to the groups it keeps for)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for g in report.groups:
        if g.tier in tiers:
            for o in g.others:
                parent[find(str(o))] = find(str(g.keep))
    out: dict[str, list[str]] = {}
    for x in list(parent):
        out.setdefault(find(x), []).append(x)
    for root in list(out):
        out[root].append(root)
    return list(out.values())


def _exact_pairs(report) -> set[frozenset]:
    """Pairs of byte-identical photos that share a group (exact copies sit in their picture's group)."""
    out = set()
    for g in report.groups:
        by_content: dict[str, list[str]] = {}
        for m in g.members:
            by_content.setdefault(m.content, []).append(str(m.path))
        out |= _pairs(list(by_content.values()))
    return out


def phash_pairs(paths: list[str]) -> set[frozenset]:
    import imagehash
    from PIL import Image

    bits = np.array([imagehash.phash(Image.open(p)).hash.ravel() for p in paths], dtype=bool)
    packed = np.packbits(bits, axis=1)  # 8 bytes per photo
    out = set()
    for i in range(len(paths)):
        dist = np.unpackbits(packed[i] ^ packed[i + 1:], axis=1).sum(1)
        out.update(frozenset((paths[i], paths[i + 1 + j])) for j in np.nonzero(dist <= PHASH_THRESHOLD)[0])
    return out


def quality(args) -> dict:
    from landmark_search.config import EmbedConfig
    from landmark_search.curation.duplicates import DuplicateOptions, find_duplicates

    work = Path(args.work)
    truth = make_set(evaldata_set(), work / "set", originals=args.originals, bursts=args.bursts, seed=args.seed,
                     extra=None if args.quick else evaldata_set("distractors_imagenet"))
    photos = work / "set" / "photos"
    shutil.rmtree(work / "index", ignore_errors=True)  # a first run is one from nothing: no index, no memory
    t0 = time.perf_counter()
    report, found = find_duplicates([photos], args.model, work / "index", DuplicateOptions(), EmbedConfig(progress=False))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    rerun, _ = find_duplicates([photos], args.model, work / "index", DuplicateOptions(), EmbedConfig(progress=False))
    again = time.perf_counter() - t0
    near_truth = _pairs(truth["near"])
    result = {
        "photos": report.photos, "candidates": report.candidates, "seconds_first_run": round(first, 1),
        "pixel_checks_first_run": report.checked,
        "seconds_rerun_indexed": round(again, 1), "pixel_checks_rerun": rerun.checked,
        "rerun_same_groups": [(g.keep, g.others) for g in rerun.groups] == [(g.keep, g.others) for g in report.groups],
        "exact": _pr(_exact_pairs(report), _pairs(truth["exact"])),
        "near": _pr(_pairs(_clusters(report, ("exact", "near"))), near_truth),
        "same_scene": _pr(_pairs([[str(g.keep), *map(str, g.others)] for g in report.groups
                                  if g.tier == "same_scene"]), _pairs(truth["same_scene"])),
    }
    # Same-landmark different photos called duplicates of any tier: the hard negatives.
    hard = {p for p in _pairs(_clusters(report, ("exact", "near", "same_scene"))) - near_truth - _pairs(truth["same_scene"])
            if len({truth["class"][x] for x in p}) == 1}
    result["same_landmark_pairs_called_duplicates"] = len(hard)
    t0 = time.perf_counter()
    base = phash_pairs(sorted(truth["class"]))
    result["phash_baseline"] = {**_pr(base, near_truth), "seconds": round(time.perf_counter() - t0, 1)}
    result["rerun_vs_phash_from_scratch"] = round(again / max(result["phash_baseline"]["seconds"], 1e-9), 2)
    result["phash_baseline"]["same_landmark_pairs_called_duplicates"] = sum(
        1 for p in base - near_truth if len({truth["class"][x] for x in p}) == 1)
    per_kind = {}
    for group in truth["near"]:
        original = group[0]
        for other in group[1:]:
            kind = other.split("/dups/")[1].split("/")[0]
            per_kind.setdefault(kind, []).append(frozenset((original, other)))
    ours = _pairs(_clusters(report, ("exact", "near")))
    result["near_recall_by_variant"] = {k: round(sum(p in ours for p in v) / len(v), 3) for k, v in per_kind.items()}
    result["phash_recall_by_variant"] = {k: round(sum(p in base for p in v) / len(v), 3) for k, v in per_kind.items()}
    return result


def keeper(args) -> dict:
    """The keep rule on derivative sets: the kept file has the original's bytes in how many groups, and why."""
    from landmark_search.config import EmbedConfig
    from landmark_search.curation.duplicates import DuplicateOptions, find_duplicates

    work = Path(args.work) / "keeper"
    sets = make_keeper_set(evaldata_set(), work / "photos", originals=args.originals, seed=args.seed)
    t0 = time.perf_counter()
    report, _ = find_duplicates([work / "photos"], args.model, work / "index", DuplicateOptions(tiers=("exact", "near")),
                                EmbedConfig(progress=False))
    seconds = time.perf_counter() - t0
    original = {s[0]: s for s in sets}
    set_of = {p: s[0] for s in sets for p in s}
    right, whole, reasons, lost_on = 0, 0, {}, {}
    kept = {str(g.keep) for g in report.groups}
    moved = {str(o) for g in report.groups for o in g.others}
    for g in report.groups:
        home = set_of.get(str(g.keep))
        members = {str(g.keep), *map(str, g.others)}
        right += home is not None and Path(g.keep).read_bytes() == Path(home).read_bytes()
        whole += home is not None and members == set(original[home])
        reasons[g.reason.split(" (")[0]] = reasons.get(g.reason.split(" (")[0], 0) + 1
        for m in g.members[1:]:
            kind = m.path.stem
            lost_on.setdefault(kind, {}).setdefault(m.lost_on, 0)
            lost_on[kind][m.lost_on] += 1
    return {"sets": len(sets), "groups": len(report.groups), "seconds": round(seconds, 1),
            "keeper_has_original_bytes": round(right / len(sets), 4),
            "groups_exactly_one_set": round(whole / len(sets), 4),
            "kept_and_moved": len(kept & moved), "reasons": reasons, "lost_on_by_copy": lost_on}


def scale(n: int, dim: int, seed: int = 0) -> dict:
    """neighbour_pairs on n synthetic unit vectors (clusters of near copies among noise): time and memory."""
    from landmark_search.curation.duplicates import CANDIDATE_MIN, NEIGHBOURS, neighbour_pairs

    rng = np.random.default_rng(seed)
    # float32 throughout, so that the peak RSS is the search's, not float64 temporaries of the generator
    centres = rng.standard_normal((n // 20, dim), dtype=np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
    x[: n // 10] = x[n // 10: n // 5] + 0.05 * rng.standard_normal((n // 10, dim), dtype=np.float32)  # copies
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu0, t0 = time.process_time(), time.perf_counter()
    pairs = neighbour_pairs(x, NEIGHBOURS, CANDIDATE_MIN)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    found = sum(1 for i in range(n // 10) if (i, i + n // 10) in pairs)
    return {"n": n, "dim": dim, "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
            "candidate_pairs": len(pairs), "planted_copies_found": round(found / (n // 10), 4),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rss_before_mib": round(rss0 / 1024), "vectors_mib": round(x.nbytes / 2**20)}


def _phash_bits(path: str) -> bytes:
    import imagehash
    from PIL import Image

    with Image.open(path) as img:
        return np.packbits(imagehash.phash(img).hash.ravel()).tobytes()


def large(args) -> dict:
    """`landmark duplicates` on args.photos photo files (dupset.make_large_set: mosaics of the evaldata photos,
    10 % planted near copies): the first run (embedding, neighbour search, pixel checks), the rerun on the built
    index, and a perceptual-hash pass from scratch over the same files (imagehash.phash in 2 processes, as
    imagededup encodes; the hashing alone, without the folder walk and the pair search: a lower bound on its
    time, while our rerun's time includes its walk), side by side."""
    from multiprocessing import Pool

    from landmark_search.config import EmbedConfig
    from landmark_search.curation.duplicates import DuplicateOptions, find_duplicates

    work = Path(args.work) / f"large{args.photos}"
    srcs = sorted(p for name in ("wonders7_hoodiinii", "india12_Abinaya27m", "distractors_imagenet")
                  for p in evaldata_set(name).rglob("*.jpg"))
    t0 = time.perf_counter()
    truth = make_large_set(srcs, work / "set", args.photos, seed=args.seed)
    result: dict = {"photos": args.photos, "seconds_to_make_the_set": round(time.perf_counter() - t0, 1)}
    photos = work / "set" / "photos"
    shutil.rmtree(work / "index", ignore_errors=True)  # a first run is one from nothing: no index, no memory
    reports = []
    for run in ("first_run", "rerun_indexed"):
        t0 = time.perf_counter()
        report, _ = find_duplicates([photos], args.model, work / "index", DuplicateOptions(),
                                    EmbedConfig(progress=False))
        result[f"seconds_{run}"] = round(time.perf_counter() - t0, 1)
        result[f"pixel_checks_{run}"] = report.checked
        reports.append(report)
        print(json.dumps(result), file=sys.stderr, flush=True)
    result["candidates"] = reports[0].candidates
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["rerun_same_groups"] = ([(g.keep, g.others) for g in reports[1].groups]
                                   == [(g.keep, g.others) for g in reports[0].groups])
    near = _pairs(_clusters(reports[0], ("exact", "near")))
    planted = {frozenset(pair) for pair in truth["copies"]}
    result["planted_copies_found"] = round(len(planted & near) / max(1, len(planted)), 4)
    result["other_near_pairs"] = len(near - planted)  # no mosaic has two copies: each of these is a false pair
    paths = sorted(str(p) for p in photos.rglob("*.jpg"))
    t0 = time.perf_counter()
    with Pool(2) as pool:
        hashes = pool.map(_phash_bits, paths, chunksize=256)
    result["seconds_phash_from_scratch"] = round(time.perf_counter() - t0, 1)
    assert len(hashes) == len(paths)
    result["rerun_vs_phash_from_scratch"] = round(result["seconds_rerun_indexed"]
                                                  / max(result["seconds_phash_from_scratch"], 1e-9), 2)
    return result


def pixel_check_ms(pairs: int = 300, seed: int = 0) -> float:
    """CPU milliseconds of one candidate's pixel check (imagematch.match on two real photos' thumbnails)."""
    from landmark_search.curation import imagematch

    photos = sorted(evaldata_set().glob("train/*/*.jpg"))
    rng = np.random.default_rng(seed)
    thumbs = [imagematch.thumbnail(p) for p in rng.choice(photos, 2 * pairs)]
    cpu0 = time.process_time()
    for a, b in zip(thumbs[::2], thumbs[1::2]):
        imagematch.match(a, b)
    return (time.process_time() - cpu0) / pairs * 1000


def scaling(sizes: list[int], dim: int, seed: int) -> dict:
    """scale() at each size in its own process (so each peak RSS is its own), side by side."""
    runs = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--scale", str(n), "--dim", str(dim), "--seed", str(seed),
                              "--no-save"], check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out))
        print(json.dumps(runs[-1]), file=sys.stderr)
    ms = pixel_check_ms()
    for r in runs:  # what the candidates cost in pixel checks, from the measured per-pair CPU time
        r["pixel_check_cpu_minutes_estimated"] = round(r["candidate_pairs"] * ms / 60000, 1)
    return {"runs": runs, "pixel_check_cpu_ms_per_pair": round(ms, 2),
            "search_cpu_seconds_per_1k_photos": [round(r["cpu_seconds"] / r["n"] * 1000, 2) for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 originals, no distractors")
    parser.add_argument("--originals", type=int, default=120)
    parser.add_argument("--bursts", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="default: the built-in efficientnet_lite0")
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / "_work" / "duplicates"))
    parser.add_argument("--keeper", action="store_true", help="only the keep rule on derivative sets")
    parser.add_argument("--scale", type=int, nargs="+", default=[],
                        help="only the neighbour search on N synthetic vectors (several N: side by side)")
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--photos", type=int, default=0,
                        help="only the timing on this many generated photo files (first run, rerun, phash)")
    parser.add_argument("--grouping", action="store_true", help="only the grouping ARI on wonders7, india12 and "
                        "india12 + everyday photos (bench_grouping.py)")
    parser.add_argument("--no-save", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.grouping:
        from bench_grouping import SETS, measure_sets

        result = measure_sets(list(SETS), args.model, str(ROOT / "benchmarks" / "_work" / "grouping-index"))
        print(json.dumps(result, indent=2))
        if not args.no_save:
            update_results("grouping", result)
        return
    if args.quick:
        args.originals, args.bursts = 20, 5
    if args.keeper:
        if args.originals == 120:
            args.originals = 40
        result = keeper(args)
        key = "duplicates_keeper"
    elif args.photos:
        result = large(args)
        key = f"duplicates_photos_{args.photos}"
    elif len(args.scale) == 1:
        result = scale(args.scale[0], args.dim, args.seed)
        key = "duplicates_scale"
    elif args.scale:
        result = scaling(args.scale, args.dim, args.seed)
        key = "duplicates_scaling"
    else:
        result = quality(args)
        key = "duplicates" + ("_quick" if args.quick else "")
    print(json.dumps(result, indent=2))
    if not (args.quick or args.no_save):
        update_results(key, result)


if __name__ == "__main__":
    main()
