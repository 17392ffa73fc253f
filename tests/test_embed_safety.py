"""`tag --embed` / `untag --embed` never lose a photo: edits, kills, moves, concurrent sidecar edits, links, read-only.

Photos are embedded into through `name_photos` (the path `tag --embed` writes through, without a model to load);
pyexiv2 writes, exiftool is the reference reader.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import time
from pathlib import Path

from PIL import Image, ImageDraw

from conftest import exiftool_json
from landmark_search.sidecars.embedded import backup_path
from landmark_search.curation.relocate import move_photos, undo_moves
from landmark_search.fsutil import sweep_stale_temps
from landmark_search.tagging import TagOptions, name_photos
from landmark_search.untag import UntagOptions, untag

EMBED = TagOptions(embed=True)
UNTAG = UntagOptions(embed=True)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _keywords(photo: Path) -> list[str]:
    """dc:subject and lr:hierarchicalSubject inside the photo, as exiftool reads them."""
    seen = exiftool_json(photo, "-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject")
    out: list[str] = []
    for key in ("Subject", "HierarchicalSubject"):
        value = seen.get(key)
        out += [] if value is None else value if isinstance(value, list) else [value]
    return [str(v) for v in out]


def _photo(path: Path, colour: tuple[int, int, int] = (30, 120, 200), tail: int = 0) -> Path:
    """A small JPEG with the user's own keyword and title in its XMP (and `tail` bytes after its image data)."""
    Image.new("RGB", (48, 32), colour).save(path, quality=90)
    import pyexiv2

    with pyexiv2.Image(str(path)) as img:
        img.modify_xmp({"Xmp.dc.subject": ["family"], "Xmp.dc.title": {'lang="x-default"': "Our trip"}})
    if tail:
        with open(path, "ab") as fh:
            fh.write(random.Random(tail).randbytes(tail))
    return path


def _retouch(photo: Path) -> None:
    """What a photo editor does: new pixels, the photo's metadata (our keywords included) kept."""
    with Image.open(photo) as img:
        xmp = img.info.get("xmp")
        edited = img.convert("RGB")
    ImageDraw.Draw(edited).rectangle((4, 4, 20, 20), fill=(250, 250, 0))
    edited.save(photo, quality=95, xmp=xmp)


def test_an_edit_between_two_embeds_survives_untag(tmp_path):
    """a) embed, the user retouches, embed again, untag: the retouch stays, our keywords go, the user's stay."""
    photo = _photo(tmp_path / "a.jpg")
    assert not name_photos([photo], "Tower", EMBED).failed
    assert "Tower" in _keywords(photo)
    _retouch(photo)
    retouched = Image.open(photo).convert("RGB").tobytes()
    assert not name_photos([photo], "Dome", EMBED).failed
    assert {"Dome", "Landmarks|Dome", "family"} <= set(_keywords(photo))

    done = untag([tmp_path], UNTAG)
    assert done.cleaned == [photo] and not done.failed
    assert Image.open(photo).convert("RGB").tobytes() == retouched  # the user's edit, not the pre-edit photo
    assert sorted(_keywords(photo)) == ["family"]
    assert exiftool_json(photo, "-XMP-dc:Title")["Title"] == "Our trip"
    assert not backup_path(photo).exists()


def test_an_edit_after_the_last_embed_is_kept_and_only_our_keywords_go(tmp_path):
    """The photo is not what we wrote: untag takes our keywords out in place and puts no backup over it."""
    photo = _photo(tmp_path / "a.jpg")
    name_photos([photo], "Tower", EMBED)
    _retouch(photo)
    retouched = Image.open(photo).convert("RGB").tobytes()
    done = untag([tmp_path], UNTAG)
    assert done.cleaned == [photo] and not done.failed
    assert Image.open(photo).convert("RGB").tobytes() == retouched and sorted(_keywords(photo)) == ["family"]
    assert not Path(f"{photo}.json").exists()


def test_a_damaged_backup_is_never_put_in_place(tmp_path):
    """b) a backup whose bytes are not the recorded original (cut short) is not applied; our keywords go in place."""
    photo = _photo(tmp_path / "a.jpg")
    original, pixels = photo.read_bytes(), Image.open(photo).convert("RGB").tobytes()
    name_photos([photo], "Tower", EMBED)
    backup = backup_path(photo)
    backup.write_bytes(original[:len(original) // 2])
    done = untag([tmp_path], UNTAG)
    assert not done.failed
    assert len(photo.read_bytes()) > len(original) // 2 and sorted(_keywords(photo)) == ["family"]
    assert Image.open(photo).convert("RGB").tobytes() == pixels


def _embed_in_a_child(photo: Path) -> int:
    """Fork a process that embeds into `photo` (forked, like tests/corpus.py's ForkServer: no import cost)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 1 if name_photos([photo], "Tower", EMBED).failed else 0
        finally:
            os._exit(code)
    return pid


def _kill_during_backup(photo: Path, fraction: float | None, delay: float) -> str:
    """Embed into `photo` in a real process; SIGKILL it once a file named for its backup holds `fraction` of the
    photo's bytes (None: `delay` seconds after its start). Returns "killed" or "finished"."""
    size = photo.stat().st_size
    name = f".{photo.name}.landmark-original"  # the backup, or the temp file it is written to first
    started = time.monotonic()
    pid = _embed_in_a_child(photo)
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if fraction is None:
            if time.monotonic() - started >= delay:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.001)
            continue
        sizes = []
        for entry in os.scandir(photo.parent):
            if name in entry.name:
                with contextlib.suppress(FileNotFoundError):
                    sizes.append(entry.stat().st_size)
        if any(s >= fraction * size for s in sizes):
            os.kill(pid, signal.SIGKILL)
            break
    else:
        return "finished"
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) in (0, -signal.SIGKILL)
    return "killed" if os.waitstatus_to_exitcode(status) else "finished"


