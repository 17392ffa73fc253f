"""Where each landmark is, and where a photo was taken: places.csv, EXIF GPS, the shipped table, offline geocoding.

A class's place comes from, in this order: a `places.csv` beside the data (DIR/places.csv) or given
with `landmark train --places FILE`; the EXIF GPS of its training photos (their geometric median,
with the spread in metres); `resources/places_known.csv`, shipped with the package for the original
50-landmark dataset and the 7 wonders (public coordinates, sources in the file). City and country
names come from `reverse_geocoder` (GeoNames cities, offline) and `pycountry`, unless places.csv gives them;
never a web service. The geocoder names the nearest town of 1,000+ people, which for a landmark inside a big
city can be a town across the water (Gateway of India: Uran, not Mumbai); a `city` column corrects it.
"""

from __future__ import annotations

import csv
import functools
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..photos.exif import read_exif
from ..errors import DataError

PLACES_FILE = "places.csv"
KNOWN_PLACES = Path(__file__).parent.parent / "resources" / "places_known.csv"
EARTH_RADIUS_M = 6_371_008.8
# A class needs this many geotagged training photos before their GPS says where it is.
MIN_GPS_PHOTOS = 3
MAX_ROW_CHARS = 4096  # a row of places.csv: a class, two numbers, a name and a country


@dataclass(frozen=True)
class Place:
    """A point on Earth with what is known about it."""

    latitude: float
    longitude: float
    name: str = ""
    city: str = ""
    country: str = ""
    source: str = ""  # "places.csv", "exif", "known", ...
    spread_m: float = 0.0  # how far the photos that placed it lie from the point (median)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Place":
        """Inverse of to_dict."""
        return cls(float(data["latitude"]), float(data["longitude"]), str(data.get("name", "")),
                   str(data.get("city", "")), str(data.get("country", "")), str(data.get("source", "")),
                   float(data.get("spread_m", 0.0)))


# ------------------------------------------------------------------------------------------ places.csv

def read_places_csv(path: Path, *, source: str = PLACES_FILE) -> dict[str, Place]:
    """class -> Place from a CSV with a header `class,latitude,longitude[,name][,city][,country]`; '#' lines are
    comments.

    A bad row is a one-line DataError naming the file, the row and the fix.
    """
    path = Path(path)
    try:
        lines = [line for line in path.read_text(encoding="utf-8-sig").splitlines() if not line.startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc}); "
                        "pass a UTF-8 CSV file with columns class,latitude,longitude") from None
    for number, line in enumerate(lines, start=1):
        if len(line) > MAX_ROW_CHARS:  # whatever csv.field_size_limit() another module set
            raise DataError(f"{path} row {number}: {len(line)} characters long, far more than a place needs "
                            f"(limit {MAX_ROW_CHARS}); each row is class,latitude,longitude[,name][,city][,country]")
    reader = csv.DictReader(lines)
    try:
        header = [h.strip().lower() for h in reader.fieldnames or []]
        if not {"class", "latitude", "longitude"} <= set(header):
            raise DataError(f"{path}: the header must name class,latitude,longitude (optional name,city,country); "
                            f"it has {','.join(header)[:200] or 'nothing'}")
        reader.fieldnames = header
        rows = list(reader)
    except csv.Error as exc:  # a NUL byte, a quote left open over many lines
        raise DataError(f"{path} row {reader.line_num + 1}: not a CSV row ({exc}); each row is "
                        "class,latitude,longitude[,name][,city][,country]") from None
    places: dict[str, Place] = {}
    for row_number, row in enumerate(rows, start=2):
        where = f"{path} row {row_number}"
        cls = (row.get("class") or "").strip()
        if not cls:
            raise DataError(f"{where}: no class name; write the class folder name (e.g. 21.Taj_Mahal)")
        try:
            lat, lon = float(row["latitude"]), float(row["longitude"])
        except (TypeError, ValueError):
            raise DataError(f"{where}: latitude {row.get('latitude')!r}, longitude {row.get('longitude')!r} are not "
                            "numbers; use decimal degrees, south and west negative (e.g. -33.8568,151.2153)") from None
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0) or not (math.isfinite(lat) and math.isfinite(lon)):
            raise DataError(f"{where}: {lat},{lon} is not on Earth; latitude is -90..90 and longitude -180..180 "
                            "(are they swapped?)")
        if cls in places:
            raise DataError(f"{where}: {cls} appears twice; keep one row per class")
        places[cls] = Place(lat, lon, (row.get("name") or "").strip(), (row.get("city") or "").strip(),
                            (row.get("country") or "").strip(), source)
    return places


def _name_key(name: str) -> str:
    """'21.Taj_Mahal', 'Taj Mahal', 'The_Great_Wall_Of_China' -> comparable keys."""
    name = re.sub(r"^\d+\.", "", name).lower()
    name = re.sub(r"^the[\s_]+", "", name)
    return re.sub(r"[^a-z0-9]", "", name)


