"""File utilities written once: atomic replacement (temp file, fsync, os.replace, folder fsync), streamed sha256,
reading a JSON file and making a folder with a one-line error."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from .errors import LandmarkError

_CHUNK = 1 << 20


def fsync_dir(directory: str | Path) -> None:
    """Make a rename in `directory` durable; best effort (not every platform can open a folder)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# The temp names this package writes: atomic_writer's `.NAME.<8 hex>.tmp`, and `.NAME.landmark-embed.tmp`.
_TEMP_NAME = re.compile(r"^\..+\.(?:[0-9a-f]{8}|landmark-embed)\.tmp$")
STALE_TEMP_SECONDS = 600.0  # far longer than any write of ours takes, so a write in progress is never swept


def _open_temp(path: Path) -> tuple[int, Path]:
    """A new `.NAME.<8 hex>.tmp` beside path, created 0666 so the umask decides (mkstemp's 0600 would hide
    a sidecar or an export from the other apps and users)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
        except OSError as exc:  # name the file the caller asked for, not our temporary one
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None


def _keep_owner_and_mode(tmp: Path, old: os.stat_result | None, mode: int | None) -> None:
    if old is not None and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
        with contextlib.suppress(OSError):  # keep the owner's file theirs when run as root; not possible otherwise
            os.chown(tmp, old.st_uid, old.st_gid)
    if mode is None and old is not None:
        mode = stat.S_IMODE(old.st_mode)
    if mode is not None:
        os.chmod(tmp, mode)  # after chown, which may clear mode bits


@contextlib.contextmanager
def _replacing(tmp: Path, path: Path, old: os.stat_result | None, mode: int | None, durable: bool) -> Iterator[None]:
    """Rename `tmp` over `path` when the block ends (keeping `old`'s mode and owner); on an error drop `tmp`."""
    try:
        yield
        _keep_owner_and_mode(tmp, old, mode)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:  # a failed write (a full disk) names no file: name the one being written
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def atomic_writer(path: str | Path, *, mode: int | None = None, durable: bool = True) -> Iterator[BinaryIO]:
    """A binary file that replaces `path` when the block ends, so readers see the old file or the new one.

    The replaced file keeps its permissions (and owner, where allowed); a new file gets what open() would
    give, or `mode`. The data and the rename are fsynced (not with durable=False: a cache that can be made
    again); on an error the old file stays and the temp goes.
    """
    path = Path(path)
    old = _stat_or_none(path)
    fd, tmp = _open_temp(path)
    with _replacing(tmp, path, old, mode, durable), os.fdopen(fd, "wb") as fh:
        yield fh
        fh.flush()
        if durable:
            os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path, *, mode: int | None = None, durable: bool = True) -> Iterator[Path]:
    """atomic_writer for a writer that needs a file name (exiv2 edits a file by its path): yields an empty temp
    file beside `path` that replaces it when the block ends."""
    path = Path(path)
    old = _stat_or_none(path)
    fd, tmp = _open_temp(path)
    os.close(fd)
    with _replacing(tmp, path, old, mode, durable):
        yield tmp
        if durable:  # the writer may have replaced the temp's inode: sync what the name holds now
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes, *, mode: int | None = None, durable: bool = True) -> None:
    """Replace `path` with `data` atomically (see atomic_writer)."""
    with atomic_writer(path, mode=mode, durable=durable) as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str, **kwargs: Any) -> None:
    """UTF-8 text version of atomic_write_bytes."""
    atomic_write_bytes(path, text.encode("utf-8"), **kwargs)


def atomic_write_json(path: str | Path, data: Any, **kwargs: Any) -> None:
    """Pretty JSON with a trailing newline, written atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", **kwargs)


def read_json(path: str | Path, fail: Callable[[str], Exception]) -> Any:
    """The JSON value in a UTF-8 file, or raise fail(why) when the file cannot be read or is not JSON.

    A missing file raises FileNotFoundError as it is: to most callers "not there yet" is no damage.
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:  # ValueError: bad UTF-8 or bad JSON
        raise fail(str(exc)) from None


def make_dirs(path: str | Path, fail: Callable[[str], Exception]) -> None:
    """mkdir -p, or raise fail(why) (the OS's reason, e.g. "Permission denied") when it cannot."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(exc.strerror or str(exc)) from None


def file_sha256(path: str | Path, copy_to: BinaryIO | None = None) -> str:
    """Hex sha256 of a file, streamed in 1 MiB chunks (each also written to `copy_to` when given: one read for
    a copy and its digest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            if copy_to is not None:
                copy_to.write(chunk)
    return digest.hexdigest()


def is_utf8(path: str) -> bool:
    """False for a name with bytes that are not UTF-8 (surrogate escapes), which SQLite text cannot hold."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


APP_NAME = "landmark-search"


def user_cache_dir(name: str) -> Path:
    """The user's cache folder NAME (~/.cache/landmark-search/NAME on Linux, $XDG_CACHE_HOME honoured), created
    if missing."""
    import platformdirs

    base = platformdirs.user_cache_path(APP_NAME) / name
    base.mkdir(parents=True, exist_ok=True)
    return base


def user_config_file() -> Path:
    """The user's settings file: ~/.config/landmark-search/config.toml on Linux ($XDG_CONFIG_HOME honoured),
    ~/Library/Application Support/landmark-search/config.toml on macOS, %LOCALAPPDATA%\\landmark-search on
    Windows."""
    import platformdirs

    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def user_setting(key: str) -> str | None:
    """A text setting from user_config_file() (`key = "value"`); None when the file or the key is absent.

    A file that is not TOML, or a value that is not text, is a one-line error naming the file and the key.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    path = user_config_file()
    try:
        with open(path, "rb") as fh:
            settings = tomllib.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise LandmarkError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc}); fix the file "
                            f"(TOML, e.g. {key} = \"...\") or delete it") from None
    value = settings.get(key)
    if value is not None and not isinstance(value, str):
        raise LandmarkError(f"{path}: {key} must be text in quotes, e.g. {key} = \"...\"")
    return value


def human_size(n: float) -> str:
    """A byte count for messages: 1.2 GiB, 3.4 MB, 12 KB, 7 bytes."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB" if n >= 1e3 else f"{int(n)} bytes"


def sweep_stale_temps(folder: str | Path, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Delete the temp files of this package's writes that a killed run left in `folder`; how many went.

    Only names of our temp shape (`.NAME.1a2b3c4d.tmp`) that are regular files at least `older_than` seconds
    old go, so a write in progress (by this run or another one) is never touched; 0 when the caller holds the
    lock of every writer to the folder.
    """
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not _TEMP_NAME.match(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime >= older_than:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed
