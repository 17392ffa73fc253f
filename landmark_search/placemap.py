"""`landmark map`: one self-contained HTML page with a marker per place the photos were taken or tagged at.

Positions come from each photo's EXIF GPS, else from the place `landmark tag --geotag` wrote into its
JSON sidecar. The page needs nothing beside it: a Web Mercator world with a graticule drawn in SVG
works offline; when the browser is online, OpenStreetMap tiles (zoom 2) fill in behind the markers
(a tile that fails to load just stays away). Each marker lists its photos with thumbnails and links.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .config import DEFAULT_MAX_PIXELS
from .data.files import iter_photos
from .errors import LandmarkError
from .fsutil import atomic_write_text
from .data.exif import read_exif
from .places import haversine_m
from .sheets import image_data_uri, placeholder, thumbnail
from .sidecar import read_recorded, sidecar_path

SIZE = 1024  # the world at zoom 2: 4 x 4 OSM tiles of 256 px
MERGE_M = 2000.0  # photos this close share a marker
THUMBS_PER_PLACE = 6


@dataclass
class MapPlace:
    """One marker: where, what it is called, and the photos there."""

    latitude: float
    longitude: float
    name: str
    photos: list[Path] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)  # "exif" / "geotag"


def _position(photo: Path) -> tuple[float, float, str, str] | None:
    gps = read_exif(photo).gps
    if gps is not None:
        return gps[0], gps[1], "", "exif"
    try:
        place = read_recorded(sidecar_path(photo)).place
    except LandmarkError:
        return None
    if place is None:
        return None
    return place["latitude"], place["longitude"], place.get("name", ""), "geotag"


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


def graticule_svg() -> str:
    lines = []
    for lon in range(-180, 181, 30):
        x, _ = world_xy(0, lon)
        lines.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{SIZE}"/>')
    for lat in range(-80, 81, 20):
        _, y = world_xy(lat, 0)
        lines.append(f'<line x1="0" y1="{y:.1f}" x2="{SIZE}" y2="{y:.1f}"/>')
        lines.append(f'<text x="4" y="{y - 3:.1f}">{lat}°</text>')
    return "".join(lines)


def write_map(photos: Sequence[Path], out: Path, title: str = "landmark map",
              max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Path, list[MapPlace], int]:
    """Write the page; returns (path, markers, photos without a position)."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise LandmarkError(f"--out {out}: the map is an HTML page; name it map.html")
    places, without = collect_places(photos)
    tiles = "".join(f'<img class="tile" src="https://tile.openstreetmap.org/2/{x}/{y}.png" '
                    f'style="left:{x * 256}px;top:{y * 256}px" alt="" onerror="this.remove()">'
                    for x in range(4) for y in range(4))
    markers, cards = [], []
    for i, place in enumerate(places):
        x, y = world_xy(place.latitude, place.longitude)
        label = place.name or f"{place.latitude:.4f}, {place.longitude:.4f}"
        markers.append(f'<a class="marker" href="#place-{i}" style="left:{x:.1f}px;top:{y:.1f}px" '
                       f'title="{html.escape(label)}: {len(place.photos)} photo(s)">{len(place.photos)}</a>')
        thumbs = []
        for photo in place.photos[:THUMBS_PER_PLACE]:
            try:
                uri = image_data_uri(thumbnail(photo, 120, max_pixels))
            except Exception:  # an unreadable photo still counts; it shows as a placeholder
                uri = image_data_uri(placeholder(120))
            thumbs.append(f'<a href="{html.escape(photo.resolve().as_uri())}"><img src="{uri}" '
                          f'alt="{html.escape(photo.name)}"></a>')
        more = len(place.photos) - THUMBS_PER_PLACE
        cards.append(f'<section class="card" id="place-{i}"><h2>{html.escape(label)}</h2>'
                     f'<p>{len(place.photos)} photo(s) · {place.latitude:.5f}, {place.longitude:.5f} · from '
                     f'{", ".join(sorted(place.sources))}</p><div class="thumbs">{"".join(thumbs)}'
                     f'{f"<span>+{more} more</span>" if more > 0 else ""}</div></section>')
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:0;background:#f4f6f8;color:#1d2733}}
header{{padding:12px 20px;background:#1d2733;color:#fff}}
#world{{position:relative;width:{SIZE}px;height:{SIZE}px;margin:16px auto;background:#dfe9f3;overflow:hidden;
border:1px solid #9ab}}
.tile{{position:absolute;width:256px;height:256px}}
svg{{position:absolute;left:0;top:0}} svg line{{stroke:#9ab;stroke-width:.6}} svg text{{font-size:10px;fill:#567}}
.marker{{position:absolute;transform:translate(-50%,-50%);min-width:22px;height:22px;border-radius:11px;
background:#c0392b;color:#fff;font:bold 12px/22px sans-serif;text-align:center;text-decoration:none;
box-shadow:0 0 0 2px #fff}}
.card{{background:#fff;margin:12px auto;max-width:{SIZE - 40}px;padding:8px 20px;border-radius:6px}}
.thumbs img{{margin:2px;border-radius:3px}}</style></head><body>
<header><b>{html.escape(title)}</b> · {len(places)} place(s), {sum(len(p.photos) for p in places)} photo(s)
with a position, {without} without</header>
<div id="world">{tiles}<svg width="{SIZE}" height="{SIZE}">{graticule_svg()}</svg>{"".join(markers)}</div>
{"".join(cards)}
<script type="application/json" id="places">{html.escape(json.dumps([
        {"latitude": p.latitude, "longitude": p.longitude, "name": p.name, "photos": len(p.photos)}
        for p in places]))}</script>
</body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return out, places, without
