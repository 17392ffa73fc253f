"""Move photos (with their sidecars) or link them into a review folder; nothing is ever deleted or overwritten.

Used by `landmark duplicates --action move|link`, the web app's Duplicates page and `landmark group --out`.
A target that already exists is never replaced: that photo is skipped and reported. A move is `os.rename`
on one file system; across file systems it copies, checks the size and only then removes the source.

A move into a review folder is recorded first in that folder's journal (JOURNAL_NAME, one JSON line per
photo: where it came from, where it went, its sidecars), flushed to disk before the photo moves, so
`undo_moves` can put everything back even after a crash midway; the journal names only files inside
its folder as targets and is read as untrusted input.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..photos.files import supported_extensions
from ..sidecars.embedded import moved_backup
from ..errors import LandmarkError
from ..fsutil import atomic_write_text
from ..sidecars.jsonfile import JSON_SUFFIX, XMP_SUFFIX


@dataclass
class RelocateSummary:
    """What a move or link run did: (source, target) pairs, and (path, reason) for what it refused."""

    done: list[tuple[Path, Path]] = field(default_factory=list)
    sidecars: list[tuple[Path, Path]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def sidecars_of(photo: Path) -> list[Path]:
    """The files that describe `photo` and must travel with it: ours (`IMG.jpg.json`, `IMG.jpg.xmp`) and
    an editor's `IMG.xmp`/`IMG.XMP` when no other photo in the folder has the stem IMG."""
    found = [photo.with_name(photo.name + s) for s in (JSON_SUFFIX, XMP_SUFFIX)]
    stem_xmp = [photo.with_name(photo.stem + s) for s in (".xmp", ".XMP")]
    if any(p.exists() for p in stem_xmp):
        exts = supported_extensions()
        others = [p for p in photo.parent.glob(glob.escape(photo.stem) + ".*")
                  if p.name != photo.name and p.suffix.lower() in exts]
        if not others:
            found += stem_xmp
    return [p for p in dict.fromkeys(found) if p.is_file() or p.is_symlink()]


def relative_to_roots(path: Path, roots: Sequence[Path]) -> Path:
    """`path` relative to the argument folder it was found under (its name when it was named itself)."""
    for root in roots:
        try:
            return path.relative_to(root)
        except ValueError:
            continue
    return Path(path.name)


