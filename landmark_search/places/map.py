"""Maps of where photos were taken: `landmark map` (one self-contained HTML page) and the web app's map page.

Positions come from each photo's EXIF GPS, else from the place `landmark tag --geotag` wrote into its JSON
sidecar. The world is drawn from Natural Earth's 1:110m country outlines (public domain) as the pyogrio package
ships them, in Web Mercator, so the map needs no network at all. Markers closer than CLUSTER_PX on that map share
one cluster; each cluster links to its card of places and photos. Both pages render render/templates/_world.html.
"""

from __future__ import annotations

import functools
import io
import json
import math
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Callable, Sequence

from ..config import DEFAULT_MAX_PIXELS
from ..photos.files import iter_photos
from ..errors import LandmarkError
from ..fsutil import atomic_write_text
from ..photos.exif import read_exif
from .table import haversine_m
from ..render.images import image_data_uri, placeholder, thumbnail
from ..sidecars.jsonfile import Recorded, read_recorded, sidecar_path

SIZE = 1024  # the world at zoom 2: 4 x 4 OSM tiles of 256 px
MERGE_M = 2000.0  # photos this close share a marker
THUMBS_PER_PLACE = 6
CLUSTER_PX = 26.0  # markers closer than this (a marker's width) would overlap: one cluster
NATURAL_EARTH_110M = "tests/fixtures/naturalearth_lowres/naturalearth_lowres.shp"  # inside the pyogrio package


@dataclass
class MapPlace:
    """One marker: where, what it is called, and the photos there."""

    latitude: float
    longitude: float
    name: str
    photos: list[Path] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)  # "exif" / "geotag"


def _position(photo: Path) -> tuple[float, float, str, str] | None:
    """(latitude, longitude, name, "exif" or "geotag"); the name is the place's, else the photo's landmark (our
    entry's first tag, a name given by hand included)."""
    try:
        entry = read_recorded(sidecar_path(photo))
    except LandmarkError:
        entry = Recorded()
    landmark = entry.tags[0]["label"] if entry.tags else ""
    gps = read_exif(photo).gps
    if gps is not None:
        return gps[0], gps[1], landmark, "exif"
    if entry.place is None:
        return None
    return entry.place["latitude"], entry.place["longitude"], entry.place.get("name") or landmark, "geotag"


def collect_places(photos: Sequence[Path]) -> tuple[list[MapPlace], int]:
    """(markers, photos with no position) for the photos under the arguments."""
    places: list[MapPlace] = []
    without = 0
    for photo in iter_photos(photos, recursive=True):
        pos = _position(photo)
        if pos is None:
            without += 1
            continue
        lat, lon, name, source = pos
        near = next((p for p in places if haversine_m((p.latitude, p.longitude), (lat, lon)) <= MERGE_M), None)
        if near is None:
            near = MapPlace(lat, lon, name)
            places.append(near)
        near.name = near.name or name
        near.photos.append(photo)
        near.sources.add(source)
    return places, without


def world_xy(lat: float, lon: float) -> tuple[float, float]:
    """Web Mercator pixels of the zoom-2 world (the projection OSM tiles use)."""
    lat = max(-85.05, min(85.05, lat))
    x = (lon + 180.0) / 360.0 * SIZE
    y = (1 - math.log(math.tan(math.radians(lat)) + 1 / math.cos(math.radians(lat))) / math.pi) / 2 * SIZE
    return x, y


@functools.lru_cache(maxsize=1)
def basemap() -> dict:
    """Natural Earth 1:110m countries as a GeoJSON FeatureCollection (name, iso_a3, continent; 0.01 degree)."""
    try:
        import pyogrio
    except ImportError:
        raise LandmarkError("the map's country outlines come with pyogrio: pip install 'pyogrio>=0.9,<1'") from None
    shapes = files("pyogrio") / NATURAL_EARTH_110M
    if not shapes.is_file():
        raise LandmarkError(f"pyogrio {pyogrio.__version__} no longer ships {NATURAL_EARTH_110M}: "
                            "pip install 'pyogrio>=0.9,<1'")
    meta, _, geometry, fields = pyogrio.raw.read(str(shapes))
    names = list(meta["fields"])
    keep = [i for i, name in enumerate(names) if name in ("name", "iso_a3", "continent")]
    out = io.BytesIO()
    pyogrio.raw.write(out, geometry, [fields[i] for i in keep], [names[i] for i in keep], driver="GeoJSON",
                      geometry_type=meta["geometry_type"], crs=meta["crs"], layer_options={"COORDINATE_PRECISION": 2})
    return json.loads(out.getvalue())


