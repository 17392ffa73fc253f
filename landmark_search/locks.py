"""Advisory file locks so two runs never interleave writes to one index or folder."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from .errors import LockedError


def lock_dir() -> Path:
    """Per-user folder for locks that must not be written into the user's photo folders."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "landmark-search" / "locks"
    base.mkdir(parents=True, exist_ok=True)
    return base


class FileLock:
    """An exclusive flock on `path`; waits up to `timeout` seconds, then raises LockedError.

    The kernel drops a flock when its process dies (even by SIGKILL), so a crash never leaves
    a stale lock behind.
    """

    def __init__(self, path: str | Path, *, what: str = "", timeout: float = 0.0):
        self.path = Path(path)
        self.what = what or str(self.path.parent)
        self.timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> "FileLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise LockedError(f"{self.what} is in use by another landmark run (pid {holder}); "
                                      "wait for it to finish and run again") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