def _move_one(src: Path, dest: Path) -> None:
    if dest.exists() or dest.is_symlink():
        raise FileExistsError(f"{dest} already exists; nothing was moved over it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dest)  # on one file system: atomic, and nothing is copied
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # another file system: copy, check, then remove
            raise
        size = src.stat().st_size
        shutil.copy2(src, dest)
        if dest.stat().st_size != size:
            dest.unlink()
            raise OSError(f"copying {src} to {dest} came out short; the original stays") from None
        src.unlink()


JOURNAL_NAME = ".landmark-moves.jsonl"


def move_photos(moves: Sequence[tuple[Path, Path]], *, journal: Path | None = None) -> RelocateSummary:
    """Move each photo to its target, then its sidecars beside it; a photo whose target (or whose
    sidecar's target) exists stays where it is. journal: the review folder (holding every target) whose
    journal records each move before it is made, for undo_moves."""
    summary = RelocateSummary()
    for src, dest in moves:
        sides = [(s, dest.with_name(dest.name + s.name[len(src.name):]) if s.name.startswith(src.name)
                  else dest.with_name(dest.stem + s.suffix)) for s in sidecars_of(src)] + moved_backup(src, dest)
        clash = next((t for t in [dest, *(t for _, t in sides)] if t.exists() or t.is_symlink()), None)
        if clash is not None:
            summary.failed.append((src, f"{clash} already exists; {src} was left in place"))
            continue
        if journal is not None and not _attempt(summary, src, f"{src}: not moved, the journal in {journal} cannot be written",
                                    _record, journal, src, dest, sides):
            continue
        if not _attempt(summary, src, f"{src}: not moved", _move_one, src, dest):
            continue
        summary.done.append((src, dest))
        for side, target in sides:
            if _attempt(summary, side, f"{side}: sidecar not moved with its photo", _move_one, side, target):
                summary.sidecars.append((side, target))
    return summary


def _record(folder: Path, src: Path, dest: Path, sides: Sequence[tuple[Path, Path]]) -> None:
    """Append one move to the folder's journal and flush it to disk before the move is made."""
    folder.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"from": str(Path(src).absolute()), "to": str(Path(dest).absolute()),
                       "sidecars": [[str(Path(s).absolute()), str(Path(t).absolute())] for s, t in sides]})
    with open(folder / JOURNAL_NAME, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _journal_entries(folder: Path) -> tuple[list[dict], list[tuple[Path, str]]]:
    """The journal's well-formed moves whose targets lie inside `folder`, and a reason for each line refused."""
    path = folder / JOURNAL_NAME
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise LandmarkError(f"{folder} holds no record of moves ({JOURNAL_NAME}): nothing to undo there") from None
    except OSError as exc:
        raise LandmarkError(f"{path}: cannot read the record of moves ({exc.strerror or exc})") from None
    inside = os.path.realpath(folder) + os.sep
    entries, refused = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            pairs = [(entry["from"], entry["to"])] + [tuple(p) for p in entry.get("sidecars", [])]
            if not all(len(p) == 2 and all(isinstance(x, str) and os.path.isabs(x) for x in p) for p in pairs):
                raise ValueError("not a pair of absolute paths")
        except (ValueError, KeyError, TypeError) as exc:
            refused.append((path, f"line {n} is not a move this tool wrote ({exc}); skipped"))
            continue
        outside = [b for _, b in pairs if not (os.path.realpath(os.path.dirname(b)) + os.sep).startswith(inside)]
        if outside:
            refused.append((Path(outside[0]), f"line {n} names a file outside {folder}; skipped"))
            continue
        entries.append({"line": line, "moves": [(Path(a), Path(b)) for a, b in pairs]})
    return entries, refused


def undo_moves(folder: Path) -> RelocateSummary:
    """Put back every photo (and sidecar) the journal of `folder` records as moved there, newest first; a
    photo whose old place is taken again stays in `folder` and is reported. The journal keeps only what
    is still to undo (gone when everything went back)."""
    folder = Path(folder)
    entries, refused = _journal_entries(folder)
    summary = RelocateSummary(failed=list(refused))
    left = []
    for entry in reversed(entries):
        (src, dest), *sides = entry["moves"]
        if not (dest.exists() or dest.is_symlink()):
            if not (src.exists() or src.is_symlink()):
                summary.failed.append((dest, f"{dest} is gone from {folder}; nothing to put back at {src}"))
            continue  # already back (an earlier undo) or never moved (a crash before the move)
        if src.exists() or src.is_symlink():
            summary.failed.append((dest, f"{src} exists again; {dest} stays in {folder}"))
            left.append(entry["line"])
            continue
        if not _attempt(summary, dest, f"{dest}: not put back", _move_one, dest, src):
            left.append(entry["line"])
            continue
        summary.done.append((dest, src))
        for side_src, side_dest in sides:
            if (side_dest.exists() or side_dest.is_symlink()) and not (side_src.exists() or side_src.is_symlink()):
                if _attempt(summary, side_dest, f"{side_dest}: sidecar not put back", _move_one, side_dest, side_src):
                    summary.sidecars.append((side_dest, side_src))
    for dest, _ in summary.done + summary.sidecars:  # folders the moves made, once empty again
        parent = dest.parent
        while parent != folder and folder in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
    journal = folder / JOURNAL_NAME
    if left:
        atomic_write_text(journal, "".join(line + "\n" for line in reversed(left)))
    else:
        journal.unlink()
    return summary


def _attempt(summary: RelocateSummary, src: Path, what: str, action, *args) -> bool:
    """Run action(*args); an OSError becomes src's failure ("what (reason)") instead of stopping the run."""
    try:
        action(*args)
        return True
    except OSError as exc:
        summary.failed.append((src, f"{what} ({exc.strerror or exc})"))
        return False


def _link_one(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src.absolute(), dest)


def link_photos(links: Sequence[tuple[Path, Path]]) -> RelocateSummary:
    """Make a symbolic link at each target pointing to its photo (absolute), creating folders as needed."""
    summary = RelocateSummary()
    for src, dest in links:
        if dest.exists() or dest.is_symlink():
            if dest.is_symlink() and Path(os.readlink(dest)) == src.absolute():
                summary.done.append((src, dest))  # made by an earlier run: nothing to do
            else:
                summary.failed.append((src, f"{dest} already exists and is not a link to {src}; left as it is"))
            continue
        if _attempt(summary, src, f"{dest}: cannot link", _link_one, src, dest):
            summary.done.append((src, dest))
    return summary
