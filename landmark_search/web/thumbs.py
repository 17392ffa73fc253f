"""Thumbnails made on demand and kept on disk under the index folder, keyed by the photo's path, size and mtime."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from PIL import Image

from ..config import DEFAULT_MAX_PIXELS
from ..errors import BadImageError
from ..fsutil import atomic_write_bytes

THUMB_SIDE = 320  # a grid tile at 2x pixel density
LARGE_SIDE = 1600  # the photo page: sharp on a laptop screen, a few hundred KB
QUALITY = 82
THUMBS_VERSION = 2  # in every key: thumbnails made by an older rule (v1 enlarged small photos) are made again


def jpeg_bytes(img: Image.Image) -> bytes:
    """A thumbnail's JPEG bytes (images.image_bytes at the web app's quality)."""
    from ..render.images import image_bytes

    return image_bytes(img, "JPEG", QUALITY)


class ThumbCache:
    """`get(path, side)` -> (JPEG bytes, etag); a photo that changed gets a new key, so old entries never lie."""

    def __init__(self, folder: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.folder = folder
        self.max_pixels = max_pixels

    def key(self, path: Path, side: int) -> str:
        st = os.stat(path)
        text = f"{path}\0{side}\0{st.st_size}\0{st.st_mtime_ns}\0v{THUMBS_VERSION}"
        return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()

    def get(self, path: Path, side: int = THUMB_SIDE) -> tuple[bytes, str]:
        """The photo upright (EXIF orientation applied), fitted in side x side; BadImageError when unreadable."""
        from ..render.images import thumbnail

        try:
            etag = self.key(path, side)
        except OSError as exc:
            raise BadImageError(f"{path}: {exc.strerror or exc}") from None
        cached = self.folder / etag[:2] / f"{etag}.jpg"
        try:
            return cached.read_bytes(), etag
        except OSError:
            pass
        data = jpeg_bytes(thumbnail(path, side, self.max_pixels, enlarge=side < LARGE_SIDE))
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cached, data, durable=False)  # a cache: made again if a crash loses it
        except OSError:
            pass  # a read-only index folder still serves thumbnails, made each time
        return data, etag
