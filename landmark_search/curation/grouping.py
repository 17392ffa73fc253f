"""`landmark group`: cluster photos no model can name into candidate landmarks a person names once.

Vectors come from the index (indexing.indexed_photos: only new or changed photos are embedded). By
default only the photos the model calls "unknown" (open-set; label None in the index) are grouped;
with the built-in ImageNet model, which never says unknown, every photo is.

Clustering (`--method graph`, the default): the vectors are PCA-whitened on the photos themselves
(label-free: every direction of variation weighs the same, so "green hills" or "blue sky", which
dominate ImageNet features, stop outweighing what tells two places apart) and L2-normalised; for
each of WHITEN_DIMS x GRAPH_NEIGHBOURS a k-nearest-neighbour graph (cosine weights) is split into
communities by Leiden (leidenalg, modularity), and HDBSCAN clusters each whitened set once; two photos
stay linked when they share a community in more than CONSENSUS_MIN (60 %) of those runs; a pair some runs
joined but the vote dropped is linked anyway when its keypoints match (placematch.py: the same facade seen
twice), and Leiden on that consensus graph gives the groups. The grid is there so that no single dimension
or k is tuned to one photo set. Groups under --min-size dissolve.
`--method hdbscan` (scikit-learn HDBSCAN over PCA_DIMS, leftovers attached at ATTACH_MIN) and
`--method kmeans` (faiss k-means, k = n / (2 * min size), centroids merged at KMEANS_MERGE_COS) stay.
Measured side by side in benchmarks/bench_grouping.py (DEVELOPERS.md): graph 0.85 vs hdbscan 0.66
ARI on wonders7 train, 0.87 vs 0.72 on wonders7 test; hdbscan is the better choice when most photos
belong to no landmark at all (it leaves them out; graph's modularity merges small groups there).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from ..config import DEFAULT_MAX_PIXELS, EmbedConfig
from ..errors import LandmarkError

METHODS = ("graph", "hdbscan", "kmeans")
MIN_SIZE = 5
PCA_DIMS = 64  # HDBSCAN's densities are meaningless in 1280-d; 32-128 gave the same ARI, 1280 less
ATTACH_MIN = 0.3
KMEANS_MERGE_COS = 0.3  # centroids merge by average linkage; 0.3 gave the best ARI of 0.3-0.5 on wonders7
# The graph method's grid: every whitened dimension count x every k runs once, and the runs vote.
# Single runs on wonders7 train ranged 0.72-0.82 ARI over this grid; their consensus gave 0.85.
WHITEN_DIMS = (24, 32, 48, 64, 96)
GRAPH_NEIGHBOURS = (10, 15, 20)
# Two photos stay linked when more than this share of the runs put them together. Mean ARI over 5 seeds on six
# libraries (DEVELOPERS.md, "Grouping a real library"): 0.5 with dims up to 64 gave 0.684, 0.6 with 96 added 0.708;
# the libraries with everyday photos or ~8 photos a landmark gained 0.02-0.06, wonders7 lost 0.015-0.03.
CONSENSUS_MIN = 0.6
# HDBSCAN's vote (one run per whitened dimension count) uses clusters of at least this many photos. Six
# evaldata libraries, `landmark group` ARI, graphs alone -> with HDBSCAN's vote: wonders7 0.869 -> 0.820, india12
# 0.705 -> 0.704, india12 + 300 everyday 0.576 -> 0.668, wonders7 train + 150 everyday 0.867 -> 0.860, india12
# train + 150 everyday 0.598 -> 0.641, both test sets + 150 everyday (~8 photos a landmark) 0.359 -> 0.469.
VOTE_MIN_CLUSTER = 5
# Whitening n photos into n - 1 dimensions puts every photo at the same distance from every other; at
# least 3 photos per dimension keeps the estimate meaningful (wonders7 test, 70 photos: ARI 0.92 vs 0.87
# with no cap; 24 photos of 4 places: 0.59-0.88 vs 0.06 or less).
PHOTOS_PER_DIM = 3
# Below this many whitened dimensions (fewer than 24 photos) within-place variation weighs as much as
# the difference between places (8 photos of 2 places: split across places); such sets use hdbscan.
MIN_WHITEN_DIMS = 8
GROUP_PREFIX = "group-"
# What a landmark is, in the built-in ImageNet model's words: its classes for buildings, monuments, bridges, towers,
# walls and landforms (WordNet's structures and geological formations, less shops and homes seen from inside).
# 92-94 % of the wonders7 and india12 photos have one of these as their top class; 1.7 % of 300 everyday photos do.
LANDMARK_CLASSES = frozenset((
    "altar", "apiary", "barn", "beacon", "bell cote", "boathouse", "brass", "breakwater", "castle", "chainlink fence",
    "church", "cinema", "cliff dwelling", "crane", "dam", "dock", "dome", "drilling platform", "flagpole", "fountain",
    "greenhouse", "library", "lumbermill", "maze", "megalith", "monastery", "mosque", "mountain tent", "obelisk",
    "palace", "patio", "pedestal", "picket fence", "pier", "planetarium", "pole", "prison", "radio telescope",
    "solar dish", "steel arch bridge", "stone wall", "stupa", "suspension bridge", "thatch", "tile roof",
    "totem pole", "triumphal arch", "vault", "viaduct", "water tower", "worm fence", "yurt",
    "alp", "cliff", "coral reef", "geyser", "lakeside", "promontory", "sandbar", "seashore", "valley", "volcano"))
# A grouped photo whose own top class is not a landmark one stays in its group when at least this share of its
# LANDMARK_NEIGHBOURS nearest photos are landmark photos of that group (0.3 vs 0.5: ARI 0.747 vs 0.743 wonders7,
# 0.617 vs 0.601 india12, 0.658 vs 0.647 india12 + 300 everyday photos, of which 3.3 % vs 2.3 % stayed grouped).
LANDMARK_NEIGHBOURS = 10
LANDMARK_NEIGHBOUR_SHARE = 0.3

Embeddings = npt.NDArray[np.float32]


@dataclass(frozen=True)
class GroupOptions:
    """How `landmark group` clusters."""

    min_size: int = MIN_SIZE
    method: str = "auto"  # graph over every photo; hdbscan over a calibrated model's unknown ones (choose_method)
    everything: bool = False  # group every photo, not only the unknown ones
    any_subject: bool = False  # built-in model: keep groups of photos of no building or landform too
    seed: int = 0
    verify: bool = True  # graph method: pairs the vote dropped rejoin when their keypoints match (placematch)


@dataclass(frozen=True)
class PhotoGroup:
    """One candidate landmark: a folder name to rename, and its photos (most typical first)."""

    name: str
    paths: tuple[Path, ...]
    typicality: tuple[float, ...] = ()  # each photo's cosine to the group's mean vector


@dataclass
class GroupReport:
    """Groups (numbered largest first), the photos left out of every group, and what was not considered."""

    groups: list[PhotoGroup]
    ungrouped: list[Path]
    considered: int
    named: int  # photos the model gave a landmark to, so not grouped
    failed: list[tuple[Path, str]] = field(default_factory=list)


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows (or a single vector) scaled to length 1; an all-zero one stays zero."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _reduce(vectors: Embeddings, dims: int, seed: int) -> Embeddings:
    from sklearn.decomposition import PCA

    x = np.asarray(vectors, dtype=np.float32)
    k = min(dims, x.shape[1], len(x) - 1)
    if k >= 2 and k < x.shape[1]:
        x = PCA(k, random_state=seed).fit_transform(x).astype(np.float32)
    return _unit(x)


def _attach(z: Embeddings, labels: npt.NDArray[np.int64], min_cos: float) -> npt.NDArray[np.int64]:
    """Give each leftover photo the group whose mean it is closest to, when close enough."""
    labels = labels.copy()
    k = int(labels.max()) + 1
    if k == 0 or not (labels < 0).any():
        return labels
    centres = _unit(np.stack([z[labels == c].mean(0) for c in range(k)]))
    sims = z @ centres.T
    best = sims.argmax(1)
    take = (labels < 0) & (sims.max(1) >= min_cos)
    labels[take] = best[take]
    return labels


Progress = Callable[[float], None]  # the share of the work done, 0 to 1
# (m, 2) row pairs -> (m,) True where the two photos show the same place (placematch.SamePlace)
SamePlaceCheck = Callable[[npt.NDArray[np.int64], Progress | None], npt.NDArray[np.bool_]]


def cluster(vectors: Embeddings, min_size: int = MIN_SIZE, method: str = "graph", seed: int = 0,
            attach_min: float = ATTACH_MIN, progress: Progress | None = None,
            same_place: SamePlaceCheck | None = None) -> npt.NDArray[np.int64]:
    """A group number per row (-1: in no group); groups have at least min_size rows (numpy in, numpy out).
    `same_place`: the graph method's check of the pairs its vote dropped (None: no check)."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise TypeError(f"vectors must be a 2-D (n, dim) array, got shape {vectors.shape}")
    method = choose_method(method, everything=True)  # callers that group only unknown photos choose first
    if method not in METHODS:
        raise LandmarkError(f"--method {method!r}: use auto, {', '.join(METHODS)}")
    if min_size < 2:
        raise LandmarkError(f"--min-size {min_size}: a group needs at least 2 photos")
    n = len(vectors)
    if n < min_size:
        return np.full(n, -1, dtype=np.int64)
    if method == "graph":
        labels = _graph_consensus(vectors, seed, progress, same_place)
        if labels is not None:
            return _renumber(labels, min_size)
    z = _reduce(vectors, PCA_DIMS, seed)
    if method != "kmeans":  # hdbscan, or graph with too few photos to whiten
        from sklearn.cluster import HDBSCAN

        labels = HDBSCAN(min_cluster_size=min_size, copy=True).fit_predict(z).astype(np.int64)
    else:
        labels = _kmeans_merged(z, min_size, seed)
    labels = _attach(z, labels, attach_min)
    return _renumber(labels, min_size)


