"""`landmark tag`: sidecars merged safely, re-runs free, XMP readable, locks, dry runs."""

from __future__ import annotations

import json
import shutil
import xml.dom.minidom
from pathlib import Path

import pytest

from landmark_search.config import EmbedConfig
from landmark_search.errors import LockedError
from landmark_search.tagging import TagOptions, _folder_lock, tag

from conftest import exiftool_json

CFG = EmbedConfig(progress=False, workers=0)


@pytest.fixture()
def photos(synth_data, tmp_path) -> Path:
    dest = tmp_path / "photos"
    shutil.copytree(synth_data / "test", dest)
    return dest


def _sidecars(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*.json"))}


def _decided(summary) -> list[Path]:
    """Every photo tag looked at and decided on: tagged, or told apart as no landmark it knows."""
    return sorted(summary.tagged + summary.untagged)


def test_every_tagged_photo_gets_a_sidecar_with_its_class(photos, trained_run):
    summary = tag([photos], str(trained_run / "best.pt"), TagOptions(), CFG)
    jpgs = sorted(photos.rglob("*.jpg"))
    assert _decided(summary) == jpgs and not summary.failed
    # How many are tagged is the open set's decision (predict.py; its threshold lets 5 % of photos of
    # landmarks the model does not know through, so it holds back some of the known ones too: 14 of 18
    # here): every photo is either tagged or unknown, and the tagged ones carry their class.
    assert len(summary.tagged) >= len(jpgs) // 2 and summary.unknown == summary.untagged
    correct = 0
    for jpg in summary.tagged:
        entry = json.loads(Path(f"{jpg}.json").read_text())["landmark_search"]
        assert entry["version"] == 1 and len(entry["model"]["sha256"]) == 64
        assert 1 <= len(entry["tags"]) <= 3 and all(t["score"] >= 0.2 for t in entry["tags"])
        correct += entry["tags"][0]["id"] == jpg.parent.name
    assert correct / len(summary.tagged) >= 0.9


def test_user_keys_survive_and_invalid_sidecars_are_untouched(photos, trained_run):
    jpgs = sorted(photos.rglob("*.jpg"))
    mine = Path(f"{jpgs[0]}.json")
    mine.write_text(json.dumps({"title": "Our trip", "people": ["Ann"], "landmark_search": {"old": True}}))
    broken = Path(f"{jpgs[1]}.json")
    broken.write_bytes(b"{not json")
    summary = tag([photos], str(trained_run / "best.pt"), TagOptions(), CFG)
    data = json.loads(mine.read_text())
    assert data["title"] == "Our trip" and data["people"] == ["Ann"] and "tags" in data["landmark_search"]
    assert broken.read_bytes() == b"{not json"
    assert [p for p, _ in summary.failed] == [jpgs[1]]
    assert "not valid JSON" in summary.failed[0][1]


def test_rerun_does_no_model_work_and_rewrites_nothing(photos, trained_run):
    ckpt = str(trained_run / "best.pt")
    tag([photos], ckpt, TagOptions(), CFG)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in photos.rglob("*.json")}
    again = tag([photos], ckpt, TagOptions(), CFG)
    # every photo: those with a sidecar, and those remembered as checked with nothing to record
    assert not again.model_loaded and not again.tagged and len(again.unchanged) == len(list(photos.rglob("*.jpg")))
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in photos.rglob("*.json")} == before
    forced = tag([photos], ckpt, TagOptions(force=True), CFG)
    assert forced.model_loaded and len(forced.tagged) == len(before)


def test_changed_photo_is_retagged(photos, trained_run):
    ckpt = str(trained_run / "best.pt")
    tag([photos], ckpt, TagOptions(), CFG)
    jpg = sorted(photos.rglob("*.jpg"))[0]
    jpg.write_bytes(jpg.read_bytes())  # new mtime
    import os
    os.utime(jpg, ns=(jpg.stat().st_atime_ns, jpg.stat().st_mtime_ns + 10**9))
    summary = tag([photos], ckpt, TagOptions(), CFG)
    assert summary.tagged == [jpg]


