"""`landmark data from-gps`: a training set from the user's own geotagged photos, one class per place.

The GPS positions are clustered by density in metres (scikit-learn DBSCAN on haversine distance), so
a place is wherever enough photos were taken close together, whatever its shape; isolated photos are
noise. Each place is named by its most common keyword (when most of its photos carry it) or by the
nearest GeoNames city (offline). DIR/train/<place>/ gets links to the photos (copies with --copy) and
DIR/places.csv says where each place is, so `landmark train --data DIR` learns the places and
`landmark tag --geotag` puts them on the photos without GPS.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import DataError
from ..fsutil import atomic_write_text
from .table import EARTH_RADIUS_M, PLACES_FILE, geometric_median, reverse_geocode
from ..photos.exif import read_exif
from ..photos.files import iter_photos

DEFAULT_RADIUS_M = 300.0  # photos of one landmark lie within a few hundred metres of each other
DEFAULT_MIN_PHOTOS = 5  # fewer than this is not a place worth a class


@dataclass(frozen=True)
class PlaceCluster:
    """One place found in the photos."""

    name: str  # the class folder name
    latitude: float
    longitude: float
    spread_m: float
    city: str
    country: str
    photos: list[Path]


@dataclass
class FromGpsSummary:
    """What `data from-gps` found and wrote."""

    clusters: list[PlaceCluster] = field(default_factory=list)
    geotagged: int = 0
    without_gps: int = 0
    noise: int = 0  # geotagged, but in no place with enough photos
    failed: list[tuple[Path, str]] = field(default_factory=list)


def cluster_positions(points: np.ndarray, radius_m: float = DEFAULT_RADIUS_M,
                      min_photos: int = DEFAULT_MIN_PHOTOS) -> np.ndarray:
    """DBSCAN labels (-1: noise) of (lat, lon) degrees, neighbours within radius_m on the sphere."""
    from sklearn.cluster import DBSCAN

    if len(points) == 0:
        return np.zeros(0, np.int64)
    return DBSCAN(eps=radius_m / EARTH_RADIUS_M, min_samples=min_photos, metric="haversine",
                  algorithm="ball_tree").fit_predict(np.radians(points))


def _folder_name(name: str) -> str:
    clean = re.sub(r"[^\w\- ]+", "", name, flags=re.UNICODE).strip().replace(" ", "_")
    return clean[:60] or "place"


def _common_keyword(photos: Sequence[Path]) -> str | None:
    """A keyword most of the photos share (their XMP sidecars), e.g. the user's own name for the place."""
    from ..sidecars.xmp import read_keywords

    counts: Counter[str] = Counter()
    for photo in photos:
        try:
            counts.update(set(read_keywords(Path(f"{photo}.xmp"))["subject"]))
        except Exception:  # an unreadable sidecar says nothing about the place
            continue
    if counts:
        word, n = counts.most_common(1)[0]
        if n * 2 > len(photos):
            return word
    return None


def dataset_from_gps(photos: Sequence[Path], out: Path, *, radius_m: float = DEFAULT_RADIUS_M,
                     min_photos: int = DEFAULT_MIN_PHOTOS, copy: bool = False,
                     progress: Callable[[int], None] | None = None) -> FromGpsSummary:
    """Cluster the photos' GPS positions and write DIR/train/<place>/ (links or copies) and DIR/places.csv."""
    if radius_m <= 0 or min_photos < 2:
        raise DataError(f"--radius {radius_m} / --min-photos {min_photos}: use a radius above 0 m and at least 2 photos")
    out = Path(out)
    train = out / "train"
    if train.exists() and any(train.iterdir()):
        raise DataError(f"{train} already holds a dataset; choose an empty --out folder (nothing was changed)")
    summary = FromGpsSummary()
    found = list(iter_photos(photos, recursive=True, on_error=lambda p, why: summary.failed.append((p, why))))
    positions, located = [], []
    for photo in found:
        gps = read_exif(photo).gps
        if progress:
            progress(1)
        if gps is None:
            summary.without_gps += 1
            continue
        positions.append(gps)
        located.append(photo)
    summary.geotagged = len(located)
    labels = cluster_positions(np.asarray(positions, np.float64).reshape(-1, 2), radius_m, min_photos)
    summary.noise = int((labels == -1).sum())
    members = [np.flatnonzero(labels == k) for k in sorted(set(labels.tolist()) - {-1})]
    groups = [[located[i] for i in rows] for rows in members]
    centres = [geometric_median([positions[i] for i in rows]) for rows in members]
    named = reverse_geocode([(lat, lon) for lat, lon, _ in centres])
    taken: Counter[str] = Counter()
    for group, (lat, lon, spread), (city, country) in zip(groups, centres, named):
        name = _folder_name(_common_keyword(group) or city or f"place_{lat:.3f}_{lon:.3f}")
        taken[name] += 1
        if taken[name] > 1:
            name = f"{name}_{taken[name]}"
        summary.clusters.append(PlaceCluster(name, lat, lon, spread, city, country, group))
    if not summary.clusters:
        raise DataError(f"no place with {min_photos}+ photos within {radius_m:.0f} m among {summary.geotagged} "
                        f"geotagged photos ({summary.without_gps} without GPS); lower --min-photos or raise --radius")
    for cluster in summary.clusters:
        folder = train / cluster.name
        folder.mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        for photo in cluster.photos:
            target = folder / photo.name
            n = 1
            while target.name in used:
                n += 1
                target = folder / f"{photo.stem}_{n}{photo.suffix}"
            used.add(target.name)
            if copy:
                shutil.copy2(photo, target)
            else:
                os.symlink(os.path.abspath(photo), target)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["class", "latitude", "longitude", "name", "city", "country"])
    for c in summary.clusters:
        writer.writerow([c.name, f"{c.latitude:.6f}", f"{c.longitude:.6f}", c.city, c.city, c.country])
    atomic_write_text(out / PLACES_FILE, buf.getvalue())
    return summary
