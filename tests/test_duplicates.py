"""`landmark duplicates` and `landmark group` on a handful of generated photos (built-in model, offline)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from typer.testing import CliRunner

from landmark_search.cli import app
from landmark_search.duplicates import PhotoFacts, _keep_order, neighbour_pairs
from landmark_search.grouping import cluster


def scene(seed: int, size=(160, 112)) -> Image.Image:
    """A photo-like picture: soft coloured shapes on a gradient, different for each seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    ramp = np.linspace(0, 1, h)[:, None, None] * rng.uniform(40, 120, 3) + rng.uniform(60, 130, 3)
    img = Image.fromarray(np.broadcast_to(ramp, (h, w, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(9):
        x, y = rng.integers(0, w), rng.integers(0, h)
        r = int(rng.integers(8, 30))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x - r, y - r // 2, x + r, y + r], fill=colour)
    return img.filter(ImageFilter.GaussianBlur(1))


def make_library(root: Path) -> Path:
    """a.jpg, its exact copy (older), a half-size q50 re-encode, a 10 % crop, and two distinct photos."""
    (root / "sub").mkdir(parents=True)
    a = scene(1)
    a.save(root / "a.jpg", quality=92)
    (root / "sub" / "a_copy.jpg").write_bytes((root / "a.jpg").read_bytes())
    os.utime(root / "sub" / "a_copy.jpg", (1_600_000_000, 1_600_000_000))  # the older file of the two
    a.resize((80, 56), Image.LANCZOS).save(root / "sub" / "a_small.jpg", quality=50)
    a.crop((8, 5, 152, 107)).save(root / "a_crop.jpg", quality=85)
    scene(2).save(root / "b.jpg", quality=92)
    scene(3).save(root / "c.jpg", quality=92)
    (root / "sub" / "a_small.jpg.json").write_text('{"mine": 1}')  # a sidecar that must travel with its photo
    return root


@pytest.fixture()
def library(tmp_path) -> Path:
    return make_library(tmp_path / "photos")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> tuple[Path, str, dict]:
    """One library indexed once (the first run's --json), shared by the tests that only read it."""
    tmp = tmp_path_factory.mktemp("dups")
    root, index = make_library(tmp / "photos"), str(tmp / "idx")
    return root, index, json.loads(_run("duplicates", str(root), "--index", index, "--json", "-q").stdout)


def _run(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_tiers_keep_rule_and_json_shape(indexed):
    _, _, out = indexed
    assert set(out) >= {"groups", "photos"} and out["photos"] == 6
    by_tier = {g["tier"]: g for g in out["groups"]}
    assert sorted(by_tier) == ["exact", "near"]
    for g in out["groups"]:
        assert set(g) >= {"tier", "score", "keep", "others"} and 0 < g["score"] <= 1
    exact = by_tier["exact"]
    assert exact["score"] == 1.0
    assert exact["keep"].endswith("sub/a_copy.jpg") and [Path(p).name for p in exact["others"]] == ["a.jpg"]
    assert "oldest" in exact["reason"]
    near = by_tier["near"]
    # the exact pair's keeper stands for both; the largest picture wins over the crop and the small copy
    assert near["keep"].endswith("sub/a_copy.jpg") and "largest" in near["reason"]
    assert sorted(Path(p).name for p in near["others"]) == ["a_crop.jpg", "a_small.jpg"]
    named = {Path(p).name for g in out["groups"] for p in [g["keep"], *g["others"]]}
    assert not named & {"b.jpg", "c.jpg"}  # distinct photos are nobody's duplicates


def test_move_keeps_sidecars_deletes_nothing_and_second_run_finds_nothing(library, tmp_path):
    index = str(tmp_path / "idx")
    before = sorted(p.name for p in library.rglob("*") if p.is_file())
    dest = library / "dupes"  # inside the scanned folder: must not be found again
    result = _run("duplicates", str(library), "--index", index, "--action", "move", str(dest), "-q")
    assert "nothing was deleted" in result.output
    assert (dest / "a.jpg").is_file() and (dest / "a_crop.jpg").is_file()
    assert (dest / "sub" / "a_small.jpg").is_file()
    assert json.loads((dest / "sub" / "a_small.jpg.json").read_text()) == {"mine": 1}
    assert not (library / "sub" / "a_small.jpg").exists() and (library / "sub" / "a_copy.jpg").is_file()
    after = sorted(p.name for p in library.rglob("*") if p.is_file() and p.name != ".lock")
    assert after == before  # every file still exists, somewhere under the library
    again = json.loads(_run("duplicates", str(library), "--index", index, "--action", "move", str(dest), "--json",
                            "-q").stdout)  # the same command again: the target folder is never walked
    assert again["groups"] == [] and again["photos"] == 3


def test_link_makes_review_folders_and_sheet(indexed, tmp_path):
    library, index, _ = indexed  # already indexed: this run embeds nothing
    review, sheet = tmp_path / "review", tmp_path / "dups.html"
    _run("duplicates", str(library), "--index", index, "--tier", "near", "--action", "link",
         "--to", str(review), "--sheet", str(sheet), "-q")
    (box,) = sorted(review.iterdir())
    assert box.name.endswith("-near")
    links = sorted(p.name for p in box.iterdir())
    assert links == ["a_crop.jpg", "a_small.jpg", "keep--a_copy.jpg"]
    assert all((box / n).is_symlink() and (box / n).resolve().is_file() for n in links)
    assert (library / "sub" / "a_small.jpg").is_file()  # links, not moves
    assert sheet.read_text().count("<figure") == 3


def test_keep_rule_largest_then_sharpest_then_oldest():
    paths = [Path(f"/p/{n}.jpg") for n in "abcd"]
    facts = {0: PhotoFacts(100, 100, mtime=5), 1: PhotoFacts(200, 100, mtime=9), 2: PhotoFacts(200, 100, mtime=1),
             3: PhotoFacts(50, 50, mtime=0)}
    order, why = _keep_order([0, 1, 2, 3], paths, facts, lambda i: {1: 900.0, 2: 100.0}[i])
    assert order[:2] == [1, 2] and why.startswith("sharpest")  # same size: the sharper one, though newer
    order, why = _keep_order([0, 1, 2, 3], paths, facts, lambda i: 500.0)
    assert order[0] == 2 and why.startswith("oldest")  # same size, same sharpness: the older file
    order, why = _keep_order([0, 3], paths, facts, None)
    assert order == [0, 3] and why == "largest (100x100)"


def test_neighbour_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x[150:] = x[:150] + 0.1 * rng.standard_normal((150, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    pairs = neighbour_pairs(x, 3, 0.5)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :3]
    brute = {(min(i, j), max(i, j)) for i in range(300) for j in top[i] if sims[i, j] >= 0.5}
    assert set(pairs) == brute
    assert all(abs(pairs[(i, j)] - sims[i, j]) < 1e-4 for i, j in brute)
    with pytest.raises(TypeError):
        neighbour_pairs(x[0], 3, 0.5)


def test_graph_grouping_sees_past_strong_shared_variation():
    """Eight places that differ a little in every direction, photographed with a strong variation along two
    directions shared by all places (light, framing): whitening on the photos weighs every direction the
    same, so the graph method finds the places; plain-PCA HDBSCAN follows the strong variation instead."""
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((8, 16))
    truth = np.repeat(np.arange(8), 12)
    x = centres[truth] + 0.25 * rng.standard_normal((len(truth), 16))
    x[:, :2] += 3.0 * rng.standard_normal((len(truth), 2))
    x = x.astype(np.float32)
    labels = cluster(x, min_size=5)
    assert adjusted_rand_score(truth, labels) > 0.95
    assert adjusted_rand_score(truth, cluster(x, min_size=5, method="hdbscan")) < 0.7
    assert (cluster(x, min_size=5) == labels).all()  # seeded: the same groups every run


def test_auto_groups_every_photo_by_graph_and_unknown_photos_by_density():
    """A few places among many photos of nothing in particular (a trained model's unknown photos): density
    leaves the everyday photos out and keeps the places apart, which "auto" picks there."""
    from sklearn.metrics import adjusted_rand_score

    from landmark_search.grouping import choose_method

    assert choose_method("auto", everything=True) == "graph"
    assert choose_method("auto", everything=False) == "hdbscan"
    assert choose_method("kmeans", everything=False) == "kmeans"
    rng = np.random.default_rng(2)
    places = rng.standard_normal((3, 32))
    x = np.concatenate([places[np.repeat(np.arange(3), 8)] + 0.15 * rng.standard_normal((24, 32)),
                        rng.standard_normal((200, 32))]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = cluster(x, min_size=5, method=choose_method("auto", everything=False))
    assert adjusted_rand_score(np.repeat(np.arange(3), 8), labels[:24]) > 0.95
    assert (labels[24:] < 0).mean() > 0.7  # the everyday photos stay out of the groups (graph: 187 of 200 in)
    assert (cluster(x, min_size=5, method="graph")[24:] >= 0).mean() > 0.5


@pytest.mark.parametrize("method", ["hdbscan", "kmeans"])
def test_cluster_recovers_seeded_blobs(method):
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(1)
    centres = rng.standard_normal((4, 32))
    truth = np.repeat(np.arange(4), 25)
    x = (centres[truth] + 0.15 * rng.standard_normal((100, 32))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = cluster(x, min_size=5, method=method)
    assert adjusted_rand_score(truth, labels) > 0.95
    assert all((labels == g).sum() >= 5 for g in set(labels.tolist()) - {-1})
    assert (cluster(x[:4], min_size=5) == -1).all()  # fewer photos than a group needs: no group


def test_group_cli_links_json_and_rename(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for family in (10, 20):  # two places, four shots each (shifted, zoomed crops of one scene)
        base = scene(family, (240, 168))
        for k in range(4):
            base.crop((6 * k, 4 * k, 160 + 12 * k, 112 + 8 * k)).save(photos / f"f{family}_{k}.jpg", quality=90)
    out = tmp_path / "groups"
    data = json.loads(_run("group", str(photos), "--index", str(tmp_path / "idx"), "--min-size", "3",
                           "--out", str(out), "--json", "-q", "--sheet", str(tmp_path / "groups.html")).stdout)
    assert set(data) == {"groups", "ungrouped"}
    page = (tmp_path / "groups.html").read_text()  # the sheet: a heading per group, its photos under it
    assert [h.split(":")[0] for h in page.split("<h2>")[1:]] == [g["name"] for g in data["groups"]]
    assert data["groups"] and all(set(g) == {"name", "paths"} for g in data["groups"])
    for g in data["groups"]:
        assert len({Path(p).name[:3] for p in g["paths"]}) == 1  # a group never mixes the two places
        folder = out / "train" / g["name"]
        assert sorted(p.name for p in folder.iterdir()) == sorted(Path(p).name for p in g["paths"])
    first = data["groups"][0]["name"]
    _run("group", "--name", first, "Eiffel Tower", "--out", str(out))
    assert (out / "train" / "Eiffel Tower").is_dir() and not (out / "train" / first).exists()
    bad = CliRunner().invoke(app, ["group", "--name", "group-99", "X", "--out", str(out)])
    assert bad.exit_code == 1 and "no group folder" in bad.output
