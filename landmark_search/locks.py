"""Advisory file locks so two runs never interleave writes to one index or folder.

The locking itself is the `filelock` package's `fcntl.flock` lock: the kernel drops it when its
process dies (even by SIGKILL), so a crash never leaves a stale lock behind, and filelock closes a
forked child's (a DataLoader worker's) copy of a held lock's descriptor, so a copy never keeps the
lock alive after the parent is killed. What it lacks is kept here: the holder's pid written into the
lock file, and a LockedError that names the locked thing and that pid.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType

import filelock

from .errors import LockedError
from .fsutil import user_cache_dir


def lock_dir() -> Path:
    """Per-user folder for locks that must not be written into the user's photo folders."""
    return user_cache_dir("locks")


def _write_pid(fd: int) -> None:
    # The pid is informational only (the flock is the lock), so no fsync.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _read_pid(path: Path) -> str:
    """The pid a lock holder wrote into the lock file, or "unknown"."""
    try:
        with open(path, "rb") as fh:
            text = fh.read(32).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


class FileLock:
    """Exclusive advisory lock on a file that records the holder's pid.

    Usable as a context manager. ``timeout`` is how long to wait for a holder to finish
    (0: refuse at once); ``description`` names the locked thing in the ``LockedError``.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 0.0, description: str | None = None,
                 poll_interval: float = 0.1) -> None:
        self.path = Path(path)
        self.timeout = float(timeout)
        self.description = description or f"{self.path.parent}"
        # Not thread-local: a lock taken in one thread may be released by another (a timer, a pool).
        self._lock = filelock.UnixFileLock(self.path, mode=0o644, thread_local=False, poll_interval=poll_interval,
                                           fallback_to_soft=False, on_acquired=_write_pid)

    @property
    def locked(self) -> bool:
        """Whether this object holds the lock."""
        return self._lock.is_locked

    def acquire(self) -> None:
        """Take the lock, waiting up to ``timeout`` seconds; raise ``LockedError`` if held."""
        if self.locked:
            raise RuntimeError(f"lock {self.path} is already held by this FileLock")
        try:
            self._lock.acquire(timeout=self.timeout)
        except filelock.Timeout:
            raise LockedError(f"{self.description} is in use by another landmark run "
                              f"(pid {_read_pid(self.path)}); wait for it to finish") from None

    def release(self) -> None:
        """Release the lock if held; the lock file itself stays (deleting it would race)."""
        if self.locked:
            self._lock.release(force=True)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
