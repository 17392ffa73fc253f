"""Is photo B the same picture as photo A? Pixel evidence that embeddings cannot give.

Embeddings put two photos of the same landmark close together whether or not they are the same
picture, so a near duplicate is confirmed on pixels: both photos as 64 px grayscale thumbnails,
uniform borders (screenshot bars, letterboxing) trimmed, then the central 80 % of one is slid
over the other at 7 scales (0.85-1.17, for crops and borders) and scored by normalised
cross-correlation (OpenCV's matchTemplate, TM_CCOEFF_NORMED) of gradient magnitudes. Gradients
ignore brightness, contrast and colour edits and the smooth sky/haze that makes two different
landscape photos correlate on raw pixels. Measured on 120 wonders7 photos x 7 variants + hard
negatives (benchmarks/bench_duplicates.py): at 0.8, pair precision 0.98 / recall 0.98 with
gradients, 0.85 / 0.99 on raw pixels. ~5 ms per pair on one core.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from ..config import DEFAULT_MAX_PIXELS
from ..photos.images import load_image

THUMB_SIDE = 64  # 48 px lost fine detail of crops; 96 px cost 2.2x for the same separation
SCALES = (0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.17)
TEMPLATE_MARGIN = 0.1  # the template is the central 80 %: what a 10 % crop or a border leaves of both
# Below this at scale 1.0 (either way round) a pair is no copy and the other scales are not tried. Measured
# (DEVELOPERS.md, "Duplicates"): copies in the benchmark scored >= 0.43 there and photos with 30 % of their
# area cropped off >= 0.245, while 60 % of pairs of different photos of one landmark scored under 0.2.
EARLY_EXIT = 0.2
_BORDER_STD = 3.0  # a row/column with less grey-level spread than this is a flat border
_FRAME_MIN = 2  # thumbnail rows (3 %) of flat band on each of two opposite sides make a frame
_FLAT_STD = 2.0  # a whole thumbnail this flat (a black frame) is compared by its mean instead

Gray = npt.NDArray[np.float32]


# The matcher's settings: remembered scores (pairmemory) are reused only under the same ones.
MATCHER = (f"gradient-ncc thumb={THUMB_SIDE} scales={','.join(map(str, SCALES))} margin={TEMPLATE_MARGIN} "
           f"border={_BORDER_STD} frame={_FRAME_MIN} early={EARLY_EXIT} v3")


def thumbnail(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Gray:
    """The photo upright, in grayscale, longer side THUMB_SIDE, flat borders trimmed; raises BadImageError."""
    return framed_thumbnail(path, max_pixels)[0]


def framed_thumbnail(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Gray, float]:
    """thumbnail(path) and the share of its area inside a frame: flat bands on two opposite sides (a
    screenshot's bars, a letterbox, a mount), else 1.0. A flat band on one side is the picture's own
    (a clear sky is flat row by row), so it counts as picture: the keep rule must not prefer a crop
    that cut the sky away over the photo that has it."""
    img = load_image(path, min_side=THUMB_SIDE, max_pixels=max_pixels).convert("L")
    img = ImageOps.contain(img, (THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR)
    full = np.asarray(img, dtype=np.float32)
    top, bottom, left, right = _trim_box(full)
    h, w = full.shape
    framed = (top >= _FRAME_MIN and h - bottom >= _FRAME_MIN) or (left >= _FRAME_MIN and w - right >= _FRAME_MIN)
    share = (bottom - top) * (right - left) / full.size if framed else 1.0
    return np.ascontiguousarray(full[top:bottom, left:right]), share


def trim_borders(gray: Gray) -> Gray:
    """Drop flat rows and columns at the edges (at most 2/3 of either side), until none is left."""
    top, bottom, left, right = _trim_box(gray)
    return np.ascontiguousarray(gray[top:bottom, left:right])


def _trim_box(gray: Gray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of what trim_borders keeps."""
    top, bottom, left, right = 0, gray.shape[0], 0, gray.shape[1]
    min_h, min_w = max(8, gray.shape[0] // 3), max(8, gray.shape[1] // 3)
    changed = True
    while changed:
        changed = False
        while bottom - top > min_h and gray[top, left:right].std() < _BORDER_STD:
            top, changed = top + 1, True
        while bottom - top > min_h and gray[bottom - 1, left:right].std() < _BORDER_STD:
            bottom, changed = bottom - 1, True
        while right - left > min_w and gray[top:bottom, left].std() < _BORDER_STD:
            left, changed = left + 1, True
        while right - left > min_w and gray[top:bottom, right - 1].std() < _BORDER_STD:
            right, changed = right - 1, True
    return top, bottom, left, right


def _gradient(gray: Gray) -> Gray:
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1)
    return cv2.magnitude(gx, gy)


def match(a: Gray, b: Gray) -> float:
    """Gradient NCC of the best alignment of either thumbnail's centre inside the other, over SCALES (0..1);
    a pair under EARLY_EXIT at scale 1.0 gets that score without the other scales (it is no copy either way)."""
    if a.std() < _FLAT_STD or b.std() < _FLAT_STD:  # no structure to align: flat frames match by tone
        return float(a.std() < _FLAT_STD and b.std() < _FLAT_STD and abs(float(a.mean()) - float(b.mean())) < 8.0)
    ways = [(_gradient(big), big, small) for big, small in ((a, b), (b, a))]
    best = max([0.0] + [_aligned(*way, 1.0) for way in ways])
    if best < EARLY_EXIT:
        return best
    return max([best] + [_aligned(*way, scale) for way in ways for scale in SCALES if scale != 1.0])


def _aligned(big_grad: Gray, big: Gray, small: Gray, scale: float) -> float:
    """The best gradient NCC of `small`'s centre, resized by `scale` (on top of the size ratio), inside `big`."""
    f = max(big.shape) / max(small.shape) * scale
    size = (max(8, round(small.shape[1] * f)), max(8, round(small.shape[0] * f)))
    resized = cv2.resize(small, size, interpolation=cv2.INTER_AREA)
    h, w = resized.shape
    dy, dx = int(h * TEMPLATE_MARGIN), int(w * TEMPLATE_MARGIN)
    tmpl = resized[dy:h - dy, dx:w - dx]
    if tmpl.shape[0] > big.shape[0] or tmpl.shape[1] > big.shape[1] or tmpl.std() < 1e-3:
        return 0.0
    tmpl_grad = _gradient(resized)[dy:h - dy, dx:w - dx]
    return float(cv2.matchTemplate(big_grad, tmpl_grad, cv2.TM_CCOEFF_NORMED).max())
