"""The SQLite side of an index: the manifest, source of truth for photos and their vectors.

``manifest.sqlite`` holds meta (format_version, model_id, dim, index_type, created, generation,
index_uuid) and photos (id, path, size, mtime_ns, content_hash, label, vector float32 BLOB, confidence,
taken, hand, keywords). Every change is one transaction that bumps the generation; ids come from
``AUTOINCREMENT`` and are never reused, so a FAISS cache that is behind can be caught up from the rows
with larger ids.

Versions: meta ``format_version`` is the schema's version. Opening a manifest of an older version runs
the MIGRATIONS after it, in order, in one transaction that also records SCHEMA_VERSION (as rclip's
``ensure_version`` does); every reader then sees the current schema and asks nothing about columns.
The SQL that says what a photo is listed as (a name given by hand before the model's label, the capture
time or else the file's) is here too, beside the schema it reads: LISTED_LABEL, LISTED_CONFIDENCE,
LISTED_TAKEN.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable

from landmark_search.errors import IndexStoreError
from landmark_search.index.vectors import INDEX_TYPES

SCHEMA_VERSION = 2
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
    vector       BLOB NOT NULL,
    confidence   REAL,
    taken        TEXT,
    hand         TEXT,
    keywords     TEXT
);
"""


def chunks(items: Sequence[Any], size: int = _SQL_CHUNK) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def rebuild_hint(directory: Path) -> str:
    """The fix for a damaged index, as a command."""
    return f"rebuild it with `landmark index PHOTOS --index {directory} --rebuild`"


def damaged(directory: Path, why: object) -> IndexStoreError:
    """The one-line error for an index whose files cannot be trusted."""
    return IndexStoreError(f"index {directory} is damaged ({why}); {rebuild_hint(directory)}")


# SQLite result codes (sqlite3.h) that say the manifest cannot be written, not that it is damaged.
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26
_SQLITE_NOT_WRITABLE = {3: "permission denied", 5: "busy: another program holds it", 8: "read-only",
                        10: "disk I/O error", 14: "cannot open it"}


def store_error(directory: Path, exc: sqlite3.Error) -> IndexStoreError:
    """A SQLite error on the manifest as one line naming the index and the fix.

    Committed transactions are safe in every case: a failed one is rolled back whole.
    """
    manifest = directory / MANIFEST_NAME
    code = getattr(exc, "sqlite_errorcode", None)
    code = None if code is None else code & 0xFF  # the primary code of an extended one
    if code == _SQLITE_FULL:
        return IndexStoreError(f"{manifest}: no space left on device ({exc}); free some space and run the same "
                               "command again (every finished batch is kept)")
    if code in _SQLITE_NOT_WRITABLE:
        return IndexStoreError(f"cannot use the index manifest {manifest}: {_SQLITE_NOT_WRITABLE[code]} ({exc}); "
                               "check the folder's permissions and free space, then run the same command again")
    if code == _SQLITE_NOTADB:  # a garbled first page, or someone else's file
        return IndexStoreError(f"{_not_ours(manifest)}, or {rebuild_hint(directory)} if it was one ({exc})")
    return damaged(directory, f"{manifest.name}: {exc}")


