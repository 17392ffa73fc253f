"""Advisory file locks so two runs never interleave writes to one index or folder.

The kernel drops a flock when its process dies (even by SIGKILL), so a crash never leaves a
stale lock behind. Forked children (DataLoader workers) close their copy of a held lock's file
descriptor at once: a copy would keep the lock alive after the parent is killed, until they exit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import weakref
from pathlib import Path
from types import TracebackType

from .errors import LockedError

# Locks this process holds, so that a forked child can let go of its inherited copies.
_HELD: "weakref.WeakSet[FileLock]" = weakref.WeakSet()


def lock_dir() -> Path:
    """Per-user folder for locks that must not be written into the user's photo folders."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "landmark-search" / "locks"
    base.mkdir(parents=True, exist_ok=True)
    return base


class FileLock:
    """Exclusive advisory lock (``fcntl.flock``) on a file that records the holder's pid.

    Usable as a context manager. ``timeout`` is how long to wait for a holder to finish
    (0: refuse at once); ``description`` names the locked thing in the ``LockedError``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 0.0,
        description: str | None = None,
        poll_interval: float = 0.1,
    ) -> None:
        self._fd: int | None = None
        self.path = Path(path)
        self.timeout = float(timeout)
        self.description = description or f"{self.path.parent}"
        self.poll_interval = poll_interval

    @property
    def locked(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, waiting up to ``timeout`` seconds; raise ``LockedError`` if held."""
        if self._fd is not None:
            raise RuntimeError(f"lock {self.path} is already held by this FileLock")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_pid(fd)
                    os.close(fd)
                    raise LockedError(
                        f"{self.description} is in use by another landmark run "
                        f"(pid {holder}); wait for it to finish"
                    ) from None
                time.sleep(self.poll_interval)
            except BaseException:
                os.close(fd)
                raise
        # The pid is informational only (the flock is the lock), so no fsync.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        _HELD.add(self)

    def release(self) -> None:
        """Release the lock if held; the lock file itself stays (deleting it would race)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        _HELD.discard(self)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _close_inherited_locks() -> None:
    """In a forked child: close the copies of the parent's lock fds, without unlocking them."""
    # LOCK_UN on a copy would release the parent's lock; closing a copy never does.
    for lock in list(_HELD):
        fd, lock._fd = lock._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


def _read_pid(fd: int) -> str:
    """The pid a lock holder wrote into the lock file, or "unknown"."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
