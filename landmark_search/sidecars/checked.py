"""Photos `landmark tag` checked and found nothing to record about, remembered outside the photo folders.

A photo with no landmark, no place and no name gets no sidecar (a family folder must not fill with files
that say nothing). So that the next run need not look at it again, its check is remembered here: one
SQLite file in the user's cache folder (`~/.cache/landmark-search/tag/checked.sqlite` on Linux), a row per
(photo path as bytes, model identity, recorded options) with the photo's fingerprint (size and mtime). A photo
whose fingerprint, model or options changed is checked again. A lost or damaged file costs one slower run
(every photo is checked again), never a wrong tag: it is a cache, and anything it cannot read is a miss.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..fsutil import user_cache_dir

log = logging.getLogger(__name__)

CHECKED_FILE = "checked.sqlite"
CHECKED_VERSION = 2  # PRAGMA user_version; a file of another version is started afresh (it is only a cache)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS checked (
    path BLOB NOT NULL,
    model TEXT NOT NULL,
    options TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    checked_at REAL NOT NULL,
    PRIMARY KEY (path, model, options)
) WITHOUT ROWID
"""


def options_key(options: Mapping[str, Any]) -> str:
    """The recorded tag options as one canonical text."""
    return json.dumps(dict(options), sort_keys=True, separators=(",", ":"))


def _key(photo: Path) -> bytes:
    # The photo's folders resolved, as the index names photos: the same photo reached two ways is one row.
    # Bytes, so that a name that is not UTF-8 is remembered too.
    return os.fsencode(os.path.join(os.path.realpath(photo.parent), photo.name))


class CheckedPhotos:
    """The remembered checks of one tag run: `is_checked` before the model loads, `remember` after."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else user_cache_dir("tag") / CHECKED_FILE
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection | None:
        """The open file; a damaged or foreign one is started afresh, and one that cannot be kept at all is None
        (the run goes on, checking every such photo again next time)."""
        if self._db is None:
            try:
                self._db = self._open()
            except (sqlite3.Error, OSError):
                try:
                    self.path.unlink(missing_ok=True)
                    self._db = self._open()
                except (sqlite3.Error, OSError) as exc:
                    log.warning("warning: %s: cannot remember the checked photos there (%s); photos with nothing "
                                "to record will be checked again next time", self.path, exc)
        return self._db

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, CHECKED_VERSION):
                raise sqlite3.DatabaseError(f"{self.path}: version {version}, not {CHECKED_VERSION}")
            db.execute(_SCHEMA)
            db.execute(f"PRAGMA user_version = {CHECKED_VERSION}")
        except BaseException:
            db.close()
            raise
        return db

    def is_checked(self, photo: Path, fingerprint: str, model: str, options: str) -> bool:
        """Whether this photo, as it is now, was checked with this model and these options and said nothing."""
        db = self._connect()
        if db is None:
            return False
        try:
            row = db.execute("SELECT fingerprint FROM checked WHERE path = ? AND model = ? AND options = ?",
                             (_key(photo), model, options)).fetchone()
        except sqlite3.Error:
            return False
        return row is not None and row[0] == fingerprint

    def remember(self, checked: Iterable[tuple[Path, str]], model: str, options: str) -> None:
        """Record (photo, fingerprint) pairs that had nothing to record."""
        self._change("INSERT OR REPLACE INTO checked VALUES (?, ?, ?, ?, ?)",
                     [(_key(p), model, options, fp, time.time()) for p, fp in checked])

    def forget(self, photos: Iterable[Path], model: str, options: str) -> None:
        """Drop the remembered checks of photos that now have something to record (with this model and options)."""
        self._change("DELETE FROM checked WHERE path = ? AND model = ? AND options = ?",
                     [(_key(p), model, options) for p in photos])

    def _change(self, sql: str, rows: list[tuple]) -> None:
        """One transaction of `sql` over rows; a failure is a warning."""
        db = self._connect() if rows else None
        if db is None:
            return
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(sql, rows)
        except sqlite3.Error as exc:
            log.warning("warning: %s: could not update the checked photos (%s)", self.path, exc)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> "CheckedPhotos":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

