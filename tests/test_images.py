"""Decoding: EXIF rotation, odd modes to RGB, bad files named, bomb limit, JPEG draft."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from landmark_search.data.images import load_image
from landmark_search.errors import BadImageError


def _photo(w=120, h=80) -> Image.Image:
    rng = np.random.default_rng(0)
    arr = np.zeros((h, w, 3), np.uint8)
    arr[: h // 2, : w // 3] = (255, 0, 0)  # a red block top-left makes orientation visible
    arr[h // 2:, w // 3:] = rng.integers(0, 255, (h - h // 2, w - w // 3, 3))
    return Image.fromarray(arr)


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    upright = _photo()
    upright.save(tmp_path / "upright.png")
    # Store the pixels rotated and tag them with orientation 6 (rotate 90 CW to view).
    rotated = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(tmp_path / "rotated.png", exif=exif)
    a = np.asarray(load_image(tmp_path / "upright.png"), dtype=int)
    b = np.asarray(load_image(tmp_path / "rotated.png"), dtype=int)
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 1


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "I;16", "1"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    img = _photo()
    if mode == "I;16":
        arr = (np.asarray(img.convert("L"), dtype=np.uint16) * 257)
        img = Image.fromarray(arr)  # uint16 -> mode I;16
        path = tmp_path / "x.png"
    else:
        img = img.convert(mode)
        path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (120, 80)
    if mode == "I;16":  # 16-bit must be scaled, not clipped to white
        assert 20 < np.asarray(out).mean() < 235


def test_transparent_png_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    img.save(tmp_path / "t.png")
    assert np.asarray(load_image(tmp_path / "t.png")).min() == 255


def test_gif_first_frame(tmp_path):
    frames = [Image.new("P", (10, 10), i) for i in (1, 2)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert load_image(tmp_path / "a.gif").size == (10, 10)


@pytest.mark.parametrize("content, reason", [(b"", "not a readable image"), (b"hello, I am text", "not a readable image")])
def test_non_images_are_named_errors(tmp_path, content, reason):
    path = tmp_path / "bad photo é.jpg"
    path.write_bytes(content)
    with pytest.raises(BadImageError, match=reason) as err:
        load_image(path)
    assert str(path) in str(err.value)


def test_truncated_jpeg_is_an_error(tmp_path):
    buf = io.BytesIO()
    _photo(400, 300).save(buf, "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(BadImageError, match="cut.jpg"):
        load_image(path)


def test_decompression_bomb_refused_with_the_fix(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (5000, 4000)).save(path)  # 20 MP of zeros compresses to a few KB
    with pytest.raises(BadImageError, match="--max-pixels"):
        load_image(path, max_pixels=10_000_000)
    assert load_image(path, max_pixels=30_000_000).size == (5000, 4000)


def test_jpeg_draft_decodes_fewer_pixels_but_enough(tmp_path):
    path = tmp_path / "big.jpg"
    _photo(2000, 1500).save(path, quality=90)
    img = load_image(path, min_side=256)
    assert min(img.size) >= 256 and img.size[0] <= 500