@functools.lru_cache(maxsize=1)
def _known_table() -> dict[str, Place]:
    return {_name_key(k): v for k, v in read_places_csv(KNOWN_PLACES, source="known").items()}


def known_place(cls: str) -> Place | None:
    """The shipped coordinates of a well-known landmark class, matched by name."""
    return _known_table().get(_name_key(cls))


# ---------------------------------------------------------------------------------------------- EXIF

# ----------------------------------------------------------------------------------------- geometry

def haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in metres."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def _to_xyz(points: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(points[:, 0]), np.radians(points[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def geometric_median(points: Iterable[tuple[float, float]]) -> tuple[float, float, float]:
    """(lat, lon, median distance in metres) of the point least far from all others (Weiszfeld on the sphere).

    Robust: one photo taken at the airport does not move a landmark as a mean would.
    """
    pts = np.asarray(list(points), np.float64)
    xyz = _to_xyz(pts)
    guess = xyz.mean(0)
    for _ in range(100):
        dist = np.linalg.norm(xyz - guess, axis=1)
        weights = 1.0 / np.maximum(dist, 1e-12)
        new = (xyz * weights[:, None]).sum(0) / weights.sum()
        if np.linalg.norm(new - guess) < 1e-12:
            break
        guess = new
    guess /= np.linalg.norm(guess)
    lat, lon = math.degrees(math.asin(guess[2])), math.degrees(math.atan2(guess[1], guess[0]))
    spread = float(np.median([haversine_m((lat, lon), tuple(p)) for p in pts]))
    return lat, lon, spread


def xmp_coordinate(value: float, positive: str, negative: str) -> str:
    """XMP's GPSCoordinate form "DDD,MM.mmmmmmK" (exif:GPSLatitude / exif:GPSLongitude)."""
    ref = positive if value >= 0 else negative
    value = abs(value)
    degrees = int(value)
    minutes = (value - degrees) * 60.0
    return f"{degrees},{minutes:.6f}{ref}"


# --------------------------------------------------------------------------------------- geocoding

def reverse_geocode(points: Sequence[tuple[float, float]]) -> list[tuple[str, str]]:
    """(city, country) of each point from GeoNames cities (offline; loads in ~2 s once per process)."""
    if not points:
        return []
    import contextlib
    import io

    import pycountry
    import reverse_geocoder

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loading formatted geocoded file..."
        found = reverse_geocoder.search([tuple(p) for p in points], mode=1)
    out = []
    for row in found:
        country = pycountry.countries.get(alpha_2=row.get("cc", ""))
        out.append((row.get("name", ""), country.name if country else row.get("cc", "")))
    return out


# ------------------------------------------------------------------------------------- class names

def clean_name(class_id: str) -> str:
    """A name from a class folder: `09.Golden_Gate_Bridge` -> `Golden Gate Bridge`."""
    name = re.sub(r"^\d+[._\-\s]+", "", class_id)
    return re.sub(r"[_\s]+", " ", name).strip() or class_id


def display_names(classes: Sequence[str], places: Mapping[str, Place]) -> list[str]:
    """The one name of each class, for keywords, the XMP location, the map and the web app alike: its place's
    name (the `name` column of places.csv, or the shipped table's) when it has one, else the cleaned folder name."""
    return [places[c].name if c in places and places[c].name else clean_name(c) for c in classes]


# ------------------------------------------------------------------------------------- class places

def resolve_places(classes: Sequence[str], samples: Sequence[tuple[Path, int]], data_dir: Path,
                   places_file: Path | None = None) -> dict[str, Place]:
    """class -> Place for every class that can be placed (see the module docstring for the order)."""
    given: dict[str, Place] = {}
    beside = Path(data_dir) / PLACES_FILE
    if places_file is not None:
        given = read_places_csv(places_file, source=str(Path(places_file).name))
    elif beside.is_file():
        given = read_places_csv(beside)
    unknown = sorted(set(given) - set(classes))
    if unknown:
        path = places_file or beside
        raise DataError(f"{path}: {unknown[0]} is not a class of the training data ({len(unknown)} such rows); "
                        f"use the class folder names under train/ (e.g. {classes[0]})")
    places = dict(given)
    gps_by_class: dict[int, list[tuple[float, float]]] = {}
    for path, label in samples:
        if classes[label] in places:
            continue
        gps = read_exif(path).gps
        if gps is not None:
            gps_by_class.setdefault(label, []).append(gps)
    for label, points in gps_by_class.items():
        if len(points) >= MIN_GPS_PHOTOS:
            lat, lon, spread = geometric_median(points)
            places[classes[label]] = Place(lat, lon, "", "", "", "exif", spread)
    for cls in classes:
        if cls not in places and (known := known_place(cls)) is not None:
            places[cls] = known
    order = [c for c in classes if c in places]
    named = reverse_geocode([(places[c].latitude, places[c].longitude) for c in order])
    return {c: Place(places[c].latitude, places[c].longitude, places[c].name, places[c].city or city,
                     places[c].country or country, places[c].source, places[c].spread_m)
            for c, (city, country) in zip(order, named)}
