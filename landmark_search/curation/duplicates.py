"""`landmark duplicates`: exact copies, near duplicates and same-scene shots, and which one to keep.

1. The index is brought up to date (only new or changed photos are embedded), and gives each photo's
   vector and content hash (blake2b of the bytes).
2. **exact**: same size and content hash.
3. Candidates: each photo's NEIGHBOURS nearest photos by embedding (faiss: exact below
   EXACT_SEARCH_MAX photos, IVF above), kept when cosine >= CANDIDATE_MIN. Never all pairs: the work
   is ~n x NEIGHBOURS, so 100k photos finish (benchmarks/bench_duplicates.py --scale).
4. **near**: a candidate pair whose pixels align (imagematch: gradient NCC >= NEAR_MIN). Embeddings
   alone cannot tell a re-encoded copy from another photo of the same landmark (cosine 0.58-1.0 for
   copies vs up to 0.93 for different photos, measured), pixels can. Each pair's score is remembered
   per content hash (pairmemory.py, in the index folder), so a later run checks only new candidates.
5. **same_scene**: a candidate pair that is not near, shot within SCENE_SECONDS by the same camera
   (EXIF), with cosine >= SCENE_MIN_COS: a burst. Without capture times no pair is called same scene:
   two tourists' photos from the same spot look like a burst and are not one.

Copies (exact and near) form ONE group with ONE keeper: its exact copies and every picture that matches
it on pixels. Groups are stars, never chains: photos are taken best first by the keep rule, each one
not yet placed becomes a keeper, and only photos that match that keeper itself join it, so one wrong
pixel match costs one pair, not the transitive closure of a family. Same-scene groups are stars too,
over photos no copy group moves; a copy group's keeper is never moved as a burst's other.

The keep rule (keep_key), best first: the most pixels of picture (a copy framed by flat bands on two
opposite sides, a screenshot or a letterbox, counts only the picture inside them, less the uncertainty
of measuring it on a thumbnail; a flat band on one side, a clear sky, is picture); the highest
JPEG quality (from the quantisation tables); camera facts in the header (camera or capture time)
over a stripped copy; the larger file; the older capture time (else file time); the shorter path.
Sharpness is not a criterion: JPEG blocking raises the variance of the Laplacian, so a q50 re-save
measured "sharper" than its original, and among copies of equal pixels and quality the larger file
is the one holding more detail.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from ..config import DEFAULT_MAX_PIXELS, EmbedConfig
from ..errors import BadImageError, LandmarkError

TIERS = ("exact", "near", "same_scene")
NEIGHBOURS = 10
# Copies resized to 50 % (<= 160 px here) fall to cosine 0.58 in the built-in model's features;
# 0.5 keeps every copy of the benchmark a candidate (3342 of 3360 pairs within 10 neighbours).
CANDIDATE_MIN = 0.5
# A copy joins a keeper it matches within this of its best match. bench_duplicates.py, near pairs: 0.05 ->
# precision 0.989 / recall 0.888, 0.1 -> 0.988 / 0.952, 0.15 -> 0.987 / 0.958, none -> 0.966 / 0.970.
JOIN_MARGIN = 0.15
NEAR_MIN = 0.8  # gradient NCC: precision 0.98, recall 0.98 on the benchmark (imagematch.py)
SCENE_SECONDS = 30.0
SCENE_MIN_COS = 0.8  # simulated bursts: cosine median 0.88, 5th percentile 0.84
EXACT_SEARCH_MAX = 20_000  # exact k-NN of 20k photos x 1280-d takes ~10 s on 2 cores; IVF above
# Pixel checks are remembered this many at a time (~20 s of checking on 2 cores): a run stopped during minutes
# of checks at 100k photos keeps what it checked.
REMEMBER_EVERY = 20_000

Embeddings = npt.NDArray[np.float32]


@dataclass(frozen=True)
class DuplicateOptions:
    """What `landmark duplicates` looks for."""

    tiers: tuple[str, ...] = TIERS
    neighbours: int = NEIGHBOURS
    near_min: float = NEAR_MIN
    scene_seconds: float = SCENE_SECONDS
    max_pixels: int = DEFAULT_MAX_PIXELS


PIXEL_STEP = 0.05  # picture pixels closer than this rank by framing, then by pixels
BORDER_MARGIN = 0.08  # a 64 px thumbnail measures a border to +-1 px a side: up to ~6 % of the area
# A frame (flat bands on two opposite sides: imagematch.framed_thumbnail) smaller than this share of the
# thumbnail is no frame the keep rule discounts: a band of a row or two is within the measure's error.
_BORDERED = 0.9


@dataclass
class PhotoFacts:
    """What the keep rule and the same-scene test read from a photo: its header, its size on disk, and the
    share of its area that is picture (1.0 until its thumbnail is measured)."""

    width: int = 0
    height: int = 0
    taken: _dt.datetime | None = None
    camera: str = ""
    mtime: float = 0.0
    file_size: int = 0
    quality: int | None = None  # JPEG quality from the quantisation tables; None: not a JPEG
    kept: float = 1.0

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def picture_pixels(self) -> int:
        """Pixels of picture: a bordered copy counts what lies inside its borders, less what the measure may add."""
        if self.kept >= _BORDERED:
            return self.pixels
        return int(self.pixels * self.kept * (1 - BORDER_MARGIN))

    @property
    def has_camera_facts(self) -> bool:
        return bool(self.camera or self.taken)


def photo_facts(path: Path) -> PhotoFacts:
    """Size, JPEG quality, EXIF capture time and camera (DateTimeOriginal, else DateTime; Make + Model) and the
    file's size and time, without decoding pixels."""
    from ..photos.exif import read_exif

    facts = PhotoFacts()
    try:
        st = path.stat()
    except OSError:  # gone since it was listed: it still takes part, with what is known
        return facts
    facts.mtime, facts.file_size = st.st_mtime, st.st_size
    exif = read_exif(path)
    facts.width, facts.height, facts.taken, facts.camera = exif.width, exif.height, exif.taken, exif.camera
    facts.quality = exif.quality
    return facts


