"""Contact sheets: self-contained HTML with the query first, PNG grids, placeholders for bad photos."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from landmark_search.errors import LandmarkError
from landmark_search.render.sheets import TILE, write_sheet


class _Figures(HTMLParser):
    """Collects (figure class, image bytes, caption text) per <figure>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.figures: list[dict] = []
        self.external: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "figure":
            self.figures.append({"class": a.get("class"), "img": None, "text": ""})
        if tag == "img":
            src = a["src"]
            if not src.startswith("data:image/jpeg;base64,"):
                self.external.append(src)
            else:
                self.figures[-1]["img"] = base64.b64decode(src.split(",", 1)[1])
        if tag in ("link", "script"):
            self.external.append(tag)
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif self.figures:
            self.figures[-1]["text"] += data


@pytest.fixture()
def photos(tmp_path: Path) -> list[Path]:
    out = []
    for i, (colour, size) in enumerate([((200, 30, 30), (400, 300)), ((30, 200, 30), (120, 480))]):
        p = tmp_path / f"photo{i}.jpg"
        Image.new("RGB", size, colour).save(p)
        out.append(p)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    return out + [bad]


def test_html_sheet_is_self_contained_with_query_first(photos: list[Path], tmp_path: Path) -> None:
    good0, good1, bad = photos
    items = [(good1, [("Dome", 0.91), ("<script>alert(1)</script>", 0.05)]), (bad, [("Tower", 0.5)])]
    out = write_sheet(tmp_path / "sheets" / "s.html", items, title="similar to photo0.jpg", query=good0)
    assert out == tmp_path / "sheets" / "s.html"
    text = out.read_text(encoding="utf-8")
    assert "<script>alert" not in text, "labels are escaped"
    page = _Figures()
    page.feed(text)
    assert page.title == "similar to photo0.jpg" and not page.external
    assert [f["class"] for f in page.figures] == ["query", "hit", "hit"]
    assert "photo0.jpg" in page.figures[0]["text"] and "photo1.jpg" in page.figures[1]["text"]
    assert "Dome 0.910" in page.figures[1]["text"] and "<script>alert(1)</script> 0.050" in page.figures[1]["text"]
    assert "unreadable photo" in page.figures[2]["text"] and "Tower 0.500" in page.figures[2]["text"]
    thumbs = [Image.open(io.BytesIO(f["img"])) for f in page.figures]
    assert max(thumbs[0].size) == 160 and thumbs[0].size == (160, 120), "aspect ratio kept"
    assert thumbs[1].size == (40, 160)
    r, g, _ = thumbs[1].convert("RGB").getpixel((20, 80))
    assert g > 150 and r < 80, "the thumbnail is the photo's own pixels"
    assert thumbs[2].size == (160, 160), "a placeholder tile stands in for the broken photo"


def test_png_sheet_grid(photos: list[Path], tmp_path: Path) -> None:
    items = [(p, [("Tower", 0.8), ("Dome", 0.1)]) for p in photos * 2]  # 6 items -> 5 columns, 2 rows
    out = write_sheet(tmp_path / "s.png", items, title="classify")
    with Image.open(out) as img:
        assert img.format == "PNG"
        width, height = img.size
        assert width == 8 + 5 * (TILE + 8)
        tiles_h = height - 40 - 8
        assert tiles_h % 2 == 0 and tiles_h // 2 > TILE, "two rows of tiles with caption lines"
        # First tile shows the red photo.
        r, g, b = img.convert("RGB").getpixel((8 + TILE // 2, 40 + TILE // 2))
        assert r > 150 and g < 80


def test_only_html_or_png(tmp_path: Path) -> None:
    with pytest.raises(LandmarkError, match=r"\.html or \.png"):
        write_sheet(tmp_path / "s.pdf", [], title="x")
    assert not list(tmp_path.iterdir())


def test_empty_sheet_is_still_a_page(tmp_path: Path) -> None:
    out = write_sheet(tmp_path / "empty.html", [], title="nothing")
    assert "0 photos" in out.read_text()
    assert Image.open(write_sheet(tmp_path / "empty.png", [], title="nothing")).size[0] > 0


def test_sheet_follows_the_commands_pixel_limit(photos: list[Path], tmp_path: Path) -> None:
    """A photo the command decoded under a raised --max-pixels shows on the sheet; over the limit it is a tile."""
    big = photos[0]  # red, 400x300 = 120,000 pixels
    tile_colour = []
    for limit in (100_000, 200_000):
        out = write_sheet(tmp_path / f"s{limit}.png", [(big, [("Tower", 0.9)])], title="x", max_pixels=limit)
        with Image.open(out) as img:
            tile_colour.append(img.convert("RGB").getpixel((8 + TILE // 2, 40 + TILE // 2)))
    (r0, g0, _), (r1, g1, _) = tile_colour
    assert not (r0 > 150 and g0 < 80)  # refused: the grey "unreadable" placeholder
    assert r1 > 150 and g1 < 80  # allowed: the red photo
