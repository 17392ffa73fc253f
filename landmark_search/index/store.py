"""On-disk photo index: a SQLite manifest (source of truth) plus a derived FAISS cache.

Layout of an index directory::

    manifest.sqlite   meta (format_version, model_id, dim, index_type, created, generation,
                      index_uuid) and photos (id, path, size, mtime_ns, content_hash, label,
                      vector float32 BLOB); every change is one SQLite transaction
    vectors.faiss     a FAISS index (``faiss.read_index`` reads it) followed by a trailer
                      that tags it with the manifest generation it reflects and a CRC32
    .lock             ``fcntl.flock`` lock held by the one writer; holds the writer's pid

The FAISS file is only a cache. It is written atomically (temp file + ``os.replace``) and
checked on load; when it is missing, corrupt, from another manifest or behind the manifest
it is rebuilt (or caught up) from the stored vectors. Manifest ids come from
``AUTOINCREMENT`` and are never reused, so a cache that is behind can be caught up safely:
rows with larger ids are new, ids that left the manifest are deleted. A ``kill -9`` at any
point therefore leaves an index that opens and answers as of its last committed batch.

Damage: every SQLite error (a garbled page, a dropped table, a full disk) and every manifest value
that is not what it should be becomes an ``IndexStoreError`` of one line naming the index and the
fix (``landmark index PHOTOS --index DIR --rebuild``; for a full disk, free space and rerun: a failed
batch is rolled back whole, committed ones stay). A cache file is checked before FAISS reads it (CRC,
and every length, id and graph offset bounded by the file: vector_cache.check_layout).

Index types (``index_type``: auto, flat, ivf, hnsw) are described in vector_cache.py; ivf and hnsw
keep deleted vectors as tombstones, and ``save()`` rebuilds from the manifest once they exceed
``REBUILD_DELETED_FRACTION``. Rooms: manifest.py (the SQLite truth), vector_cache.py (the FAISS
structure and its cache file); PhotoIndex here keeps the two in step.
This module is numpy in, numpy out, and never imports torch. It is not thread-safe.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, TypeVar

import numpy as np
import numpy.typing as npt

from landmark_search.errors import IndexStoreError, LockedError
from landmark_search.fsutil import make_dirs, sweep_stale_temps
from landmark_search.locks import FileLock
from landmark_search.index.manifest import (SCHEMA_VERSION, MANIFEST_NAME, bump_generation, chunks, connect, damaged,
                                            ensure_manifest, current_generation, marks, store_error, transaction)
from landmark_search.index.vectors import (CACHE_NAME, EXACT_MAX_VECTORS, INDEX_TYPES, IVF_RETRAIN_GROWTH,
                                           REBUILD_DELETED_FRACTION, Embeddings, VectorIndex, build_vector_index,
                                           choose_index_type, configure_threads, read_cache, write_cache)

__all__ = [
    "EXACT_MAX_VECTORS",
    "SCHEMA_VERSION",
    "INDEX_TYPES",
    "Embeddings",
    "FileLock",
    "PhotoIndex",
    "PhotoRecord",
    "SearchHit",
]

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
_NORM_TOLERANCE = 1e-2
_F = TypeVar("_F", bound=Callable[..., Any])


def _manifest_errors(method: _F) -> _F:
    """Turn a SQLite error (a damaged page, a dropped table, a full disk) into one line naming the index and the fix."""
    @functools.wraps(method)
    def wrapper(self: PhotoIndex, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise store_error(self._dir, exc) from None
    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class PhotoRecord:
    """What the index stores about one photo besides its vector."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str
    label: str | None = None
    confidence: float | None = None  # of the label (or, unknown, of the nearest class): predict.decide
    taken: str | None = None  # capture time, ISO (EXIF DateTimeOriginal, else the file's time)
    hand: str | None = None  # a landmark a person gave in its sidecar ("": none of them); None: nobody did
    keywords: str | None = None  # its sidecars' keywords, landmark and place, one a line