# The keep rule's criteria in order: (name, what the keeper won on, key of one photo, smaller is better).
def _when(f: PhotoFacts) -> tuple[float, float]:
    return (f.taken.timestamp() if f.taken else f.mtime, f.mtime)


def _pixels_rank(f: PhotoFacts) -> tuple[int, bool, int]:
    """Picture pixels in 5 % steps (a frame measured on a thumbnail is known to a few per cent), then an
    unframed photo before a framed one, then the pixels themselves."""
    return (-int(math.log(max(1, f.picture_pixels)) / math.log(1 + PIXEL_STEP)), f.kept < _BORDERED, -f.pixels)


KEEP_RULE: tuple[tuple[str, Callable[[PhotoFacts, Path], object]], ...] = (
    ("pixels", lambda f, p: _pixels_rank(f)),
    ("quality", lambda f, p: -(f.quality if f.quality is not None else 100)),  # not a JPEG: nothing lost to JPEG
    ("camera facts", lambda f, p: not f.has_camera_facts),
    ("file size", lambda f, p: -f.file_size),
    ("age", lambda f, p: _when(f)),  # the older capture time, else the older file time
    ("path", lambda f, p: (len(str(p)), str(p))),
)


def keep_key(facts: PhotoFacts, path: Path) -> tuple:
    """Sort key of the keep rule: the photo to keep sorts first."""
    return tuple(rule(facts, path) for _, rule in KEEP_RULE)


def _lost_on(keeper: tuple[PhotoFacts, Path], other: tuple[PhotoFacts, Path]) -> str:
    """The first criterion of the keep rule on which `other` ranks below `keeper`."""
    for name, rule in KEEP_RULE:
        if rule(*keeper) != rule(*other):
            return name
    return "path"


