"""`landmark group`: naming a group folder, one grouping for the CLI and the web page, stable group numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from landmark_search.cli import app
from test_duplicates import _run, scene


@pytest.mark.parametrize("old", ["../../victim", "../victim", "..", "/tmp/victim", "link"])
def test_name_accepts_only_a_folder_under_out_train(tmp_path, old):
    out = tmp_path / "groups"
    (out / "train" / "group-01").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    (out / "train" / "link").symlink_to(victim)  # a link out of OUT/train is no group folder either
    old = str(victim) if old == "/tmp/victim" else old
    result = CliRunner().invoke(app, ["group", "--name", old, "NEW", "--out", str(out)])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert (victim / "keep.txt").read_text() == "mine" and (out / "train" / "link").is_symlink()
    assert sorted(p.name for p in (out / "train").iterdir()) == ["group-01", "link"]  # nothing moved


def test_group_cli_links_json_and_rename(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for family in (10, 20):  # two places, four shots each (shifted, zoomed crops of one scene)
        base = scene(family, (240, 168))
        for k in range(4):
            base.crop((6 * k, 4 * k, 160 + 12 * k, 112 + 8 * k)).save(photos / f"f{family}_{k}.jpg", quality=90)
    out = tmp_path / "groups"
    data = json.loads(_run("group", str(photos), "--index", str(tmp_path / "idx"), "--min-size", "3",
                           "--out", str(out), "--json", "-q", "--any-subject",
                           "--sheet", str(tmp_path / "groups.html")).stdout)
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


def test_only_groups_of_buildings_and_landforms_survive_the_built_in_model():
    from landmark_search.curation.grouping import keep_landmarks

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32))
    x = np.concatenate([c + 0.05 * rng.normal(size=(12, 32)) for c in centres]).astype(np.float32)
    labels = np.repeat(np.arange(3), 12)
    classes = ["palace"] * 12 + ["golden retriever"] * 12 + ["mosque"] * 10 + ["fur coat"] * 2
    classes[5] = "pizza"  # a meal photo the clustering put among the palace photos, with no palace near it
    x[5] = -centres[0] + 0.05 * rng.normal(size=32)
    kept = keep_landmarks(x, labels, classes, min_size=5)
    assert (kept[12:24] == -1).all()  # a group of dogs is no landmark
    assert kept[5] == -1 and (kept[[i for i in range(12) if i != 5]] == kept[0]).all()
    assert (kept[24:] == kept[24]).all() and kept[24] != kept[0]  # "fur coat" among mosque photos: a statue, kept
    assert sorted(set(kept.tolist())) == [-1, 0, 1] and kept[24] == 0  # numbered largest first


def test_a_trained_models_groups_of_unknown_photos_keep_only_landmark_like_ones():
    """Unknown to a trained model are both landmarks it was never shown and everyday photos; only groups whose
    median confidence (to the nearest known landmark) reaches the model's floor stay groups."""
    from landmark_search.curation.grouping import keep_landmark_like

    labels = np.repeat(np.arange(3), [6, 8, 5])
    conf = [0.3, 0.2, 0.25, 0.01, 0.4, 0.18] + [0.01, 0.0, 0.02, 0.3, 0.0, 0.01, 0.0, 0.05] + [0.12] * 4 + [None]
    kept = keep_landmark_like(labels, conf, floor=0.09, min_size=5)
    assert (kept[6:14] == -1).all()  # the everyday group: median 0.01, one look-alike does not save it
    assert (kept[:6] == 0).all() and (kept[14:] == 1).all()  # a stray low member stays with its group
    assert (keep_landmark_like(labels, conf, floor=0.0) >= 0).all()  # a floor of 0 keeps every group


def test_a_trained_models_index_records_its_floor_and_group_keeps_out_everyday_groups(trained_run, synth_data,
                                                                                      tmp_path):
    """End to end: `landmark index --model RUN` records the model's floor in model.json (a hostile value there
    is ignored), and `landmark group` on it groups the unknown photos that look like landmarks."""
    from landmark_search.search import landmark_floor

    photos = tmp_path / "photos"
    _balls(photos / "everyday", families=(1, 2), shots=6)
    index = tmp_path / "idx"
    _run("index", str(photos), "--index", str(index), "--model", str(trained_run / "best.pt"), "-q")
    recorded = json.loads((index / "model.json").read_text())
    assert 0.0 <= recorded["landmark_floor"] <= 1.0
    for bad in ("0.5", True, 2.0, float("nan"), None, [0.1]):
        assert landmark_floor({**recorded, "landmark_floor": bad}) is None
    everything = json.loads(_run("group", str(photos), "--index", str(index), "--min-size", "4", "--json", "-q",
                                 "--any-subject").stdout)
    kept = json.loads(_run("group", str(photos), "--index", str(index), "--min-size", "4", "--json", "-q").stdout)
    assert everything["groups"], everything  # the scenes do form groups of unknown photos...
    assert kept["groups"] == [], kept  # ...which look like none of the model's landmarks