def test_xmp_keywords_are_readable(photos, trained_run):
    tag([photos], str(trained_run / "best.pt"), TagOptions(xmp=True, top_k=1), CFG)
    jpg = sorted(photos.rglob("*.jpg"))[0]
    doc = xml.dom.minidom.parse(str(jpg) + ".xmp")
    subjects = [li.firstChild.data for li in doc.getElementsByTagNameNS("http://purl.org/dc/elements/1.1/", "subject")[0]
                .getElementsByTagNameNS("http://www.w3.org/1999/02/22-rdf-syntax-ns#", "li")]
    label = json.loads(Path(f"{jpg}.json").read_text())["landmark_search"]["tags"][0]["label"]
    assert subjects == [label]
    hier = doc.getElementsByTagNameNS("http://ns.adobe.com/lightroom/1.0/", "hierarchicalSubject")[0]
    assert f"Landmarks|{label}" in hier.toxml()


def test_dry_run_writes_nothing(photos, trained_run):
    summary = tag([photos], str(trained_run / "best.pt"), TagOptions(dry_run=True, xmp=True), CFG)
    assert summary.planned and not list(photos.rglob("*.json")) and not list(photos.rglob("*.xmp"))


def test_output_dir_mirrors_the_tree(photos, trained_run, tmp_path):
    out = tmp_path / "tags"
    summary = tag([photos], str(trained_run / "best.pt"), TagOptions(output_dir=out), CFG)
    assert not list(photos.rglob("*.json")) and summary.tagged
    mirrored = {j: out / j.relative_to(photos).parent / f"{j.name}.json" for j in photos.rglob("*.jpg")}
    assert all(mirrored[j].is_file() for j in summary.tagged)
    assert not any(mirrored[j].exists() for j in summary.not_written)


def test_second_concurrent_run_is_refused(photos, trained_run):
    with _folder_lock([photos], None):
        with pytest.raises(LockedError, match="in use by another landmark run"):
            tag([photos], str(trained_run / "best.pt"), TagOptions(), CFG)