def _why(keeper: PhotoFacts, runner_up: PhotoFacts | None, criterion: str) -> str:
    """Why the keeper won, in words, from the criterion that set it above the best of the others."""
    def size(f: PhotoFacts) -> str:
        return f"{f.width}x{f.height}"

    if runner_up is None:
        return "the only photo"
    if criterion == "pixels":
        border = " (a copy with borders counts only the picture inside them)" if runner_up.kept < _BORDERED else ""
        return f"most pixels ({size(keeper)} vs {size(runner_up)}){border}"
    if criterion == "quality":
        q = "lossless" if keeper.quality is None else f"JPEG quality {keeper.quality}"
        return f"highest quality at {size(keeper)} ({q} vs {runner_up.quality})"
    if criterion == "camera facts":
        return (f"keeps the camera's EXIF ({keeper.camera or 'taken ' + str(keeper.taken)}), which a copy of the "
                "same size and quality lacks")
    if criterion == "file size":
        return f"the largest file at the same size and quality ({keeper.file_size:,} vs {runner_up.file_size:,} bytes)"
    if criterion == "age":
        if keeper.taken and keeper.taken != runner_up.taken:
            return f"the oldest of equal copies: taken {keeper.taken.isoformat(sep=' ')}"
        return "the oldest of equal copies by file time (no capture time tells them apart)"
    return "equal copies: the shortest path"


@dataclass(frozen=True)
class Member:
    """One photo of a group: how it relates to the keeper, and the facts the keep rule read from it."""

    path: Path
    relation: str  # keep | exact (the keeper's bytes) | near (the same picture) | same_scene (a burst)
    score: float  # exact: 1; near: pixel match with the keeper; same_scene: cosine with the keeper
    facts: PhotoFacts
    lost_on: str = ""  # the keep rule's criterion that ranked it below the keeper ("" for the keeper)
    content: str = ""  # content hash: members with the same one are byte-identical

    def to_json(self) -> dict:
        f = self.facts
        return {"path": str(self.path), "relation": self.relation, "score": round(self.score, 4),
                "width": f.width, "height": f.height, "file_size": f.file_size, "jpeg_quality": f.quality,
                "taken": f.taken.isoformat() if f.taken else None, "camera": f.camera or None,
                "picture_share": round(f.kept, 3), "lost_on": self.lost_on or None}


@dataclass(frozen=True)
class DuplicateGroup:
    """Photos that are copies of one another (tier), the one to keep and why, and the rest.

    tier: exact (every member has the keeper's bytes), near (copies of one picture, exact ones among
    them), same_scene (a burst). members: the keeper first, then the others best first."""

    tier: str
    score: float  # exact: 1; near: the weakest pixel match with the keeper; same_scene: the weakest cosine
    keep: Path
    others: tuple[Path, ...]
    reason: str
    members: tuple[Member, ...] = ()


@dataclass
class DuplicateReport:
    """Groups found among `photos` photos, from `candidates` neighbour pairs (`checked` of them on pixels now,
    the rest remembered from earlier runs)."""

    groups: list[DuplicateGroup]
    photos: int
    candidates: int
    failed: list[tuple[Path, str]] = field(default_factory=list)
    checked: int = 0


Progress = Callable[[str, int, int], None]  # (stage, done, total)


def neighbour_pairs(vectors: Embeddings, k: int, min_score: float, *, exact: bool = False
                    ) -> dict[tuple[int, int], float]:
    """(i, j) with i < j -> cosine, for each row's k nearest rows scoring at least min_score.

    Exact inner-product search up to EXACT_SEARCH_MAX rows (any number with `exact`); above, an IVF
    index (vector_cache's nlist/nprobe rules), so the cost grows ~linearly with the number of photos.
    """
    import faiss

    from ..index.vectors import build_vector_index, configure_threads

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



def stars(nodes: Iterable[int], edges: dict[tuple[int, int], float], key: Callable[[int], tuple],
          may_join: Callable[[int], bool] = lambda i: True, margin: float = 1.0
          ) -> list[tuple[int, list[tuple[int, float]]]]:
    """Groups without chaining: nodes best first by `key`; each one not yet placed gathers the unplaced nodes
    it has an edge with (and that may join), and becomes their centre. A node joins only a centre it matches
    within `margin` of its own best match: a photo whose own copies match it far better than a larger
    photo does (another shot of a statue against the same sky) heads its own group. Returns
    [(centre, [(member, score)])]."""
    adjacent: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for (a, b), s in edges.items():
        adjacent[a].append((b, s))
        adjacent[b].append((a, s))
    best = {n: max(s for _, s in links) for n, links in adjacent.items()}
    placed: set[int] = set()
    out = []
    for centre in sorted(set(nodes) & set(adjacent), key=key):
        if centre in placed:
            continue
        members = [(m, s) for m, s in sorted(adjacent[centre], key=lambda e: key(e[0]))
                   if m not in placed and may_join(m) and s >= best[m] - margin]
        if members:
            placed.add(centre)
            placed.update(m for m, _ in members)
            out.append((centre, members))
    return out


