"""Download and safely extract the original 50-landmark dataset (resumable, verified, idempotent)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from landmark_search.errors import DataError
from landmark_search.fsutil import atomic_write_text, file_sha256

DEFAULT_URL = "https://udacity-dlnfd.s3-us-west-1.amazonaws.com/datasets/landmark_images.zip"
COMPLETE_VERSION = 1
_CHUNK = 1 << 16
_SPLITS = ("train", "test")


def download_dataset(
    dest: Path,
    url: str = DEFAULT_URL,
    *,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Fetch the zip at `url` (http(s), file:// or a local path) and extract it to dest/train and dest/test."""
    dest = Path(dest)
    if _is_complete(dest):
        return dest
    for split in _SPLITS:
        if (dest / split).exists():
            raise DataError(
                f"{dest / split} already exists but {dest} has no .complete marker; "
                "move it away or choose another folder"
            )
    dest.mkdir(parents=True, exist_ok=True)

    local = _local_path(url)
    if local is not None:
        if not local.is_file():
            raise DataError(f"{local} is not a file; pass the path of landmark_images.zip")
        archive, owned = local, False
    else:
        archive, owned = _fetch(url, dest, progress=progress, timeout=timeout), True

    try:
        digest = _verify(archive, sha256)
        count = _extract(archive, dest)
    except DataError:
        # A corrupt or unsafe archive is useless for resuming; only delete what we downloaded.
        if owned:
            shutil.rmtree(archive.parent, ignore_errors=True)
        raise
    _write_json(dest / ".complete", {"version": COMPLETE_VERSION, "url": url, "sha256": digest, "files": count})
    if owned:
        shutil.rmtree(archive.parent, ignore_errors=True)
    return dest


def _is_complete(dest: Path) -> bool:
    return (dest / ".complete").is_file() and all((dest / split).is_dir() for split in _SPLITS)


def _local_path(url: str) -> Path | None:
    """The file a file:// URL or plain path names; None for a network URL."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    # A one-letter "scheme" is a Windows drive letter, not a protocol.
    if parsed.scheme in ("", *"abcdefghijklmnopqrstuvwxyz"):
        return Path(url).expanduser()
    if parsed.scheme in ("http", "https"):
        return None
    raise DataError(f"unsupported URL scheme in {url!r}; use http(s)://, file:// or a local path to the zip")


def _how_to_fix(url: str, dest: Path) -> str:
    return (
        f"check the connection and run again to resume, or download {url} by hand and run "
        f"`landmark data download {dest} --url /path/to/landmark_images.zip`"
    )


def _fetch(url: str, dest: Path, *, progress: bool, timeout: float) -> Path:
    """Download url into dest/.download/, resuming a .part left by an earlier run; return the finished file."""
    name = PurePosixPath(urllib.parse.urlparse(url).path).name or "dataset.zip"
    folder = dest / ".download"
    folder.mkdir(exist_ok=True)
    final, part = folder / name, folder / f"{name}.part"
    if final.is_file():  # downloaded by a run that stopped before extracting
        return final

    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "landmark-search"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total: int | None
            if offset and response.status == 206:
                start, total = _content_range(response.headers.get("Content-Range", ""))
                if start != offset:
                    part.unlink()
                    raise DataError(f"{url} answered with bytes from {start}, not {offset}; run again to restart")
                mode = "ab"
            else:
                # 200: the server ignored the Range header, so the body starts at byte zero.
                offset, mode = 0, "wb"
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            received = offset
            with open(part, mode) as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, disable=not progress,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # Nothing left to send: the .part already holds the whole file; verification decides.
            os.replace(part, final)
            return final
        raise DataError(f"could not download {url}: HTTP {exc.code} {exc.reason}; {_how_to_fix(url, dest)}") from exc
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets are all OSError
        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        raise DataError(f"could not download {url}: {reason}; {_how_to_fix(url, dest)}") from exc

    # urllib returns a short body without complaint when the connection drops, so count the bytes.
    if total is not None and received != total:
        raise DataError(f"download of {url} stopped after {received} of {total} bytes; {_how_to_fix(url, dest)}")
    os.replace(part, final)
    return final


def _content_range(value: str) -> tuple[int, int | None]:
    """Parse 'bytes START-END/TOTAL' into (START, TOTAL or None when the total is '*')."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value)
    if match is None:
        raise DataError(f"the server sent a malformed Content-Range header {value!r}; run again to restart")
    return int(match.group(1)), None if match.group(3) == "*" else int(match.group(3))


def _verify(archive: Path, sha256: str | None) -> str:
    """Check the checksum and every member's CRC; return the archive's sha256."""
    actual = file_sha256(archive)
    if sha256 is not None and actual != sha256.lower():
        raise DataError(f"{archive.name} has sha256 {actual}, expected {sha256}; the download is corrupt or the wrong file")
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{archive.name} is not a valid zip archive ({exc}); download it again") from exc
    if bad is not None:
        raise DataError(f"{archive.name} is corrupt (bad CRC in {bad}); download it again")
    return actual


def _safe_members(zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Map members to relative destination paths, refusing any that could write outside dest."""
    members: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    for info in zf.infolist():
        name = info.filename.replace("\\", "/")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(f"refusing to extract: {info.filename!r} is a symbolic link")
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
            raise DataError(f"refusing to extract: {info.filename!r} is an absolute path")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise DataError(f"refusing to extract: {info.filename!r} points outside the destination")
        if not parts or parts[0] == "__MACOSX" or parts[-1] == ".DS_Store":
            continue  # macOS archive litter
        members.append((info, PurePosixPath(*parts)))

    # The real archive wraps everything in landmark_images/; drop a single shared top folder.
    tops = {rel.parts[0] for _, rel in members}
    if len(tops) == 1 and any(len(rel.parts) > 1 for _, rel in members):
        members = [(info, PurePosixPath(*rel.parts[1:])) for info, rel in members if len(rel.parts) > 1]
    for split in _SPLITS:
        if not any(rel.parts[0] == split and len(rel.parts) > 1 for _, rel in members):
            raise DataError(f"the archive has no {split}/ folder; expected train/<class>/... and test/<class>/...")
    return members


def _extract(archive: Path, dest: Path) -> int:
    """Extract train/ and test/ into dest via a temporary folder; return the number of files."""
    with zipfile.ZipFile(archive) as zf:
        members = _safe_members(zf)  # checks every member before a single byte is written
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
        try:
            count = 0
            for info, rel in members:
                if rel.parts[0] not in _SPLITS:
                    continue
                target = tmp.joinpath(*rel.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                count += 1
            for split in _SPLITS:
                os.replace(tmp / split, dest / split)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return count


def _write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")
