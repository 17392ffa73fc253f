"""Put the place back on photos that lost their GPS: from a confident landmark, or from a photo of the same trip.

Only a calibrated landmark model geotags (an "unknown" photo never gets a place), and never a photo
that already has a position anywhere a photo app may keep one: its EXIF (for a RAW, its preview's too), the
XMP packet inside the file, or an XMP sidecar this tool did not write, under either name (`IMG.jpg.xmp`, or
Lightroom's `IMG.xmp`). A sidecar that cannot be read counts as holding a position. Photos
taken by the same camera within `spread_minutes` of a placed photo (EXIF DateTimeOriginal) inherit
its place at half its confidence, recorded with the photo it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..photos.exif import ExifFacts, read_exif
from ..errors import SidecarError
from .table import Place, xmp_coordinate
from ..sidecars.xmp import GPS_LATITUDE, GPS_LONGITUDE, NS_PHOTOSHOP, has_own_location, packet_has_position

DEFAULT_SPREAD_MINUTES = 30.0
SPREAD_DISCOUNT = 0.5  # an inherited place is less sure than one seen in the photo itself


@dataclass(frozen=True)
class Candidate:
    """One photo of a tag run: its top landmark (when confident) and where its XMP sidecar is."""

    photo: Path
    xmp: Path
    class_id: str | None  # the confident top class; None for unknown / no tag
    confidence: float | None


def place_photos(candidates: Sequence[Candidate], places: Mapping[str, Mapping[str, Any]],
                 spread_minutes: float = DEFAULT_SPREAD_MINUTES) -> dict[Path, dict[str, Any]]:
    """photo -> the place to write (Place.to_dict() + "confidence", "from"), for photos with no position of their own."""
    own: dict[Path, tuple[datetime | None, str]] = {}
    placed: dict[Path, dict[str, Any]] = {}
    for c in candidates:
        facts = read_exif(c.photo)
        if _has_position(c, facts):
            continue  # never overwrite a position the photo or the user already has
        own[c.photo] = (facts.taken, facts.camera)
        if c.class_id is not None and c.class_id in places:
            placed[c.photo] = {**Place.from_dict(places[c.class_id]).to_dict(),
                               "confidence": round(float(c.confidence or 0.0), 6), "from": "landmark"}
    if spread_minutes > 0:
        sources = [(own[p][0], own[p][1], p, v) for p, v in placed.items() if own[p][0] is not None]
        for photo, (taken, camera) in own.items():
            if photo in placed or taken is None or not sources:
                continue
            near = [((taken - t).total_seconds(), src, v) for t, cam, src, v in sources if cam == camera]
            near = [n for n in near if abs(n[0]) <= spread_minutes * 60]
            if near:
                seconds, src, v = min(near, key=lambda n: abs(n[0]))
                # minutes > 0: the photo it inherits from was taken that long before this one
                placed[photo] = {**v, "confidence": round(v["confidence"] * SPREAD_DISCOUNT, 6),
                                 "from": f"time: {src.name}", "minutes": round(seconds / 60, 1)}
    return placed


def _has_position(c: Candidate, facts: ExifFacts) -> bool:
    if facts.gps is not None or (facts.xmp and packet_has_position(facts.xmp, c.photo)):
        return True
    for sidecar in dict.fromkeys((c.xmp, c.photo.with_name(c.photo.name + ".xmp"), c.photo.with_suffix(".xmp"))):
        try:
            if has_own_location(sidecar):
                return True
        except SidecarError:
            return True
    return False


def xmp_place_properties(place: Mapping[str, Any]) -> dict[str, str]:
    """The XMP properties digiKam, darktable, Lightroom and Immich read for a position and its city/country."""
    props = {GPS_LATITUDE: xmp_coordinate(float(place["latitude"]), "N", "S"),
             GPS_LONGITUDE: xmp_coordinate(float(place["longitude"]), "E", "W"),
             "{http://ns.adobe.com/exif/1.0/}GPSVersionID": "2.2.0.0"}
    if place.get("city"):
        props[f"{{{NS_PHOTOSHOP}}}City"] = str(place["city"])
    if place.get("country"):
        props[f"{{{NS_PHOTOSHOP}}}Country"] = str(place["country"])
    if place.get("name"):
        props["{http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/}Location"] = str(place["name"])
    return props