def test_symlinked_sidecar_is_never_followed(photos, trained_run, tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    jpg = sorted(photos.rglob("*.jpg"))[0]
    Path(f"{jpg}.json").symlink_to(outside)
    summary = tag([photos], str(trained_run / "best.pt"), TagOptions(), CFG)
    assert outside.read_text() == "{}"
    assert jpg in [p for p, _ in summary.failed]


def test_temp_files_of_a_killed_run_are_swept_and_nothing_else(photos, trained_run):
    import os

    photo = sorted(photos.rglob("*.jpg"))[0]
    folder = photo.parent
    stale = folder / f".{photo.name}.json.0123abcd.tmp"  # what a SIGKILL during the write leaves
    fresh = folder / f".{photo.name}.json.89abcdef.tmp"  # a write that may still be in progress
    users = folder / f".{photo.name}.json.notours.tmp"  # not our name shape: never touched
    for path in (stale, fresh, users):
        path.write_text("{")
    old = photo.stat().st_mtime - 3600
    os.utime(stale, (old, old))
    os.utime(users, (old, old))
    summary = tag([photos], str(trained_run / "best.pt"), TagOptions(), CFG)
    assert summary.stale_temps_removed == 1
    assert not stale.exists() and fresh.exists() and users.exists()


def _two_classes(synth_data) -> tuple[Path, Path]:
    """One test photo from each of two different classes."""
    first, second = sorted((synth_data / "test").iterdir())[:2]
    return sorted(first.glob("*.jpg"))[0], sorted(second.glob("*.jpg"))[0]


def test_output_dir_refuses_two_photos_that_would_share_a_mirrored_sidecar(synth_data, trained_run, tmp_path):
    for folder, src in zip(("A/p", "B/p"), _two_classes(synth_data)):
        (tmp_path / folder).mkdir(parents=True)
        shutil.copy(src, tmp_path / folder / "a.jpg")
    shutil.copy(_two_classes(synth_data)[0], tmp_path / "B" / "p" / "b.jpg")
    out, ckpt = tmp_path / "mirror", str(trained_run / "best.pt")
    args = [tmp_path / "A" / "p", tmp_path / "B" / "p"]
    summary = tag(args, ckpt, TagOptions(output_dir=out), CFG)
    # each argument mirrors as it would alone (a stable layout); B/p/a.jpg would overwrite A/p/a.jpg's
    assert summary.tagged == [args[0] / "a.jpg", args[1] / "b.jpg"]
    assert [p for p, _ in summary.failed] == [args[1] / "a.jpg"]
    assert "tag each folder into its own --output-dir" in summary.failed[0][1]
    first = json.loads((out / "a.jpg.json").read_text())["landmark_search"]["tags"][0]["id"]
    assert first == _two_classes(synth_data)[0].parent.name
    assert sorted(p.name for p in out.rglob("*.json")) == ["a.jpg.json", "b.jpg.json"]
    assert len(tag([args[0]], ckpt, TagOptions(output_dir=out), CFG).unchanged) == 1  # alone: same place


def test_heic_without_its_decoder_is_counted_and_never_loads_the_model(tmp_path, monkeypatch):
    import landmark_search.tagging as tagging

    monkeypatch.setattr(tagging, "heif_available", lambda: False)
    (tmp_path / "IMG_0001.HEIC").write_bytes(b"not decodable here")

    def must_not_load(ref):
        raise AssertionError("the model was loaded for photos that cannot be decoded")

    summary = tag([tmp_path], None, TagOptions(), CFG, load=must_not_load)
    assert [p.name for p, _ in summary.failed] == ["IMG_0001.HEIC"] and not summary.model_loaded
    assert "pip install 'landmark-search[heif]'" in summary.failed[0][1]


def test_changed_options_retag_and_same_options_skip(synth_data, trained_run, tmp_path):
    photo = tmp_path / "t2" / "a.jpg"
    photo.parent.mkdir()
    shutil.copy(_two_classes(synth_data)[0], photo)
    ckpt, side = str(trained_run / "best.pt"), Path(f"{photo}.json")
    none = tag([photo.parent], ckpt, TagOptions(min_score=1.01), CFG)
    assert none.untagged == [photo] and not none.tagged and not none.unknown  # counted as "no tag", not tagged
    assert none.not_written == [photo] and not side.exists()  # nothing to record: no sidecar
    wider = TagOptions(min_score=0.0, top_k=2, xmp=True, recall=1.0)
    assert tag([photo.parent], ckpt, wider, CFG).tagged == [photo]
    entry = json.loads(side.read_text())["landmark_search"]
    # Landmarks exclude each other: one keyword (the most probable), the other candidate a runner-up only.
    assert len(entry["tags"]) == 1 and [r["id"] for r in entry["runner_ups"]] != [entry["tags"][0]["id"]]
    assert len(entry["runner_ups"]) == 1 and entry["runner_ups"][0]["score"] <= entry["tags"][0]["score"]
    subjects = exiftool_json(Path(f"{photo}.xmp"), "-XMP-dc:Subject").get("Subject")
    assert subjects == entry["tags"][0]["label"], subjects
    assert entry["options"] == {"top_k": 2, "min_score": 0.0, "recall": 1.0,
                                                                 "xmp": True, "object_keywords": False}
    assert Path(f"{photo}.xmp").is_file()
    again = tag([photo.parent], ckpt, wider, CFG)
    assert again.unchanged == [photo] and not again.model_loaded
    # The XMP already written serves a run without --xmp; a smaller --top-k is a different output.
    assert tag([photo.parent], ckpt, TagOptions(min_score=0.0, top_k=2, recall=1.0), CFG).unchanged == [photo]
    assert tag([photo.parent], ckpt, TagOptions(min_score=0.0, top_k=1, recall=1.0), CFG).tagged == [photo]


def test_photos_with_nothing_to_record_get_no_sidecar_and_are_remembered(synth_data, trained_run, tmp_path):
    """No tag and no place: no JSON, no XMP; the next run with the same model and options skips them without the
    model (or torch); a changed photo, model or option checks it again."""
    import os
    import subprocess
    import sys

    folder = tmp_path / "family"
    folder.mkdir()
    for i, src in enumerate(_two_classes(synth_data)):
        shutil.copy(src, folder / f"{i}.jpg")
    ckpt, nothing = str(trained_run / "best.pt"), TagOptions(xmp=True, min_score=1.01)
    first = tag([folder], ckpt, nothing, CFG)
    assert sorted(first.not_written) == sorted(folder.glob("*.jpg")) and first.model_loaded
    assert sorted(p.name for p in folder.iterdir()) == ["0.jpg", "1.jpg"]  # no .json, no .xmp
    code = ("import sys; from landmark_search.tagging import tag, TagOptions; "
            "from landmark_search.config import EmbedConfig; "
            f"s = tag([{str(folder)!r}], {ckpt!r}, TagOptions(xmp=True, min_score=1.01), EmbedConfig(progress=False)); "
            "print(len(s.unchanged), len(s.not_written), s.model_loaded, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["2", "0", "False", "False"]
    os.utime(folder / "0.jpg", ns=(1, 1))  # a changed photo is checked again
    assert tag([folder], ckpt, nothing, CFG).not_written == [folder / "0.jpg"]
    tagged = tag([folder], ckpt, TagOptions(xmp=True, min_score=0.0, recall=1.0), CFG)  # other options
    assert sorted(tagged.tagged) == sorted(folder.glob("*.jpg")) and Path(f"{folder / '0.jpg'}.json").is_file()
    # A later run that has nothing to say takes back what an earlier run wrote (JSON and XMP alike).
    again = tag([folder], ckpt, TagOptions(xmp=True, min_score=1.01, top_k=1), CFG)
    assert len(again.not_written) == 2 and sorted(p.name for p in folder.iterdir()) == ["0.jpg", "1.jpg"]


def test_unchanged_rerun_never_imports_torch(synth_data, trained_run, tmp_path):
    import subprocess
    import sys

    shutil.copy(_two_classes(synth_data)[0], tmp_path / "a.jpg")
    ckpt = str(trained_run / "best.pt")
    tag([tmp_path], ckpt, TagOptions(xmp=True), CFG)
    code = ("import sys; from landmark_search.tagging import tag, TagOptions; "
            "from landmark_search.config import EmbedConfig; "
            f"s = tag([{str(tmp_path)!r}], {ckpt!r}, TagOptions(xmp=True), EmbedConfig(progress=False)); "
            "print(len(s.unchanged), len(s.tagged), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "0", "False"]


@pytest.mark.parametrize("content", [b'{"big": 1e999}', b'{"k": 1, "k": 2}',
                                     b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"])
def test_sidecar_that_cannot_be_rewritten_exactly_is_left_untouched(photos, trained_run, content):
    jpgs = sorted(photos.rglob("*.jpg"))
    side = Path(f"{jpgs[0]}.json")
    side.write_bytes(content)
    summary = tag([photos], str(trained_run / "best.pt"), TagOptions(), CFG)
    assert side.read_bytes() == content
    assert [p for p, _ in summary.failed] == [jpgs[0]] and "left untouched" in summary.failed[0][1]
    assert _decided(summary) == jpgs[1:]


def test_a_photo_named_several_ways_is_tagged_once(photos, trained_run, monkeypatch):
    monkeypatch.chdir(photos.parent)
    folder = sorted(photos.iterdir())[0]
    jpgs = sorted(folder.glob("*.jpg"))
    named = [folder, jpgs[0], Path(".") / "photos" / folder.name]  # as in `tag t2 t2/a.jpg ./t2`
    summary = tag(named, str(trained_run / "best.pt"), TagOptions(), CFG)
    assert _decided(summary) == jpgs and not summary.failed


def test_checked_photos_start_afresh_from_a_damaged_file(tmp_path):
    from landmark_search.sidecars.checked import CheckedPhotos

    path = tmp_path / "checked.sqlite"
    path.write_bytes(b"not an SQLite file " * 100)
    photo = tmp_path / "a.jpg"
    with CheckedPhotos(path) as checked:
        assert not checked.is_checked(photo, "1:2", "model", "{}")
        checked.remember([(photo, "1:2")], "model", "{}")
    with CheckedPhotos(path) as checked:
        assert checked.is_checked(photo, "1:2", "model", "{}")
        assert not checked.is_checked(photo, "1:3", "model", "{}")  # the photo changed
        assert not checked.is_checked(photo, "1:2", "other model", "{}")
        assert not checked.is_checked(photo, "1:2", "model", '{"top_k":1}')
        checked.forget([photo], "model", "{}")
        assert not checked.is_checked(photo, "1:2", "model", "{}")
