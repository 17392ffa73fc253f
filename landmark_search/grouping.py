"""`landmark group`: cluster photos no model can name into candidate landmarks a person names once.

Vectors come from the index (indexing.indexed_photos: only new or changed photos are embedded). By
default only the photos the model calls "unknown" (open-set; label None in the index) are grouped;
with the built-in ImageNet model, which never says unknown, every photo is. Clustering: PCA to
PCA_DIMS, L2-normalised, then scikit-learn's HDBSCAN (min_cluster_size = --min-size), and each
leftover photo joins the nearest group when its cosine to the group's mean is at least ATTACH_MIN.
Measured on wonders7 (417 photos, 7 landmarks, no labels; benchmarks/bench_grouping.py): see
DEVELOPERS.md. faiss k-means (k = n / (2 * min size)) + merging of centroids closer than
KMEANS_MERGE_COS stays available as `--method kmeans`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from .config import EmbedConfig
from .errors import LandmarkError

METHODS = ("hdbscan", "kmeans")
MIN_SIZE = 5
PCA_DIMS = 64  # HDBSCAN's densities are meaningless in 1280-d; 32-128 gave the same ARI, 1280 less
ATTACH_MIN = 0.3
KMEANS_MERGE_COS = 0.3  # centroids merge by average linkage; 0.3 gave the best ARI of 0.3-0.5 on wonders7
GROUP_PREFIX = "group-"

Embeddings = npt.NDArray[np.float32]


@dataclass(frozen=True)
class GroupOptions:
    """How `landmark group` clusters."""

    min_size: int = MIN_SIZE
    method: str = "hdbscan"
    everything: bool = False  # group every photo, not only the unknown ones
    seed: int = 0


@dataclass(frozen=True)
class PhotoGroup:
    """One candidate landmark: a folder name to rename, and its photos (most typical first)."""

    name: str
    paths: tuple[Path, ...]


@dataclass
class GroupReport:
    """Groups, the photos left out of every group, and what was not considered."""

    groups: list[PhotoGroup]
    ungrouped: list[Path]
    considered: int
    named: int  # photos the model gave a landmark to, so not grouped
    failed: list[tuple[Path, str]] = field(default_factory=list)


def _reduce(vectors: Embeddings, dims: int, seed: int) -> Embeddings:
    from sklearn.decomposition import PCA

    x = np.asarray(vectors, dtype=np.float32)
    k = min(dims, x.shape[1], len(x) - 1)
    if k >= 2 and k < x.shape[1]:
        x = PCA(k, random_state=seed).fit_transform(x).astype(np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _attach(z: Embeddings, labels: npt.NDArray[np.int64], min_cos: float) -> npt.NDArray[np.int64]:
    """Give each leftover photo the group whose mean it is closest to, when close enough."""
    labels = labels.copy()
    k = int(labels.max()) + 1
    if k == 0 or not (labels < 0).any():
        return labels
    centres = np.stack([z[labels == c].mean(0) for c in range(k)])
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    sims = z @ centres.T
    best = sims.argmax(1)
    take = (labels < 0) & (sims.max(1) >= min_cos)
    labels[take] = best[take]
    return labels


def cluster(vectors: Embeddings, min_size: int = MIN_SIZE, method: str = "hdbscan", seed: int = 0,
            attach_min: float = ATTACH_MIN) -> npt.NDArray[np.int64]:
    """A group number per row (-1: in no group); groups have at least min_size rows (numpy in, numpy out)."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise TypeError(f"vectors must be a 2-D (n, dim) array, got shape {vectors.shape}")
    if method not in METHODS:
        raise LandmarkError(f"--method {method!r}: use {' or '.join(METHODS)}")
    if min_size < 2:
        raise LandmarkError(f"--min-size {min_size}: a group needs at least 2 photos")
    n = len(vectors)
    if n < min_size:
        return np.full(n, -1, dtype=np.int64)
    z = _reduce(vectors, PCA_DIMS, seed)
    if method == "hdbscan":
        from sklearn.cluster import HDBSCAN

        labels = HDBSCAN(min_cluster_size=min_size, copy=True).fit_predict(z).astype(np.int64)
    else:
        labels = _kmeans_merged(z, min_size, seed)
    labels = _attach(z, labels, attach_min)
    return _renumber(labels, min_size)


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


def group_photos(photos: Sequence[Path], model_spec: str | None, index: str | Path, opts: GroupOptions,
                 cfg: EmbedConfig, *, index_opts=None, trust_export: bool = False) -> GroupReport:
    """Index `photos` (incrementally), pick the unknown ones (or all) and cluster them."""
    from .indexing import IndexOptions, indexed_photos

    found = indexed_photos(photos, model_spec, index, index_opts or IndexOptions(), cfg, trust_export=trust_export)
    everything = opts.everything or found.model_kind == "builtin"
    chosen = [i for i, r in enumerate(found.records) if everything or r.label is None]
    vectors = found.vectors[chosen]
    labels = cluster(vectors, opts.min_size, opts.method, opts.seed)
    names = group_names(int(labels.max()) + 1 if len(labels) else 0)
    groups = []
    for g, name in enumerate(names):
        rows = np.nonzero(labels == g)[0]
        centre = vectors[rows].mean(0)
        rows = rows[np.argsort(-(vectors[rows] @ centre), kind="stable")]  # most typical first: the sheet's first row
        groups.append(PhotoGroup(name, tuple(found.paths[chosen[r]] for r in rows)))
    ungrouped = [found.paths[chosen[r]] for r in np.nonzero(labels < 0)[0]]
    return GroupReport(groups, ungrouped, len(chosen), len(found.records) - len(chosen), list(found.summary.failed))


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


def check_folder_name(name: str) -> str:
    """A landmark name that can be a class folder (stripped); LandmarkError for one that cannot."""
    name = name.strip()
    if not name or name in (".", "..") or _BAD_NAME.search(name):
        raise LandmarkError(f"{name!r} cannot be a folder name; use a landmark name without slashes")
    return name


def rename_group(out: Path, name: str, new_name: str) -> Path:
    """OUT/train/<name> -> OUT/train/<new_name> (a landmark name); never over an existing folder."""
    new_name = check_folder_name(new_name)
    src, dest = out / "train" / name, out / "train" / new_name
    if not src.is_dir():
        raise LandmarkError(f"no group folder {src}; run `landmark group PHOTOS --out {out}` first, "
                            f"or check the name (ls {out / 'train'})")
    if dest.exists():
        raise LandmarkError(f"{dest} already exists; choose another name or move its photos by hand")
    os.rename(src, dest)
    return dest
