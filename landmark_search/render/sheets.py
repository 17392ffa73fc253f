"""Contact sheets of photos with labels and scores: HTML (templates/sheet.html, thumbnails inline) or a PNG grid."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw

from ..config import DEFAULT_MAX_PIXELS
from ..errors import BadImageError, LandmarkError
from ..fsutil import atomic_write_bytes, atomic_write_text
from .images import THUMB, fit_text, image_bytes, image_data_uri, load_font, placeholder, thumbnail
from .templating import environment

SheetItem = tuple[Path, Sequence[tuple[str, float]]]

TILE = 200  # PNG tiles
MAX_ITEMS = 500  # a sheet of a whole photo library would be hundreds of MB; the first MAX_ITEMS show


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


def _figure(path: Path, labels: Sequence[tuple[str, float]], max_pixels: int, *, query: bool = False,
            rank: int | None = None, score_name: str | None = None) -> dict:
    """What sheet.html shows of one photo; the thumbnail is inline, the link (not a resource) is the file."""
    img, ok = _thumb_or_placeholder(path, THUMB, max_pixels)
    return {"query": query, "rank": rank, "ok": ok, "name": path.name, "path": str(path),
            "href": path.absolute().as_uri(), "src": image_data_uri(img), "named": score_name is not None,
            "rows": _caption_rows(labels, score_name)}


def _write_html(path: Path, items: Sequence[SheetItem], title: str, query: Path | None, total: int,
                max_pixels: int, score_name: str | None = None, sections: bool = False) -> None:
    if sections:  # a heading per run of photos sharing their first label; the tiles keep only their score
        runs = itertools.groupby(items, key=lambda item: item[1][0][0] if item[1] else "")
        parts = [{"heading": label, "figures": [
            _figure(Path(p), [("", labels[0][1] if labels else 0.0)], max_pixels, score_name="likeness")
            for p, labels in run]} for label, run in runs]
    else:
        figures = [_figure(Path(query), [], max_pixels, query=True)] if query is not None else []
        figures += [_figure(Path(p), labels, max_pixels, rank=i if score_name else None, score_name=score_name)
                    for i, (p, labels) in enumerate(items, 1)]
        parts = [{"heading": None, "figures": figures}]
    note = f"{len(items)} photos" + (f" (the first {len(items)} of {total})" if total > len(items) else "")
    atomic_write_text(path, environment().get_template("sheet.html").render(title=title, note=note, sections=parts))


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
