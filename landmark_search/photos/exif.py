"""What a photo's header says without decoding its pixels: GPS, capture time, camera, size, JPEG quality, the
XMP packet inside it.

A camera RAW that Pillow cannot open as TIFF (RAF, CR3...) or whose own header has no GPS gives the GPS of its
embedded JPEG preview, where such cameras write it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class ExifFacts:
    """EXIF facts of one photo; empty fields where the header says nothing (or cannot be read)."""

    gps: tuple[float, float] | None = None  # (latitude, longitude), decimal degrees
    taken: datetime | None = None  # DateTimeOriginal, else DateTime
    camera: str = ""  # "Make Model"
    width: int = 0
    height: int = 0
    quality: int | None = None  # JPEG quality estimated from the quantisation tables (None: not a JPEG)
    xmp: bytes = b""  # the XMP packet inside the file (JPEG APP1, TIFF tag 700, PNG/WebP chunk), unparsed

    @property
    def has_camera_facts(self) -> bool:
        """The header still says which camera took the photo, or when (a stripped copy says neither)."""
        return bool(self.camera or self.taken)


# The IJG (libjpeg) example tables of the JPEG standard (Annex K), in natural (row-major) order: every
# encoder that takes a 1-100 quality (libjpeg, Pillow, ImageMagick, Photoshop's export in part) scales these.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)
_IJG_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, dtype=np.float64)


def _ijg_tables(base: np.ndarray) -> np.ndarray:
    """(100, 64): the table libjpeg writes at each quality 1..100 (jcparam.c: jpeg_quality_scaling)."""
    q = np.arange(1, 101, dtype=np.float64)[:, None]
    scale = np.where(q < 50, np.floor(5000 / q), 200 - 2 * q)
    return np.clip(np.floor((base * scale + 50) / 100), 1, 255)


_SCALED = (_ijg_tables(_IJG_LUMA), _ijg_tables(_IJG_CHROMA))


def jpeg_quality(tables: dict[int, Sequence[int]]) -> int | None:
    """The 1-100 quality whose scaled standard tables come closest to `tables` (Pillow's `quantization`,
    natural order); None without a luminance table. Exact for libjpeg-family encoders; for a camera's own
    tables it is the nearest standard quality, as ImageMagick's and exiftool's estimates are."""
    luma = tables.get(0)
    if luma is None or len(luma) != 64:
        return None
    error = np.abs(_SCALED[0] - np.asarray(luma, dtype=np.float64)).sum(axis=1)
    chroma = tables.get(1)
    if chroma is not None and len(chroma) == 64:
        error = error + np.abs(_SCALED[1] - np.asarray(chroma, dtype=np.float64)).sum(axis=1)
    # the highest quality among equally close ones: at q 98-100 several qualities write all-ones tables
    best = error.min()
    return int(np.nonzero(error == best)[0].max()) + 1


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
    from .files import RAW_EXTENSIONS

    facts = _read_facts(path)
    if facts.gps is None and Path(path).suffix.lower() in RAW_EXTENSIONS:
        import io

        from ..errors import BadImageError
        from .images import raw_preview

        try:
            preview = _read_facts(io.BytesIO(raw_preview(Path(path))))
        except (BadImageError, OSError):
            return facts
        facts = replace(facts, gps=preview.gps, taken=facts.taken or preview.taken, camera=facts.camera or preview.camera,
                        width=facts.width or preview.width, height=facts.height or preview.height,
                        xmp=facts.xmp or preview.xmp)
    return facts


def _read_facts(source: Any) -> ExifFacts:
    from PIL import Image
    from PIL.ExifTags import GPS, IFD, Base

    try:
        with Image.open(source) as img:
            width, height = img.size
            exif = img.getexif()
            gps_ifd = exif.get_ifd(IFD.GPSInfo)
            raw_time = exif.get_ifd(IFD.Exif).get(Base.DateTimeOriginal) or exif.get(Base.DateTime)
            camera = " ".join(str(exif.get(t, "")).strip(" \x00") for t in (Base.Make, Base.Model)).strip()
            tables = getattr(img, "quantization", None) if img.format == "JPEG" else None
            xmp = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp") or exif.get(0x02BC) or b""
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
    return ExifFacts(gps, taken, camera, width, height, jpeg_quality(tables) if tables else None, _packet(xmp))


def _packet(value: Any) -> bytes:
    """An XMP packet as Pillow hands it over: bytes (JPEG, WebP, TIFF), str (PNG), a tuple of byte values."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace")
    try:
        return bytes(value) if isinstance(value, (bytes, bytearray, tuple)) else b""
    except (TypeError, ValueError):  # a tuple of something other than byte values
        return b""
