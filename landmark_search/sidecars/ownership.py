"""What this tool added to a photo's sidecars, so a re-run replaces it and `landmark untag` gives the files back.

Our JSON entry (sidecar.SIDECAR_KEY) records how to give each file back:

    "created": true                  # the JSON sidecar did not exist before: untag deletes it if nothing else is left
    "before": "<the file's text>"    # it existed: its exact text before our first write (when at most MAX_KEPT_BYTES)
    "xmp": {"restore": "delete" | "text" | null, "before": "<text>" | null, "sha256": "<of the XMP we last wrote>"}

Untag restores a file byte for byte when nothing but our own entry changed since we wrote it (JSON:
the other keys equal the kept text's; XMP: its bytes are the ones we wrote); otherwise it removes
exactly our entry and our keywords (xmp.remove_keywords) and keeps every later edit of the user's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from .jsonfile import SIDECAR_KEY, check_target, read_bytes, read_sidecar, safe_write, write_sidecar
from .xmp import read_keywords, remove_keywords

# The user's file text is kept inside our entry only when small: sidecars are a few hundred bytes.
MAX_KEPT_BYTES = 64 << 10


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _delete(path: Path, root: Path | None, dry_run: bool) -> str:
    if not dry_run:
        check_target(path, root)
        path.unlink()
    return "deleted"


def _kept_text(raw: bytes | None) -> str | None:
    if raw is None or len(raw) > MAX_KEPT_BYTES:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _others(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != SIDECAR_KEY}


def _text_matches(text: Any, data: Mapping[str, Any]) -> bool:
    """The kept text still describes the file apart from our entry."""
    if not isinstance(text, str):
        return False
    try:
        return json.loads(text) == _others(data)
    except ValueError:
        return False


def json_record(path: Path, current: Mapping[str, Any]) -> dict[str, Any]:
    """The "created"/"before" fields of our next JSON entry, given the file as it is now."""
    old = current.get(SIDECAR_KEY)
    if isinstance(old, dict):  # ours since an earlier run (an entry from before this record: never deleted)
        record: dict[str, Any] = {"created": old.get("created") is True}
        if _text_matches(old.get("before"), current):
            record["before"] = old["before"]
        return record
    raw = read_bytes(path)
    if raw is None:
        return {"created": True}
    text = _kept_text(raw)
    return {"created": False, **({"before": text} if text is not None else {})}


def xmp_record(path: Path, entry: Any) -> dict[str, Any]:
    """How untag can give the XMP sidecar back exactly (completed by finish_xmp_record).

    "restore": "delete" (this tool created it), "text" (its text before this tool first wrote it is
    in "before"), or None (edited by someone else since, or too big to keep: only our keywords go).
    """
    raw = read_bytes(path)
    old = entry.get("xmp") if isinstance(entry, dict) else None
    if isinstance(old, dict) and old.get("restore") in ("delete", "text"):
        if raw is not None and old.get("sha256") == _sha256(raw):  # as we left it
            return {"restore": old["restore"], "before": old.get("before")}
        if raw is not None:
            return {"restore": None, "before": None}
    text = _kept_text(raw)
    if raw is None:
        return {"restore": "delete", "before": None}
    return {"restore": "text" if text is not None else None, "before": text}


def finish_xmp_record(path: Path, record: Mapping[str, Any], written: bytes | None = None) -> dict[str, Any]:
    """The record with the digest of the XMP as this run left it (None: no file); `written`: the bytes just
    written, when this run wrote it."""
    raw = written if written is not None else read_bytes(path)
    return {**record, "sha256": _sha256(raw) if raw is not None else None}


def untag_json(path: Path, *, root: Path | None, dry_run: bool = False) -> str:
    """Take our entry out of a JSON sidecar: "missing", "unchanged", "removed", "restored" or "deleted"."""
    data = read_sidecar(path)  # {} when there is no file
    entry = data.get(SIDECAR_KEY)
    if entry is None:
        return "unchanged" if path.exists() else "missing"
    others = _others(data)
    if isinstance(entry, dict) and entry.get("created") is True and not others:
        return _delete(path, root, dry_run)
    if isinstance(entry, dict) and _text_matches(entry.get("before"), data):
        if not dry_run:
            safe_write(path, entry["before"].encode("utf-8"), root=root, create_parents=False)
        return "restored"
    if not dry_run:
        write_sidecar(path, others, root=root)
    return "removed"


def untag_xmp(path: Path, entry: Any, *, root: Path | None, dry_run: bool = False) -> str:
    """Take our keywords out of an XMP sidecar: "missing", "unchanged", "removed", "restored" or "deleted"."""
    raw = read_bytes(path)
    if raw is None:
        return "missing"
    record = entry.get("xmp") if isinstance(entry, dict) else None
    if isinstance(record, dict) and record.get("sha256") == _sha256(raw):  # as we left it
        if record.get("restore") == "delete":
            return _delete(path, root, dry_run)
        if record.get("restore") == "text" and isinstance(record.get("before"), str):
            if not dry_run:
                safe_write(path, record["before"].encode("utf-8"), root=root, create_parents=False)
            return "restored"
    if dry_run:
        return "removed" if read_keywords(path)["ours"] else "unchanged"
    return remove_keywords(path, root=root)
