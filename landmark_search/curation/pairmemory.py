"""What `landmark duplicates` already verified on pixels, remembered per content hash in the index folder
(and, in a file of its own, what grouping verified by local features: placematch.py).

Layout: INDEX/pair_checks.sqlite (SQLite, `PRAGMA user_version` = FORMAT_VERSION)::

    meta     key/value: "matcher", the pixel check's name and settings (imagematch.MATCHER)
    pairs    (a, b) content hashes with a < b, score: the pixel match of the two pictures
    content  hash, kept: the share of the picture left once flat borders are trimmed (0-1]

Keys are content hashes, so a photo that is renamed, moved or copied keeps what was learnt about its
bytes, and an edited photo (new bytes) is checked again. The file is a cache: a damaged one, one of
another format version or one written by other matcher settings is emptied and refilled, never
trusted. Each `remember` call is one transaction (duplicates calls it every REMEMBER_EVERY checks, placematch
every CHUNK pairs), so a killed run loses only what it had not yet handed over.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Iterable, Mapping

FORMAT_VERSION = 1
FILE_NAME = "pair_checks.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (a TEXT NOT NULL, b TEXT NOT NULL, score REAL NOT NULL, PRIMARY KEY (a, b))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS content (hash TEXT PRIMARY KEY, kept REAL NOT NULL) WITHOUT ROWID;
"""


def pair_key(a: str, b: str) -> tuple[str, str]:
    """The one order a pair of content hashes is stored and looked up in."""
    return (a, b) if a < b else (b, a)


class PairMemory:
    """Scores of content-hash pairs (and border shares of contents), for one index folder, file and matcher."""

    def __init__(self, directory: Path | None, matcher: str, file_name: str = FILE_NAME) -> None:
        self.path = Path(directory) / file_name if directory is not None else None
        self.matcher = matcher
        self._db: sqlite3.Connection | None = None
        if self.path is not None and self.path.parent.is_dir():
            try:
                self._db = self._open()
            except sqlite3.Error:  # damaged: a cache is rebuilt, not repaired
                self._reset()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            db.executescript(_SCHEMA)
            stored = db.execute("SELECT value FROM meta WHERE key = 'matcher'").fetchone()
            if version != FORMAT_VERSION or (stored is not None and stored[0] != self.matcher):
                db.executescript("BEGIN; DELETE FROM pairs; DELETE FROM content; DELETE FROM meta; COMMIT;")
            db.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('matcher', ?)", (self.matcher,))
        except BaseException:
            db.close()
            raise
        return db

    def _reset(self) -> None:
        self.close()  # the damaged file's connection first: a file still open cannot be deleted everywhere
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(OSError):
                Path(str(self.path) + suffix).unlink()
        try:
            self._db = self._open()
        except sqlite3.Error:  # a read-only index folder: run without memory
            self._db = None

    def scores(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], float]:
        """The remembered score of each (a, b) pair (either order) that was checked before."""
        wanted = {pair_key(a, b) for a, b in pairs}
        if self._db is None or not wanted:
            return {}
        try:
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (a TEXT, b TEXT)")
            self._db.execute("DELETE FROM wanted")
            self._db.executemany("INSERT INTO wanted VALUES (?, ?)", wanted)
            rows = self._db.execute("SELECT p.a, p.b, p.score FROM wanted w JOIN pairs p ON p.a = w.a AND p.b = w.b")
            return {(a, b): s for a, b, s in rows}
        except sqlite3.Error:  # damaged since it was opened: start it afresh
            self._reset()
            return {}

    def kept(self, hashes: Iterable[str]) -> dict[str, float]:
        """The remembered border share of each content hash known."""
        if self._db is None:
            return {}
        out: dict[str, float] = {}
        todo = list(dict.fromkeys(hashes))
        try:
            for start in range(0, len(todo), 500):
                part = todo[start:start + 500]
                rows = self._db.execute(f"SELECT hash, kept FROM content WHERE hash IN ({','.join('?' * len(part))})",
                                        part)
                out.update(rows)
        except sqlite3.Error:
            self._reset()
            return {}
        return out

    def remember(self, scores: Mapping[tuple[str, str], float], kept: Mapping[str, float]) -> None:
        """Add new checks (one transaction; a failure to write only costs the next run the same checks)."""
        if self._db is None or not (scores or kept):
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR REPLACE INTO pairs VALUES (?, ?, ?)",
                                 (pair_key(a, b) + (float(s),) for (a, b), s in scores.items()))
            self._db.executemany("INSERT OR REPLACE INTO content VALUES (?, ?)",
                                 ((h, float(k)) for h, k in kept.items()))
            self._db.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
