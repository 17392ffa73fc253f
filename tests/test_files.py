"""Tests for landmark_search.photos.files: walking folders for photos."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from landmark_search.photos import files
from landmark_search.photos.files import (HEIF_EXTENSIONS, PHOTO_EXTENSIONS, heif_available, iter_photos,
                                          register_optional_formats, supported_extensions)
from landmark_search.errors import DataError, LandmarkError


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def rels(found: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in found]


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for rel in [
        "b.jpg",
        "a.PNG",
        "notes.txt",
        "a.PNG.json",
        "b.jpg.xmp",
        ".hidden.jpg",
        ".cache/c.jpg",
        "trip/z.jpeg",
        "trip/y.WebP",
        "trip/deep/x.tif",
        "raw/r.bmp",
        "Ünïcode folder/photo with spaces é.jpg",
    ]:
        touch(root / rel)
    return root


def test_walks_sorted_skips_hidden_sidecars_and_other_files(tree: Path) -> None:
    found = list(iter_photos([tree]))
    assert rels(found, tree) == [
        "a.PNG",
        "b.jpg",
        "raw/r.bmp",
        "trip/y.WebP",
        "trip/z.jpeg",
        "trip/deep/x.tif",
        "Ünïcode folder/photo with spaces é.jpg",
    ]
    assert all(isinstance(p, Path) and p.is_file() for p in found)


def test_order_is_deterministic_and_strings_accepted(tree: Path) -> None:
    assert list(iter_photos([str(tree)])) == list(iter_photos([tree]))


def test_no_recursion(tree: Path) -> None:
    assert rels(list(iter_photos([tree], recursive=False)), tree) == ["a.PNG", "b.jpg"]


def test_exclude_by_name_and_relative_path(tree: Path) -> None:
    found = rels(list(iter_photos([tree], exclude=["*.png", "raw/*", "trip/deep"])), tree)
    assert found == ["b.jpg", "trip/y.WebP", "trip/z.jpeg", "Ünïcode folder/photo with spaces é.jpg"]


def test_exclude_folder_name_prunes_subtree(tree: Path) -> None:
    found = rels(list(iter_photos([tree], exclude=["trip"])), tree)
    assert not any(p.startswith("trip/") for p in found)
    assert "raw/r.bmp" in found


def test_explicit_files_yielded_even_with_other_extension(tree: Path) -> None:
    txt, jpg = tree / "notes.txt", tree / "b.jpg"
    assert list(iter_photos([txt, jpg])) == [txt, jpg]


def test_explicit_sidecar_and_excluded_file_skipped(tree: Path) -> None:
    assert list(iter_photos([tree / "a.PNG.json", tree / "b.jpg.xmp", tree / "a.PNG"], exclude=["a.*"])) == []


def test_explicit_hidden_folder_is_walked(tree: Path) -> None:
    assert rels(list(iter_photos([tree / ".cache"])), tree) == [".cache/c.jpg"]


def test_duplicates_across_arguments_yielded_once(tree: Path) -> None:
    found = list(iter_photos([tree / "trip", tree, tree / "b.jpg", tree / "trip" / "z.jpeg"]))
    assert len(found) == len(set(os.path.realpath(p) for p in found)) == 7
    assert rels(found[:3], tree) == ["trip/y.WebP", "trip/z.jpeg", "trip/deep/x.tif"]


def test_missing_path_raises_data_error_before_yielding(tree: Path) -> None:
    missing = tree / "nope"
    gen = iter_photos([tree, missing])
    with pytest.raises(DataError, match="no such file or folder: .*nope") as info:
        next(gen)
    assert isinstance(info.value, LandmarkError)


def test_symlink_loop_followed_terminates_and_yields_once(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    touch(root / "top.jpg")
    touch(root / "sub" / "inner.jpg")
    (root / "sub" / "back_to_root").symlink_to(root, target_is_directory=True)
    (root / "sub" / "self").symlink_to(root / "sub", target_is_directory=True)
    found = list(iter_photos([root], follow_links=True))
    assert rels(found, root) == ["top.jpg", "sub/inner.jpg"]


def test_linked_folders_only_with_follow_links(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    touch(outside / "far.jpg")
    root = tmp_path / "lib"
    touch(root / "near.jpg")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    assert rels(list(iter_photos([root])), root) == ["near.jpg"]
    assert rels(list(iter_photos([root], follow_links=True)), root) == ["near.jpg", "linked/far.jpg"]


def test_symlinked_files_only_when_target_is_a_file(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    real = touch(tmp_path / "real.jpg")
    (tmp_path / "somedir.jpg").mkdir()
    root.mkdir()
    (root / "good.jpg").symlink_to(real)
    (root / "broken.jpg").symlink_to(tmp_path / "missing.jpg")
    (root / "dirlink.jpg").symlink_to(tmp_path / "somedir.jpg", target_is_directory=True)
    assert rels(list(iter_photos([root])), root) == ["good.jpg"]


def test_two_links_to_one_file_yielded_once(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    real = touch(root / "a.jpg")
    (root / "b.jpg").symlink_to(real)
    assert rels(list(iter_photos([root])), root) == ["a.jpg"]


def test_unlistable_folder_reported_and_skipped(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tree / "trip"
    real_scandir = os.scandir

    def fake_scandir(path: str | os.PathLike[str] = ".") -> object:
        if Path(path) == blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(files.os, "scandir", fake_scandir)
    errors: list[tuple[Path, str]] = []
    found = rels(list(iter_photos([tree], on_error=lambda p, why: errors.append((p, why)))), tree)
    assert not any(p.startswith("trip/") for p in found)
    assert "raw/r.bmp" in found
    assert errors == [(blocked, "Permission denied")]


def test_folder_vanishing_mid_walk_reported(tree: Path) -> None:
    errors: list[Path] = []
    gen = iter_photos([tree], on_error=lambda p, why: errors.append(p))
    first = next(gen)  # the top folder is listed; its subfolders are pending
    assert first.name == "a.PNG"
    (tree / "raw" / "r.bmp").unlink()
    (tree / "raw").rmdir()
    rest = rels(list(gen), tree)
    assert "raw/r.bmp" not in rest and "trip/z.jpeg" in rest
    assert errors == [tree / "raw"]


def test_unlistable_folder_without_callback_is_skipped(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_scandir(path: str | os.PathLike[str] = ".") -> object:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(files.os, "scandir", fake_scandir)
    assert list(iter_photos([tree])) == []


def test_extensions_and_optional_heif() -> None:
    expected = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif", ".nef", ".cr2",
                ".cr3", ".arw", ".dng", ".orf", ".rw2", ".raf", ".pef"}
    assert expected <= PHOTO_EXTENSIONS and all(e in expected or e in files.RAW_EXTENSIONS for e in PHOTO_EXTENSIONS)
    enabled = register_optional_formats()
    if heif_available():
        assert enabled == HEIF_EXTENSIONS and supported_extensions() == PHOTO_EXTENSIONS
    else:
        assert enabled == frozenset() and not (supported_extensions() & HEIF_EXTENSIONS)


def test_heic_is_walked_and_without_its_decoder_skipped_with_the_fix(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from landmark_search.photos import images
    from landmark_search.errors import BadImageError

    touch(tmp_path / "a.HEIC")
    monkeypatch.setattr(files, "heif_available", lambda: False)
    assert list(iter_photos([tmp_path])) == [tmp_path / "a.HEIC"]  # counted, not silently ignored
    monkeypatch.setattr(images, "register_optional_formats", lambda: frozenset())
    with pytest.raises(BadImageError, match=r"a\.HEIC: HEIC/HEIF needs the optional decoder: pip install"):
        images.load_image(tmp_path / "a.HEIC")