@functools.lru_cache(maxsize=1)
def outline_paths() -> tuple[str, ...]:
    """The basemap's countries as SVG path data in map pixels (one path per country)."""
    paths = []
    for feature in basemap()["features"]:
        geometry = feature.get("geometry") or {}
        polygons = ([geometry["coordinates"]] if geometry.get("type") == "Polygon"
                    else geometry.get("coordinates", []) if geometry.get("type") == "MultiPolygon" else [])
        rings = []
        for polygon in polygons:
            for ring in polygon:
                points = [world_xy(lat, lon) for lon, lat in ring]
                rings.append("M" + "L".join(f"{x:.1f},{y:.1f}" for x, y in points) + "Z")
        if rings:
            paths.append("".join(rings))
    return tuple(paths)


def graticule() -> dict:
    """Meridians every 30 degrees and parallels every 20, in map pixels: {"x": [...], "y": [(pixel, degrees)]}."""
    return {"x": [round(world_xy(0, lon)[0], 1) for lon in range(-180, 181, 30)],
            "y": [(round(world_xy(lat, 0)[1], 1), lat) for lat in range(-80, 81, 20)]}


@dataclass
class Cluster:
    """Markers that would overlap on the map, drawn as one: where, how many photos, and its places."""

    x: float
    y: float
    places: list[MapPlace] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(p.photos) for p in self.places)

    @property
    def title(self) -> str:
        names = list(dict.fromkeys(p.name or f"{p.latitude:.4f}, {p.longitude:.4f}" for p in self.places))
        return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def clusters(places: Sequence[MapPlace]) -> list[Cluster]:
    """Places within CLUSTER_PX of a cluster's first (largest) place join it; the largest places come first."""
    out: list[Cluster] = []
    for place in sorted(places, key=lambda p: -len(p.photos)):
        x, y = world_xy(place.latitude, place.longitude)
        near = next((c for c in out if math.hypot(c.x - x, c.y - y) <= CLUSTER_PX), None)
        if near is None:
            near = Cluster(round(x, 1), round(y, 1))
            out.append(near)
        near.places.append(place)
    return out


def world_view(places: Sequence[MapPlace], photo_link: Callable[[Path], tuple[str, str]],
               thumbs: int = THUMBS_PER_PLACE) -> dict:
    """What render/templates/_world.html draws: outlines, graticule and clusters, each cluster with the links
    (href, image src) of its first `thumbs` photos from photo_link(photo)."""
    groups = []
    for i, cluster in enumerate(clusters(places)):
        photos = [p for place in cluster.places for p in place.photos]
        groups.append({"id": f"place-{i}", "x": cluster.x, "y": cluster.y, "count": cluster.count,
                       "title": cluster.title, "sources": sorted({s for p in cluster.places for s in p.sources}),
                       "positions": [(p.latitude, p.longitude, len(p.photos)) for p in cluster.places],
                       "photos": [{"name": p.name, "href": href, "src": src}
                                  for p in photos[:thumbs] for href, src in [photo_link(p)]],
                       "more": max(0, len(photos) - thumbs)})
    return {"size": SIZE, "outlines": outline_paths(), "graticule": graticule(), "clusters": groups}


def write_map(photos: Sequence[Path], out: Path, title: str = "landmark map",
              max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Path, list[MapPlace], int]:
    """Write the page; returns (path, markers, photos without a position)."""
    from ..render.templating import environment

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise LandmarkError(f"--out {out}: the map is an HTML page; name it map.html")
    places, without = collect_places(photos)

    def link(photo: Path) -> tuple[str, str]:
        try:
            uri = image_data_uri(thumbnail(photo, 120, max_pixels))
        except Exception:  # an unreadable photo still counts; it shows as a placeholder
            uri = image_data_uri(placeholder(120))
        return photo.resolve().as_uri(), uri

    page = environment().get_template("map.html").render(
        title=title, world=world_view(places, link), without=without,
        with_position=sum(len(p.photos) for p in places),
        places=[{"latitude": p.latitude, "longitude": p.longitude, "name": p.name, "photos": len(p.photos)}
                for p in places])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return out, places, without
