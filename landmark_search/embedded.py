"""Keywords inside the photo file itself (embedded XMP of JPEG/TIFF), for apps that read nothing else. Off by default.

The backup rule: before this tool first changes a photo, it copies the file, byte for byte, to
`.<name>.landmark-original` beside it (hidden, same folder, same permissions), and never changes a
photo without that copy. The change itself is atomic (a temp copy is edited with exiv2 through
`pyexiv2`, then renamed over the photo). `landmark untag --embed` puts the original back when the
photo is still exactly as this tool left it (its sha256 is recorded); otherwise it changes nothing
and names the backup. Pixels are never touched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import LandmarkError, SidecarError
from .fsutil import file_sha256, fsync_dir

EMBED_SUFFIXES = (".jpg", ".jpeg", ".tif", ".tiff")


def backup_path(photo: Path) -> Path:
    """Where the untouched original of an embedded-into photo is kept."""
    return photo.with_name(f".{photo.name}.landmark-original")


def can_embed(photo: Path) -> bool:
    """JPEG and TIFF carry embedded XMP that exiv2 writes safely."""
    return photo.suffix.lower() in EMBED_SUFFIXES


def _exiv2():
    try:
        import pyexiv2
    except ImportError:
        raise LandmarkError("--embed writes keywords into photos with exiv2: pip install 'landmark-search[embed]'"
                            ) from None
    return pyexiv2


def embed_keywords(photo: Path, subjects: Sequence[str], hierarchical: Sequence[str],
                   previous: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Make this tool's embedded keywords exactly these (the user's stay); returns the record for the JSON entry.

    `previous` is the record an earlier run left ({"subject", "hierarchical", "sha256"}); None when
    nothing of ours is embedded. Returns None when there is nothing to embed and nothing to take back.
    """
    previous = dict(previous or {})
    if not subjects and not hierarchical and not previous:
        return None
    pyexiv2 = _exiv2()
    backup = backup_path(photo)
    if not backup.exists():
        shutil.copy2(photo, backup)  # the backup rule: never a change without the original beside it
    tmp = photo.with_name(f".{photo.name}.landmark-embed.tmp")
    try:
        shutil.copy2(photo, tmp)
        with pyexiv2.Image(str(tmp)) as img:
            xmp = img.read_xmp()
            changes: dict[str, list[str]] = {}
            added: dict[str, list[str]] = {}
            for key, field_name, wanted in (("Xmp.dc.subject", "subject", subjects),
                                            ("Xmp.lr.hierarchicalSubject", "hierarchical", hierarchical)):
                have = xmp.get(key) or []
                have = [have] if isinstance(have, str) else list(have)
                ours_before = set(previous.get(field_name) or [])
                users = [v for v in have if v not in ours_before]
                added[field_name] = [v for v in dict.fromkeys(wanted) if v not in users]
                changes[key] = (users + added[field_name]) or None  # None: exiv2 removes the empty property
            img.modify_xmp(changes)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, photo)
        fsync_dir(photo.parent)
    except LandmarkError:
        raise
    except Exception as exc:  # exiv2 refuses a damaged file: the photo stays as it was
        raise SidecarError(f"cannot embed keywords into {photo}: {str(exc).splitlines()[0][:160]}; "
                           "it was left untouched") from None
    finally:
        tmp.unlink(missing_ok=True)
    return {**added, "backup": backup.name, "sha256": file_sha256(photo)}


def restore_original(photo: Path, record: Mapping[str, Any] | None, dry_run: bool = False) -> str:
    """Put back the original of a photo this tool embedded into: "restored", "missing" (nothing of ours) or raise."""
    backup = backup_path(photo)
    if not isinstance(record, Mapping) or not backup.exists():
        return "missing"
    if file_sha256(photo) != record.get("sha256"):
        raise SidecarError(f"{photo} changed since keywords were embedded into it; it was left as it is, and its "
                           f"original is still at {backup}")
    if not dry_run:
        os.replace(backup, photo)
        fsync_dir(photo.parent)
    return "restored"
