"""Atomic file writes: a temp file in the same folder, fsync, then os.replace."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        old = os.umask(0o022)  # no /proc: read it by setting it (and put it back at once)
        os.umask(old)
        return old


def new_file_mode(path: Path) -> int:
    """The replaced file's own permissions, else what open() would give (0666 less the umask):
    mkstemp's private 0600 would hide a sidecar or an export from the other apps and users."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def atomic_write_bytes(path: str | Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace `path` with `data` so readers see the old file or the new one, never half of one."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # name the file the user asked for, not our temporary one
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode if mode is not None else new_file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, **kwargs: Any) -> None:
    """UTF-8 text version of atomic_write_bytes."""
    atomic_write_bytes(path, text.encode("utf-8"), **kwargs)


def atomic_write_json(path: str | Path, data: Any, **kwargs: Any) -> None:
    """Pretty JSON with a trailing newline, written atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", **kwargs)
