"""The image toolbox every page and sheet shares: thumbnails, the placeholder for an unreadable photo, encoding
(JPEG/PNG bytes, data URIs) and text that fits a tile."""

from __future__ import annotations

import base64
import functools
import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..config import DEFAULT_MAX_PIXELS
from ..photos.images import load_image

THUMB = 160  # HTML thumbnails: small enough that hundreds of photos stay a few MB
_PLACEHOLDER_BG = (225, 225, 225)


@functools.lru_cache(maxsize=8)
def load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans from matplotlib (covers accented and non-Latin names), else Pillow's default font."""
    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        try:
            return ImageFont.load_default(size)
        except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
            return ImageFont.load_default()


def thumbnail(path: Path, size: int = THUMB, max_pixels: int = DEFAULT_MAX_PIXELS, *,
              enlarge: bool = True) -> Image.Image:
    """The photo upright, fitted in a size x size box (a smaller photo as it is when not `enlarge`: a large
    view of it would only be blurred and heavier); raises BadImageError when unreadable."""
    img = load_image(path, min_side=size, max_pixels=max_pixels)
    if not enlarge and img.width <= size and img.height <= size:
        return img
    return ImageOps.contain(img, (size, size), Image.Resampling.LANCZOS)


def placeholder(size: int, text: str = "unreadable") -> Image.Image:
    """A grey tile standing in for a photo that cannot be decoded."""
    img = Image.new("RGB", (size, size), _PLACEHOLDER_BG)
    draw = ImageDraw.Draw(img)
    font = load_font(max(10, size // 12))
    draw.line([(0, 0), (size - 1, size - 1)], fill=(200, 200, 200), width=2)
    draw.line([(0, size - 1), (size - 1, 0)], fill=(200, 200, 200), width=2)
    draw.text((size / 2, size / 2), text, fill=(90, 90, 90), font=font, anchor="mm")
    return img


def data_uri(data: bytes, mime: str) -> str:
    """A base64 `data:` URI, so an HTML file needs nothing beside it."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_bytes(img: Image.Image, fmt: str = "JPEG", quality: int = 85) -> bytes:
    """Encode a PIL image as JPEG (RGB, at `quality`) or PNG bytes, optimised."""
    buf = io.BytesIO()
    if fmt.upper() == "JPEG":
        img.convert("RGB").save(buf, format="JPEG", quality=quality, optimize=True)
    else:
        img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def image_data_uri(img: Image.Image, fmt: str = "JPEG", quality: int = 85) -> str:
    """Encode a PIL image as a JPEG (or PNG) data URI."""
    jpeg = fmt.upper() == "JPEG"
    return data_uri(image_bytes(img, fmt, quality), "image/jpeg" if jpeg else "image/png")


def fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """Cut `text` with an ellipsis so that it fits `width` pixels."""
    text = " ".join(text.splitlines())  # a newline in a file name would make Pillow refuse the label
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
