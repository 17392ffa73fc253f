"""Procedurally rendered landmark-like scenes: a tiny, offline stand-in for the landmark dataset."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from landmark_search.errors import DataError
from landmark_search.fsutil import atomic_write_text, read_json

# Bump when rendering changes: an existing dataset with another version is not reused.
SYNTH_VERSION = 1

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]
Point = tuple[float, float]
# A colour is either a fixed RGB or a shade factor applied to the class material.
Colour = RGB | float
# ("poly", points, colour, 0.0) or ("line", points, colour, width); structure units: height 1, base v=0.
Prim = tuple[str, list[Point], Colour, float]


@dataclass(frozen=True)
class SynthSummary:
    """What make_synthetic_dataset wrote."""

    root: Path
    classes: list[str]
    n_train: int
    n_test: int


# ---------------------------------------------------------------- geometry helpers


def _rect(x0: float, v0: float, x1: float, v1: float) -> list[Point]:
    return [(x0, v0), (x1, v0), (x1, v1), (x0, v1)]


def _arc(cx: float, cv: float, rx: float, rv: float, a0: float, a1: float, n: int = 16) -> list[Point]:
    """Points on an elliptical arc from angle a0 to a1 (degrees, counter-clockwise, v up)."""
    return [
        (cx + rx * math.cos(math.radians(a)), cv + rv * math.sin(math.radians(a)))
        for a in np.linspace(a0, a1, n)
    ]


def _ellipse(cx: float, cv: float, rx: float, rv: float, n: int = 20) -> list[Point]:
    return _arc(cx, cv, rx, rv, 0, 360, n)[:-1]


def _poly(points: list[Point], colour: Colour) -> Prim:
    return ("poly", points, colour, 0.0)


# ---------------------------------------------------------------- structures
# Each returns primitives in structure units: u horizontal (centred on 0), v up, height exactly 1.

_DARK: RGB = (45, 40, 40)
_WHITE: RGB = (235, 235, 230)
_GLASS: RGB = (60, 70, 90)


def _tower(rng: np.random.Generator) -> list[Prim]:
    # Eiffel-like: splayed legs, two platforms, tapering shaft and antenna.
    return [
        _poly([(-0.30, 0), (-0.19, 0), (-0.05, 0.42), (-0.12, 0.42)], 1.0),
        _poly([(0.30, 0), (0.19, 0), (0.05, 0.42), (0.12, 0.42)], 0.8),
        _poly(_arc(0, 0.0, 0.17, 0.24, 0, 180) + [(-0.16, 0.30), (0.16, 0.30)][::-1], 0.9),
        _poly(_rect(-0.17, 0.28, 0.17, 0.32), 0.7),
        _poly([(-0.12, 0.32), (0.12, 0.32), (0.035, 0.78), (-0.035, 0.78)], 0.95),
        _poly(_rect(-0.07, 0.60, 0.07, 0.63), 0.7),
        _poly([(-0.035, 0.78), (0.035, 0.78), (0.008, 0.93), (-0.008, 0.93)], 0.9),
        ("line", [(0, 0.92), (0, 1.0)], 0.6, 0.012),
    ]


def _stone_arch(rng: np.random.Generator) -> list[Prim]:
    # Triumphal arch: one polygon whose outline runs around the opening so the sky shows through.
    opening = _arc(0, 0.5, 0.2, 0.2, 0, 180)
    outline = [(-0.5, 0), (-0.5, 0.9), (0.5, 0.9), (0.5, 0), (0.2, 0), *opening, (-0.2, 0)]
    return [
        _poly(outline, 1.0),
        _poly(_rect(-0.54, 0.86, 0.54, 0.92), 0.75),
        _poly(_rect(-0.42, 0.92, 0.42, 1.0), 0.9),
        _poly(_rect(-0.44, 0.12, -0.38, 0.7), 0.8),
        _poly(_rect(0.38, 0.12, 0.44, 0.7), 0.8),
        _poly(_rect(-0.30, 0.76, 0.30, 0.82), 0.7),
    ]


def _dome(rng: np.random.Generator) -> list[Prim]:
    return [
        _poly(_rect(-0.48, 0, 0.48, 0.28), 0.85),
        _poly(_rect(-0.36, 0.28, 0.36, 0.48), 1.0),
        *[_poly(_rect(x - 0.025, 0.32, x + 0.025, 0.44), _GLASS) for x in (-0.25, -0.12, 0.0, 0.12, 0.25)],
        _poly(_arc(0, 0.48, 0.36, 0.36, 0, 180, 24), 1.1),
        _poly(_arc(0, 0.48, 0.36, 0.36, 60, 120, 8) + [(0, 0.48)], 0.9),
        _poly(_rect(-0.04, 0.83, 0.04, 0.94), 0.9),
        _poly(_ellipse(0, 0.965, 0.035, 0.035, 10), 1.1),
    ]


def _pyramid(rng: np.random.Generator) -> list[Prim]:
    apex = float(rng.uniform(-0.15, 0.15))
    return [
        _poly([(-0.8, 0), (0.1, 0), (apex, 1.0)], 1.0),
        _poly([(0.1, 0), (0.8, 0), (apex, 1.0)], 0.7),
    ]


def _suspension_bridge(rng: np.random.Generator) -> list[Prim]:
    prims: list[Prim] = []
    for x in (-0.6, 0.6):
        prims += [
            _poly(_rect(x - 0.06, 0, x - 0.025, 1.0), 1.0),
            _poly(_rect(x + 0.025, 0, x + 0.06, 1.0), 0.85),
            *[_poly(_rect(x - 0.06, v, x + 0.06, v + 0.04), 0.8) for v in (0.55, 0.78, 0.96)],
        ]
    prims.append(_poly(_rect(-1.1, 0.28, 1.1, 0.34), 0.75))
    # Main cable sags between the towers and falls to the anchorages at either end.
    span = [(x, 0.36 + 0.62 * (x / 0.6) ** 2) for x in np.linspace(-0.6, 0.6, 17)]
    prims.append(("line", span, 0.9, 0.02))
    prims.append(("line", [(-1.1, 0.34), (-0.6, 0.98)], 0.9, 0.02))
    prims.append(("line", [(0.6, 0.98), (1.1, 0.34)], 0.9, 0.02))
    for x in np.linspace(-0.5, 0.5, 9):
        prims.append(("line", [(x, 0.34), (x, 0.36 + 0.62 * (x / 0.6) ** 2)], 0.9, 0.006))
    return prims


def _obelisk(rng: np.random.Generator) -> list[Prim]:
    return [
        _poly(_rect(-0.16, 0, 0.16, 0.07), 0.8),
        _poly([(-0.07, 0.07), (0.0, 0.07), (0.0, 0.9), (-0.05, 0.9)], 1.0),
        _poly([(0.0, 0.07), (0.07, 0.07), (0.05, 0.9), (0.0, 0.9)], 0.75),
        _poly([(-0.05, 0.9), (0.0, 0.9), (0.0, 1.0)], 1.1),
        _poly([(0.0, 0.9), (0.05, 0.9), (0.0, 1.0)], 0.85),
    ]


def _lighthouse(rng: np.random.Generator) -> list[Prim]:
    def half_width(v: float) -> float:
        return 0.14 - 0.06 * v / 0.75

    prims: list[Prim] = [_poly(_rect(-0.2, 0, 0.2, 0.05), _DARK)]
    bands = np.linspace(0.05, 0.75, 6)
    for i, (v0, v1) in enumerate(zip(bands[:-1], bands[1:])):
        colour: Colour = 1.0 if i % 2 == 0 else _WHITE
        prims.append(_poly([(-half_width(v0), v0), (half_width(v0), v0), (half_width(v1), v1), (-half_width(v1), v1)], colour))
    prims += [
        _poly(_rect(-0.13, 0.75, 0.13, 0.78), _DARK),
        _poly(_rect(-0.07, 0.78, 0.07, 0.88), (250, 230, 150)),
        _poly([(-0.1, 0.88), (0.1, 0.88), (0.0, 0.98)], 1.0),
        ("line", [(0, 0.97), (0, 1.0)], _DARK, 0.01),
    ]
    return prims


def _pagoda(rng: np.random.Generator) -> list[Prim]:
    prims: list[Prim] = []
    tiers = 5
    v = 0.0
    for t in range(tiers):
        w = 0.34 - t * 0.05
        h = 0.14
        prims.append(_poly(_rect(-w * 0.75, v, w * 0.75, v + h * 0.6), 1.0))
        # Upturned eaves: the roof flares past the wall and lifts at the tips.
        roof = [(-w - 0.06, v + h * 0.72), (-w * 0.75, v + h * 0.6), (w * 0.75, v + h * 0.6),
                (w + 0.06, v + h * 0.72), (w * 0.55, v + h), (-w * 0.55, v + h)]
        prims.append(_poly(roof, _DARK))
        v += h
    prims.append(("line", [(0, v), (0, 1.0)], _DARK, 0.02))
    prims += [_poly(_ellipse(0, vv, 0.03, 0.012, 10), _DARK) for vv in np.linspace(v + 0.04, 0.95, 4)]
    return prims


def _colosseum(rng: np.random.Generator) -> list[Prim]:
    prims: list[Prim] = [
        _poly([(-0.9, 0), (0.9, 0), (0.9, 0.8), (0.0, 0.84), (-0.9, 0.8)], 1.0),
        # A ruined upper tier: taller on one side like the real one.
        _poly([(-0.9, 0.8), (0.0, 0.84), (0.2, 0.84), (0.1, 1.0), (-0.9, 1.0)], 0.9),
    ]
    for row, (v0, v1) in enumerate(((0.05, 0.25), (0.32, 0.52), (0.59, 0.76))):
        for x in np.linspace(-0.78, 0.78, 9):
            w = 0.06
            prims.append(_poly([(x - w, v0), (x + w, v0), *_arc(x, v1 - w, w, w, 0, 180, 6)], 0.45))
        prims.append(_poly(_rect(-0.9, v1 + 0.01, 0.9, v1 + 0.04), 0.75))
    for x in np.linspace(-0.8, -0.05, 8):
        prims.append(_poly(_rect(x - 0.025, 0.86, x + 0.025, 0.94), 0.55))
    return prims


def _windmill(rng: np.random.Generator) -> list[Prim]:
    hub = (0.0, 0.62)
    angle = float(rng.uniform(0, 90))
    prims: list[Prim] = [
        _poly([(-0.14, 0), (0.14, 0), (0.09, 0.58), (-0.09, 0.58)], _WHITE),
        _poly(_rect(-0.03, 0, 0.03, 0.12), _DARK),
        _poly([(-0.11, 0.58), (0.11, 0.58), (0.0, 0.68)], 1.0),
    ]
    for k in range(4):
        a = math.radians(angle + 90 * k)
        dx, dv = math.cos(a), math.sin(a)
        nx, nv = -dv, dx
        # Each sail is a lattice blade starting a little away from the hub.
        p = [(0.05, 0.0), (0.36, 0.0), (0.36, 0.07), (0.05, 0.07)]
        blade = [(hub[0] + dx * s + nx * t, hub[1] + dv * s + nv * t) for s, t in p]
        prims.append(_poly(blade, 1.0))
        prims.append(("line", [hub, (hub[0] + dx * 0.36, hub[1] + dv * 0.36)], _DARK, 0.012))
    prims.append(_poly(_ellipse(*hub, 0.025, 0.025, 10), _DARK))
    return prims


def _statue(rng: np.random.Generator) -> list[Prim]:
    return [
        _poly(_rect(-0.16, 0, 0.16, 0.32), (150, 140, 125)),
        _poly(_rect(-0.19, 0.32, 0.19, 0.36), (130, 120, 110)),
        # Robed figure, raised right arm with torch, crown of spikes.
        _poly([(-0.1, 0.36), (0.1, 0.36), (0.07, 0.72), (-0.07, 0.72)], 1.0),
        _poly([(0.0, 0.36), (0.1, 0.36), (0.07, 0.72), (0.02, 0.72)], 0.8),
        _poly([(0.04, 0.66), (0.08, 0.68), (0.1, 0.92), (0.07, 0.92)], 1.0),
        _poly(_rect(0.065, 0.92, 0.105, 0.95), 0.8),
        _poly(_ellipse(0.085, 0.975, 0.022, 0.025, 10), (240, 190, 70)),
        _poly([(-0.06, 0.6), (-0.01, 0.6), (-0.02, 0.66), (-0.08, 0.66)], 0.75),
        _poly(_ellipse(0.0, 0.77, 0.045, 0.05, 14), 1.0),
        *[_poly([(0.0, 0.8), (0.06 * math.cos(a), 0.8 + 0.06 * math.sin(a)),
                 (0.01 * math.cos(a + 0.5), 0.8 + 0.01 * math.sin(a + 0.5))], 0.9)
          for a in np.radians([30, 60, 90, 120, 150])],
    ]


def _castle_wall(rng: np.random.Generator) -> list[Prim]:
    def crenels(x0: float, x1: float, v: float, n: int, shade: float) -> list[Prim]:
        w = (x1 - x0) / (2 * n - 1)
        return [_poly(_rect(x0 + 2 * i * w, v, x0 + (2 * i + 1) * w, v + 0.06), shade) for i in range(n)]

    gate = _arc(0, 0.22, 0.1, 0.1, 0, 180)
    wall = [(-0.7, 0), (-0.7, 0.5), (0.7, 0.5), (0.7, 0), (0.1, 0), *gate, (-0.1, 0)]
    prims: list[Prim] = [_poly(wall, 1.0), *crenels(-0.5, 0.5, 0.5, 7, 1.0)]
    for x, shade in ((-0.55, 0.85), (0.55, 0.75)):
        prims.append(_poly(_rect(x - 0.15, 0, x + 0.15, 0.92), shade))
        prims += crenels(x - 0.15, x + 0.15, 0.92, 3, shade)
        prims.append(_poly(_rect(x - 0.025, 0.6, x + 0.025, 0.72), _DARK))
    return prims


# Name, natural material colour, drawing function.
_KINDS: tuple[tuple[str, RGB, Callable[[np.random.Generator], list[Prim]]], ...] = (
    ("Tower", (125, 95, 75), _tower),
    ("Stone_Arch", (205, 190, 155), _stone_arch),
    ("Dome", (200, 200, 195), _dome),
    ("Pyramid", (215, 185, 125), _pyramid),
    ("Suspension_Bridge", (195, 75, 45), _suspension_bridge),
    ("Obelisk", (165, 155, 150), _obelisk),
    ("Lighthouse", (190, 40, 40), _lighthouse),
    ("Pagoda", (170, 50, 40), _pagoda),
    ("Colosseum", (200, 170, 130), _colosseum),
    ("Windmill", (120, 80, 55), _windmill),
    ("Statue", (110, 170, 150), _statue),
    ("Castle_Wall", (140, 135, 125), _castle_wall),
)

STRUCTURES: tuple[str, ...] = tuple(name for name, _, _ in _KINDS)

# Extra materials for classes beyond len(STRUCTURES): the same shape in a clearly different colour.
_MATERIALS: tuple[tuple[str, RGB], ...] = (
    ("Azure", (45, 95, 200)),
    ("Golden", (225, 180, 40)),
    ("Jade", (40, 150, 95)),
    ("Violet", (125, 60, 165)),
    ("Charcoal", (50, 50, 55)),
    ("Crimson", (175, 30, 45)),
    ("Ivory", (240, 235, 215)),
)


def _variants(base: RGB) -> list[tuple[str, RGB]]:
    """The kind's own material first, then the extra materials that differ clearly from it."""
    far = [(n, c) for n, c in _MATERIALS if sum((a - b) ** 2 for a, b in zip(c, base)) ** 0.5 > 90]
    return [("", base), *far]