def find_groups(paths: Sequence[Path], content: Sequence[tuple[int, str]], vectors: Embeddings,
                opts: DuplicateOptions = DuplicateOptions(), *, threads: int = 2, memory=None,
                progress: Progress | None = None) -> DuplicateReport:
    """Duplicate groups among photos given with their (size, content hash) and embedding (numpy in, groups out).

    memory: a pairmemory.PairMemory whose remembered pixel checks are used and which learns the new ones."""
    paths = [Path(p) for p in paths]
    unknown = [t for t in opts.tiers if t not in TIERS]
    if unknown:
        raise LandmarkError(f"unknown duplicate tier {unknown[0]!r}; use {', '.join(TIERS)}")
    if len(content) != len(paths) or len(vectors) != len(paths):
        raise ValueError(f"got {len(paths)} paths, {len(content)} hashes and {len(vectors)} vectors")
    report = DuplicateReport([], len(paths), 0)
    tell = progress or (lambda stage, done, total: None)
    facts: dict[int, PhotoFacts] = {}
    kept: dict[int, float] = {}  # share of picture inside flat borders, per photo measured

    def facts_of(ids: Iterable[int]) -> None:
        todo = [i for i in ids if i not in facts]
        with ThreadPoolExecutor(max(1, threads)) as pool:
            facts.update(zip(todo, pool.map(lambda i: photo_facts(paths[i]), todo)))
        for i in todo:
            facts[i].kept = kept.get(i, 1.0)

    def key(i: int) -> tuple:
        return keep_key(facts[i], paths[i])

    # 1. exact copies: one representative (the best by the keep rule) per distinct content
    by_content: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, c in enumerate(content):
        by_content[c].append(i)
    copies = [members for members in by_content.values() if len(members) > 1]
    tell("reading headers", 0, len(copies))
    facts_of(i for members in copies for i in members)
    rep_of = list(range(len(paths)))
    for members in copies:
        best = min(members, key=key)
        for i in members:
            rep_of[i] = best
    exact_of: dict[int, list[int]] = defaultdict(list)  # representative -> its content's photos
    for i, r in enumerate(rep_of):
        exact_of[r].append(i)
    reps = sorted(exact_of)
    copy_groups: list[tuple[int, list[tuple[int, float]]]] = []  # (keeper rep, [(member rep, pixel score)])
    pairs: dict[tuple[int, int], float] = {}
    if "near" in opts.tiers or "same_scene" in opts.tiers:
        # 2. neighbours among distinct contents
        pairs = {(reps[a], reps[b]): s for (a, b), s in
                 neighbour_pairs(vectors[reps], opts.neighbours, CANDIDATE_MIN).items()}
        report.candidates = len(pairs)
    if pairs:
        # 3. near: pixels confirm (remembered checks first); needed for same_scene alone too, since copies of
        # one picture share their capture time and would pass for a burst
        scores = _pixel_scores(pairs, paths, content, opts, memory, threads, report, kept, tell)
        verified = {p: s for p, s in scores.items() if s >= opts.near_min}
        for r in {i for p in verified for i in p}:  # exact copies share their representative's measure
            for i in exact_of[r]:
                kept[i] = kept.get(r, 1.0)
                if i in facts:
                    facts[i].kept = kept[i]
        facts_of({i for p in verified for i in p})
        copy_groups = stars(reps, verified, key, margin=JOIN_MARGIN)
    moved_reps = {m for _, members in copy_groups for m, _ in members}
    in_copy = {c for c, _ in copy_groups} | moved_reps
    for r in reps:  # exact-only groups: a content with copies that no near group took in
        if len(exact_of[r]) > 1 and r not in in_copy:
            copy_groups.append((r, []))
    for centre, members in copy_groups:
        group = _copy_group(centre, members, exact_of, paths, facts, content)
        if group.tier in opts.tiers or (group.tier == "exact" and "near" in opts.tiers and members):
            report.groups.append(group)

    # 4. same scene: capture times close, same camera, embeddings close; over photos no copy group moves
    if "same_scene" in opts.tiers:
        keepers = {c for c, _ in copy_groups}
        close = {p: s for p, s in pairs.items() if s >= SCENE_MIN_COS and not (set(p) & moved_reps)}
        facts_of({i for p in close for i in p})
        burst = {}
        for (a, b), s in close.items():
            fa, fb = facts[a], facts[b]
            if fa.taken is None or fb.taken is None:
                continue
            if abs((fa.taken - fb.taken).total_seconds()) > opts.scene_seconds:
                continue
            if fa.camera and fb.camera and fa.camera != fb.camera:
                continue
            burst[(a, b)] = s
        # a copy group's keeper goes first and never joins another burst as an other
        for centre, members in stars(reps, burst, lambda i: (i not in keepers, key(i)), lambda i: i not in keepers):
            keeper = (facts[centre], paths[centre])
            ordered = [Member(paths[centre], "keep", 1.0, facts[centre], content=content[centre][1])] + [
                Member(paths[m], "same_scene", s, facts[m], _lost_on(keeper, (facts[m], paths[m])), content[m][1])
                for m, s in members]
            report.groups.append(DuplicateGroup(
                "same_scene", round(min(s for _, s in members), 4), paths[centre], tuple(m.path for m in ordered[1:]),
                "the best of the burst by the keep rule: " + _why(facts[centre], facts[members[0][0]],
                                                                  _lost_on(keeper, (facts[members[0][0]],
                                                                                    paths[members[0][0]]))),
                tuple(ordered)))
    report.groups.sort(key=lambda g: (TIERS.index(g.tier), str(g.keep)))
    return report


