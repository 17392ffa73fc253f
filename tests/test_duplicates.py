"""`landmark duplicates` and `landmark group` on a handful of generated photos (built-in model, offline)."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from landmark_search.cli import app
from conftest import exiftool_json, one_line_error, scene
from landmark_search.photos.exif import read_exif
from landmark_search.curation.duplicates import PhotoFacts, keep_key, neighbour_pairs, stars
from landmark_search.curation.grouping import cluster


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


def test_copies_form_one_group_with_one_keeper_and_json_shape(indexed):
    _, _, out = indexed
    assert set(out) >= {"groups", "photos", "pixel_checks"} and out["photos"] == 6
    (group,) = out["groups"]  # exact and near copies of one picture: one group, one keeper
    assert group["tier"] == "near" and 0 < group["score"] <= 1
    # a.jpg and its exact copy tie on everything the header and the file say but time: the older file; the
    # reason names what set it above the best copy that is not its bytes (the crop: fewer pixels)
    assert group["keep"].endswith("sub/a_copy.jpg") and group["reason"] == "most pixels (160x112 vs 144x102)"
    assert sorted(Path(p).name for p in group["others"]) == ["a.jpg", "a_crop.jpg", "a_small.jpg"]
    members = {Path(m["path"]).name: m for m in group["members"]}
    assert [m["relation"] for m in group["members"]][0] == "keep"
    assert members["a.jpg"]["relation"] == "exact" and members["a_small.jpg"]["relation"] == "near"
    assert members["a_small.jpg"]["jpeg_quality"] == 50 and members["a_copy.jpg"]["jpeg_quality"] == 92
    assert (members["a_small.jpg"]["width"], members["a_small.jpg"]["height"]) == (80, 56)
    assert members["a_crop.jpg"]["lost_on"] == "pixels" and members["a.jpg"]["lost_on"] == "age"
    assert all(m["file_size"] > 0 for m in group["members"])
    named = {Path(p).name for g in out["groups"] for p in [g["keep"], *g["others"]]}
    assert not named & {"b.jpg", "c.jpg"}  # distinct photos are nobody's duplicates


def _derivatives(root: Path) -> dict[str, Path]:
    """An original with camera EXIF and its usual copies: exact, q50, q75, half size, 10 % crop, EXIF stripped
    (re-saved at the original's quality), and a screenshot of it (more pixels, grey bars)."""
    root.mkdir(parents=True)
    img = scene(11, (320, 224))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "EOS 5D"
    exif[0x0132] = "2021:06:01 10:00:00"
    out = {n: root / f"{n}.jpg" for n in ("original", "exact", "q50", "q75", "half", "crop", "stripped", "shot")}
    img.save(out["original"], quality=90, exif=exif.tobytes())
    out["exact"].write_bytes(out["original"].read_bytes())
    img.save(out["q50"], quality=50)
    img.save(out["q75"], quality=75, exif=exif.tobytes())
    img.resize((160, 112), Image.LANCZOS).save(out["half"], quality=90)
    img.crop((10, 7, 310, 217)).save(out["crop"], quality=90)
    img.save(out["stripped"], quality=90)
    shot = Image.new("RGB", (340, 300), (250, 250, 250))
    shot.paste((20, 20, 20), (0, 0, 340, 14))
    shot.paste(img, (10, 30))
    shot.save(out["shot"], quality=95)
    for n, p in enumerate(out.values()):  # the original is the oldest file; every copy came later
        os.utime(p, (1_600_000_000 + n, 1_600_000_000 + n))
    return out


def test_the_keeper_is_the_original_never_a_derivative(tmp_path):
    files = _derivatives(tmp_path / "photos")
    out = json.loads(_run("duplicates", str(tmp_path / "photos"), "--index", str(tmp_path / "idx"), "--json",
                          "-q").stdout)
    (group,) = out["groups"]
    assert Path(group["keep"]) == files["original"], group
    assert {Path(p).name for p in group["others"]} == {p.name for n, p in files.items() if n != "original"}
    lost = {Path(m["path"]).stem: m["lost_on"] for m in group["members"]}
    assert lost == {"original": None, "exact": "age", "q50": "quality", "q75": "quality",
                    "half": "pixels", "crop": "pixels", "stripped": "camera facts", "shot": "pixels"}
    quality = {Path(m["path"]).stem: m["jpeg_quality"] for m in group["members"]}
    assert quality["original"] == 90 and quality["q50"] == 50 and quality["q75"] == 75 and quality["shot"] == 95

    # pixel checks are remembered per content: a second run checks nothing, a new copy only its own pairs
    assert out["pixel_checks"] > 0
    again = json.loads(_run("duplicates", str(tmp_path / "photos"), "--index", str(tmp_path / "idx"), "--json",
                            "-q").stdout)
    assert again["pixel_checks"] == 0 and again["groups"] == out["groups"]
    # copies share the original's capture time and camera: they are copies, never a same-scene burst
    scenes = json.loads(_run("duplicates", str(tmp_path / "photos"), "--index", str(tmp_path / "idx"), "--tier",
                             "same_scene", "--json", "-q").stdout)
    assert scenes["groups"] == []
    shutil.copy(files["q75"], tmp_path / "photos" / "renamed.jpg")  # known bytes under a new name
    scene(11, (320, 224)).save(tmp_path / "photos" / "q60.jpg", quality=60)
    third = json.loads(_run("duplicates", str(tmp_path / "photos"), "--index", str(tmp_path / "idx"), "--json",
                            "-q").stdout)
    assert 0 < third["pixel_checks"] <= 10  # q60's candidates only (10 neighbours at most)
    (group,) = third["groups"]
    assert Path(group["keep"]) == files["original"] and {"renamed.jpg", "q60.jpg"} <= {Path(p).name for p in
                                                                                       group["others"]}


def test_a_stopped_run_keeps_the_pixel_checks_it_made(tmp_path, monkeypatch):
    from landmark_search.curation import duplicates
    from landmark_search.curation.pairmemory import PairMemory

    root = make_library(tmp_path / "photos")
    full = json.loads(_run("duplicates", str(root), "--index", str(tmp_path / "other"), "--json", "-q").stdout)
    assert full["pixel_checks"] >= 4
    monkeypatch.setattr(duplicates, "REMEMBER_EVERY", 2)
    real, chunks = PairMemory.remember, []

    def stopping(self, scores, kept):
        chunks.append(len(scores))
        if len(chunks) > 1:  # the user presses Ctrl-C once the first chunk is written
            raise KeyboardInterrupt
        return real(self, scores, kept)

    monkeypatch.setattr(PairMemory, "remember", stopping)
    stopped = CliRunner().invoke(app, ["duplicates", str(root), "--index", str(tmp_path / "idx"), "--json", "-q"])
    assert stopped.exit_code != 0 and chunks[0] == 2
    monkeypatch.setattr(PairMemory, "remember", real)
    again = json.loads(_run("duplicates", str(root), "--index", str(tmp_path / "idx"), "--json", "-q").stdout)
    assert again["pixel_checks"] == full["pixel_checks"] - 2  # the first chunk was not checked again
    assert again["groups"] == json.loads(_run("duplicates", str(root), "--index", str(tmp_path / "other"), "--json",
                                              "-q").stdout)["groups"]


def test_keep_rule_order():
    """Picture pixels, then JPEG quality, then camera facts, then file size, then capture time."""
    def best(*candidates: PhotoFacts) -> int:
        return min(range(len(candidates)), key=lambda i: keep_key(candidates[i], Path(f"/p/{i}.jpg")))

    taken = datetime(2020, 1, 1)
    assert best(PhotoFacts(100, 100, quality=50), PhotoFacts(200, 100, quality=40)) == 1
    assert best(PhotoFacts(200, 100, quality=50, file_size=9), PhotoFacts(200, 100, quality=92, file_size=5)) == 1
    assert best(PhotoFacts(200, 100, quality=92, file_size=9), PhotoFacts(200, 100, quality=92, file_size=5,
                                                                          camera="Canon")) == 1
    assert best(PhotoFacts(200, 100, quality=92, file_size=5), PhotoFacts(200, 100, quality=92, file_size=9)) == 1
    assert best(PhotoFacts(200, 100, file_size=9, mtime=5), PhotoFacts(200, 100, file_size=9, mtime=1)) == 1
    assert best(PhotoFacts(200, 100, taken=taken, mtime=1), PhotoFacts(200, 100, taken=taken.replace(year=2019),
                                                                       mtime=9)) == 1
    # a screenshot with bars: its canvas is larger, its picture is not
    assert best(PhotoFacts(200, 100, quality=85), PhotoFacts(220, 130, quality=95, kept=0.7)) == 0
    assert best(PhotoFacts(100, 50, quality=85), PhotoFacts(220, 130, quality=95, kept=0.7)) == 1


def test_a_frame_is_not_picture_but_a_flat_sky_is(tmp_path):
    from landmark_search.curation.imagematch import framed_thumbnail

    photo = scene(5, (240, 168))
    sky = photo.copy()
    sky.paste((120, 160, 220), (0, 0, 240, 40))  # a clear sky: flat rows along the top only
    sky.save(tmp_path / "sky.jpg", quality=95)
    frame = Image.new("RGB", (240, 230), (250, 250, 250))
    frame.paste((20, 20, 20), (0, 0, 240, 14))
    frame.paste(photo, (0, 31))  # a screenshot: bars above and below
    frame.save(tmp_path / "shot.jpg", quality=95)
    assert framed_thumbnail(tmp_path / "sky.jpg")[1] == 1.0
    assert 0.6 < framed_thumbnail(tmp_path / "shot.jpg")[1] < 0.8


def test_groups_are_stars_not_chains():
    """b matches a and c, a and c do not match: one wrong match joins one pair, never a chain."""
    order = {0: 0, 1: 1, 2: 2, 3: 3}
    edges = {(0, 1): 0.9, (1, 2): 0.95, (2, 3): 0.9}
    assert stars(order, edges, lambda i: (order[i],)) == [(0, [(1, 0.9)]), (2, [(3, 0.9)])]
    edges = {(0, 1): 0.9, (0, 2): 0.85, (1, 2): 0.95}
    assert stars(order, edges, lambda i: (order[i],)) == [(0, [(1, 0.9), (2, 0.85)])]
    assert stars(order, edges, lambda i: (order[i],), may_join=lambda i: i != 2) == [(0, [(1, 0.9)])]
    # 2 and 3 are copies of one picture (0.99); 2 also matches the larger 0 a little: they stay together
    edges = {(0, 1): 0.95, (0, 2): 0.82, (2, 3): 0.99}
    assert stars(order, edges, lambda i: (order[i],), margin=0.15) == [(0, [(1, 0.95)]), (2, [(3, 0.99)])]
    assert stars(order, edges, lambda i: (order[i],)) == [(0, [(1, 0.95), (2, 0.82)])]


def test_jpeg_quality_agrees_with_exiftool(tmp_path):
    img = scene(4, (64, 48))
    for q in (30, 50, 75, 90, 95):
        img.save(tmp_path / f"q{q}.jpg", quality=q)
        assert read_exif(tmp_path / f"q{q}.jpg").quality == q
        assert int(exiftool_json(tmp_path / f"q{q}.jpg", "-JPEGQualityEstimate")["JPEGQualityEstimate"]) == q
    img.save(tmp_path / "lossless.png")
    assert read_exif(tmp_path / "lossless.png").quality is None


def test_move_needs_to_outside_the_photos_keep_chooses_and_undo_puts_everything_back(library, tmp_path):
    index = str(tmp_path / "idx")
    before = {p.relative_to(library): p.read_bytes() for p in library.rglob("*") if p.is_file()}
    refused = CliRunner().invoke(app, ["duplicates", str(library), str(tmp_path / "review"), "--index", index,
                                       "--action", "move", "-q"])
    one_line_error(refused, "--to")
    for inside in (library, library / "dupes", tmp_path):  # the folder itself, inside it, holding it
        one_line_error(CliRunner().invoke(app, ["duplicates", str(library), "--index", index, "--action", "move",
                                                "--to", str(inside), "-q"]), "scanned folder")
    assert {p.relative_to(library) for p in library.rglob("*") if p.is_file()} == set(before)
    one_line_error(CliRunner().invoke(app, ["duplicates", str(library), "--index", index, "--keep",
                                            str(library / "b.jpg"), "-q"]), "b.jpg", "no duplicate group")
    review, crop = tmp_path / "review", str(library / "a_crop.jpg")
    out = json.loads(_run("duplicates", str(library), "--index", index, "--keep", crop, "--json", "-q").stdout)
    assert out["groups"][0]["keep"] == crop and out["groups"][0]["reason"] == "chosen by you"
    result = _run("duplicates", str(library), "--index", index, "--keep", crop, "--action", "move", "--to",
                  str(review), "-q")
    assert "nothing was deleted" in result.output and f"--undo {review}" in result.output
    assert (review / "a.jpg").is_file() and (review / "sub" / "a_copy.jpg").is_file()
    assert json.loads((review / "sub" / "a_small.jpg.json").read_text()) == {"mine": 1}
    assert not (library / "sub" / "a_small.jpg").exists() and (library / "a_crop.jpg").is_file()
    again = json.loads(_run("duplicates", str(library), "--index", index, "--json", "-q").stdout)
    assert again["groups"] == [] and again["photos"] == 3
    undone = _run("duplicates", "--undo", str(review))
    assert "put back 3 photo(s) and 1 sidecar(s)" in undone.output and "adds them again" in undone.output
    after = {p.relative_to(library): p.read_bytes() for p in library.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before  # every byte back where it was
    assert list(review.iterdir()) == []  # the journal and the folders the moves made go once all is back
    assert len(json.loads(_run("duplicates", str(library), "--index", index, "--json", "-q").stdout)["groups"][0]
               ["members"]) == 4  # the next run has them again: the group the move took apart
    one_line_error(CliRunner().invoke(app, ["duplicates", "--undo", str(review)]), "nothing to undo")


def test_link_makes_review_folders_and_sheet(indexed, tmp_path):
    library, index, _ = indexed  # already indexed: this run embeds nothing
    review, sheet = tmp_path / "review", tmp_path / "dups.html"
    _run("duplicates", str(library), "--index", index, "--tier", "near", "--action", "link",
         "--to", str(review), "--sheet", str(sheet), "-q")
    (box,) = sorted(review.iterdir())
    assert box.name.endswith("-near")
    links = sorted(p.name for p in box.iterdir())
    assert links == ["a.jpg", "a_crop.jpg", "a_small.jpg", "keep--a_copy.jpg"]
    assert all((box / n).is_symlink() and (box / n).resolve().is_file() for n in links)
    assert (library / "sub" / "a_small.jpg").is_file()  # links, not moves
    page = sheet.read_text()
    assert page.count("<figure") == 4 and "80x56 q50" in page and "lost on pixels" in page


def test_undo_reads_its_journal_as_untrusted(tmp_path):
    from landmark_search.curation.relocate import JOURNAL_NAME, undo_moves

    review, victim = tmp_path / "review", tmp_path / "elsewhere" / "victim.jpg"
    victim.parent.mkdir()
    victim.write_bytes(b"precious")
    review.mkdir()
    (review / JOURNAL_NAME).write_text(json.dumps({"from": str(tmp_path / "x.jpg"), "to": str(victim)}) + "\n"
                                       + "not json\n")
    done = undo_moves(review)
    assert done.done == [] and len(done.failed) == 2 and victim.read_bytes() == b"precious"
    assert not (tmp_path / "x.jpg").exists()


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

    from landmark_search.curation.grouping import choose_method

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


def test_a_rerun_on_an_indexed_library_checks_nothing_and_never_imports_torch(indexed):
    import subprocess
    import sys

    root, index, first = indexed
    code = ("import sys; from pathlib import Path; from landmark_search.config import EmbedConfig; "
            "from landmark_search.curation.duplicates import DuplicateOptions, find_duplicates; "
            f"r, _ = find_duplicates([Path({str(root)!r})], None, {index!r}, DuplicateOptions(), "
            "EmbedConfig(progress=False)); print(len(r.groups), r.checked, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(len(first["groups"])), "0", "False"]


def test_the_pixel_check_tries_every_scale_only_for_pairs_that_align_at_scale_one(tmp_path, monkeypatch):
    from landmark_search.curation import imagematch
    from landmark_search.curation.duplicates import NEAR_MIN

    scene(1).save(tmp_path / "a.jpg", quality=92)
    scene(1).crop((8, 5, 152, 107)).save(tmp_path / "a_crop.jpg", quality=85)
    noise = np.random.default_rng(0).integers(0, 256, (112, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.jpg", quality=92)
    a, crop, other = (imagematch.thumbnail(tmp_path / n) for n in ("a.jpg", "a_crop.jpg", "noise.jpg"))
    real, calls = imagematch._aligned, []
    monkeypatch.setattr(imagematch, "_aligned", lambda *args: calls.append(args[-1]) or real(*args))
    copy_score = imagematch.match(a, crop)
    assert copy_score >= NEAR_MIN
    assert sorted(calls) == sorted(list(imagematch.SCALES) * 2)  # both ways round, every scale
    everywhere = max(real(imagematch._gradient(big), big, small, s) for big, small in ((a, crop), (crop, a))
                     for s in imagematch.SCALES)
    assert copy_score == pytest.approx(max(0.0, everywhere), abs=1e-6)
    calls.clear()
    assert imagematch.match(a, other) < imagematch.EARLY_EXIT and calls == [1.0, 1.0]  # no copy: two tries
