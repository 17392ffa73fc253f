"""Contact sheets (HTML or PNG) of photos with labels and scores, and the thumbnail helpers they share."""

from __future__ import annotations

import base64
import functools
import html
import io
import itertools
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..config import DEFAULT_MAX_PIXELS
from ..photos.images import load_image
from ..errors import BadImageError, LandmarkError
from ..fsutil import atomic_write_bytes, atomic_write_text

SheetItem = tuple[Path, Sequence[tuple[str, float]]]

THUMB = 160  # HTML thumbnails: small enough that hundreds of photos stay a few MB
TILE = 200  # PNG tiles
MAX_ITEMS = 500  # a sheet of a whole photo library would be hundreds of MB; the first MAX_ITEMS show
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


def thumbnail(path: Path, size: int = THUMB, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The photo upright, shrunk to fit a size x size box; raises BadImageError when unreadable."""
    img = load_image(path, min_side=size, max_pixels=max_pixels)
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


def _thumb_or_placeholder(path: Path, size: int, max_pixels: int) -> tuple[Image.Image, bool]:
    try:
        return thumbnail(path, size, max_pixels), True
    except BadImageError:
        return placeholder(size), False


def _format_score(score: float) -> str:
    return f"{score:.3f}"


def _caption_rows(labels: Sequence[tuple[str, float]], score_name: str | None) -> list[tuple[str, str]]:
    """(label, score text) rows; a named score ("similarity") leads its row, so it never reads as the label's."""
    if score_name is None:
        return [(label, _format_score(score)) for label, score in labels]
    return [(f"looks like {label}" if label else "", f"{score_name} {_format_score(score)}") for label, score in labels]


_SHEET_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .3em}
h2{font-size:1.1em;margin:1.2em 0 .5em}
p.note{color:#666;margin:.2em 0 1em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;overflow:hidden}
figure.query{border:2px solid #d9480f}
figure img{display:block;margin:0 auto;max-width:160px;max-height:160px}
figcaption{font-size:.8em;margin-top:6px;overflow-wrap:anywhere}
figcaption .name{font-weight:600}
figcaption .bad{color:#c92a2a}
figcaption ol{margin:.3em 0 0;padding-left:1.4em}
.badge{display:inline-block;background:#d9480f;color:#fff;border-radius:3px;padding:0 4px;margin-right:4px}
"""


def _html_figure(path: Path, labels: Sequence[tuple[str, float]], max_pixels: int, *, query: bool = False,
                 rank: int | None = None, score_name: str | None = None) -> str:
    img, ok = _thumb_or_placeholder(path, THUMB, max_pixels)
    name = html.escape(path.name)
    href = html.escape(path.absolute().as_uri())  # a link, not a resource: the sheet stays self-contained
    if score_name is None:
        rows = "".join(f"<li>{html.escape(label) or '&mdash;'} <b>{score}</b></li>"
                       for label, score in _caption_rows(labels, None))
        listing = f"<ol>{rows}</ol>" if rows else ""
    else:
        rows = "".join(f"<li><b>{score}</b>{' &middot; ' + html.escape(label) if label else ''}</li>"
                       for label, score in _caption_rows(labels, score_name))
        listing = f'<ul style="list-style:none;padding:0">{rows}</ul>' if rows else ""
    badge = ('<span class="badge">query</span>' if query
             else f'<span class="badge">#{rank}</span>' if rank is not None else "")
    bad = "" if ok else '<div class="bad">unreadable photo</div>'
    return (f'<figure class="{"query" if query else "hit"}"><a href="{href}"><img src="{image_data_uri(img)}" '
            f'alt="{name}"></a><figcaption>{badge}<span class="name" title="{html.escape(str(path))}">{name}</span>'
            f'{bad}{listing}</figcaption></figure>')


def _write_html(path: Path, items: Sequence[SheetItem], title: str, query: Path | None, total: int,
                max_pixels: int, score_name: str | None = None, sections: bool = False) -> None:
    if sections:  # a heading per run of photos sharing their first label; the tiles keep only their score
        runs = itertools.groupby(items, key=lambda item: item[1][0][0] if item[1] else "")
        grids = "".join(f'<h2>{html.escape(label)}</h2><div class="grid">' + "".join(
            _html_figure(Path(p), [("", labels[0][1] if labels else 0.0)], max_pixels, score_name="likeness")
            for p, labels in run) + "</div>" for label, run in runs)
    else:
        figures = [_html_figure(Path(query), [], max_pixels, query=True)] if query is not None else []
        figures += [_html_figure(Path(p), labels, max_pixels, rank=i if score_name else None, score_name=score_name)
                    for i, (p, labels) in enumerate(items, 1)]
        grids = f'<div class="grid">{"".join(figures)}</div>'
    note = f"{len(items)} photos" + (f" (the first {len(items)} of {total})" if total > len(items) else "")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{_SHEET_CSS}</style></head><body><h1>{html.escape(title)}</h1><p class="note">{note}</p>'
            f'{grids}</body></html>\n')
    atomic_write_text(path, page)


def _png_tile(path: Path, labels: Sequence[tuple[str, float]], max_pixels: int, *, query: bool,
              lines: int, rank: int | None = None, score_name: str | None = None) -> Image.Image:
    pad, line_h = 6, 16
    font = load_font(12)
    tile = Image.new("RGB", (TILE, TILE + pad + line_h * (1 + lines)), (255, 255, 255))
    img, ok = _thumb_or_placeholder(path, TILE - 2 * pad, max_pixels)
    tile.paste(img, (pad + (TILE - 2 * pad - img.width) // 2, pad + (TILE - 2 * pad - img.height) // 2))
    draw = ImageDraw.Draw(tile)
    y = TILE
    name = ("query: " if query else f"#{rank} " if rank is not None else "") + path.name + ("" if ok else " (unreadable)")
    draw.text((pad, y), fit_text(draw, name, font, TILE - 2 * pad), fill=(200, 60, 20) if query or not ok else (30, 30, 30),
              font=font)
    for label, score in _caption_rows(list(labels)[:lines], score_name):
        y += line_h
        text = f"{score}  {label}".rstrip()
        draw.text((pad, y), fit_text(draw, text, font, TILE - 2 * pad), fill=(60, 60, 60), font=font)
    border = (217, 72, 15) if query else (210, 210, 210)
    draw.rectangle([0, 0, tile.width - 1, tile.height - 1], outline=border, width=2 if query else 1)
    return tile


def _write_png(path: Path, items: Sequence[SheetItem], title: str, query: Path | None, total: int,
               max_pixels: int, score_name: str | None = None) -> None:
    lines = min(3, max((len(labels) for _, labels in items), default=0))
    tiles = [_png_tile(Path(query), [], max_pixels, query=True, lines=lines)] if query is not None else []
    tiles += [_png_tile(Path(p), labels, max_pixels, query=False, lines=lines, rank=i if score_name else None,
                        score_name=score_name) for i, (p, labels) in enumerate(items, 1)]
    cols = max(1, min(5, len(tiles)))
    rows = max(1, -(-len(tiles) // cols))
    gap, header = 8, 40
    tile_h = tiles[0].height if tiles else TILE
    sheet = Image.new("RGB", (gap + cols * (TILE + gap), header + rows * (tile_h + gap) + gap), (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    heading = title + (f"  (first {len(items)} of {total})" if total > len(items) else "")
    draw.text((gap, 10), fit_text(draw, heading, load_font(18), sheet.width - 2 * gap), fill=(20, 20, 20),
              font=load_font(18))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet.paste(tile, (gap + c * (TILE + gap), header + r * (tile_h + gap)))
    atomic_write_bytes(path, image_bytes(sheet, "PNG"))


def check_sheet_path(path: Path) -> None:
    """Refuse a contact-sheet path that cannot work, before any photo is processed."""
    suffix = path.suffix.lower()
    if suffix not in (".html", ".htm", ".png"):
        raise LandmarkError(f"{path}: a contact sheet is .html or .png; got {suffix or 'no extension'}")
    if path.is_dir():
        raise LandmarkError(f"{path} is a folder; name a .html or .png file for the contact sheet")


def write_sheet(path: Path, items: Sequence[SheetItem], title: str, query: Path | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS, score_name: str | None = None, sections: bool = False) -> Path:
    """Write a contact sheet: `.html` (self-contained, base64 thumbnails) or `.png` (a grid image);
    photos over `max_pixels` (the limit the command was given) show as unreadable tiles.

    `score_name` ("similarity") names the scores and ranks the photos: "#1", "similarity 0.768 · looks like X";
    without it a score reads as its label's probability. `sections` (HTML): a heading per run of photos that
    share their first label (a group), each tile showing only its score."""
    path = Path(path)
    check_sheet_path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    total = len(items)
    shown = list(items)[:MAX_ITEMS]
    if suffix == ".png":
        _write_png(path, shown, title, query, total, max_pixels, score_name)
    else:
        _write_html(path, shown, title, query, total, max_pixels, score_name, sections)
    return path
