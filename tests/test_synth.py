"""Synthetic landmark scenes: determinism, layout, boxes, learnability and argument checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from landmark_search.data import synth
from landmark_search.data.synth import STRUCTURES, class_names, make_synthetic_dataset, render_scene
from landmark_search.errors import DataError


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    kwargs = dict(classes=3, per_class=3, image_size=48)
    a = _files(make_synthetic_dataset(tmp_path / "a", seed=7, **kwargs).root)
    b = _files(make_synthetic_dataset(tmp_path / "b", seed=7, **kwargs).root)
    c = _files(make_synthetic_dataset(tmp_path / "c", seed=8, **kwargs).root)
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.endswith(".jpg"))


def test_layout_counts_and_boxes(tmp_path: Path) -> None:
    summary = make_synthetic_dataset(tmp_path / "ds", classes=3, per_class=5, image_size=64, test_fraction=0.2)
    root = summary.root
    assert summary.classes == ["Tower", "Stone_Arch", "Dome"]
    assert (summary.n_train, summary.n_test) == (12, 3)
    folders = ["00.Tower", "01.Stone_Arch", "02.Dome"]
    assert sorted(p.name for p in (root / "train").iterdir()) == folders
    assert sorted(p.name for p in (root / "test").iterdir()) == folders
    assert sorted(p.name for p in (root / "train" / "01.Stone_Arch").iterdir()) == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    assert [p.name for p in (root / "test" / "02.Dome").iterdir()] == ["0.jpg"]

    boxes = json.loads((root / "boxes.json").read_text())
    images = {p.relative_to(root).as_posix() for p in root.rglob("*.jpg")}
    assert set(boxes) == images
    for rel, (x0, y0, x1, y1) in boxes.items():
        with Image.open(root / rel) as img:
            assert img.size == (64, 64) and img.mode == "RGB"
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64


def test_structure_is_large_and_inside_every_class() -> None:
    assert len(set(STRUCTURES)) == len(STRUCTURES) >= 12
    names = class_names(50)
    assert len(set(names)) == 50 and names[:12] == list(STRUCTURES)
    for c in range(50):
        for k in range(3):
            image, (x0, y0, x1, y1) = render_scene(c, np.random.default_rng([3, c, k]), 96)
            assert image.size == (96, 96)
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
            assert 0.25 <= (y1 - y0) / 96 <= 0.72, (names[c], y1 - y0)


def _render(classes: list[int], n: int, seed: int) -> tuple[list[Image.Image], list[tuple[int, int, int, int]], np.ndarray]:
    images, boxes, labels = [], [], []
    for c in classes:
        for k in range(n):
            image, box = render_scene(c, np.random.default_rng([seed, c, k]), 64)
            images.append(image)
            boxes.append(box)
            labels.append(c)
    return images, boxes, np.array(labels)


def _fit_score(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=1000))
    return model.fit(train, y_train).score(test, y_test)


def test_shapes_are_learnable_from_grayscale_pixels() -> None:
    # 6 kinds, 30 train / 10 test each, on 16x16 grayscale: shape alone must carry the class (chance = 1/6).
    def features(images: list[Image.Image]) -> np.ndarray:
        return np.stack([np.asarray(im.convert("L").resize((16, 16)), np.float32).ravel() for im in images])

    train, _, y_train = _render(list(range(6)), 30, seed=0)
    test, _, y_test = _render(list(range(6)), 10, seed=1)
    assert _fit_score(features(train), y_train, features(test), y_test) > 0.4


def test_material_variants_differ_by_colour_inside_the_box() -> None:
    # Tower and its colour variants share a shape; a colour histogram of the box must tell them apart.
    def features(images: list[Image.Image], boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
        rows = []
        for im, box in zip(images, boxes):
            px = np.asarray(im.crop(box)).reshape(-1, 3) // 64
            rows.append(np.bincount(px[:, 0] * 16 + px[:, 1] * 4 + px[:, 2], minlength=64) / len(px))
        return np.stack(rows)

    classes = [0, len(STRUCTURES), 2 * len(STRUCTURES), 3 * len(STRUCTURES)]
    train, train_boxes, y_train = _render(classes, 30, seed=0)
    test, test_boxes, y_test = _render(classes, 10, seed=1)
    assert _fit_score(features(train, train_boxes), y_train, features(test, test_boxes), y_test) > 0.75


def test_existing_matching_dataset_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "ds"
    first = make_synthetic_dataset(dest, classes=2, per_class=2, image_size=32)
    before = _files(dest)

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("render_scene called for an existing dataset")

    monkeypatch.setattr(synth, "render_scene", fail)
    assert make_synthetic_dataset(dest, classes=2, per_class=2, image_size=32) == first
    assert _files(dest) == before
    with pytest.raises(DataError, match="other parameters"):
        make_synthetic_dataset(dest, classes=3, per_class=2, image_size=32)
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temporary folders left behind


def test_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "mine.jpg").write_bytes(b"precious")
    with pytest.raises(DataError, match="not an empty folder"):
        make_synthetic_dataset(tmp_path / "photos", classes=2, per_class=2, image_size=32)
    assert _files(tmp_path / "photos") == {"mine.jpg": b"precious"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(classes=1), "classes must be between 2"),
        (dict(classes=10_000), "classes must be between 2"),
        (dict(per_class=1), "per_class must be at least 2"),
        (dict(image_size=16), "image_size must be at least 32"),
        (dict(test_fraction=1.0), "test_fraction must be between 0 and 1"),
    ],
)
def test_argument_validation(tmp_path: Path, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(DataError, match=message):
        make_synthetic_dataset(tmp_path / "ds", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "ds").exists()