def _balls(root: Path, families=(1, 2), shots=6) -> Path:
    """Everyday photos: a ball on a smooth coloured ground, a few shots of each (shifted crops), seeded."""
    from PIL import Image, ImageDraw

    root.mkdir(parents=True)
    for family in families:
        rng = np.random.default_rng(family)
        ground = (np.linspace(0, 1, 240)[None, :, None] * rng.random(3) + np.linspace(0, 1, 168)[:, None, None]
                  * rng.random(3)) * 127
        base = Image.fromarray(ground.astype(np.uint8))
        ImageDraw.Draw(base).ellipse((80, 50, 150, 120), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        for k in range(shots):
            base.crop((6 * k, 4 * k, 160 + 12 * k, 112 + 8 * k)).save(root / f"b{family}_{k}.jpg", quality=90)
    return root


def _families(root: Path, families=(10, 20, 30), shots=4) -> Path:
    """Photos of a few places, a few shots each (shifted, zoomed crops of one scene per place)."""
    root.mkdir(parents=True)
    for family in families:
        base = scene(family, (240, 168))
        for k in range(shots):
            base.crop((6 * k, 4 * k, 160 + 12 * k, 112 + 8 * k)).save(root / f"f{family}_{k}.jpg", quality=90)
    return root


def test_the_web_review_groups_are_landmark_groups_and_a_naming_renumbers_nothing(tmp_path):
    from landmark_search.curation.grouping import GroupOptions
    from landmark_search.web.library import Library, ServeOptions

    photos = _families(tmp_path / "photos")
    args = ["group", str(photos), "--index", str(tmp_path / "idx"), "--min-size", "3", "--any-subject", "--json",
            "-q"]
    cli = json.loads(_run(*args).stdout)
    cli_groups = {g["name"]: sorted(str(Path(p).resolve()) for p in g["paths"]) for g in cli["groups"]}
    assert len(cli_groups) >= 2
    library = Library.open(tmp_path / "idx", ServeOptions(group=GroupOptions(min_size=3, any_subject=True)))
    try:
        web = library.review_groups(wait=60)
        assert web["state"] == "ready"
        assert {g["name"]: sorted(g["paths"]) for g in web["groups"]} == cli_groups
        assert sorted(web["ungrouped"]) == sorted(str(Path(p).resolve()) for p in cli["ungrouped"])
        first = web["groups"][0]
        library.name_photos(first["paths"], "Old Mill", train=False)
        after = library.review_groups()
        assert {g["name"]: sorted(g["paths"]) for g in after["groups"]} == {
            n: p for n, p in cli_groups.items() if n != first["name"]}  # the others keep their numbers
    finally:
        library.close()
    again = json.loads(_run(*args).stdout)  # the CLI, after a naming: the same groups under the same numbers
    assert {g["name"]: sorted(str(Path(p).resolve()) for p in g["paths"]) for g in again["groups"]} == cli_groups


def test_the_review_answers_at_once_while_a_large_library_is_grouped(tmp_path):
    import time

    from landmark_search.index.store import PhotoIndex, PhotoRecord
    from landmark_search.search import recorded_model
    from landmark_search.web.library import Library

    _run("index", str(_families(tmp_path / "photos", (1,), 1)), "--index", str(tmp_path / "idx"), "-q")
    model = recorded_model(tmp_path / "idx")
    rng = np.random.default_rng(1)
    n, dim = 1500, int(model["embedding_dim"])
    x = (rng.normal(size=(40, dim))[rng.integers(0, 40, n)] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)
    records = [PhotoRecord(str(tmp_path / "many" / f"{i:05d}.jpg"), 1, 1, f"{i:032x}", "palace", 0.5)
               for i in range(n)]
    with PhotoIndex.open(tmp_path / "idx", model_id=model["model_id"], dim=dim, create=False) as idx:
        idx.add(records, x / np.linalg.norm(x, axis=1, keepdims=True))
        idx.save()
    library = Library.open(tmp_path / "idx")
    try:
        t0 = time.perf_counter()
        first = library.review_groups(wait=0.5)
        assert time.perf_counter() - t0 < 1.5 and first == {"state": "computing", "progress": first["progress"]}
        deadline = time.monotonic() + 60
        while library.review_groups()["progress"] <= 0.05:  # the grouping reports how far it got
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        t0 = time.perf_counter()
        library.close()  # stops the grouping at its next progress report
        assert time.perf_counter() - t0 < 10


def test_serve_refuses_a_review_group_size_group_would_refuse(tmp_path):
    result = CliRunner().invoke(app, ["serve", "--index", str(tmp_path / "idx"), "--min-size", "1"])
    assert result.exit_code == 1 and "--min-size 1: a group needs at least 2 photos" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "idx").exists()