def _copy_group(centre: int, members: list[tuple[int, float]], exact_of: dict[int, list[int]],
                paths: Sequence[Path], facts: dict[int, PhotoFacts], content: Sequence[tuple[int, str]]
                ) -> DuplicateGroup:
    """One group of copies: the keeper, its exact copies, and every near copy with its own exact copies."""
    keeper = (facts[centre], paths[centre])
    out = [Member(paths[centre], "keep", 1.0, facts[centre], content=content[centre][1])]
    score_of = {centre: 1.0, **{m: s for m, s in members}}
    rest = [i for r in [centre, *(m for m, _ in members)] for i in exact_of[r] if i != centre]
    rest.sort(key=lambda i: keep_key(facts[i], paths[i]))
    for i in rest:
        same = content[i] == content[centre]
        rep = next(r for r in score_of if i in exact_of[r])
        out.append(Member(paths[i], "exact" if same else "near", 1.0 if same else score_of[rep], facts[i],
                          _lost_on(keeper, (facts[i], paths[i])), content[i][1]))
    tier = "exact" if all(m.relation in ("keep", "exact") for m in out) else "near"
    # why it won over the best copy that is not its own bytes (over an exact copy only file time can say)
    runner = next((m for m in out[1:] if m.relation != "exact"), out[1])
    return DuplicateGroup(tier, round(min(m.score for m in out), 4), paths[centre], tuple(m.path for m in out[1:]),
                          _why(facts[centre], runner.facts, runner.lost_on), tuple(out))