def _whitened(vectors: Embeddings) -> tuple[npt.NDArray[np.float64], int]:
    """The photos' principal-component scores, each component scaled to unit variance, strongest first,
    and how many components carry variance (PCA-whitening fitted on these photos: no labels)."""
    x = _unit(np.asarray(vectors, dtype=np.float64))
    x -= x.mean(0)
    if len(x) <= x.shape[1]:  # eigenvectors of the n x n Gram matrix are the unit-variance scores
        values, scores = np.linalg.eigh(x @ x.T)
    else:  # of the dim x dim covariance: project, then scale
        values, axes = np.linalg.eigh(x.T @ x)
        scores = x @ axes / np.sqrt(np.maximum(values, 1e-30))
    order = np.argsort(values)[::-1]
    rank = int((values > values.max() * 1e-9).sum()) if len(values) else 0
    return scores[:, order], rank


def _communities(n: int, edges: dict[tuple[int, int], float], seed: int) -> npt.NDArray[np.int64]:
    """A community number per node of the weighted graph: Leiden (leidenalg), modularity, iterated until no
    node moves. Leiden keeps every community connected, which Louvain does not guarantee; over 5 seeds it
    raised `landmark group`'s ARI on 4 of 5 evaldata libraries (+0.02-0.04, DEVELOPERS.md)."""
    import igraph
    import leidenalg

    graph = igraph.Graph(n=n, edges=list(edges))
    graph.es["weight"] = list(edges.values())
    found = leidenalg.find_partition(graph, leidenalg.ModularityVertexPartition, weights="weight", seed=seed,
                                     n_iterations=-1)
    return np.asarray(found.membership, dtype=np.int64)


