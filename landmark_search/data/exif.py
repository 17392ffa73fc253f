"""What a photo's header says without decoding its pixels: GPS, capture time, camera, size."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence


@dataclass(frozen=True)
class ExifFacts:
    """EXIF facts of one photo; empty fields where the header says nothing (or cannot be read)."""

    gps: tuple[float, float] | None = None  # (latitude, longitude), decimal degrees
    taken: datetime | None = None  # DateTimeOriginal, else DateTime
    camera: str = ""  # "Make Model"
    width: int = 0
    height: int = 0


def _rational(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        num, den = value
        return float(num) / float(den)


def _dms(values: Sequence[Any], ref: str) -> float:
    deg, minutes, seconds = (_rational(v) for v in values)
    sign = -1.0 if str(ref).upper() in ("S", "W") else 1.0
    return sign * (deg + minutes / 60.0 + seconds / 3600.0)


def read_exif(path: Path) -> ExifFacts:
    """The photo's EXIF facts; never raises (an unreadable header gives empty facts)."""
    from PIL import Image
    from PIL.ExifTags import GPS, IFD, Base

    try:
        with Image.open(path) as img:
            width, height = img.size
            exif = img.getexif()
            gps_ifd = exif.get_ifd(IFD.GPSInfo)
            raw_time = exif.get_ifd(IFD.Exif).get(Base.DateTimeOriginal) or exif.get(Base.DateTime)
            camera = " ".join(str(exif.get(t, "")).strip(" \x00") for t in (Base.Make, Base.Model)).strip()
    except Exception:  # an unreadable photo has no facts to give
        return ExifFacts()
    gps = None
    try:
        if GPS.GPSLatitude in gps_ifd and GPS.GPSLongitude in gps_ifd:
            lat = _dms(gps_ifd[GPS.GPSLatitude], gps_ifd.get(GPS.GPSLatitudeRef, "N"))
            lon = _dms(gps_ifd[GPS.GPSLongitude], gps_ifd.get(GPS.GPSLongitudeRef, "E"))
            if -90 <= lat <= 90 and -180 <= lon <= 180 and (lat, lon) != (0.0, 0.0):
                gps = (lat, lon)
    except (TypeError, ValueError, ZeroDivisionError):
        gps = None
    taken = None
    if raw_time:
        try:
            taken = datetime.strptime(str(raw_time).strip(" \x00")[:19], "%Y:%m:%d %H:%M:%S")
        except ValueError:
            taken = None
    return ExifFacts(gps, taken, camera, width, height)