_MAX_CLASSES = len(STRUCTURES) * min(len(_variants(base)) for _, base, _ in _KINDS)


def class_names(classes: int) -> list[str]:
    """Names of the first `classes` synthetic classes, e.g. 'Tower', 'Azure_Tower'."""
    _check_classes(classes)
    names = []
    for i in range(classes):
        kind, base, _ = _KINDS[i % len(_KINDS)]
        prefix = _variants(base)[i // len(_KINDS)][0]
        names.append(f"{prefix}_{kind}" if prefix else kind)
    return names


def _check_classes(classes: int) -> None:
    if not 2 <= classes <= _MAX_CLASSES:
        raise DataError(f"classes must be between 2 and {_MAX_CLASSES}, got {classes}; pass e.g. --classes 6")


# ---------------------------------------------------------------- scene rendering

_SKIES: tuple[tuple[RGB, RGB], ...] = (
    ((70, 130, 210), (175, 210, 240)),  # day
    ((60, 50, 110), (240, 150, 90)),  # dusk
    ((145, 150, 160), (205, 205, 210)),  # overcast
)
_GROUNDS: tuple[RGB, ...] = ((85, 135, 60), (195, 175, 130), (125, 125, 120), (120, 100, 70))


def _jitter(rng: np.random.Generator, rgb: RGB, amount: float) -> RGB:
    r, g, b = (int(np.clip(c + rng.uniform(-amount, amount), 0, 255)) for c in rgb)
    return (r, g, b)


def _scaled(rgb: RGB, factor: float) -> RGB:
    r, g, b = (int(min(255, c * factor)) for c in rgb)
    return (r, g, b)


def _sky(rng: np.random.Generator, s: int) -> Image.Image:
    top, bottom = _SKIES[int(rng.integers(len(_SKIES)))]
    top, bottom = _jitter(rng, top, 20), _jitter(rng, bottom, 20)
    t = np.linspace(0.0, 1.0, s, dtype=np.float32)[:, None]
    column = (1 - t) * np.array(top, np.float32) + t * np.array(bottom, np.float32)
    return Image.fromarray(np.repeat(column[:, None, :], s, axis=1).astype(np.uint8), "RGB")


def _clouds(draw: ImageDraw.ImageDraw, rng: np.random.Generator, s: int, horizon: float) -> None:
    for _ in range(int(rng.integers(0, 5))):
        cx, cy = rng.uniform(0, s), rng.uniform(0.05 * s, 0.6 * horizon)
        shade = int(rng.uniform(215, 250))
        for _ in range(int(rng.integers(3, 6))):
            rx, ry = rng.uniform(0.03, 0.08) * s, rng.uniform(0.02, 0.04) * s
            x, y = cx + rng.uniform(-0.08, 0.08) * s, cy + rng.uniform(-0.02, 0.02) * s
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=(shade, shade, shade))


