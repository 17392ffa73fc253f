"""Move photos (with their sidecars) or link them into a review folder; nothing is ever deleted or overwritten.

Used by `landmark duplicates --action move|link` and `landmark group --out`. A target that already
exists is never replaced: that photo is skipped and reported. A move is `os.rename` on one file
system; across file systems `shutil.move` copies, checks the size and only then removes the source.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .data.files import supported_extensions
from .sidecar import JSON_SUFFIX, XMP_SUFFIX


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


def move_photos(moves: Sequence[tuple[Path, Path]]) -> RelocateSummary:
    """Move each photo to its target, then its sidecars beside it; a photo whose target (or whose
    sidecar's target) exists stays where it is."""
    summary = RelocateSummary()
    for src, dest in moves:
        sides = [(s, dest.with_name(dest.name + s.name[len(src.name):]) if s.name.startswith(src.name)
                  else dest.with_name(dest.stem + s.suffix)) for s in sidecars_of(src)]
        clash = next((t for t in [dest, *(t for _, t in sides)] if t.exists() or t.is_symlink()), None)
        if clash is not None:
            summary.failed.append((src, f"{clash} already exists; {src} was left in place"))
            continue
        if not _attempt(summary, src, f"{src}: not moved", _move_one, src, dest):
            continue
        summary.done.append((src, dest))
        for side, target in sides:
            if _attempt(summary, side, f"{side}: sidecar not moved with its photo", _move_one, side, target):
                summary.sidecars.append((side, target))
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
