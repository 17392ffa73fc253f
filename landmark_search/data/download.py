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
from landmark_search.fsutil import human_size as _size
from landmark_search.locks import FileLock, lock_dir

DEFAULT_URL = "https://udacity-dlnfd.s3-us-west-1.amazonaws.com/datasets/landmark_images.zip"
COMPLETE_VERSION = 1
_CHUNK = 1 << 16
_SPLITS = ("train", "test")
# The real zip holds JPEG photos, which do not compress further: it extracts to about its own size, far
# under these caps. A zip bomb is the opposite (a 2 MB zip that inflates to 2 GiB is 1000x), and an
# endless HTTP body has no size at all, so both the download and what it extracts to are capped.
DEFAULT_MAX_BYTES = 8 << 30
DEFAULT_MAX_RATIO = 100.0
# tempfile.mkdtemp(prefix=".extract-") names: exactly what _extract makes, nothing of the user's.
_EXTRACT_TEMP = re.compile(r"\.extract-[a-z0-9_]{8}")


def download_dataset(
    dest: Path,
    url: str = DEFAULT_URL,
    *,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> Path:
    """Fetch the zip at `url` (http(s), file:// or a local path) and extract it to dest/train and dest/test.

    `max_bytes` caps the download and the extracted total; `max_ratio` caps extracted / zip size.
    """
    dest = Path(dest)
    if max_bytes < 1 or not max_ratio > 0:
        raise DataError(f"size limits must be positive (max size {max_bytes} bytes, max ratio {max_ratio})")
    # One run per destination at a time; holding the lock also makes every .extract-* folder in dest
    # the leftover of a killed run (no live run can own one), so each run sweeps them first.
    key = hashlib.sha256(str(dest.resolve()).encode()).hexdigest()[:16]
    with FileLock(lock_dir() / f"download-{key}.lock", description=f"downloading into {dest}"):
        if dest.is_dir():
            sweep_extract_temps(dest)
        return _download_locked(dest, url, sha256, progress, timeout, max_bytes, max_ratio)


def sweep_extract_temps(dest: Path) -> int:
    """Remove the temporary extraction folders a killed run left in dest; return how many.

    Call only while holding dest's download lock.
    """
    removed = 0
    with os.scandir(dest) as entries:
        for entry in entries:
            if _EXTRACT_TEMP.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
    return removed


def _download_locked(dest: Path, url: str, sha256: str | None, progress: bool, timeout: float, max_bytes: int,
                     max_ratio: float) -> Path:
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
        archive, owned = _fetch(url, dest, progress=progress, timeout=timeout, max_bytes=max_bytes), True

    try:
        digest = _verify(archive, sha256, max_bytes, max_ratio)
        count = _extract(archive, dest, min(max_bytes, int(max_ratio * archive.stat().st_size)))
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


def parse_size(text: str) -> int:
    """Bytes from '8G', '500M', '1.5T', '64K' (powers of 1024; a trailing B or iB is allowed) or a plain number."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if match is None or float(match.group(1)) <= 0:
        raise DataError(f"--max-size {text!r}: use a positive size such as 8G, 500M or a number of bytes")
    return int(float(match.group(1)) * 1024 ** " kmgt".index(match.group(2).lower() or " "))


def _fetch(url: str, dest: Path, *, progress: bool, timeout: float, max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
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
            if total is not None and total > max_bytes:
                raise DataError(f"{url} is {_size(total)}, over the {_size(max_bytes)} limit; pass a larger "
                                "--max-size if the dataset really is that big")
            received, endless = offset, False
            with open(part, mode) as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, disable=not progress,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    received += len(chunk)
                    if received > max_bytes:  # only without a length: urllib stops at Content-Length
                        endless = True
                        break
                    out.write(chunk)
                    bar.update(len(chunk))
            if endless:
                part.unlink()
                raise DataError(f"{url} sent more than {_size(max_bytes)} without saying its size; stopped and "
                                "deleted the partial file; pass a larger --max-size if the dataset really is that big")
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


def _verify(archive: Path, sha256: str | None, max_bytes: int = DEFAULT_MAX_BYTES,
            max_ratio: float = DEFAULT_MAX_RATIO) -> str:
    """Check the checksum, the declared sizes and every member's CRC; return the archive's sha256."""
    actual = file_sha256(archive)
    if sha256 is not None and actual != sha256.lower():
        raise DataError(f"{archive.name} has sha256 {actual}, expected {sha256}; the download is corrupt or the wrong file")
    try:
        with zipfile.ZipFile(archive) as zf:
            _check_declared_sizes(archive, zf.infolist(), max_bytes, max_ratio)  # before testzip inflates it all
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{archive.name} is not a valid zip archive ({exc}); download it again") from exc
    if bad is not None:
        raise DataError(f"{archive.name} is corrupt (bad CRC in {bad}); download it again")
    return actual


def _check_declared_sizes(archive: Path, infos: list[zipfile.ZipInfo], max_bytes: int, max_ratio: float) -> None:
    """Refuse from the central directory alone an archive that would extract to too much."""
    declared, packed = sum(i.file_size for i in infos), archive.stat().st_size
    if declared > max_ratio * packed:
        raise DataError(f"{archive.name}: refused, a zip bomb: declares {_size(declared)} uncompressed in a "
                        f"{_size(packed)} file ({declared / max(packed, 1):.0f}x, limit {max_ratio:g}x); pass a larger "
                        "--max-ratio only if you trust it")
    if declared > max_bytes:
        raise DataError(f"{archive.name} would extract to {_size(declared)}, over the {_size(max_bytes)} limit; "
                        "pass a larger --max-size if the dataset really is that big")


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


def _extract(archive: Path, dest: Path, budget: int) -> int:
    """Extract train/ and test/ into dest via a temporary folder; return the number of files.

    Bytes are counted as they are written: a member that inflates past its declared size, or a total
    past `budget`, stops the extraction (the declared sizes were checked, but they can lie).
    """
    with zipfile.ZipFile(archive) as zf:
        members = _safe_members(zf)  # checks every member before a single byte is written
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
        try:
            count = written = 0
            for info, rel in members:
                if rel.parts[0] not in _SPLITS:
                    continue
                target = tmp.joinpath(*rel.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    member = 0
                    while chunk := src.read(_CHUNK):
                        member += len(chunk)
                        written += len(chunk)
                        if member > info.file_size:  # zipfile stops there itself; this is the backstop
                            raise DataError(f"{archive.name}: refused, {info.filename} inflates past its declared "
                                            f"{_size(info.file_size)} (a zip bomb); download it from the original URL")
                        if written > budget:
                            raise DataError(f"{archive.name}: refused, extracting it passed {_size(budget)} (a zip "
                                            "bomb?); pass a larger --max-size or --max-ratio only if you trust it")
                        out.write(chunk)
                count += 1
            for split in _SPLITS:
                os.replace(tmp / split, dest / split)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return count


def _write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")