def _graph_consensus(vectors: Embeddings, seed: int, progress: Progress | None = None,
                     same_place: SamePlaceCheck | None = None) -> npt.NDArray[np.int64] | None:
    """Leiden over whitened k-NN graphs for every (dims, k) of the grid, and HDBSCAN (its noise alone) at every
    dims, then Leiden over their vote (pairs together in more than CONSENSUS_MIN of the runs); None when there
    are too few photos (or too little variation) to whiten. The graphs find landmarks with many photos;
    HDBSCAN's vote splits what they merge where a landmark has fewer photos than the graphs' neighbours, or
    everyday photos crowd in (DEVELOPERS.md).
    A neighbour pair some run joined but the vote dropped rejoins with full weight when `same_place` verifies it:
    the same facade seen twice is one landmark whatever the whole-photo features say (ARI +0.005-0.035 on four
    libraries, DEVELOPERS.md)."""
    n = len(vectors)
    if n // PHOTOS_PER_DIM < MIN_WHITEN_DIMS:
        return None
    scores, rank = _whitened(vectors)
    if rank < MIN_WHITEN_DIMS:
        return None
    dims = sorted({min(d, rank, n // PHOTOS_PER_DIM) for d in WHITEN_DIMS})
    ks = sorted({min(k, n - 1) for k in GRAPH_NEIGHBOURS})
    from sklearn.cluster import HDBSCAN

    from .duplicates import neighbour_pairs

    runs, union = [], {}  # every graph's edges, in the order first seen
    count = len(dims) * (len(ks) + 1)
    total = count * (2 if same_place is not None else 1) + 1  # the runs, the check (weighed as all runs), the vote
    for d in dims:
        z = np.ascontiguousarray(_unit(scores[:, :d]), dtype=np.float32)
        for k in ks:
            # Modularity needs positive weights.
            edges = {p: max(s, 1e-6) for p, s in neighbour_pairs(z, k, -np.inf, exact=True).items()}
            runs.append(_communities(n, edges, seed))
            union.update(edges)
            if progress is not None:
                progress(len(runs) / total)
        dense = HDBSCAN(min_cluster_size=VOTE_MIN_CLUSTER, copy=True).fit_predict(z).astype(np.int64)
        runs.append(np.where(dense < 0, -1 - np.arange(n), dense))  # a noise photo agrees with nobody
        if progress is not None:
            progress(len(runs) / total)
    votes = np.stack(runs)
    pairs = np.array(list(union), dtype=np.int64).reshape(-1, 2)
    agree = (votes[:, pairs[:, 0]] == votes[:, pairs[:, 1]]).mean(0)
    kept = {(int(i), int(j)): float(a) for (i, j), a in zip(pairs, agree) if a > CONSENSUS_MIN}
    if same_place is not None:
        # Pairs some run joined: as much gain as checking every dropped pair, at half the matching (DEVELOPERS.md).
        dropped = pairs[(agree > 0) & (agree <= CONSENSUS_MIN)]
        tell = None if progress is None else (lambda share: progress((count + share * count) / total))
        kept.update({(int(i), int(j)): 1.0 for i, j in dropped[same_place(dropped, tell)]})
    return _communities(n, kept, seed)


def _kmeans_merged(z: Embeddings, min_size: int, seed: int) -> npt.NDArray[np.int64]:
    """Over-cluster with faiss k-means, then merge centroids by average linkage at KMEANS_MERGE_COS."""
    import faiss
    from sklearn.cluster import AgglomerativeClustering

    k = max(1, len(z) // (2 * min_size))
    km = faiss.Kmeans(z.shape[1], k, niter=25, seed=seed, spherical=True, verbose=False)
    km.cp.min_points_per_centroid = 1  # small photo sets: no warning, no refusal
    km.train(np.ascontiguousarray(z))
    _, assign = km.index.search(np.ascontiguousarray(z), 1)
    assign = assign.ravel()
    if k == 1:
        return np.zeros(len(z), dtype=np.int64)
    merged = AgglomerativeClustering(n_clusters=None, distance_threshold=1 - KMEANS_MERGE_COS, metric="cosine",
                                     linkage="average").fit_predict(km.centroids)
    return merged[assign].astype(np.int64)


def _renumber(labels: npt.NDArray[np.int64], min_size: int) -> npt.NDArray[np.int64]:
    """Groups smaller than min_size dissolve; the rest are numbered largest first."""
    out = np.full(len(labels), -1, dtype=np.int64)
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    order = [i for i, c in sorted(zip(ids.tolist(), counts.tolist()), key=lambda t: (-t[1], t[0])) if c >= min_size]
    for new, old in enumerate(order):
        out[labels == old] = new
    return out


def group_names(count: int) -> list[str]:
    """group-01, group-02, ... (wider numbers past 99, so folders sort in order)."""
    width = max(2, len(str(count)))
    return [f"{GROUP_PREFIX}{i + 1:0{width}d}" for i in range(count)]


def choose_method(method: str, everything: bool) -> str:
    """"auto": graph when every photo is grouped (candidate landmarks among landmark photos: 0.85 vs 0.66 ARI on
    wonders7 train), hdbscan when only a calibrated model's unknown photos are (mostly everyday photos, where
    graph's modularity merges the few landmark groups: 0.38 vs 0.90 on wonders7 test + 300 distractors)."""
    if method != "auto":
        return method
    return "graph" if everything else "hdbscan"


def group_photos(photos: Sequence[Path], model_spec: str | None, index: str | Path, opts: GroupOptions,
                 cfg: EmbedConfig, *, index_opts=None, trust_export: bool = False) -> GroupReport:
    """Index `photos` (incrementally), then group them as group_indexed does."""
    from tqdm import tqdm

    from ..search import IndexOptions, indexed_photos

    found = indexed_photos(photos, model_spec, index, index_opts or IndexOptions(), cfg, trust_export=trust_export)
    # The first grouping of a large library matches keypoints for minutes: a bar on a terminal (None: not a log).
    with tqdm(total=100, desc="grouping", unit="%", leave=False, disable=None if cfg.progress else True) as bar:
        report = group_indexed(found.paths, found.records, found.vectors, found.model_kind, opts,
                               progress=lambda share: bar.update(max(0, round(100 * share) - bar.n)),
                               landmark_floor=found.landmark_floor, index_dir=found.summary.directory,
                               max_pixels=cfg.max_pixels)
    report.failed = list(found.summary.failed)
    return report


def group_indexed(paths: Sequence[Path], records: Sequence, vectors: Embeddings, model_kind: str,
                  opts: GroupOptions, progress: Progress | None = None,
                  landmark_floor: float | None = None, index_dir: Path | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> GroupReport:
    """The one grouping of indexed photos, for `landmark group` and the web app's Review page alike.

    `records` are the index's PhotoRecords of `paths` (rows of `vectors`). The photos are taken in the order of
    their index keys, so the same photos give the same groups and the same group numbers whoever asks, and a
    name given by hand (which the index does not see) renumbers nothing. The built-in model's groups keep only
    buildings and landforms (keep_landmarks) unless opts.any_subject; a trained model's groups of unknown photos
    keep only those that look like some landmark (keep_landmark_like, with the model's `landmark_floor`).
    With opts.verify, the pairs the graph method checks by keypoints are remembered in `index_dir`; the photos are
    decoded for it up to `max_pixels`, as they were for the index."""
    everything = opts.everything or model_kind == "builtin"
    chosen = sorted((i for i, r in enumerate(records) if everything or r.label is None), key=lambda i: records[i].path)
    rows_vectors = np.asarray(vectors)[chosen]
    method = choose_method(opts.method, everything)
    same_place = None
    if opts.verify and method == "graph":
        from ..index.vectors import cpu_count
        from .placematch import SamePlace

        same_place = SamePlace([paths[i] for i in chosen], [records[i].content_hash for i in chosen], index_dir,
                               threads=min(4, cpu_count()), max_pixels=max_pixels)
    try:
        labels = cluster(rows_vectors, opts.min_size, method, opts.seed, progress=progress, same_place=same_place)
    finally:
        if same_place is not None:
            same_place.close()
    if model_kind == "builtin" and not opts.any_subject:
        labels = keep_landmarks(rows_vectors, labels, [records[i].label for i in chosen], opts.min_size)
    elif landmark_floor is not None and not opts.any_subject:
        labels = keep_landmark_like(labels, [records[i].confidence for i in chosen], landmark_floor, opts.min_size)
    names = group_names(int(labels.max()) + 1 if len(labels) else 0)
    groups = []
    for g, name in enumerate(names):
        rows = np.nonzero(labels == g)[0]
        cos = rows_vectors[rows] @ _unit(rows_vectors[rows].mean(0))
        order = np.argsort(-cos, kind="stable")  # most typical first: the sheet's first row
        groups.append(PhotoGroup(name, tuple(Path(paths[chosen[r]]) for r in rows[order]),
                                 tuple(round(float(c), 4) for c in cos[order])))
    ungrouped = [Path(paths[chosen[r]]) for r in np.nonzero(labels < 0)[0]]
    if progress is not None:
        progress(1.0)
    return GroupReport(groups, ungrouped, len(chosen), len(records) - len(chosen))


def keep_landmarks(vectors: Embeddings, labels: npt.NDArray[np.int64], classes: Sequence[str | None],
                   min_size: int = MIN_SIZE) -> npt.NDArray[np.int64]:
    """Groups of buildings and landforms only, from the built-in model's top class of each photo (`classes`).

    A group where fewer than half the photos have a landmark class (LANDMARK_CLASSES) dissolves: a library's
    dogs, meals and cars are no landmark. A member whose own class is another one stays only when at least
    LANDMARK_NEIGHBOUR_SHARE of its nearest photos are landmark photos of its group (a statue's top class may be
    "pedestal" or "fur coat"). Groups left under min_size dissolve; the rest are renumbered largest first."""
    labels = np.asarray(labels).copy()
    landmark = np.array([c in LANDMARK_CLASSES for c in classes], dtype=bool)
    doubtful = np.nonzero((labels >= 0) & ~landmark)[0]
    if len(doubtful):
        import faiss

        z = np.ascontiguousarray(_unit(np.asarray(vectors, dtype=np.float32)))
        search = faiss.IndexFlatIP(z.shape[1])
        search.add(z)
        k = min(LANDMARK_NEIGHBOURS + 1, len(z))
        _, near = search.search(z[doubtful], k)  # each photo finds itself first
        kept = labels.copy()
        for row, ids in zip(doubtful, near[:, 1:]):
            ids = ids[ids >= 0]
            if ((labels[ids] == labels[row]) & landmark[ids]).sum() < LANDMARK_NEIGHBOUR_SHARE * LANDMARK_NEIGHBOURS:
                kept[row] = -1
        labels = kept
    for g in np.unique(labels[labels >= 0]):
        if landmark[labels == g].mean() < 0.5:
            labels[labels == g] = -1
    return _renumber(labels, min_size)


def keep_landmark_like(labels: npt.NDArray[np.int64], confidences: Sequence[float | None], floor: float,
                       min_size: int = MIN_SIZE) -> npt.NDArray[np.int64]:
    """Groups whose median open-set confidence (of the nearest known landmark; models/openset.py) reaches
    `floor`: a trained model's dogs and meals are unknown too, but look like none of its landmarks, while
    photos of landmarks it was never shown still resemble them. The rest dissolve; renumbered largest first."""
    labels = np.asarray(labels).copy()
    conf = np.array([0.0 if c is None else float(c) for c in confidences], dtype=np.float64)
    for g in np.unique(labels[labels >= 0]):
        if np.median(conf[labels == g]) < floor:
            labels[labels == g] = -1
    return _renumber(labels, min_size)


def write_group_links(report: GroupReport, out: Path):
    """OUT/train/group-NN/<photo name> links, ready to rename and train on (`landmark train --data OUT`)."""
    return link_for_training(((group.name, group.paths) for group in report.groups), out)


def link_for_training(groups: Iterable[tuple[str, Sequence[Path]]], out: Path):
    """OUT/train/<name>/<photo name> links to each group's photos (`landmark train --data OUT` reads them)."""
    from .relocate import link_photos

    links = []
    for group_name, paths in groups:
        used: set[str] = set()
        for path in paths:
            name, n = path.name, 1
            while name.lower() in used:  # same name from two folders: IMG_0001.jpg, IMG_0001-2.jpg
                n += 1
                name = f"{path.stem}-{n}{path.suffix}"
            used.add(name.lower())
            links.append((path, out / "train" / group_name / name))
    return link_photos(links)


_BAD_NAME = re.compile(r"[/\\\x00]")
NAME_MAX_BYTES = 255  # a file name on ext4, APFS, NTFS (UTF-8 bytes; NTFS counts 255 UTF-16 units)


def check_folder_name(name: str) -> str:
    """A landmark name that can be a class folder (stripped); LandmarkError for one that cannot."""
    name = name.strip()
    if not name or name in (".", "..") or _BAD_NAME.search(name):
        raise LandmarkError(f"{name!r} cannot be a folder name; use a landmark name without slashes")
    try:
        size = len(os.fsencode(name))
    except UnicodeError:  # a lone surrogate from JSON: no file system stores it
        raise LandmarkError(f"{name[:40]!r} cannot be a folder name; use printable characters") from None
    if size > NAME_MAX_BYTES:
        raise LandmarkError(f"{name[:40]!r}... is {size} bytes, more than a folder name can hold "
                            f"({NAME_MAX_BYTES}); use a shorter landmark name")
    return name


def rename_group(out: Path, name: str, new_name: str) -> Path:
    """OUT/train/<name> -> OUT/train/<new_name> (a landmark name); never over an existing folder.

    `name` is a group-NN folder or a name given earlier, one folder directly under OUT/train: a path
    (`../x`, `/home/x`), or a link out of OUT/train, is refused before anything moves."""
    new_name = check_folder_name(new_name)
    train = out / "train"
    try:
        name = check_folder_name(name)
    except LandmarkError:
        raise LandmarkError(f"--name {name!r}: give a group folder under {train} (group-01, or a name given "
                            f"earlier), not a path; ls {train}") from None
    src, dest = train / name, train / new_name
    if not src.is_dir() or src.is_symlink():
        raise LandmarkError(f"no group folder {src}; run `landmark group PHOTOS --out {out}` first, "
                            f"or check the name (ls {train})")
    if dest.exists() or dest.is_symlink():
        raise LandmarkError(f"{dest} already exists; choose another name or move its photos by hand")
    os.rename(src, dest)
    return dest