def test_kill_while_the_backup_is_written_never_leaves_a_backup_that_untag_applies(tmp_path):
    """b) SIGKILL at seeded points of the backup copy (and anywhere): after each, every `.NAME.landmark-original`
    is the whole original; a re-run and untag give back the original byte for byte."""
    rng = random.Random(24)
    points = [(rng.uniform(0.05, 0.95), 0.0) for _ in range(3)] + [(None, rng.uniform(0.0, 0.2))]
    outcomes, mid_copy = [], 0
    for i, (fraction, delay) in enumerate(points):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        photo = _photo(folder / "big.jpg", tail=8 << 20)  # big enough that the copy takes a while
        original = _sha(photo)
        outcomes.append(_kill_during_backup(photo, fraction, delay))
        backup = backup_path(photo)
        assert not backup.exists() or _sha(backup) == original, f"a partial backup after kill {i}"
        temps = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
        mid_copy += any(".landmark-original." in p.name for p in temps) and not backup.exists()
        assert sweep_stale_temps(folder, older_than=0) == len(temps)  # the next run clears them (when old)
        assert _sha(photo) == original or "Tower" in _keywords(photo)
        assert not name_photos([photo], "Tower", EMBED).failed  # the re-run completes
        done = untag([folder], UNTAG)
        assert not done.failed and _sha(photo) == original and not backup.exists(), f"kill {i}"
    assert mid_copy, outcomes  # the seeded points did land inside the copy


def test_a_backup_left_behind_is_never_applied_to_a_new_photo_of_that_name(tmp_path):
    """c) the photo (with its JSON sidecar) moved by hand, a new one saved under its name: tag and untag leave the
    new photo as it is; the old one still has its original beside the name it had."""
    photo = _photo(tmp_path / "IMG_0001.jpg")
    old_original = photo.read_bytes()
    name_photos([photo], "Tower", EMBED)
    away = tmp_path / "away"
    away.mkdir()
    os.rename(photo, away / photo.name)
    os.rename(f"{photo}.json", away / f"{photo.name}.json")
    _photo(photo, colour=(200, 40, 40))  # the camera reuses the name
    new = photo.read_bytes()

    again = name_photos([photo], "Dome", EMBED)
    assert [p for p, _ in again.skipped] == [photo] and str(backup_path(photo)) in again.skipped[0][1]
    assert photo.read_bytes() == new
    done = untag([tmp_path], UNTAG)
    assert photo.read_bytes() == new and done.kept_backups == [backup_path(photo)]  # and the user is told
    assert backup_path(photo).read_bytes() == old_original  # nothing of the moved photo was lost either


def test_the_json_sidecar_left_behind_does_not_bind_the_old_backup_to_a_new_photo(tmp_path):
    """c) only the photo moved: untag finds a record of ours, but the new photo is not what we wrote."""
    photo = _photo(tmp_path / "IMG_0001.jpg")
    name_photos([photo], "Tower", EMBED)
    os.rename(photo, tmp_path / "elsewhere.jpg")
    _photo(photo, colour=(200, 40, 40))
    new = photo.read_bytes()
    untag([photo], UNTAG)
    assert photo.read_bytes() == new


def test_moving_a_photo_takes_its_backup_along(tmp_path):
    """c) `duplicates --action move` moves the backup with the photo, and `--undo` brings it back: untag in
    either folder restores the original."""
    library, review = tmp_path / "library", tmp_path / "review"
    library.mkdir()
    photo, twin = _photo(library / "a.jpg"), _photo(library / "b.jpg", colour=(90, 90, 10))
    original, twin_original = photo.read_bytes(), twin.read_bytes()
    name_photos([photo, twin], "Tower", EMBED)
    summary = move_photos([(photo, review / "a.jpg"), (twin, review / "b.jpg")], journal=review)
    assert not summary.failed
    assert not backup_path(photo).exists() and backup_path(review / "a.jpg").is_file()
    assert not untag([review / "a.jpg"], UNTAG).failed
    assert (review / "a.jpg").read_bytes() == original and not backup_path(review / "a.jpg").exists()

    back = undo_moves(review)
    assert not back.failed and sorted(src for _, src in back.done) == [photo, twin]
    assert backup_path(twin).is_file() and not backup_path(review / "b.jpg").exists()
    assert not untag([twin], UNTAG).failed and twin.read_bytes() == twin_original


