"""Decoding photos: EXIF orientation, any mode to RGB, JPEG draft scaling, a pixel-count limit."""

from __future__ import annotations

import io
import mmap
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import DEFAULT_MAX_PIXELS
from ..errors import BadImageError
from .files import HEIF_EXTENSIONS, HEIF_HINT, RAW_EXTENSIONS, register_optional_formats

# We enforce our own limit with a message that names the fix, so Pillow's global check is off.
Image.MAX_IMAGE_PIXELS = None
# A camera's broken EXIF block is common and harmless (the pixels decode); Pillow warns on stderr for each.
# A module-level filter, not catch_warnings(): photos are decoded in several threads at once.
warnings.filterwarnings("ignore", message=r"(Possibly corrupt EXIF|Corrupt EXIF|Metadata Warning)", category=UserWarning)


def _full_scale(arr: np.ndarray, is_float: bool) -> float:
    """The white level of high-bit-depth pixels: 1.0 for float 0..1 data (highlights a little over 1,
    as HDR-ish renders have, clip), else the smallest of 8/10/12/14/16 bits that holds the brightest
    pixel (a 12-bit scan in a 16-bit file is not dark)."""
    peak = float(arr.max(initial=0))
    if is_float and peak <= 4.0:
        return 1.0
    return next((float(2 ** bits - 1) for bits in (8, 10, 12, 14, 16) if peak <= 2 ** bits - 1), peak)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparent areas become white, as viewers show them."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        img = Image.fromarray((arr * (255.0 / _full_scale(arr, img.mode == "F"))).clip(0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img if img.mode == "RGB" else img.convert("RGB")


# JPEG markers that start a frame and carry its size (SOF0-3, 5-7, 9-11, 13-15; not DHT C4, JPG C8, DAC CC).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_RAW_NO_PREVIEW = ("a camera RAW file without an embedded JPEG preview this tool can read; export a JPEG (or "
                   "shoot RAW+JPEG) and give that")


# A RAW file holds a handful of JPEGs (thumbnail, preview, full size) of a few dozen segments each. Past these
# budgets a file is not a camera's: the scan stops, so a crafted file costs milliseconds, not minutes.
RAW_MAX_CANDIDATES = 256  # FF D8 FF start markers tried per file
RAW_MAX_SEGMENTS = 20_000  # JPEG segment headers walked per file, over all candidates
RAW_MAX_SCAN_BYTES = 512 << 20  # the preview lies within the first 512 MiB of any camera's RAW