def _grey(thumb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    return thumb.astype(np.float32)


def _pixel_scores(pairs: dict[tuple[int, int], float], paths: Sequence[Path], content: Sequence[tuple[int, str]],
                  opts: DuplicateOptions, memory, threads: int, report: DuplicateReport, kept: dict[int, float],
                  tell: Progress) -> dict[tuple[int, int], float]:
    """Pixel match of every candidate pair: remembered ones from `memory`, the others measured (and remembered)."""
    from . import imagematch
    from .pairmemory import pair_key

    hashes = {i: content[i][1] for p in pairs for i in p}
    known = memory.scores((hashes[a], hashes[b]) for a, b in pairs) if memory is not None else {}
    borders = memory.kept(hashes.values()) if memory is not None else {}
    scores: dict[tuple[int, int], float] = {}
    todo = []
    for a, b in pairs:
        ha, hb = hashes[a], hashes[b]
        remembered = known.get(pair_key(ha, hb))
        if remembered is None or ha not in borders or hb not in borders:
            todo.append((a, b))
        else:
            scores[(a, b)] = remembered
    for i, h in hashes.items():
        if h in borders:
            kept[i] = borders[h]
    needed = sorted({i for p in todo for i in p})
    thumbs: dict[int, np.ndarray] = {}
    new_kept: dict[str, float] = {}

    def load(i: int) -> tuple[int, np.ndarray | None, float, str | None]:
        try:
            thumb, share = imagematch.framed_thumbnail(paths[i], opts.max_pixels)
            return i, thumb, share, None
        except BadImageError as exc:
            return i, None, 1.0, str(exc)

    tell("checking pixels", 0, len(todo))
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for i, thumb, share, why in pool.map(load, needed):
            if thumb is None:
                report.failed.append((paths[i], why or "unreadable"))
            else:  # held as bytes (a grey thumbnail's values are whole numbers): 3 KB a photo, not 12
                thumbs[i], kept[i], new_kept[hashes[i]] = thumb.astype(np.uint8), share, share
        checkable = [p for p in todo if p[0] in thumbs and p[1] in thumbs]
        fresh: dict[tuple[str, str], float] = {}
        matched = pool.map(lambda p: imagematch.match(_grey(thumbs[p[0]]), _grey(thumbs[p[1]])), checkable)
        for n, (p, s) in enumerate(zip(checkable, matched), 1):
            scores[p] = s
            fresh[(hashes[p[0]], hashes[p[1]])] = s
            if n % 200 == 0:
                tell("checking pixels", n, len(todo))
            if n % REMEMBER_EVERY == 0 and memory is not None:  # a stopped run keeps what it checked
                memory.remember(fresh, new_kept)
                fresh, new_kept = {}, {}
    tell("checking pixels", len(todo), len(todo))
    report.checked = len(checkable)
    if memory is not None:
        memory.remember(fresh, new_kept)
    return scores


def choose_keepers(report: DuplicateReport, keep: Sequence[Path]) -> DuplicateReport:
    """The report with each of `keep` made its group's keeper (`--keep PATH`, the web page's choice);
    LandmarkError for a path that is in no group."""
    if not keep:
        return report
    wanted = {os.path.realpath(p): Path(p) for p in keep}
    groups = list(report.groups)
    for real, given in wanted.items():
        at = next((n for n, g in enumerate(groups) if any(os.path.realpath(m) == real
                                                          for m in (g.keep, *g.others))), None)
        if at is None:
            raise LandmarkError(f"{given} is in no duplicate group; --keep names a photo that a group lists")
        groups[at] = _rekeep(groups[at], real)
    return replace(report, groups=groups)


def _rekeep(group: DuplicateGroup, real: str) -> DuplicateGroup:
    chosen = next(m for m in group.members if os.path.realpath(m.path) == real)
    if chosen.path == group.keep:
        return replace(group, reason="chosen by you; the keep rule agrees: " + group.reason)
    relation = "same_scene" if group.tier == "same_scene" else "near"
    others = [replace(m, relation="exact" if m.content == chosen.content else relation,
                      score=chosen.score if m.relation == "keep" else m.score, lost_on="your choice")
              for m in group.members if m is not chosen]
    return replace(group, keep=chosen.path, others=tuple(m.path for m in others), reason="chosen by you",
                   members=(replace(chosen, relation="keep", score=1.0, lost_on=""), *others))
def find_duplicates(photos: Sequence[Path], model_spec: str | None, index: str | Path, opts: DuplicateOptions,
                    cfg: EmbedConfig, *, index_opts=None, trust_export: bool = False,
                    threads: int = -1) -> tuple[DuplicateReport, object]:
    """Index `photos` (incrementally) and find their duplicate groups; returns (report, IndexedPhotos).
    Pixel checks are remembered in the index folder, so a second run checks only new candidates."""
    from .imagematch import MATCHER
    from ..search import IndexOptions, indexed_photos
    from .pairmemory import PairMemory
    from ..index.vectors import cpu_count  # not models.runtime: a run with nothing to embed never imports torch

    found = indexed_photos(photos, model_spec, index, index_opts or IndexOptions(), cfg, trust_export=trust_export)
    memory = PairMemory(found.summary.directory, MATCHER)
    try:
        report = find_groups(found.paths, [(r.size, r.content_hash) for r in found.records], found.vectors, opts,
                             threads=min(4, cpu_count()) if threads < 0 else threads, memory=memory)
    finally:
        memory.close()
    report.failed = list(found.summary.failed) + report.failed
    return report, found


ACTIONS = ("list", "link", "move")


def check_target(folder: Path, roots: Sequence[Path]) -> Path:
    """`folder` as a --to target: refused (LandmarkError) when it is a scanned folder, lies inside one or holds
    one, where moved photos would be found again as photos of the library (or land among them)."""
    target = os.path.realpath(folder)
    if os.path.exists(target) and not os.path.isdir(target):
        raise LandmarkError(f"{folder} is a file; --to needs a folder")
    for root in roots:
        scanned = os.path.realpath(root if Path(root).is_dir() else Path(root).parent)
        if target == scanned or target.startswith(scanned + os.sep) or scanned.startswith(target + os.sep):
            where = "is" if target == scanned else "lies inside" if target.startswith(scanned + os.sep) else "holds"
            raise LandmarkError(f"--to {folder} {where} the scanned folder {root}; choose a folder outside the "
                                "photos (e.g. ~/duplicates-review)")
    return Path(folder)


def apply_action(report: DuplicateReport, action: str, folder: Path, roots: Sequence[Path],
                 index: str | Path | None = None, *, scanned: Sequence[Path] | None = None):
    """link: FOLDER/NNNN-<tier>/ holding keep--<name> and the others' links, for review. move: every
    group's others into FOLDER at their path relative to their argument folder, sidecars along, each move
    recorded in FOLDER's journal (`landmark duplicates --undo FOLDER` puts them back); the moved photos
    leave the index. Nothing is deleted; a target that exists is never replaced. `scanned`: the folders
    FOLDER must stay out of (default: `roots`, the folders whose relative paths the moves keep)."""
    from .relocate import link_photos, move_photos, relative_to_roots

    if action not in ACTIONS[1:]:
        raise LandmarkError(f"--action {action!r}: use {', '.join(ACTIONS)}")
    check_target(folder, roots if scanned is None else scanned)
    roots = [Path(r) for r in roots if Path(r).is_dir()]
    kept = {os.path.realpath(g.keep) for g in report.groups}
    if action == "move":
        moves = [(o, folder / relative_to_roots(o, roots)) for g in report.groups for o in g.others
                 if os.path.realpath(o) not in kept]  # a keeper is never moved, whatever another group says
        from ..search import forget_photos, photo_key

        keys = {src: photo_key(Path(src)) for src, _ in moves}  # as the index stores them (a link as the link)
        summary = move_photos(moves, journal=Path(folder))
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


def _describe(m: Member) -> str:
    f = m.facts
    quality = f"q{f.quality}" if f.quality is not None else "lossless"
    return f"{f.width}x{f.height} {quality} {f.file_size / 1e6:.2f} MB" + (
        f" {f.taken:%Y-%m-%d %H:%M}" if f.taken else "")


def member_line(m: Member) -> str:
    """One member in words: its relation, pixel size, JPEG quality, file size and capture time."""
    lost = f", lost on {m.lost_on}" if m.lost_on else ""
    return f"{m.relation} {_describe(m)}{lost}"


def sheet_items(report: DuplicateReport) -> list[tuple[Path, list[tuple[str, float]]]]:
    """Contact-sheet tiles, group after group: the keeper first ("#3 near: keep, why"), then the others,
    each with its size, JPEG quality and file size."""
    items = []
    for n, g in enumerate(report.groups, 1):
        for m in g.members:
            label = f"#{n} {g.tier}: keep ({g.reason}) {_describe(m)}" if m.relation == "keep" else \
                f"#{n} {member_line(m)}"
            items.append((m.path, [(label, m.score)]))
    return items


def report_json(report: DuplicateReport) -> dict:
    """The --json form: {"groups": [{"tier", "score", "keep", "others", "reason", "members": [...]}], ...counts};
    each member gives its relation, pixel size, file size, JPEG quality, capture time and what it lost on."""
    return {"groups": [{"tier": g.tier, "score": g.score, "keep": str(g.keep), "others": [str(o) for o in g.others],
                        "reason": g.reason, "members": [m.to_json() for m in g.members]} for g in report.groups],
            "photos": report.photos, "candidate_pairs": report.candidates, "pixel_checks": report.checked,
            "failures": [{"path": str(p), "reason": str(r)} for p, r in report.failed]}