def test_a_sidecar_edit_made_while_the_photo_is_rewritten_is_kept(tmp_path, monkeypatch):
    """d) the JSON sidecar is read again after the photo is rewritten."""
    import pyexiv2

    photo = _photo(tmp_path / "a.jpg")
    side = Path(f"{photo}.json")
    side.write_text(json.dumps({"title": "Our trip"}), encoding="utf-8")
    write = pyexiv2.Image.modify_xmp

    def write_then_edit(self, data, *args, **kwargs):  # the user saves the sidecar while exiv2 writes
        write(self, data, *args, **kwargs)
        side.write_text(json.dumps({"title": "Edited meanwhile"}), encoding="utf-8")

    monkeypatch.setattr(pyexiv2.Image, "modify_xmp", write_then_edit)
    assert not name_photos([photo], "Tower", EMBED).failed
    data = json.loads(side.read_text(encoding="utf-8"))
    assert data["title"] == "Edited meanwhile" and data["landmark_search"]["embedded"]


def test_links_and_read_only_photos_are_left_alone(tmp_path):
    """e) a symlinked photo, a hard-linked photo and a read-only one: skipped with one line each, nothing changed."""
    real = _photo(tmp_path / "real.jpg")
    link = tmp_path / "link.jpg"
    link.symlink_to(real)
    hard = _photo(tmp_path / "hard.jpg")
    os.link(hard, tmp_path / "hard-twin.jpg")
    locked = _photo(tmp_path / "locked.jpg")
    locked.chmod(0o444)
    before = {p: p.read_bytes() for p in (real, hard, locked)}

    summary = name_photos([link, hard, locked], "Tower", EMBED)
    assert sorted(p for p, _ in summary.skipped) == sorted([link, hard, locked]) and not summary.tagged
    reasons = dict(summary.skipped)
    assert "symlink" in reasons[link] and "hard link" in reasons[hard] and "read-only" in reasons[locked]
    assert all("\n" not in why for why in reasons.values())
    assert link.is_symlink() and os.stat(hard).st_nlink == 2 and (locked.stat().st_mode & 0o777) == 0o444
    assert {p: p.read_bytes() for p in before} == before
    assert not any(tmp_path.glob(".*landmark-original"))


def test_untag_leaves_a_photo_that_became_read_only_alone(tmp_path):
    """e) untag puts nothing over a read-only photo; our record stays so that a later untag can finish."""
    photo = _photo(tmp_path / "a.jpg")
    name_photos([photo], "Tower", EMBED)
    ours = photo.read_bytes()
    photo.chmod(0o444)
    done = untag([tmp_path], UNTAG)
    assert [p for p, _ in done.skipped] == [photo] and "read-only" in done.skipped[0][1]
    assert photo.read_bytes() == ours and "embedded" in json.loads(Path(f"{photo}.json").read_text())["landmark_search"]
    photo.chmod(0o644)
    untag([tmp_path], UNTAG)
    assert "Tower" not in _keywords(photo) and not backup_path(photo).exists()


def test_cli_says_why_each_photo_was_skipped_and_counts_it(tmp_path):
    """e) `landmark tag --embed`: one stderr line per photo left alone, `skipped N` in the summary, no model loaded."""
    from typer.testing import CliRunner

    from landmark_search.cli import app

    locked = _photo(tmp_path / "locked.jpg")
    locked.chmod(0o444)
    result = CliRunner().invoke(app, ["tag", "--embed", str(locked), "--json"])
    assert result.exit_code == 1  # nothing could be done
    assert json.loads(result.stdout)["skipped"] == 1
    assert result.stderr.strip() == f"skipped {locked} is read-only: --embed leaves it alone; make it writable " \
                                    "(chmod u+w) and run again"


def test_a_backup_from_a_record_without_digests_is_not_trusted(tmp_path):
    """b) a record that names no original_sha256 (an earlier version's) binds nothing: tag skips, untag works in place."""
    photo = _photo(tmp_path / "a.jpg")
    name_photos([photo], "Tower", EMBED)
    side = Path(f"{photo}.json")
    data = json.loads(side.read_text(encoding="utf-8"))
    del data["landmark_search"]["embedded"]["original_sha256"]
    side.write_text(json.dumps(data), encoding="utf-8")
    backup = backup_path(photo)
    backup.write_bytes(backup.read_bytes()[:100])  # what a killed copy used to leave
    ours = photo.read_bytes()
    again = name_photos([photo], "Dome", EMBED)
    assert [p for p, _ in again.skipped] == [photo] and "recorded no digest" in again.skipped[0][1]
    assert photo.read_bytes() == ours
    done = untag([photo], UNTAG)
    assert done.kept_backups == [backup] and sorted(_keywords(photo)) == ["family"] and len(photo.read_bytes()) > 100
