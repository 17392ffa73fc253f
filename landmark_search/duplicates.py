"""`landmark duplicates`: exact copies, near duplicates and same-scene shots, and which one to keep.

1. The index is brought up to date (only new or changed photos are embedded), and gives each photo's
   vector and content hash (blake2b of the bytes).
2. **exact**: same size and content hash.
3. Candidates: each photo's NEIGHBOURS nearest photos by embedding (faiss: exact below
   EXACT_SEARCH_MAX photos, IVF above), kept when cosine >= CANDIDATE_MIN. Never all pairs: the work
   is ~n x NEIGHBOURS, so 100k photos finish (benchmarks/bench_duplicates.py --scale).
4. **near**: a candidate pair whose pixels align (imagematch: gradient NCC >= NEAR_MIN). Embeddings
   alone cannot tell a re-encoded copy from another photo of the same landmark (cosine 0.58-1.0 for
   copies vs up to 0.93 for different photos, measured), pixels can.
5. **same_scene**: a candidate pair that is not near, shot within SCENE_SECONDS by the same camera
   (EXIF), with cosine >= SCENE_MIN_COS: a burst. Without capture times no pair is called same scene:
   two tourists' photos from the same spot look like a burst and are not one.

Groups are connected components (exact copies first; near groups join the exact groups' keepers;
same-scene groups join the near groups' keepers), so each photo is an "other" at most once. The
photo to keep: most pixels, then sharpest (variance of the Laplacian), then oldest (EXIF capture
time, else file time), then the shortest path.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from .config import DEFAULT_MAX_PIXELS, EmbedConfig
from .errors import BadImageError, LandmarkError

TIERS = ("exact", "near", "same_scene")
NEIGHBOURS = 10
# Copies resized to 50 % (<= 160 px here) fall to cosine 0.58 in the built-in model's features;
# 0.5 keeps every copy of the benchmark a candidate (3342 of 3360 pairs within 10 neighbours).
CANDIDATE_MIN = 0.5
NEAR_MIN = 0.8  # gradient NCC: precision 0.98, recall 0.98 on the benchmark (imagematch.py)
SCENE_SECONDS = 30.0
SCENE_MIN_COS = 0.8  # simulated bursts: cosine median 0.88, 5th percentile 0.84
EXACT_SEARCH_MAX = 20_000  # exact k-NN of 20k photos x 1280-d takes ~10 s on 2 cores; IVF above

Embeddings = npt.NDArray[np.float32]


@dataclass(frozen=True)
class DuplicateOptions:
    """What `landmark duplicates` looks for."""

    tiers: tuple[str, ...] = TIERS
    neighbours: int = NEIGHBOURS
    near_min: float = NEAR_MIN
    scene_seconds: float = SCENE_SECONDS
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class DuplicateGroup:
    """Photos that are copies of one another (tier), the one to keep and why, and the rest."""

    tier: str
    score: float  # exact: 1; near: the weakest pixel match that joined the group; same_scene: weakest cosine
    keep: Path
    others: tuple[Path, ...]
    reason: str


@dataclass
class DuplicateReport:
    """Groups found among `photos` photos, from `candidates` neighbour pairs checked."""

    groups: list[DuplicateGroup]
    photos: int
    candidates: int
    failed: list[tuple[Path, str]] = field(default_factory=list)


@dataclass
class PhotoFacts:
    """What the keep rule and the same-scene test read from a photo's header."""

    width: int = 0
    height: int = 0
    taken: _dt.datetime | None = None
    camera: str = ""
    mtime: float = 0.0
    sharpness: float | None = None

    @property
    def pixels(self) -> int:
        return self.width * self.height


def photo_facts(path: Path) -> PhotoFacts:
    """Size, EXIF capture time and camera (DateTimeOriginal, else DateTime; Make + Model) without decoding pixels."""
    from .data.exif import read_exif

    facts = PhotoFacts()
    try:
        facts.mtime = path.stat().st_mtime
    except OSError:  # gone since it was listed: it still takes part, with what is known
        return facts
    exif = read_exif(path)
    facts.width, facts.height, facts.taken, facts.camera = exif.width, exif.height, exif.taken, exif.camera
    return facts


