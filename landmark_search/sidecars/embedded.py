"""Keywords inside the photo file itself (embedded XMP of JPEG/TIFF), for apps that read nothing else. Off by default.

What holds, whatever happens (an edit, a kill -9, a move, a new photo under an old name):

- Before this tool changes a photo, its original is written atomically (fsutil) to `.<name>.landmark-original`
  beside it (hidden, same mode and mtime). The JSON entry's record binds the pair by content:

      "embedded": {"subject": [...], "hierarchical": [...],   # the keywords of ours inside the photo
                   "backup": ".IMG_1.jpg.landmark-original",
                   "original_sha256": "<the backup's bytes: the photo just before our first write>",
                   "sha256": "<the photo as this tool wrote it>"}

  A photo changed since our last write (retouched by the user) is the user's again: the next embed keeps it,
  less our keywords, as its new original.
- The record is written ahead: the JSON entry names the bytes about to replace the photo (and every keyword of
  ours the photo may hold) before they do, so a run killed at any point leaves a photo untag can give back.
- `untag --embed` puts the backup in place only when the photo is byte for byte what this tool wrote and the
  backup byte for byte the recorded original. Otherwise it takes our keywords out in place (exiv2, as they
  were written) and keeps everything else: a backup left behind by a moved photo is never applied to another
  file, and one that is not this photo's is never overwritten either (the photo is skipped, with the reason).
- Symlinks and hard links are refused (writing would turn the link into a copy or split the links), and so is a
  read-only photo: each is skipped with a one-line reason. Pixels are never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..errors import LandmarkError, PhotoLeftAlone, SidecarError
from ..fsutil import atomic_path, atomic_writer, file_sha256, fsync_dir

EMBED_SUFFIXES = (".jpg", ".jpeg", ".tif", ".tiff")
_FIELDS = (("Xmp.dc.subject", "subject"), ("Xmp.lr.hierarchicalSubject", "hierarchical"))


def backup_path(photo: Path) -> Path:
    """Where the untouched original of an embedded-into photo is kept."""
    return photo.with_name(f".{photo.name}.landmark-original")


def moved_backup(src: Path, dest: Path) -> list[tuple[Path, Path]]:
    """The (backup, its new place) that must travel with a photo moved from src to dest; [] when it has none."""
    backup = backup_path(src)
    return [(backup, backup_path(dest))] if backup.is_file() and not backup.is_symlink() else []


def can_embed(photo: Path) -> bool:
    """JPEG and TIFF carry embedded XMP that exiv2 writes safely."""
    return photo.suffix.lower() in EMBED_SUFFIXES


def refusal(photo: Path, command: str = "--embed") -> str | None:
    """Why `command` leaves this photo alone (a link, hard links, read-only), in one line; None when it may write."""
    try:
        st = os.lstat(photo)
    except OSError as exc:
        return f"{photo}: cannot read it ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        return (f"{photo} is a symlink: {command} would replace the link with a copy; "
                f"name the file it points to ({os.path.realpath(photo)}) instead")
    if st.st_nlink > 1:
        return (f"{photo} has {st.st_nlink} hard links: {command} would split them; "
                "make it a single file (cp, then rm the other names) and run again")
    if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return f"{photo} is read-only: {command} leaves it alone; make it writable (chmod u+w) and run again"
    return None


def _exiv2():
    try:
        import pyexiv2
    except ImportError:
        raise LandmarkError("--embed writes keywords into photos with exiv2: pip install 'landmark-search[embed]'"
                            ) from None
    return pyexiv2


def _sha_or_none(path: Path) -> str | None:
    try:
        return file_sha256(path) if path.is_file() and not path.is_symlink() else None
    except OSError:
        return None


def _values(xmp: Mapping[str, Any], key: str) -> list[str]:
    have = xmp.get(key) or []
    return [have] if isinstance(have, str) else list(have)


def _keyword_changes(xmp: Mapping[str, Any], previous: Mapping[str, Any], subjects: Sequence[str],
                     hierarchical: Sequence[str]) -> tuple[dict[str, list[str] | None], dict[str, list[str]]]:
    """({XMP key: the user's values + ours, None when empty}, {field: the values of ours added}) for the photo's
    keywords `xmp`, where `previous` names the values of ours it may hold. Keys left as they are are omitted."""
    changes: dict[str, list[str] | None] = {}
    added: dict[str, list[str]] = {}
    for (key, name), wanted in zip(_FIELDS, (subjects, hierarchical)):
        have = _values(xmp, key)
        ours_before = set(previous.get(name) or [])
        users = [v for v in have if v not in ours_before]
        added[name] = [v for v in dict.fromkeys(wanted) if v not in users]
        new = users + added[name]
        if new != have:
            changes[key] = new or None  # None: exiv2 removes the empty property
    return changes, added


def _rewrite(source: Path, tmp: Path, changes: Mapping[str, Any]) -> None:
    """tmp := source with these XMP changes (exiv2 rewrites metadata only); a file exiv2 refuses stays as it was."""
    shutil.copyfile(source, tmp)
    if not changes:
        return
    try:
        with _exiv2().Image(str(tmp)) as img:
            img.modify_xmp(dict(changes))
    except LandmarkError:
        raise
    except Exception as exc:  # exiv2 refuses a damaged file
        raise SidecarError(f"cannot write keywords into {source}: {str(exc).splitlines()[0][:160]}; "
                           "it was left untouched") from None


def _read_keywords(photo: Path) -> dict[str, Any]:
    try:
        with _exiv2().Image(str(photo)) as img:
            return img.read_xmp()
    except LandmarkError:
        raise
    except Exception as exc:
        raise SidecarError(f"cannot read the keywords of {photo}: {str(exc).splitlines()[0][:160]}; "
                           "it was left untouched") from None


def _write_backup(photo: Path, sha: str, previous: Mapping[str, Any]) -> str:
    """Write the photo's original atomically beside it: itself, less any keywords of ours (`previous`) an editor
    carried over. Returns the backup's sha256."""
    backup = backup_path(photo)
    st = os.stat(photo)
    changes, _ = _keyword_changes(_read_keywords(photo), previous, (), ())
    if changes:
        with atomic_path(backup, mode=stat.S_IMODE(st.st_mode)) as tmp:
            _rewrite(photo, tmp, changes)
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            return file_sha256(tmp)
    with atomic_writer(backup, mode=stat.S_IMODE(st.st_mode)) as fh:
        copied = file_sha256(photo, copy_to=fh)
        if copied != sha:
            raise SidecarError(f"{photo} changed while its original was copied; it was left untouched: "
                               "tag it again once nothing else writes to it")
        fh.flush()
        os.utime(fh.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
    return copied


def _original(photo: Path, sha: str, previous: Mapping[str, Any]) -> str:
    """The sha256 of the photo's backup, writing one when needed; PhotoLeftAlone when a backup that is not this
    photo's is in the way (it is never overwritten)."""
    backup = backup_path(photo)
    kept = _sha_or_none(backup)
    bound = kept is not None and kept == previous.get("original_sha256")
    if sha == previous.get("sha256") and bound:  # the photo as we wrote it, its original beside it
        return kept
    if kept == sha:  # an exact copy of this photo (a run killed after writing it)
        return kept
    if (backup.exists() or backup.is_symlink()) and not bound and previous and "original_sha256" not in previous:
        raise PhotoLeftAlone(f"{backup} was kept by an earlier landmark-search that recorded no digest of it, so it "
                             f"cannot be trusted as the original of {photo}; both were left as they are: run "
                             "`landmark untag --embed` (it takes our keywords out in place), check and delete "
                             "that file, then tag again")
    if (backup.exists() or backup.is_symlink()) and not bound:
        raise PhotoLeftAlone(f"{backup} is not the original of {photo} as recorded (another photo once had this "
                             "name, or it was changed); it was left as it is and so was the photo: put it back "
                             "beside its photo or delete it, then tag again")
    # no backup, or the recorded one of a photo that has changed since (the user's edit is the original now)
    return _write_backup(photo, sha, previous)


@dataclass(frozen=True)
class Embedding:
    """The record of a write: `ahead` for the JSON entry before the photo is replaced (every keyword of ours it
    may hold then), `record` once it is."""

    ahead: dict[str, Any]
    record: dict[str, Any]


@contextlib.contextmanager
def embedding(photo: Path, subjects: Sequence[str], hierarchical: Sequence[str],
              previous: Mapping[str, Any] | None) -> Iterator[Embedding | None]:
    """Make this tool's embedded keywords exactly these (the user's stay): the original is kept first, the new
    photo is made beside it, and it replaces the photo when the block ends, after the caller recorded `ahead`.

    `previous` is the record an earlier run left (None: nothing of ours embedded). Yields None, and writes
    nothing, when there is nothing to embed and nothing to take back. Raises PhotoLeftAlone for a photo it
    must not write (see refusal) and SidecarError when exiv2 cannot write it; the photo is then untouched.
    """
    previous = dict(previous) if isinstance(previous, Mapping) else {}
    if not subjects and not hierarchical and not previous:
        yield None
        return
    why = refusal(photo)
    if why:
        raise PhotoLeftAlone(why)
    sha = file_sha256(photo)
    original = _original(photo, sha, previous)
    with atomic_path(photo) as tmp:
        changes, added = _keyword_changes(_read_keywords(photo), previous, subjects, hierarchical)
        _rewrite(photo, tmp, changes)
        record = {**added, "backup": backup_path(photo).name, "original_sha256": original,
                  "sha256": file_sha256(tmp)}
        ahead = {**record, **{name: list(dict.fromkeys([*(previous.get(name) or []), *added[name]]))
                              for _, name in _FIELDS}}
        yield Embedding(ahead, record)


def take_back(photo: Path, record: Any, *, dry_run: bool = False) -> str:
    """Give back a photo this tool embedded into: "restored" (its original put in place), "removed" (our
    keywords taken out in place), "unchanged" (nothing of ours in it) or "missing" (no record of ours).

    The original goes back only when the photo is byte for byte what we wrote and the backup byte for byte
    the recorded original. Raises PhotoLeftAlone for a link or a read-only photo.
    """
    if not isinstance(record, Mapping):
        return "missing"
    why = refusal(photo, "untag --embed")
    if why:
        raise PhotoLeftAlone(why)
    backup = backup_path(photo)
    original = record.get("original_sha256")
    if isinstance(original, str) and _sha_or_none(backup) == original:
        sha = file_sha256(photo)
        if sha == record.get("sha256"):
            if not dry_run:
                os.replace(backup, photo)
                fsync_dir(photo.parent)
            return "restored"
        if sha == original:  # a run killed before it replaced the photo: the backup is a copy of it
            if not dry_run:
                backup.unlink()
            return "unchanged"
    changes, _ = _keyword_changes(_read_keywords(photo), record, (), ())
    if not changes:
        return "unchanged"
    if not dry_run:
        with atomic_path(photo) as tmp:
            _rewrite(photo, tmp, changes)
    return "removed"
