"""The SQLite side of an index: the manifest, source of truth for photos and their vectors.

``manifest.sqlite`` holds meta (format_version, model_id, dim, index_type, created, generation,
index_uuid) and photos (id, path, size, mtime_ns, content_hash, label, vector float32 BLOB). Every
change is one transaction that bumps the generation; ids come from ``AUTOINCREMENT`` and are never
reused, so a FAISS cache that is behind can be caught up from the rows with larger ids.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from landmark_search.errors import IndexStoreError
from landmark_search.vector_cache import INDEX_TYPES

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.sqlite"
_SQL_CHUNK = 500  # stays far below SQLite's limit on bound parameters

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS photos (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    path         TEXT NOT NULL UNIQUE,
    size         INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    label        TEXT,
    vector       BLOB NOT NULL
);
"""


def chunks(items: Sequence[Any], size: int = _SQL_CHUNK) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def connect(manifest: Path) -> sqlite3.Connection:
    """Connection in autocommit mode; transactions are explicit (see ``transaction``)."""
    try:
        conn = sqlite3.connect(manifest, isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.DatabaseError as exc:
        raise IndexStoreError(f"{_not_ours(manifest)} ({exc})") from exc
    except sqlite3.Error as exc:
        raise IndexStoreError(f"cannot open the index manifest {manifest}: {exc}") from exc
    return conn


def _not_ours(manifest: Path) -> str:
    return f"{manifest} is not a landmark-search index manifest; choose another --index"


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, *, write: bool) -> Iterator[None]:
    """One SQLite transaction; a write takes the write lock up front so it cannot deadlock."""
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def marks(items: Sequence[Any]) -> str:
    return ",".join("?" * len(items))


def current_generation(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])


def bump_generation(conn: sqlite3.Connection) -> int:
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
    return current_generation(conn)


def ensure_manifest(conn: sqlite3.Connection, directory: Path, *, model_id: str, dim: int,
                     index_type: str, create: bool) -> dict[str, str]:
    """Create the manifest if empty, then check it is ours, of a known format and compatible."""
    not_ours = _not_ours(directory / MANIFEST_NAME)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables and create:
            # WAL lets readers search while a writer adds; it cannot change inside a transaction.
            conn.execute("PRAGMA journal_mode = WAL")
            with transaction(conn, write=True):
                _create_schema(conn)
                now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
                defaults = {"format_version": str(FORMAT_VERSION), "model_id": model_id,
                            "dim": str(dim), "index_type": index_type, "created": now,
                            "generation": "0", "index_uuid": uuid.uuid4().hex}
                conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                                 defaults.items())
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as exc:
        raise IndexStoreError(f"{not_ours} ({exc})") from exc
    required = ("format_version", "model_id", "dim", "index_type", "generation", "index_uuid")
    if any(key not in meta for key in required):
        raise IndexStoreError(not_ours)
    version = int(meta["format_version"])
    if version > FORMAT_VERSION:
        raise IndexStoreError(
            f"index {directory} was written by a newer landmark-search (format {version}, this "
            f"version reads {FORMAT_VERSION}); upgrade, or rebuild with "
            f"`landmark index ... --index NEW`"
        )
    if version < FORMAT_VERSION:
        raise IndexStoreError(
            f"index {directory} uses the old format {version}; rebuild it with "
            f"`landmark index ... --index NEW`"
        )
    if meta["model_id"] != model_id:
        raise IndexStoreError(
            f"index {directory} was built with model {meta['model_id']!r}, not {model_id!r}; "
            f"use `--model {meta['model_id']}`, or build a new index for {model_id!r} with "
            f"`landmark index PHOTOS --index NAME`"
        )
    if int(meta["dim"]) != dim:
        raise IndexStoreError(
            f"index {directory} holds {meta['dim']}-dimensional vectors but model {model_id!r} "
            f"produces {dim}; build a new index with `landmark index PHOTOS --index NAME`"
        )
    if meta["index_type"] not in INDEX_TYPES:
        raise IndexStoreError(f"index {directory} has an unknown index type {meta['index_type']!r}")
    return meta


def _create_schema(conn: sqlite3.Connection) -> None:
    # executescript() would COMMIT the open transaction, so run the statements one by one.
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