BrowseFacts = tuple[str | None, str | None, str | None]  # (taken, hand, keywords) of a PhotoRecord


@dataclass(frozen=True)
class SearchHit:
    """One neighbour of a query: the photo, its cosine similarity and its label."""

    path: str
    score: float
    label: str | None


# --------------------------------------------------------------------------- validation


def _as_embeddings(x: Any, dim: int, name: str) -> Embeddings:
    """Check that ``x`` is a finite (n, dim) numeric array and return it as C-contiguous float32."""
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a numeric array convertible to float32, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n, {dim}), got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise ValueError(
            f"{name} has {arr.shape[1]} columns but the index holds {dim}-dimensional vectors"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise ValueError(f"{name} row {int(np.argmin(finite))} contains NaN or infinite values")
    return arr


def _check_normalised(vectors: Embeddings) -> None:
    """Refuse vectors that are not L2-normalised: scores would no longer be cosines."""
    norms = np.linalg.norm(vectors, axis=1)
    bad = np.abs(norms - 1.0) > _NORM_TOLERANCE
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(
            f"vectors must be L2-normalised embeddings; row {row} has norm {norms[row]:.4g}"
        )


def _norm_path(path: str | os.PathLike[str]) -> str:
    """Absolute form of a photo path (callers pass resolved paths; this only anchors relative ones)."""
    text = os.fspath(path)
    if not text:
        raise ValueError("photo path must not be empty")
    return os.path.abspath(text)


def _discard_files(directory: Path) -> None:
    """Delete an index's manifest (with SQLite's journal files) and its cache, for a rebuild."""
    for name in (f"{MANIFEST_NAME}-wal", f"{MANIFEST_NAME}-shm", f"{MANIFEST_NAME}-journal", MANIFEST_NAME, CACHE_NAME):
        try:
            (directory / name).unlink(missing_ok=True)
        except OSError as exc:
            raise IndexStoreError(f"cannot rebuild index {directory}: {exc}") from None


# --------------------------------------------------------------------------- the index


class PhotoIndex:
    """A persistent, incrementally updated index of photo embeddings for similarity search."""

    def __init__(self, directory: Path, conn: sqlite3.Connection, lock: FileLock | None,
                 meta: dict[str, str]) -> None:
        """Use ``PhotoIndex.open``; this only wires up an already validated manifest."""
        self._dir = directory
        self._conn: sqlite3.Connection | None = conn
        self._lock = lock
        self._model_id = meta["model_id"]
        self._dim = int(meta["dim"])
        self._index_type = meta["index_type"]
        self._uuid = meta["index_uuid"]
        self._vectors: VectorIndex | None = None
        self._vectors_generation = -1  # manifest generation that _vectors reflects
        self._cache_generation = -1  # generation of the cache file known to be on disk

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        model_id: str | None,
        dim: int | None,
        create: bool = True,
        index_type: str | None = None,
        lock: bool = True,
        lock_timeout: float = 0.0,
        rebuild: bool = False,
    ) -> PhotoIndex:
        """Open (or create) the index in ``directory`` for vectors of ``model_id`` and ``dim``; both None open an
        existing index (``create=False``) for the vectors it holds (``model_id``/``dim`` then say whose).

        ``index_type`` (one of ``INDEX_TYPES``) is stored when the index is created (default
        "auto"); given for an existing index opened for writing, it replaces the stored type
        and the next ``save()`` rebuilds. ``lock=True`` (writers) takes the directory's lock,
        waiting up to ``lock_timeout`` seconds; ``lock=False`` opens read-only without waiting
        (a reader that had to rebuild the FAISS cache stores it only if no writer holds the lock).
        The FAISS vectors are loaded (and checked, caught up or rebuilt) on first use.
        ``rebuild=True`` (a writer) deletes the manifest and the cache under the lock, damaged or not,
        and starts an empty index.
        """
        if index_type is not None and index_type not in INDEX_TYPES:
            raise ValueError(f"unknown index type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
        as_stored = model_id is None and dim is None
        if as_stored and (create or rebuild):
            raise ValueError("a new index needs its model_id and dim")
        if not as_stored and (not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim <= 0):
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not as_stored and not model_id:
            raise ValueError("model_id must be a non-empty string")
        if rebuild and not lock:
            raise ValueError("rebuild needs the writer lock (lock=True)")
        configure_threads()
        path = Path(directory).expanduser().absolute()
        manifest = path / MANIFEST_NAME
        if path.exists() and not path.is_dir():
            raise IndexStoreError(f"{path} is a file, not an index directory; choose another --index")
        if not manifest.exists():
            if not create and not rebuild:
                raise IndexStoreError(
                    f"no index at {path}; build one with `landmark index PHOTOS --index NAME`"
                )
            make_dirs(path, lambda why: IndexStoreError(f"cannot create the index directory {path}: {why}"))

        file_lock = None
        if lock:
            file_lock = FileLock(path / LOCK_NAME, timeout=lock_timeout, description=f"index {path}")
            try:
                file_lock.acquire()
            except OSError as exc:
                raise IndexStoreError(
                    f"cannot lock index {path} for writing ({exc}); open it read-only to search it"
                ) from exc
        try:
            if rebuild:
                _discard_files(path)
            conn = connect(manifest)
            try:
                meta = ensure_manifest(conn, path, model_id=model_id, dim=None if dim is None else int(dim),
                                       index_type=index_type or "auto", create=create)
                if index_type is not None and index_type != meta["index_type"]:
                    if not lock:
                        raise IndexStoreError(
                            f"index {path} is of type {meta['index_type']}; open it for writing "
                            f"to change it to {index_type}"
                        )
                    try:
                        with transaction(conn, write=True):
                            conn.execute("UPDATE meta SET value = ? WHERE key = 'index_type'", (index_type,))
                    except sqlite3.Error as exc:
                        raise store_error(path, exc) from None
                    meta["index_type"] = index_type
            except BaseException:
                conn.close()
                raise
        except BaseException:
            if file_lock is not None:
                file_lock.release()
            raise
        return cls(path, conn, file_lock, meta)

    # ----------------------------------------------------------------- properties

    @property
    def directory(self) -> Path:
        """The index directory."""
        return self._dir

    @property
    def model_id(self) -> str:
        """Identifier of the model whose embeddings the index holds."""
        return self._model_id

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._dim

    @property
    def index_type(self) -> str:
        """Stored index type setting: "auto", "flat", "ivf" or "hnsw"."""
        return self._index_type

    @property
    @_manifest_errors
    def active_type(self) -> str:
        """FAISS structure currently serving searches ("flat", "ivf" or "hnsw"); loads it if needed."""
        return self._current().kind

    @property
    def read_only(self) -> bool:
        """Whether the index was opened without the writer lock."""
        return self._lock is None

    @property
    @_manifest_errors
    def generation(self) -> int:
        """Manifest generation: incremented by every committed change."""
        return current_generation(self._db())

    @_manifest_errors
    def __len__(self) -> int:
        """Number of photos in the manifest."""
        return int(self._db().execute("SELECT COUNT(*) FROM photos").fetchone()[0])

    def __repr__(self) -> str:
        return f"PhotoIndex({str(self._dir)!r}, model_id={self._model_id!r}, dim={self._dim})"

    # ----------------------------------------------------------------- manifest access

    @_manifest_errors
    def known(self) -> dict[str, tuple[int, int, str]]:
        """Path -> (size, mtime_ns, content_hash) of every indexed photo, for incremental updates."""
        rows = self._db().execute("SELECT path, size, mtime_ns, content_hash FROM photos")
        try:
            return {path: (int(size), int(mtime), digest) for path, size, mtime, digest in rows}
        except (TypeError, ValueError) as exc:
            raise damaged(self._dir, f"a photo row holds {exc}") from None

    @_manifest_errors
    def add(self, records: Sequence[PhotoRecord], vectors: Embeddings) -> None:
        """Add photos (replacing any with the same path) in one transaction."""
        self._require_writer("add photos to")
        vecs = _as_embeddings(vectors, self._dim, "vectors")
        if len(records) != len(vecs):
            raise ValueError(f"got {len(records)} records but {len(vecs)} vectors")
        if not len(vecs):
            return
        _check_normalised(vecs)
        paths = [_norm_path(r.path) for r in records]
        if len(set(paths)) != len(paths):
            raise ValueError("records contain the same path more than once")
        conn = self._db()
        with transaction(conn, write=True):
            old_ids = list(self._ids_for_paths(paths).values())
            for chunk in chunks(old_ids):
                conn.execute(f"DELETE FROM photos WHERE id IN ({marks(chunk)})", tuple(chunk))
            new_ids = np.empty(len(vecs), dtype=np.int64)
            for i, (rec, path) in enumerate(zip(records, paths)):
                cur = conn.execute(
                    "INSERT INTO photos (path, size, mtime_ns, content_hash, label, vector, confidence, taken, hand,"
                    " keywords) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (path, int(rec.size), int(rec.mtime_ns), str(rec.content_hash), rec.label,
                     vecs[i].tobytes(), None if rec.confidence is None else float(rec.confidence), rec.taken,
                     rec.hand, rec.keywords),
                )
                new_ids[i] = cur.lastrowid
            generation = bump_generation(conn)
        self._apply(generation, removed=old_ids, added=(new_ids, vecs))

    @_manifest_errors
    def remove(self, paths: Iterable[str | os.PathLike[str]]) -> int:
        """Remove photos by path (unknown paths are ignored); return how many were removed."""
        self._require_writer("remove photos from")
        wanted = list(dict.fromkeys(_norm_path(p) for p in paths))
        if not wanted:
            return 0
        conn = self._db()
        with transaction(conn, write=True):
            ids = list(self._ids_for_paths(wanted).values())
            for chunk in chunks(ids):
                conn.execute(f"DELETE FROM photos WHERE id IN ({marks(chunk)})", tuple(chunk))
            generation = bump_generation(conn) if ids else None
        if generation is not None:
            self._apply(generation, removed=ids, added=None)
        return len(ids)

    @_manifest_errors
    def browse_facts(self) -> dict[str, BrowseFacts]:
        """path -> (taken, hand, keywords) as stored (the library's sort, landmark given by hand and search)."""
        rows = self._db().execute("SELECT path, taken, hand, keywords FROM photos")
        return {path: (taken, hand, keywords) for path, taken, hand, keywords in rows}

    @_manifest_errors
    def set_browse_facts(self, facts: Mapping[str, BrowseFacts]) -> int:
        """Store photos' (taken, hand, keywords) in one transaction. Returns how many photos the index holds of
        those given. The generation stays: it counts changes of the photos and their vectors, which these are not
        (what is computed per generation, the review's groups or duplicates, stays valid)."""
        self._require_writer("update photos in")
        items = [(*values, _norm_path(path)) for path, values in facts.items()]
        if not items:
            return 0
        conn = self._db()
        with transaction(conn, write=True):
            return sum(conn.execute("UPDATE photos SET taken = ?, hand = ?, keywords = ? WHERE path = ?",
                                    item).rowcount for item in items)

    @_manifest_errors
    def lookup(self, paths: Sequence[str | os.PathLike[str]]) -> tuple[list[PhotoRecord], Embeddings]:
        """Records and vectors of those of ``paths`` that are indexed, in the order given (duplicates,
        groups); paths that are not indexed are left out."""
        wanted = list(dict.fromkeys(_norm_path(p) for p in paths))
        rows: dict[str, tuple] = {}
        for chunk in chunks(wanted):
            rows.update((r[0], r) for r in self._db().execute(
                "SELECT path, size, mtime_ns, content_hash, label, vector, confidence FROM photos"
                f" WHERE path IN ({marks(chunk)})", tuple(chunk)))
        order = [p for p in wanted if p in rows]
        vecs = np.empty((len(order), self._dim), dtype=np.float32)
        records = []
        for i, path in enumerate(order):
            _, size, mtime, digest, label, blob, confidence = rows.pop(path)
            if not isinstance(blob, bytes) or len(blob) != 4 * self._dim:
                raise damaged(self._dir, f"the stored vector of {path} is not {self._dim} float32 values")
            vecs[i] = np.frombuffer(blob, dtype=np.float32)
            try:
                confidence = None if confidence is None else float(confidence)
                records.append(PhotoRecord(path, int(size), int(mtime), str(digest), label,
                                           confidence if confidence is None or math.isfinite(confidence) else None))
            except (TypeError, ValueError) as exc:
                raise damaged(self._dir, f"the row of {path} holds {exc}") from None
        return records, vecs

    # ----------------------------------------------------------------- search

    @_manifest_errors
    def search(
        self,
        queries: Embeddings,
        k: int,
        *,
        exclude_paths: Sequence[str | os.PathLike[str] | None] | None = None,
    ) -> list[list[SearchHit]]:
        """The ``k`` most similar photos to each query, best first (inner product = cosine).

        ``exclude_paths[i]``, when given, is left out of query i's hits (a query photo that is
        itself indexed does not find itself) and k hits are still returned when available.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        q = _as_embeddings(queries, self._dim, "queries")
        if exclude_paths is not None and len(exclude_paths) != len(q):
            raise ValueError(f"got {len(q)} queries but {len(exclude_paths)} exclude_paths")
        if not len(q):
            return []
        vectors = self._current()
        if vectors.live == 0:
            return [[] for _ in range(len(q))]
        exclude_ids: list[int | None] = [None] * len(q)
        if exclude_paths is not None:
            named = [None if p is None else _norm_path(p) for p in exclude_paths]
            found = self._ids_for_paths([p for p in named if p is not None])
            exclude_ids = [None if p is None else found.get(p) for p in named]
        # Paths are unique, so each query excludes at most one row: one extra result suffices.
        extra = 1 if any(i is not None for i in exclude_ids) else 0
        scores, ids = vectors.search(q, min(int(k) + extra, vectors.ntotal))
        meta = self._rows_for_ids(np.unique(ids[ids >= 0]).tolist())
        results: list[list[SearchHit]] = []
        for row_scores, row_ids, skip in zip(scores, ids, exclude_ids):
            hits: list[SearchHit] = []
            for score, pid in zip(row_scores, row_ids):
                pid = int(pid)
                # A concurrent writer may have removed a row since the vectors were loaded.
                if pid < 0 or pid == skip or pid not in meta:
                    continue
                path, label = meta[pid]
                hits.append(SearchHit(path=path, score=float(score), label=label))
                if len(hits) == k:
                    break
            results.append(hits)
        return results

    # ----------------------------------------------------------------- persistence

    @_manifest_errors
    def save(self) -> bool:
        """Bring the FAISS cache up to date on disk (atomically); return whether it was written.

        Also rebuilds from the manifest when the index type should change with the photo
        count, when deleted vectors exceed ``REBUILD_DELETED_FRACTION`` or when an ivf
        index has outgrown its training.
        """
        self._require_writer("save")
        vectors = self._current()
        reason = self._rebuild_reason(vectors)
        if reason is not None:
            log.info("rebuilding the vector index of %s: %s", self._dir, reason)
            self._vectors = None  # free the old index first: at 1M vectors each is ~1 GB
            vectors = self._rebuild()
        if self._cache_generation == self._vectors_generation and reason is None:
            return False
        self._write(vectors)
        return True

    def close(self) -> None:
        """Close the manifest and release the lock (idempotent)."""
        conn, self._conn = self._conn, None
        self._vectors = None
        try:
            if conn is not None:
                conn.close()
        finally:
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> PhotoIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Save on a clean exit (committed batches are safe either way), then close."""
        try:
            if exc_type is None and not self.read_only and self._conn is not None:
                self.save()
        finally:
            self.close()

    # ----------------------------------------------------------------- internals

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise IndexStoreError(f"index {self._dir} is closed; open it again")
        return self._conn

    def _require_writer(self, action: str) -> None:
        self._db()
        if self._lock is None:
            raise IndexStoreError(
                f"cannot {action} index {self._dir}: it was opened read-only (lock=False)"
            )

    def _ids_for_paths(self, paths: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in chunks(paths):
            rows = self._db().execute(
                f"SELECT path, id FROM photos WHERE path IN ({marks(chunk)})", tuple(chunk)
            )
            found.update((path, int(pid)) for path, pid in rows)
        return found

    def _rows_for_ids(self, ids: Sequence[int]) -> dict[int, tuple[str, str | None]]:
        found: dict[int, tuple[str, str | None]] = {}
        for chunk in chunks(ids):
            rows = self._db().execute(
                f"SELECT id, path, label FROM photos WHERE id IN ({marks(chunk)})", tuple(chunk)
            )
            found.update((int(pid), (path, label)) for pid, path, label in rows)
        return found

    def _apply(self, generation: int, *, removed: Sequence[int],
               added: tuple[npt.NDArray[np.int64], Embeddings] | None) -> None:
        """Mirror a committed change in the loaded vectors, if they were current before it."""
        if self._vectors is None or self._vectors_generation != generation - 1:
            return  # _current() catches up from the manifest when the vectors are next needed
        self._vectors_generation = -1  # if the mirroring below fails, reload later
        self._vectors.discard(removed)
        if added is not None:
            self._vectors.add(*added)
        self._vectors_generation = generation

    def _current(self) -> VectorIndex:
        """The loaded vectors, brought up to the manifest's current generation."""
        conn = self._db()
        if self._vectors is not None and self._vectors_generation == current_generation(conn):
            return self._vectors
        with transaction(conn, write=False):  # one snapshot for generation, ids and vectors
            generation = current_generation(conn)
            # Unordered, SQLite answers from the path index instead of reading every vector.
            live = np.sort(np.fromiter((r[0] for r in conn.execute("SELECT id FROM photos")),
                                       dtype=np.int64))
            vectors = self._vectors
            if vectors is None:
                vectors = self._load_cache()
            if vectors is not None and not self._catch_up(vectors, live):
                vectors = None
                self._cache_generation = -1
            if vectors is None:
                ids, vecs = self._read_vectors(after_id=None)
                kind = choose_index_type(self._index_type, len(ids))
                vectors = build_vector_index(kind, self._dim, ids, vecs)
        self._vectors = vectors
        self._vectors_generation = generation
        if self.read_only and self._cache_generation != generation:
            self._save_opportunistically(vectors, generation)
        return vectors

    def _load_cache(self) -> VectorIndex | None:
        """The cache file if it is intact and belongs to this manifest, else None."""
        path = self._dir / CACHE_NAME
        if not path.exists():
            return None
        try:
            vectors, tag = read_cache(path, self._dim)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            log.warning("ignoring the vector cache %s (%s); rebuilding it from the manifest", path, exc)
            return None
        if tag.get("index_uuid") != self._uuid or vectors.index.d != self._dim:
            log.warning("ignoring the vector cache %s: it belongs to another manifest", path)
            return None
        self._cache_generation = int(tag.get("generation", -1))
        return vectors

    def _catch_up(self, vectors: VectorIndex, live: npt.NDArray[np.int64]) -> bool:
        """Add manifest rows newer than ``vectors`` and drop deleted ones; False if impossible."""
        held = np.sort(vectors.ids())
        newest = int(held[-1]) if len(held) else 0
        older_live = live[live <= newest]
        # Ids only grow, so an old live id missing from the cache means it is not ours.
        if len(np.setdiff1d(older_live, held, assume_unique=True)):
            log.warning("the vector cache of %s does not match its manifest; rebuilding", self._dir)
            return False
        vectors.discard(np.setdiff1d(held, live, assume_unique=True).tolist())
        if len(live) and int(live[-1]) > newest:
            vectors.add(*self._read_vectors(after_id=newest))
        return True

    def _read_vectors(self, after_id: int | None) -> tuple[npt.NDArray[np.int64], Embeddings]:
        """Ids and vectors of manifest rows (all, or those with id > after_id), in id order."""
        conn = self._db()
        floor = -1 if after_id is None else after_id
        if after_id is None:  # answered from the path index, without reading the vectors
            n = int(conn.execute("SELECT COUNT(*) FROM photos").fetchone()[0])
        else:
            n = int(conn.execute("SELECT COUNT(*) FROM photos WHERE id > ?", (floor,)).fetchone()[0])
        ids = np.empty(n, dtype=np.int64)
        vecs = np.empty((n, self._dim), dtype=np.float32)
        width = 4 * self._dim
        rows = conn.execute("SELECT id, path, vector FROM photos WHERE id > ? ORDER BY id", (floor,))
        count = 0
        for i, (pid, path, blob) in enumerate(rows):
            if i >= n:
                break
            if not isinstance(blob, bytes) or len(blob) != width:
                raise damaged(self._dir, f"the stored vector of {path} is not {self._dim} float32 values")
            ids[i] = pid
            vecs[i] = np.frombuffer(blob, dtype=np.float32)
            count = i + 1
        return ids[:count], vecs[:count]

    def _rebuild_reason(self, vectors: VectorIndex) -> str | None:
        n = vectors.live
        want = choose_index_type(self._index_type, n, current=vectors.kind)
        if want != vectors.kind:
            return f"{n} photos call for a {want} index instead of {vectors.kind}"
        if vectors.tombstones and len(vectors.tombstones) > REBUILD_DELETED_FRACTION * vectors.ntotal:
            return f"{len(vectors.tombstones)} of {vectors.ntotal} vectors are deleted"
        if vectors.kind == "ivf" and n > IVF_RETRAIN_GROWTH * vectors.trained_n:
            return f"ivf trained on {vectors.trained_n} vectors now holds {n}"
        return None

    def _rebuild(self) -> VectorIndex:
        conn = self._db()
        with transaction(conn, write=False):
            generation = current_generation(conn)
            ids, vecs = self._read_vectors(after_id=None)
        kind = choose_index_type(self._index_type, len(ids), current=None)
        vectors = build_vector_index(kind, self._dim, ids, vecs)
        self._vectors = vectors
        self._vectors_generation = generation
        return vectors

    def _write(self, vectors: VectorIndex) -> None:
        # Only the lock holder gets here, so temp files left by a killed writer are orphans.
        sweep_stale_temps(self._dir, older_than=0)
        tag = {"format_version": SCHEMA_VERSION, "index_uuid": self._uuid,
               "generation": self._vectors_generation, "model_id": self._model_id}
        write_cache(self._dir / CACHE_NAME, vectors, tag)
        self._cache_generation = self._vectors_generation

    def _save_opportunistically(self, vectors: VectorIndex, generation: int) -> None:
        """Let a reader that had to rebuild store the cache, if no writer is busy."""
        lock = FileLock(self._dir / LOCK_NAME, description=f"index {self._dir}")
        try:
            lock.acquire()
        except (LockedError, OSError):
            return
        try:
            # A writer may have committed (and saved) between our snapshot and the lock.
            if current_generation(self._db()) == generation:
                self._write(vectors)
        except OSError as exc:
            log.info("could not store the vector cache of %s: %s", self._dir, exc)
        finally:
            lock.release()