def connect(manifest: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """Connection in autocommit mode; transactions are explicit (see ``transaction``). ``read_only`` opens a
    manifest that must exist and can never be changed through this connection."""
    try:
        if read_only:
            return sqlite3.connect(f"{manifest.absolute().as_uri()}?mode=ro", uri=True, timeout=30.0)
        conn = sqlite3.connect(manifest, isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.Error as exc:
        raise store_error(manifest.parent, exc) from None
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
        # SQLite may have rolled back already (a full disk, an I/O error): never mask the first error.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def marks(items: Sequence[Any]) -> str:
    return ",".join("?" * len(items))


def current_generation(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
    try:
        return int(row[0])
    except (TypeError, ValueError):  # a row that went missing or holds text: callers report the index damaged
        raise sqlite3.DatabaseError(f"meta generation is {row[0] if row else 'missing'!r}, not a number") from None


def bump_generation(conn: sqlite3.Connection) -> int:
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
    return current_generation(conn)


_COLUMNS = {"id", "path", "size", "mtime_ns", "content_hash", "label", "vector"}
# Nullable (rows from before them have none): confidence (of the label), taken (capture time, ISO, EXIF
# DateTimeOriginal else the file's time), hand (a landmark a person gave, "" for none), keywords (sidecar
# keywords, landmark and place, one a line, for search).
_LISTING_COLUMNS = {"confidence": "REAL", "taken": "TEXT", "hand": "TEXT", "keywords": "TEXT"}


def _v2_listing_columns(conn: sqlite3.Connection) -> None:
    # A version-1 manifest may hold some of them already: writers used to add them one by one.
    have = {row[1] for row in conn.execute("PRAGMA table_info(photos)")}
    for name, kind in _LISTING_COLUMNS.items():
        if name not in have:
            conn.execute(f"ALTER TABLE photos ADD COLUMN {name} {kind}")


# MIGRATIONS[v] turns a manifest of version v - 1 into version v; run in order, all in one transaction.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {2: _v2_listing_columns}

# What the library lists a photo as. A name given by hand ("" for none of the landmarks) wins over the model's
# label, and then no model confidence is shown; the capture time falls back to the file's time, in the form
# the capture time is stored (local time, ISO).
LISTED_LABEL = "CASE WHEN hand IS NULL THEN label WHEN hand = '' THEN NULL ELSE hand END"
LISTED_CONFIDENCE = "CASE WHEN hand IS NULL THEN confidence END"
LISTED_TAKEN = "COALESCE(taken, strftime('%Y-%m-%dT%H:%M:%S', mtime_ns / 1000000000, 'unixepoch', 'localtime'))"


def _meta_int(meta: dict[str, Any], key: str, directory: Path) -> int:
    try:
        return int(meta[key])
    except (TypeError, ValueError):
        raise damaged(directory, f"meta {key} is {meta[key]!r}, not a number") from None


def ensure_manifest(conn: sqlite3.Connection, directory: Path, *, model_id: str | None, dim: int | None,
                    index_type: str, create: bool) -> dict[str, str]:
    """Create the manifest if empty, then check it is ours, whole and compatible, and bring an older version
    up to SCHEMA_VERSION (ensure_version); returns its meta. model_id and dim None (an existing index opened
    as it is) accept the ones it holds."""
    not_ours = _not_ours(directory / MANIFEST_NAME)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables and create:
            # WAL lets readers search while a writer adds; it cannot change inside a transaction.
            conn.execute("PRAGMA journal_mode = WAL")
            with transaction(conn, write=True):
                _create_schema(conn)
                now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
                defaults = {"format_version": str(SCHEMA_VERSION), "model_id": model_id,
                            "dim": str(dim), "index_type": index_type, "created": now,
                            "generation": "0", "index_uuid": uuid.uuid4().hex}
                conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                                 defaults.items())
            tables = {"meta", "photos"}
        if "meta" not in tables:
            raise IndexStoreError(not_ours)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        columns = {r[1] for r in conn.execute("PRAGMA table_info(photos)")} if "photos" in tables else set()
    except sqlite3.Error as exc:
        raise store_error(directory, exc) from None
    required = ("format_version", "model_id", "dim", "index_type", "generation", "index_uuid")
    if not any(key in meta for key in required):
        raise IndexStoreError(not_ours)
    missing = [key for key in required if key not in meta]
    if missing:
        raise damaged(directory, f"meta lacks {', '.join(missing)}")
    if not _COLUMNS <= columns:
        raise damaged(directory, "its photos table is missing" if not columns
                      else f"its photos table lacks {', '.join(sorted(_COLUMNS - columns))}")
    version = _meta_int(meta, "format_version", directory)
    stored_dim = _meta_int(meta, "dim", directory)
    _meta_int(meta, "generation", directory)
    if version > SCHEMA_VERSION:
        raise _newer(directory, version)
    if version < min(MIGRATIONS) - 1:
        raise IndexStoreError(f"index {directory} uses the old format {version}; {rebuild_hint(directory)}")
    if model_id is not None and meta["model_id"] != model_id:
        raise IndexStoreError(
            f"index {directory} was built with model {meta['model_id']!r}, not {model_id!r}; "
            f"use `--model {meta['model_id']}`, or build a new index for {model_id!r} with "
            f"`landmark index PHOTOS --index NAME`"
        )
    if dim is not None and stored_dim != dim:
        raise IndexStoreError(
            f"index {directory} holds {stored_dim}-dimensional vectors but model {model_id!r} "
            f"produces {dim}; build a new index with `landmark index PHOTOS --index NAME`"
        )
    if meta["index_type"] not in INDEX_TYPES:
        raise damaged(directory, f"unknown index type {meta['index_type']!r}")
    if not isinstance(meta["index_uuid"], str) or not meta["index_uuid"]:
        raise damaged(directory, "meta index_uuid is empty")
    if version == SCHEMA_VERSION and not set(_LISTING_COLUMNS) <= columns:
        raise damaged(directory, f"its photos table lacks {', '.join(sorted(set(_LISTING_COLUMNS) - columns))}")
    if version < SCHEMA_VERSION:
        ensure_version(conn, directory)
        meta["format_version"] = str(SCHEMA_VERSION)
    return meta


def ensure_version(conn: sqlite3.Connection, directory: Path) -> None:
    """Run the MIGRATIONS a manifest lacks, in order, in one transaction that records SCHEMA_VERSION.

    The version is read again under the write lock, so two processes opening an old index migrate it once.
    A reader migrates too (the manifest must be writable once); a failure rolls back whole."""
    try:
        with transaction(conn, write=True):
            version = _stored_version(conn, directory)
            for target in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[target](conn)
            if version < SCHEMA_VERSION:
                conn.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(SCHEMA_VERSION),))
    except sqlite3.Error as exc:
        raise store_error(directory, exc) from None


