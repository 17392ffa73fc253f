"""Decoding: EXIF rotation, odd modes to RGB, bad files named, bomb limit, JPEG draft."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from landmark_search.photos.images import load_image
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


@pytest.mark.parametrize("kind,scale", [("float 0..1 TIFF", 1 / 255), ("float 0..255 TIFF", 1.0),
                                        ("float 0..1 TIFF, highlights over 1", 1.02 / 255),
                                        ("12-bit in 16-bit PNG", 4095 / 255), ("16-bit PNG", 65535 / 255)])
def test_high_bit_depth_keeps_its_brightness(tmp_path, kind, scale):
    """Float and 10-16 bit photos come out as bright as their 8-bit version, not black or clipped."""
    gray = np.asarray(_photo().convert("L"), dtype=np.float64)
    if "float" in kind:
        img, path = Image.fromarray((gray * scale).astype(np.float32), "F"), tmp_path / "x.tif"
    else:
        img, path = Image.fromarray(np.round(gray * scale).astype(np.uint16)), tmp_path / "x.png"
    img.save(path)
    out = np.asarray(load_image(path).convert("L"), dtype=np.float64)
    assert np.abs(out - gray).mean() < 2.0, kind


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


@pytest.mark.parametrize("content, reason", [(b"", r"an empty file \(0 bytes\)"), (b"hello, I am text", "not a readable image")])
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


@pytest.mark.parametrize("size", [(284, 177), (177, 284), (300, 300), (256, 400), (1601, 1203), (4000, 3000), (230, 1000)])
def test_prepare_uint8_matches_resize_then_center_crop(size):
    """The one-pass box resize gives EvalPreset's pixels: torchvision Resize(256) -> CenterCrop(224)."""
    from torchvision.transforms import v2 as T

    from landmark_search.embeddings import prepare_uint8

    rng = np.random.default_rng(sum(size))
    # smooth content plus noise, so a shifted or mis-scaled crop shows up as a large difference
    # float32 throughout: the 12-megapixel case stays quick
    yy, xx = np.arange(size[1], dtype=np.float32)[:, None], np.arange(size[0], dtype=np.float32)[None, :]
    base = np.stack(np.broadcast_arrays(np.sin(xx / 7), np.cos(yy / 5), np.sin((xx + yy) / 11)), -1) * 100 + 128
    noise = rng.standard_normal(base.shape, dtype=np.float32) * 8
    img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    expected = np.asarray(T.Compose([T.Resize(256, antialias=True), T.CenterCrop(224)])(img)).astype(int)
    got = prepare_uint8(img, 224)
    assert got.shape == (3, 224, 224) and got.dtype.is_floating_point is False
    diff = np.abs(got.permute(1, 2, 0).numpy().astype(int) - expected)
    assert diff.max() <= 1 and diff.mean() < 0.05


def test_normalize_uint8_is_torchvisions_to_float_then_normalize_in_any_layout():
    """The numpy path for CPU batches gives EvalPreset's numbers and keeps channels_last."""
    import torch
    from torchvision.transforms import v2 as T

    from landmark_search.data.transforms import normalize_uint8

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    images = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (2, 3, 9, 7), dtype=np.uint8))
    expected = T.Normalize(mean, std)(T.ToDtype(torch.float32, scale=True)(images))
    for x in (images, images.contiguous(memory_format=torch.channels_last)):
        got = normalize_uint8(x, mean, std)
        assert got.dtype == torch.float32 and got.is_contiguous(memory_format=torch.channels_last) == (x is not images)
        assert torch.allclose(got, expected, atol=1e-5)


def test_decode_threads_keep_order_report_failures_and_stay_bounded(tmp_path):
    import threading

    from landmark_search.embeddings import _decoded_batches, _PhotoDecoder

    paths = []
    for i in range(23):
        path = tmp_path / f"p{i:02d}.jpg"
        if i % 7 == 3:
            path.write_bytes(b"not a jpeg")
        else:
            Image.new("RGB", (40 + i, 30), (i * 10, 0, 0)).save(path)
        paths.append(path)

    class Counting(_PhotoDecoder):
        started = 0
        lock = threading.Lock()

        def __getitem__(self, index):
            with self.lock:
                Counting.started += 1
            return super().__getitem__(index)

    inline = list(_decoded_batches(_PhotoDecoder(paths, 32, 0), 4, threads=0))
    decoder = Counting(paths, 32, 0)
    batches = _decoded_batches(decoder, 4, threads=2)
    first = next(batches)
    assert Counting.started <= 3 * 4  # two batches ahead at most, never the whole folder
    threaded = [first, *batches]
    assert len(threaded) == len(inline) == 6
    for (idx_a, t_a, bad_a), (idx_b, t_b, bad_b) in zip(inline, threaded):
        assert idx_a == idx_b and [i for i, _ in bad_a] == [i for i, _ in bad_b]
        assert torch.equal(t_a, t_b)
    assert [i for batch in threaded for i, _ in batch[2]] == [3, 10, 17]
    assert all(str(paths[i]) in reason for batch in threaded for i, reason in batch[2])
    assert idx_b == [20, 21, 22] and t_b.shape[1:] == (3, 32, 32)
    assert abs(int(t_b[-1, 0, 0, 0]) - 220) <= 3  # photo 22's red, so the pixels follow their paths