def _birds(draw: ImageDraw.ImageDraw, rng: np.random.Generator, s: int, horizon: float) -> None:
    for _ in range(int(rng.integers(0, 4))):
        x, y, w = rng.uniform(0, s), rng.uniform(0.05 * s, 0.5 * horizon), rng.uniform(0.01, 0.025) * s
        draw.line([(x - w, y - w / 2), (x, y), (x + w, y - w / 2)], fill=_DARK, width=max(1, s // 128))


def _ground(draw: ImageDraw.ImageDraw, rng: np.random.Generator, s: int, horizon: float) -> None:
    # Distant hills sit behind the structure; low and muted so they never look like a landmark.
    if rng.random() < 0.6:
        xs = np.linspace(-0.1 * s, 1.1 * s, 7)
        ridge = [(float(x), horizon - rng.uniform(0.0, 0.08) * s) for x in xs]
        draw.polygon([(-0.1 * s, horizon + 2), *ridge, (1.1 * s, horizon + 2)], fill=_jitter(rng, (110, 125, 120), 15))
    colour = _jitter(rng, _GROUNDS[int(rng.integers(len(_GROUNDS)))], 15)
    tilt = rng.uniform(-0.03, 0.03) * s
    draw.polygon([(0, horizon - tilt), (s, horizon + tilt), (s, s), (0, s)], fill=colour)
    for _ in range(int(rng.integers(0, 6))):
        x, y = rng.uniform(0, s), rng.uniform(horizon + 0.03 * s, s)
        rx, ry = rng.uniform(0.02, 0.08) * s, rng.uniform(0.005, 0.015) * s
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=_scaled(colour, rng.uniform(0.8, 0.95)))


def _foreground(draw: ImageDraw.ImageDraw, rng: np.random.Generator, s: int, horizon: float) -> None:
    """Trees, bushes, cars and lamp posts: small, class-independent clutter."""
    for _ in range(int(rng.integers(0, 5))):
        x, y = rng.uniform(0, s), rng.uniform(horizon + 0.01 * s, s * 0.98)
        kind = int(rng.integers(4))
        if kind == 0:  # round tree
            h = rng.uniform(0.08, 0.2) * s
            draw.rectangle((x - h * 0.05, y - h * 0.5, x + h * 0.05, y), fill=(90, 60, 40))
            r = h * 0.3
            draw.ellipse((x - r, y - h, x + r, y - h * 0.4), fill=_jitter(rng, (50, 110, 45), 20))
        elif kind == 1:  # bush
            r = rng.uniform(0.02, 0.05) * s
            draw.ellipse((x - 1.5 * r, y - r, x + 1.5 * r, y), fill=_jitter(rng, (60, 120, 50), 20))
        elif kind == 2:  # car
            w = rng.uniform(0.05, 0.09) * s
            draw.rounded_rectangle((x - w, y - w * 0.5, x + w, y - w * 0.12), radius=w * 0.15,
                                   fill=tuple(int(c) for c in rng.integers(30, 230, 3)))
            for dx in (-0.6 * w, 0.6 * w):
                draw.ellipse((x + dx - w * 0.18, y - w * 0.3, x + dx + w * 0.18, y + w * 0.05), fill=_DARK)
        else:  # lamp post
            h = rng.uniform(0.08, 0.16) * s
            draw.line([(x, y), (x, y - h)], fill=_DARK, width=max(1, s // 128))
            draw.ellipse((x - h * 0.06, y - h - h * 0.06, x + h * 0.06, y - h + h * 0.06), fill=(240, 230, 180))


def render_scene(class_index: int, rng: np.random.Generator, size: int = 128) -> tuple[Image.Image, Box]:
    """Render one scene of class `class_index`; return the RGB image and the structure's box (x0, y0, x1, y1).

    The box is in pixels with x1/y1 exclusive, clipped to the image.
    """
    if not 0 <= class_index < _MAX_CLASSES:
        raise DataError(f"class_index must be between 0 and {_MAX_CLASSES - 1}, got {class_index}")
    if size < 32:
        raise DataError(f"size must be at least 32 pixels, got {size}")
    _, base, draw_kind = _KINDS[class_index % len(_KINDS)]
    material = _jitter(rng, _variants(base)[class_index // len(_KINDS)][1], 12)

    s = 2 * size  # draw at 2x, then downsample: cheap anti-aliasing
    horizon = rng.uniform(0.68, 0.85) * s
    image = _sky(rng, s)
    draw = ImageDraw.Draw(image)
    _clouds(draw, rng, s, horizon)
    _birds(draw, rng, s, horizon)
    _ground(draw, rng, s, horizon)

    # Viewpoint: mirror, squash and shear the structure; scale it to 35-65 % of the image height.
    prims = draw_kind(rng)
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    squash = rng.uniform(0.8, 1.0)
    shear = rng.uniform(-0.12, 0.12)
    pts = np.array([p for _, ps, _, _ in prims for p in ps], dtype=np.float64)
    u_min, u_max = pts[:, 0].min() * squash, pts[:, 0].max() * squash
    width_units = (u_max - u_min) + abs(shear)
    height = min(rng.uniform(0.35, 0.65), 0.92 / width_units) * s
    base_y = rng.uniform(horizon + 0.02 * s, 0.95 * s)
    base_y = max(base_y, height + 0.04 * s)  # keep the top inside the frame

    def to_px(u: float, v: float, cx: float) -> Point:
        return (cx + (mirror * u * squash + shear * v) * height, base_y - v * height)

    xs = [to_px(u, v, 0.0)[0] for u, v in pts]
    margin = 0.02 * s
    cx = rng.uniform(margin - min(xs), s - margin - max(xs))

    x_lo = y_lo = math.inf
    x_hi = y_hi = -math.inf
    for kind, ps, colour, width in prims:
        fill = _scaled(material, colour) if isinstance(colour, float) else colour
        px = [to_px(u, v, cx) for u, v in ps]
        pad = 0.0
        if kind == "poly":
            draw.polygon(px, fill=fill)
        else:
            w = max(1, round(width * height))
            draw.line(px, fill=fill, width=w, joint="curve")
            pad = w / 2
        arr = np.array(px)
        x_lo, x_hi = min(x_lo, arr[:, 0].min() - pad), max(x_hi, arr[:, 0].max() + pad)
        y_lo, y_hi = min(y_lo, arr[:, 1].min() - pad), max(y_hi, arr[:, 1].max() + pad)

    _foreground(draw, rng, s, horizon)
    image = image.resize((size, size), Image.Resampling.BOX)

    # Lighting and sensor noise, applied after downsampling because that is 4x cheaper.
    arr = np.asarray(image, dtype=np.float32)
    contrast, brightness = rng.uniform(0.75, 1.2), rng.uniform(-25, 25)
    arr = (arr - 128.0) * contrast + 128.0 + brightness
    arr += rng.normal(0.0, rng.uniform(1.0, 6.0), arr.shape).astype(np.float32)
    image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")

    box = (
        max(0, math.floor(x_lo / 2)),
        max(0, math.floor(y_lo / 2)),
        min(size, math.ceil(x_hi / 2)),
        min(size, math.ceil(y_hi / 2)),
    )
    return image, box


# ---------------------------------------------------------------- dataset on disk


def _split_sizes(per_class: int, test_fraction: float) -> tuple[int, int]:
    n_test = min(per_class - 1, max(1, round(per_class * test_fraction)))
    return per_class - n_test, n_test


def _iter_images(root: Path, names: list[str], n_train: int, n_test: int) -> Iterator[Path]:
    for split, n in (("train", n_train), ("test", n_test)):
        for i, name in enumerate(names):
            for k in range(n):
                yield root / split / f"{i:02d}.{name}" / f"{k}.jpg"


def _write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def make_synthetic_dataset(
    dest: Path,
    classes: int = 6,
    per_class: int = 60,
    image_size: int = 128,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> SynthSummary:
    """Write a deterministic synthetic landmark dataset to dest/{train,test}/<NN.Name>/<k>.jpg."""
    _check_classes(classes)
    if per_class < 2:
        raise DataError(f"per_class must be at least 2 (one train and one test image), got {per_class}")
    if image_size < 32:
        raise DataError(f"image_size must be at least 32 pixels, got {image_size}; try 64 or 128")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}; try 0.2")

    dest = Path(dest)
    names = class_names(classes)
    n_train, n_test = _split_sizes(per_class, test_fraction)
    params = {
        "version": SYNTH_VERSION,
        "classes": classes,
        "per_class": per_class,
        "image_size": image_size,
        "seed": seed,
        "test_fraction": test_fraction,
    }
    summary = SynthSummary(dest, names, n_train * classes, n_test * classes)

    marker = dest / "synth.json"
    if marker.is_file():
        existing = read_json(marker, lambda why: DataError(f"{marker} is unreadable ({why}); delete {dest} and "
                                                           "run again"))
        if existing != params:
            raise DataError(
                f"{dest} holds a synthetic dataset made with other parameters ({existing}); "
                "delete it or choose another folder"
            )
        missing = next((p for p in _iter_images(dest, names, n_train, n_test) if not p.is_file()), None)
        if missing is not None:
            raise DataError(f"{dest} is incomplete ({missing} is missing); delete it and run again")
        return summary
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest} exists and is not an empty folder; choose a new folder for the synthetic dataset")

    # Build next to dest, then rename: dest is either complete or absent, never half-written.
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.synth-", dir=dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the dataset from everyone else once renamed
    try:
        boxes: dict[str, list[int]] = {}
        for split, offset, n in (("train", 0, n_train), ("test", n_train, n_test)):
            for i, name in enumerate(names):
                folder = tmp / split / f"{i:02d}.{name}"
                folder.mkdir(parents=True)
                for k in range(n):
                    # One generator per image: class i looks the same whatever `classes` is.
                    rng = np.random.default_rng([seed, i, offset + k])
                    image, box = render_scene(i, rng, image_size)
                    image.save(folder / f"{k}.jpg", format="JPEG", quality=90)
                    boxes[f"{split}/{i:02d}.{name}/{k}.jpg"] = list(box)
        _write_json(tmp / "boxes.json", boxes)
        _write_json(tmp / "synth.json", params)
        if dest.exists():
            dest.rmdir()  # checked empty above; rename needs it gone on every platform
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return summary