def _stored_version(conn: sqlite3.Connection, directory: Path) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
    return _meta_int({"format_version": row[0] if row else None}, "format_version", directory)


def _newer(directory: Path, version: int) -> IndexStoreError:
    return IndexStoreError(f"index {directory} was written by a newer landmark-search (format {version}, this "
                           f"version reads {SCHEMA_VERSION}); upgrade, or build a new index with "
                           "`landmark index ... --index NEW`")


def ensure_current(directory: Path) -> None:
    """Bring an existing manifest up to SCHEMA_VERSION, for a reader that does not open it through PhotoIndex."""
    conn = connect(directory / MANIFEST_NAME)
    try:
        version = _stored_version(conn, directory)
        if version > SCHEMA_VERSION:
            raise _newer(directory, version)
        if version < SCHEMA_VERSION:
            ensure_version(conn, directory)
    except sqlite3.Error as exc:
        raise store_error(directory, exc) from None
    finally:
        conn.close()


def stored_model(directory: Path) -> tuple[str, int]:
    """(model id, vector size) as the manifest records them: the one place an index says whose vectors it holds."""
    manifest = directory / MANIFEST_NAME
    if not manifest.is_file():  # connecting would create an empty one
        raise damaged(directory, f"{MANIFEST_NAME} is missing")
    conn = connect(manifest)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('model_id', 'dim')").fetchall())
    except sqlite3.Error as exc:
        raise store_error(directory, exc) from None
    finally:
        conn.close()
    if not meta.get("model_id") or "dim" not in meta:
        raise damaged(directory, f"meta lacks {'model_id' if not meta.get('model_id') else 'dim'}")
    return str(meta["model_id"]), _meta_int(meta, "dim", directory)


def _create_schema(conn: sqlite3.Connection) -> None:
    # executescript() would COMMIT the open transaction, so run the statements one by one.
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