class _Components:
    """Union-find over photo indices."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, i: int) -> int:
        root = i
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(i, i) != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self, members: Iterable[int]) -> list[list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for i in members:
            out[self.find(i)].append(i)
        return [sorted(g) for g in out.values() if len(g) > 1]


def neighbour_pairs(vectors: Embeddings, k: int, min_score: float, *, exact: bool = False
                    ) -> dict[tuple[int, int], float]:
    """(i, j) with i < j -> cosine, for each row's k nearest rows scoring at least min_score.

    Exact inner-product search up to EXACT_SEARCH_MAX rows (any number with `exact`); above, an IVF
    index (vector_cache's nlist/nprobe rules), so the cost grows ~linearly with the number of photos.
    """
    import faiss

    from .vector_cache import build_vector_index, configure_threads

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise TypeError(f"vectors must be a 2-D (n, dim) array, got shape {vectors.shape}")
    n = len(vectors)
    if n < 2:
        return {}
    configure_threads()
    k = min(k + 1, n)  # each row finds itself first
    if exact or n <= EXACT_SEARCH_MAX:
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        scores, ids = index.search(vectors, k)
    else:
        scores, ids = build_vector_index("ivf", vectors.shape[1], np.arange(n, dtype=np.int64), vectors).search(vectors, k)
    pairs: dict[tuple[int, int], float] = {}
    rows, cols = np.nonzero((ids >= 0) & (scores >= min_score))
    for i, c in zip(rows.tolist(), cols.tolist()):
        j = int(ids[i, c])
        if j != i:
            key = (i, j) if i < j else (j, i)
            pairs[key] = max(pairs.get(key, -1.0), float(scores[i, c]))
    return pairs


MAX_LINK_PAIRS = 256  # pairs compared before two groups merge; more are sampled (seeded)


def _link(matches: dict[tuple[int, int], float], threshold: float, score: Callable[[int, int], float]
          ) -> tuple[_Components, dict[int, float]]:
    """Near groups: pixel-verified pairs joined strongest first; two groups of 2+ photos merge only when
    their photos match on average (average linkage over all cross pairs, computed as needed).

    Plain connected components chained families: one statue against a clear sky matched another
    photo of the same statue once borders were trimmed, and merged two groups of 8 (64 false pairs).
    """
    comps = _Components()
    members: dict[int, list[int]] = {}
    weakest: dict[int, float] = {}
    rng = np.random.default_rng(0)
    for (a, b), s in sorted(((p, s) for p, s in matches.items() if s >= threshold), key=lambda e: -e[1]):
        ra, rb = comps.find(a), comps.find(b)
        if ra == rb:
            continue
        ga, gb = members.get(ra, [ra]), members.get(rb, [rb])
        link = s
        if len(ga) + len(gb) > 2:  # a photo joining a group must match the group, not one member
            cross = [(x, y) if x < y else (y, x) for x in ga for y in gb]
            if len(cross) > MAX_LINK_PAIRS:
                cross = [cross[i] for i in rng.choice(len(cross), MAX_LINK_PAIRS, replace=False)]
            values = []
            for p in cross:
                if p not in matches:
                    matches[p] = score(*p)
                values.append(matches[p])
            link = float(np.mean(values))
            if link < threshold:
                continue
        comps.union(ra, rb)
        root = comps.find(ra)
        members[root] = ga + gb
        weakest[root] = min(weakest.pop(ra, 1.0), weakest.pop(rb, 1.0), link)
    return comps, weakest


def _keep_order(members: Sequence[int], paths: Sequence[Path], facts: dict[int, PhotoFacts],
                sharp: Callable[[int], float] | None) -> tuple[list[int], str]:
    """Members best first by the keep rule, and why the first one won (sharp=None: same pixels)."""
    def when(i: int) -> tuple[float, float]:
        f = facts[i]
        return (f.taken.timestamp() if f.taken else f.mtime, f.mtime)

    most = max(facts[i].pixels for i in members)
    largest = [i for i in members if facts[i].pixels == most]
    sharpest = largest
    if len(largest) == 1:
        f = facts[largest[0]]
        reason = f"largest ({f.width}x{f.height})"
    else:
        if sharp is not None:
            scores = {i: sharp(i) for i in largest}
            best = max(scores.values())
            sharpest = [i for i in largest if scores[i] >= best * 0.98]  # 2 %: re-encoding noise is not sharpness
        if len(sharpest) == 1:
            reason = f"sharpest of the largest (Laplacian variance {best:.0f})"
        else:
            first = min(sharpest, key=lambda i: (when(i), len(str(paths[i])), str(paths[i])))
            f = facts[first]
            reason = f"oldest ({'taken ' + f.taken.isoformat(sep=' ') if f.taken else 'file time'})" + (
                " of the largest" if len(largest) < len(members) else "")
    top = sorted(largest, key=lambda i: (i not in sharpest, when(i), len(str(paths[i])), str(paths[i])))
    rest = sorted((i for i in members if i not in largest), key=lambda i: (-facts[i].pixels, when(i), str(paths[i])))
    return top + rest, reason


def find_groups(paths: Sequence[Path], content: Sequence[tuple[int, str]], vectors: Embeddings,
                opts: DuplicateOptions = DuplicateOptions(), *, threads: int = 2) -> DuplicateReport:
    """Duplicate groups among photos given with their (size, content hash) and embedding (numpy in, groups out)."""
    from . import imagematch

    paths = [Path(p) for p in paths]
    unknown = [t for t in opts.tiers if t not in TIERS]
    if unknown:
        raise LandmarkError(f"unknown duplicate tier {unknown[0]!r}; use {', '.join(TIERS)}")
    if len(content) != len(paths) or len(vectors) != len(paths):
        raise ValueError(f"got {len(paths)} paths, {len(content)} hashes and {len(vectors)} vectors")
    report = DuplicateReport([], len(paths), 0)
    facts: dict[int, PhotoFacts] = {}

    def facts_of(ids: Iterable[int]) -> None:
        todo = [i for i in ids if i not in facts]
        with ThreadPoolExecutor(max(1, threads)) as pool:
            facts.update(zip(todo, pool.map(lambda i: photo_facts(paths[i]), todo)))

    sharp_cache: dict[int, float] = {}

    def sharp(i: int) -> float:
        if i not in sharp_cache:
            try:
                sharp_cache[i] = imagematch.sharpness(paths[i], opts.max_pixels)
            except BadImageError:
                sharp_cache[i] = 0.0
        return sharp_cache[i]

    def emit(tier: str, members: list[int], score: float) -> int:
        facts_of(members)
        order, reason = _keep_order(members, paths, facts, None if tier == "exact" else sharp)
        if tier in opts.tiers:
            report.groups.append(DuplicateGroup(tier, round(score, 4), paths[order[0]],
                                                tuple(paths[i] for i in order[1:]), reason))
        return order[0]

    # 1. exact copies: one representative (the keeper) per distinct content
    by_content: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, key in enumerate(content):
        by_content[key].append(i)
    rep_of = list(range(len(paths)))
    for members in by_content.values():
        if len(members) > 1:
            keeper = emit("exact", members, 1.0)
            for i in members:
                rep_of[i] = keeper
    reps = sorted(set(rep_of))
    if "near" not in opts.tiers and "same_scene" not in opts.tiers:
        return report

    # 2. neighbours among distinct contents
    pairs = {(reps[a], reps[b]): s for (a, b), s in
             neighbour_pairs(vectors[reps], opts.neighbours, CANDIDATE_MIN).items()}
    report.candidates = len(pairs)

    # 3. near: pixels confirm
    needed = sorted({i for pair in pairs for i in pair})
    thumbs: dict[int, np.ndarray] = {}

    def load(i: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return i, imagematch.thumbnail(paths[i], opts.max_pixels), None
        except BadImageError as exc:
            return i, None, str(exc)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        for i, thumb, why in pool.map(load, needed):
            if thumb is None:
                report.failed.append((paths[i], why or "unreadable"))
            else:
                thumbs[i] = thumb
        checkable = [p for p in pairs if p[0] in thumbs and p[1] in thumbs]
        matches = dict(zip(checkable, pool.map(lambda p: imagematch.match(thumbs[p[0]], thumbs[p[1]]), checkable)))
    near, weakest = _link(matches, opts.near_min, lambda a, b: imagematch.match(thumbs[a], thumbs[b]))
    rep2 = {i: i for i in reps}
    for members in near.groups(reps):
        keeper = emit("near", members, weakest[near.find(members[0])])
        for i in members:
            rep2[i] = keeper

    # 4. same scene: capture times close, same camera, embeddings close
    if "same_scene" in opts.tiers:
        close = {p: s for p, s in pairs.items() if s >= SCENE_MIN_COS and near.find(p[0]) != near.find(p[1])}
        facts_of({i for p in close for i in p})
        scene = _Components()
        scene_weakest: dict[tuple[int, int], float] = {}
        for (a, b), s in close.items():
            fa, fb = facts[a], facts[b]
            if fa.taken is None or fb.taken is None:
                continue
            if abs((fa.taken - fb.taken).total_seconds()) > opts.scene_seconds:
                continue
            if fa.camera and fb.camera and fa.camera != fb.camera:
                continue
            ra, rb = rep2[a], rep2[b]
            if ra != rb:
                scene.union(ra, rb)
                scene_weakest[(ra, rb)] = s
        weakest_scene: dict[int, float] = {}
        for (a, _), s in scene_weakest.items():
            root = scene.find(a)
            weakest_scene[root] = min(weakest_scene.get(root, 1.0), s)
        for members in scene.groups(set(rep2.values())):
            emit("same_scene", members, weakest_scene[scene.find(members[0])])
    report.groups.sort(key=lambda g: (TIERS.index(g.tier), str(g.keep)))
    return report


def find_duplicates(photos: Sequence[Path], model_spec: str | None, index: str | Path, opts: DuplicateOptions,
                    cfg: EmbedConfig, *, index_opts=None, trust_export: bool = False,
                    threads: int = -1) -> tuple[DuplicateReport, object]:
    """Index `photos` (incrementally) and find their duplicate groups; returns (report, IndexedPhotos)."""
    from .indexing import IndexOptions, indexed_photos
    from .models.runtime import default_workers

    found = indexed_photos(photos, model_spec, index, index_opts or IndexOptions(), cfg, trust_export=trust_export)
    report = find_groups(found.paths, [(r.size, r.content_hash) for r in found.records], found.vectors, opts,
                         threads=default_workers() if threads < 0 else threads)
    report.failed = list(found.summary.failed) + report.failed
    return report, found


def skip_patterns(folder: Path, roots: Sequence[Path]) -> tuple[str, ...]:
    """Exclude globs that keep `folder` (an --action target) out of the walk of `roots`, so that moved
    photos are never found again as copies of the ones kept."""
    import glob

    target = Path(os.path.realpath(folder))
    out = []
    for root in roots:
        try:
            rel = target.relative_to(os.path.realpath(root))
        except ValueError:
            continue
        if rel.parts:
            out.append(glob.escape(rel.as_posix()))
    return tuple(out)


ACTIONS = ("list", "link", "move")


def apply_action(report: DuplicateReport, action: str, folder: Path, roots: Sequence[Path],
                 index: str | Path | None = None):
    """link: FOLDER/NNNN-<tier>/ holding keep--<name> and the others' links, for review. move: every
    group's others into FOLDER at their path relative to their argument folder, sidecars along; the
    moved photos leave the index. Nothing is deleted; a target that exists is never replaced."""
    from .relocate import link_photos, move_photos, relative_to_roots

    if action not in ACTIONS[1:]:
        raise LandmarkError(f"--action {action!r}: use {', '.join(ACTIONS)}")
    roots = [Path(r) for r in roots if Path(r).is_dir()]
    if action == "move":
        moves = [(o, folder / relative_to_roots(o, roots)) for g in report.groups for o in g.others]
        from .indexing import forget_photos, photo_key

        keys = {src: photo_key(Path(src)) for src, _ in moves}  # as the index stores them (a link as the link)
        summary = move_photos(moves)
        if index is not None:

            forget_photos(index, [keys[src] for src, _ in summary.done])
        return summary
    links = []
    width = max(4, len(str(len(report.groups))))
    for n, g in enumerate(report.groups, 1):
        box = folder / f"{n:0{width}d}-{g.tier}"
        names: set[str] = set()
        for i, path in enumerate((g.keep, *g.others)):
            name, k = ("keep--" if i == 0 else "") + path.name, 1
            while name in names:
                k += 1
                name = f"{Path(name).stem}-{k}{path.suffix}"
            names.add(name)
            links.append((path, box / name))
    return link_photos(links)


def sheet_items(report: DuplicateReport) -> list[tuple[Path, list[tuple[str, float]]]]:
    """Contact-sheet tiles, group after group: the keeper first ("#3 near: keep"), then the others."""
    items = []
    for n, g in enumerate(report.groups, 1):
        items.append((g.keep, [(f"#{n} {g.tier}: keep ({g.reason})", g.score)]))
        items += [(o, [(f"#{n} {g.tier}", g.score)]) for o in g.others]
    return items


def report_json(report: DuplicateReport) -> dict:
    """The --json form: {"groups": [{"tier", "score", "keep", "others", "reason"}], ...counts}."""
    return {"groups": [{"tier": g.tier, "score": g.score, "keep": str(g.keep), "others": [str(o) for o in g.others],
                        "reason": g.reason} for g in report.groups],
            "photos": report.photos, "candidate_pairs": report.candidates,
            "failures": [{"path": str(p), "reason": str(r)} for p, r in report.failed]}