class _RawScan:
    """One pass over a RAW file with budgets: segments walked, and bytes searched for end markers (a search that
    the previous one covers is answered from it, so a file of many candidates is still searched about once)."""

    def __init__(self, mm: mmap.mmap, limit: int) -> None:
        self.mm, self.limit, self.segments = mm, limit, RAW_MAX_SEGMENTS
        self.search_bytes = 2 * limit
        self._end_from, self._end_at = -1, -1  # the last end-marker search: from where, what it found

    def end_marker(self, pos: int) -> int:
        """The first FF D9 at or after pos (-1: none, or the byte budget is spent and the scan stops)."""
        covered = 0 <= self._end_from <= pos and (self._end_at >= pos or self._end_at < 0)
        if not covered:
            self._end_from, self._end_at = pos, self.mm.find(b"\xff\xd9", pos, self.limit)
            self.search_bytes -= (self._end_at if self._end_at >= 0 else self.limit) - pos
            if self.search_bytes < 0:
                self.segments = 0
        return self._end_at

    def jpeg_at(self, start: int) -> tuple[int, int] | None:
        """(pixels, end offset) of a well-formed baseline/progressive JPEG starting at `start`, else None."""
        mm, pos, size = self.mm, start + 2, None
        while pos + 4 <= self.limit and self.segments > 0:
            self.segments -= 1
            if mm[pos] != 0xFF:
                return None
            marker = mm[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            length = int.from_bytes(mm[pos + 2:pos + 4], "big")
            if length < 2:
                return None
            if marker in _SOF_MARKERS and pos + 9 <= self.limit:
                height, width = int.from_bytes(mm[pos + 5:pos + 7], "big"), int.from_bytes(mm[pos + 7:pos + 9], "big")
                size = width * height
            if marker == 0xDA:  # start of scan: entropy-coded data, in which FF D9 occurs only as the end marker
                if not size:
                    return None
                end = self.end_marker(pos + 2 + length)
                return (size, end + 2) if end > 0 else None
            pos += 2 + length
        return None


def raw_preview(path: Path) -> bytes:
    """The largest JPEG embedded in a camera RAW file (NEF, CR2, ARW, DNG...: each carries a full-size preview).

    The file is scanned through mmap for JPEG start markers and each candidate's segment chain is checked,
    so a 50 MB RAW costs a scan and one copy of its preview, never a read of the whole file into memory.
    The scan is linear in the file and capped (RAW_MAX_*), whatever the bytes.
    """
    best: tuple[int, int, int] | None = None  # pixels, start, end
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size < 4:
            raise BadImageError(f"{path}: {_RAW_NO_PREVIEW}")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            scan = _RawScan(mm, min(len(mm), RAW_MAX_SCAN_BYTES))
            start = mm.find(b"\xff\xd8\xff", 0, scan.limit)
            for _ in range(RAW_MAX_CANDIDATES):
                if start < 0 or scan.segments <= 0:
                    break
                found = scan.jpeg_at(start)
                if found and (best is None or found[0] > best[0]):
                    best = (found[0], start, found[1])
                start = mm.find(b"\xff\xd8\xff", found[1] if found else start + 3, scan.limit)
            if best is None:
                raise BadImageError(f"{path}: {_RAW_NO_PREVIEW}")
            return bytes(mm[best[1]:best[2]])


def _raw_orientation(path: Path) -> int:
    """The EXIF orientation a TIFF-based RAW (NEF, CR2, ARW, DNG...) records for its photo; 1 when unknown."""
    try:
        with Image.open(path) as container:
            return int(container.getexif().get(0x0112, 1))
    except Exception:  # not TIFF-based (CR3, RAF...) or an unusual layout: the preview as it is
        return 1


# What a photo that cannot be opened is told, by the error that stopped it (first match wins).
_WHY_UNREADABLE = ((FileNotFoundError, "file not found"),
                   (PermissionError, "permission denied; make it readable (chmod u+r)"),
                   (IsADirectoryError, "is a folder, not a photo"),
                   (UnidentifiedImageError, "not a readable image (unknown or corrupt format)"))


def load_image(path: str | Path, *, min_side: int | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a photo upright in RGB, at reduced JPEG scale when only `min_side` pixels are needed.

    Raises BadImageError naming the file and the reason for anything that is not a readable image.
    """
    path = Path(path)
    if path.suffix.lower() in HEIF_EXTENSIONS and not register_optional_formats():
        raise BadImageError(f"{path}: {HEIF_HINT}")
    try:
        info = os.stat(path)
        mode = info.st_mode
        if not stat.S_ISREG(mode):
            # Opening a FIFO would wait forever for a writer; folders, sockets and devices aren't photos.
            what = "is a folder" if stat.S_ISDIR(mode) else "is not a regular file (a pipe, socket or device)"
            raise BadImageError(f"{path}: {what}, not a photo")
        if not info.st_size:
            raise BadImageError(f"{path}: an empty file (0 bytes), not a photo; copy it again from where it came from")
        raw = path.suffix.lower() in RAW_EXTENSIONS
        with Image.open(io.BytesIO(raw_preview(path)) if raw else path) as img:
            if raw and 0x0112 not in img.getexif():  # the preview is stored as the sensor sees it
                img.getexif()[0x0112] = _raw_orientation(path)
            width, height = img.size
            if max_pixels and width * height > max_pixels:
                raise BadImageError(
                    f"{path}: {width}x{height} pixels ({width * height / 1e6:.3g} megapixels) is more than the "
                    f"{max_pixels / 1e6:.3g}-megapixel limit; if the file is trusted, run again with "
                    f"--max-pixels {width * height}")
            if min_side and img.format == "JPEG":
                # DCT-domain downscaling: decoding 1/2, 1/4 or 1/8 of the pixels is several
                # times faster. EXIF rotation comes after, and draft keeps both sides >= min_side.
                img.draft("RGB", (min_side, min_side))
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img.load()
            upright = ImageOps.exif_transpose(img)
            return _to_rgb(upright if upright is not None else img)
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        why = next((text for kind, text in _WHY_UNREADABLE if isinstance(exc, kind)), f"cannot decode ({exc})")
        raise BadImageError(f"{path}: {why}") from None
