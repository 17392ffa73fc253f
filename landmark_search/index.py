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

Index types (``index_type``):

* ``"flat"``: exact ``IndexFlatIP`` search; deletions are removed at once.
* ``"ivf"``:  ``IndexIVFFlat`` (inner product), ``nlist`` ~ 4*sqrt(n) lists, ``nprobe`` lists
  searched per query; retrained when the index has grown ``IVF_RETRAIN_GROWTH`` times.
  Below ``IVF_MIN_VECTORS`` vectors there is too little to train on and it stays flat.
* ``"hnsw"``: ``IndexHNSWFlat`` graph (M, efConstruction, efSearch below); no training,
  incremental adds.
* ``"auto"``: flat up to ``EXACT_MAX_VECTORS`` photos (one exact query then costs a few ms),
  ivf above (recall@10 >= 0.95 at a fraction of a millisecond; see benchmarks/bench_ann.py).

ivf and hnsw indexes keep deleted vectors as tombstones that a search-time ``IDSelector``
skips; ``save()`` rebuilds from the manifest once they exceed ``REBUILD_DELETED_FRACTION``.
This module is numpy in, numpy out, and never imports torch. It is not thread-safe.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import json
import logging
import math
import os
import sqlite3
import struct
import tempfile
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from landmark_search.errors import IndexStoreError, LockedError
from landmark_search.fsutil import new_file_mode
from landmark_search.locks import FileLock

__all__ = [
    "EXACT_MAX_VECTORS",
    "FORMAT_VERSION",
    "INDEX_TYPES",
    "Embeddings",
    "FileLock",
    "PhotoIndex",
    "PhotoRecord",
    "SearchHit",
]

log = logging.getLogger(__name__)

Embeddings = npt.NDArray[np.float32]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.sqlite"
CACHE_NAME = "vectors.faiss"
LOCK_NAME = ".lock"
INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")

# Measured with benchmarks/bench_ann.py (dim 256, 2000 clusters, 2 CPU cores): one exact query
# costs ~4 ms at 100k vectors and grows linearly (~8 ms at 200k, ~38 ms at 1M), while ivf at 1M
# answers in ~0.45 ms with recall@10 0.997 (hnsw: recall 0.97 at ~0.65 ms, 3x longer build).
EXACT_MAX_VECTORS = 100_000
# auto switches back to flat only well below the threshold so that an index hovering around
# it is not rebuilt on every save.
EXACT_RETURN_VECTORS = EXACT_MAX_VECTORS // 2

# IVF: nlist ~ 4*sqrt(n) (rounded to a power of two) with >= 39 training points per list,
# the minimum below which faiss k-means warns.
IVF_MIN_VECTORS = 1_000
IVF_POINTS_PER_LIST = 39
IVF_MAX_TRAINING_POINTS_PER_LIST = 64
# At 1M (nlist 4096) nprobe 16 / 32 / 64 gave recall@10 0.9925 / 0.997 / 0.997; 16 answers a single
# warm query in 0.25 ms instead of 0.47 (152x vs 87x exact flat), so 0.5 % of the lists are searched.
IVF_MIN_NPROBE = 16
IVF_NPROBE_DIVISOR = 256  # nprobe = max(IVF_MIN_NPROBE, nlist // IVF_NPROBE_DIVISOR)
IVF_RETRAIN_GROWTH = 4.0

# At 1M, efSearch 128 / 256 / 384 gave recall@10 0.931 / 0.957 / 0.971.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 384

REBUILD_DELETED_FRACTION = 0.1

_TRAILER_MAGIC = b"LMKFAIS1"
_TRAILER_TAIL = struct.Struct("<Q8s")  # trailer JSON length, magic
_SQL_CHUNK = 500  # stays far below SQLite's limit on bound parameters
_NORM_TOLERANCE = 1e-2
_PARALLEL_MIN_QUERIES = 20  # faiss's own threshold for switching single queries to BLAS

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


@dataclass(frozen=True)
class PhotoRecord:
    """What the index stores about one photo besides its vector."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str
    label: str | None = None


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


def _chunks(items: Sequence[Any], size: int = _SQL_CHUNK) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _cpu_count() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


_threads_configured = False


def _configure_threads() -> None:
    """Let faiss use every CPU we may run on (once per process; callers may override later)."""
    global _threads_configured
    if not _threads_configured:
        faiss.omp_set_num_threads(_cpu_count())
        _threads_configured = True


# --------------------------------------------------------------------------- FAISS cache


def _pow2_round(x: float) -> int:
    """Nearest power of two to ``x`` (>= 1)."""
    return 1 << max(0, round(math.log2(max(x, 1.0))))


def ivf_nlist(n: int) -> int:
    """Number of IVF lists for ``n`` vectors: ~4*sqrt(n), with enough points per list to train."""
    cap = max(1, n // IVF_POINTS_PER_LIST)
    cap_pow2 = 1 << (cap.bit_length() - 1)
    return max(1, min(_pow2_round(4.0 * math.sqrt(max(n, 1))), cap_pow2))


def ivf_nprobe(nlist: int) -> int:
    """Lists searched per query for an IVF index of ``nlist`` lists."""
    return min(nlist, max(IVF_MIN_NPROBE, nlist // IVF_NPROBE_DIVISOR))


def choose_index_type(requested: str, n: int, current: str | None = None) -> str:
    """Concrete FAISS structure ("flat", "ivf" or "hnsw") for ``n`` vectors and a requested type."""
    if requested == "flat":
        return "flat"
    if requested == "hnsw":
        return "hnsw"
    if requested == "ivf":
        return "ivf" if n >= IVF_MIN_VECTORS else "flat"
    if requested != "auto":
        raise ValueError(f"unknown index type {requested!r}; choose one of {', '.join(INDEX_TYPES)}")
    if current == "ivf" and n > EXACT_RETURN_VECTORS:
        return "ivf"
    return "ivf" if n > EXACT_MAX_VECTORS else "flat"


@dataclass
class _VectorIndex:
    """A FAISS index mapping to manifest ids, plus the ids deleted from it but not yet purged."""

    kind: str
    index: Any  # faiss.IndexIDMap2 around the flat / ivf / hnsw index
    trained_n: int
    tombstones: set[int] = field(default_factory=set)
    _selector: Any = None

    @property
    def ntotal(self) -> int:
        """Vectors held, tombstones included."""
        return int(self.index.ntotal)

    @property
    def live(self) -> int:
        """Vectors that searches can return."""
        return self.ntotal - len(self.tombstones)

    def ids(self) -> npt.NDArray[np.int64]:
        """Manifest ids of every vector held, tombstones included."""
        return faiss.vector_to_array(self.index.id_map).astype(np.int64, copy=False)

    def add(self, ids: npt.NDArray[np.int64], vectors: Embeddings) -> None:
        """Append vectors under their manifest ids."""
        if len(ids):
            self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def discard(self, ids: Iterable[int]) -> None:
        """Make ids unsearchable: removed from flat indexes, tombstoned in ivf / hnsw."""
        wanted = np.fromiter((int(i) for i in ids), dtype=np.int64)
        if not len(wanted):
            return
        if self.kind == "flat":
            # IndexIDMap2.remove_ids is only correct for sub-indexes that compact like IndexFlat.
            self.index.remove_ids(faiss.IDSelectorBatch(wanted))
            return
        present = np.intersect1d(wanted, self.ids())
        if len(present):
            self.tombstones.update(int(i) for i in present)
            self._selector = None

    def search(self, queries: Embeddings, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search returning (scores, manifest ids); -1 ids mark missing results."""
        sel = None
        if self.tombstones:
            if self._selector is None:
                batch = faiss.IDSelectorBatch(np.fromiter(self.tombstones, dtype=np.int64))
                not_batch = faiss.IDSelectorNot(batch)
                self._selector = (not_batch, batch)  # keep the inner selector alive
            sel = self._selector[0]
        inner = faiss.downcast_index(self.index.index)
        if self.kind == "ivf":
            params = faiss.SearchParametersIVF(nprobe=ivf_nprobe(inner.nlist), sel=sel)
        elif self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, k), sel=sel)
        else:
            params = faiss.SearchParameters(sel=sel) if sel is not None else None
        if len(queries) >= _PARALLEL_MIN_QUERIES:
            return self.index.search(queries, k, params=params)
        # A few queries gain nothing from threads, but the OpenMP regions faiss still opens
        # (e.g. IndexIDMap's label translation) stall for a scheduler tick whenever another
        # process is busy on a core: 8 ms instead of 0.1 ms on a loaded 2-core machine.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return self.index.search(queries, k, params=params)
        finally:
            faiss.omp_set_num_threads(threads)


def _build_vector_index(kind: str, dim: int, ids: npt.NDArray[np.int64], vectors: Embeddings) -> _VectorIndex:
    """Build a FAISS index of ``kind`` over ``vectors`` labelled with manifest ``ids``."""
    n = len(vectors)
    if kind == "flat":
        inner = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    elif kind == "ivf":
        if n < IVF_MIN_VECTORS:
            raise ValueError(f"an ivf index needs at least {IVF_MIN_VECTORS} vectors to train, got {n}")
        nlist = ivf_nlist(n)
        inner = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        limit = IVF_MAX_TRAINING_POINTS_PER_LIST * nlist
        if n > limit:
            # A fixed seed makes rebuilds of the same manifest identical.
            rows = np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))
            inner.train(vectors[rows])
        else:
            inner.train(vectors)
        inner.nprobe = ivf_nprobe(nlist)
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    index = faiss.IndexIDMap2(inner)
    result = _VectorIndex(kind=kind, index=index, trained_n=n)
    result.add(ids, vectors)
    return result


def _write_cache(path: Path, vectors: _VectorIndex, tag: dict[str, Any]) -> None:
    """Write the FAISS index plus a trailer (tag, payload length, CRC32) atomically to ``path``."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            crc = 0
            written = 0

            def write(chunk: bytes) -> int:
                nonlocal crc, written
                crc = zlib.crc32(chunk, crc)
                written += len(chunk)
                return f.write(chunk)

            writer = faiss.PyCallbackIOWriter(write)
            faiss.write_index(vectors.index, writer)
            del writer  # flushes its buffer
            trailer = dict(tag, kind=vectors.kind, trained_n=vectors.trained_n,
                           ntotal=vectors.ntotal, payload_bytes=written, crc32=crc)
            blob = json.dumps(trailer, sort_keys=True).encode()
            f.write(blob)
            f.write(_TRAILER_TAIL.pack(len(blob), _TRAILER_MAGIC))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, new_file_mode(path))
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def _read_cache(path: Path) -> tuple[_VectorIndex, dict[str, Any]]:
    """Read and verify a cache file; raise ``ValueError`` (or OSError/RuntimeError) if unusable."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < _TRAILER_TAIL.size:
            raise ValueError("file too short")
        f.seek(size - _TRAILER_TAIL.size)
        blob_len, magic = _TRAILER_TAIL.unpack(f.read(_TRAILER_TAIL.size))
        if magic != _TRAILER_MAGIC or blob_len > size - _TRAILER_TAIL.size:
            raise ValueError("no landmark-search trailer")
        f.seek(size - _TRAILER_TAIL.size - blob_len)
        tag = json.loads(f.read(blob_len))
        payload = int(tag["payload_bytes"])
        if payload + blob_len + _TRAILER_TAIL.size != size:
            raise ValueError("length does not match its trailer (truncated?)")
        f.seek(0)
        crc = 0
        remaining = payload

        def read(n: int) -> bytes:
            nonlocal crc, remaining
            chunk = f.read(min(n, remaining))
            remaining -= len(chunk)
            crc = zlib.crc32(chunk, crc)
            return chunk

        reader = faiss.PyCallbackIOReader(read)
        index = faiss.read_index(reader)
        del reader
        if remaining:
            crc = zlib.crc32(f.read(remaining), crc)
        if crc != int(tag["crc32"]):
            raise ValueError("checksum mismatch (corrupt)")
    if not isinstance(index, faiss.IndexIDMap2) or tag.get("kind") not in ("flat", "ivf", "hnsw"):
        raise ValueError("unexpected index structure")
    return _VectorIndex(kind=tag["kind"], index=index, trained_n=int(tag["trained_n"])), tag


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
        self._vectors: _VectorIndex | None = None
        self._vectors_generation = -1  # manifest generation that _vectors reflects
        self._cache_generation = -1  # generation of the cache file known to be on disk

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        model_id: str,
        dim: int,
        create: bool = True,
        index_type: str | None = None,
        lock: bool = True,
        lock_timeout: float = 0.0,
    ) -> PhotoIndex:
        """Open (or create) the index in ``directory`` for vectors of ``model_id`` and ``dim``.

        ``index_type`` (one of ``INDEX_TYPES``) is stored when the index is created (default
        "auto"); given for an existing index opened for writing, it replaces the stored type
        and the next ``save()`` rebuilds. ``lock=True`` (writers) takes the directory's lock,
        waiting up to ``lock_timeout`` seconds; ``lock=False`` opens read-only without waiting
        (a reader that had to rebuild the FAISS cache stores it only if no writer holds the lock).
        The FAISS vectors are loaded (and checked, caught up or rebuilt) on first use.
        """
        if index_type is not None and index_type not in INDEX_TYPES:
            raise ValueError(f"unknown index type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim <= 0:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not model_id:
            raise ValueError("model_id must be a non-empty string")
        _configure_threads()
        path = Path(directory).expanduser().absolute()
        manifest = path / MANIFEST_NAME
        if path.exists() and not path.is_dir():
            raise IndexStoreError(f"{path} is a file, not an index directory; choose another --index")
        if not manifest.exists():
            if not create:
                raise IndexStoreError(
                    f"no index at {path}; build one with `landmark index PHOTOS --index NAME`"
                )
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise IndexStoreError(f"cannot create the index directory {path}: {exc}") from exc

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
            conn = _connect(manifest)
            try:
                meta = _ensure_manifest(conn, path, model_id=model_id, dim=int(dim),
                                        index_type=index_type or "auto", create=create)
                if index_type is not None and index_type != meta["index_type"]:
                    if not lock:
                        raise IndexStoreError(
                            f"index {path} is of type {meta['index_type']}; open it for writing "
                            f"to change it to {index_type}"
                        )
                    with _transaction(conn, write=True):
                        conn.execute("UPDATE meta SET value = ? WHERE key = 'index_type'", (index_type,))
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
    def active_type(self) -> str:
        """FAISS structure currently serving searches ("flat", "ivf" or "hnsw"); loads it if needed."""
        return self._current().kind

    @property
    def read_only(self) -> bool:
        """Whether the index was opened without the writer lock."""
        return self._lock is None

    @property
    def generation(self) -> int:
        """Manifest generation: incremented by every committed change."""
        return _generation(self._db())

    def __len__(self) -> int:
        """Number of photos in the manifest."""
        return int(self._db().execute("SELECT COUNT(*) FROM photos").fetchone()[0])

    def __repr__(self) -> str:
        return f"PhotoIndex({str(self._dir)!r}, model_id={self._model_id!r}, dim={self._dim})"

    # ----------------------------------------------------------------- manifest access

    def known(self) -> dict[str, tuple[int, int, str]]:
        """Path -> (size, mtime_ns, content_hash) of every indexed photo, for incremental updates."""
        rows = self._db().execute("SELECT path, size, mtime_ns, content_hash FROM photos")
        return {path: (int(size), int(mtime), digest) for path, size, mtime, digest in rows}

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
        with _transaction(conn, write=True):
            old_ids = list(self._ids_for_paths(paths).values())
            for chunk in _chunks(old_ids):
                conn.execute(f"DELETE FROM photos WHERE id IN ({_marks(chunk)})", tuple(chunk))
            new_ids = np.empty(len(vecs), dtype=np.int64)
            for i, (rec, path) in enumerate(zip(records, paths)):
                cur = conn.execute(
                    "INSERT INTO photos (path, size, mtime_ns, content_hash, label, vector)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (path, int(rec.size), int(rec.mtime_ns), str(rec.content_hash), rec.label,
                     vecs[i].tobytes()),
                )
                new_ids[i] = cur.lastrowid
            generation = _bump_generation(conn)
        self._apply(generation, removed=old_ids, added=(new_ids, vecs))

    def remove(self, paths: Iterable[str | os.PathLike[str]]) -> int:
        """Remove photos by path (unknown paths are ignored); return how many were removed."""
        self._require_writer("remove photos from")
        wanted = list(dict.fromkeys(_norm_path(p) for p in paths))
        if not wanted:
            return 0
        conn = self._db()
        with _transaction(conn, write=True):
            ids = list(self._ids_for_paths(wanted).values())
            for chunk in _chunks(ids):
                conn.execute(f"DELETE FROM photos WHERE id IN ({_marks(chunk)})", tuple(chunk))
            generation = _bump_generation(conn) if ids else None
        if generation is not None:
            self._apply(generation, removed=ids, added=None)
        return len(ids)

    # ----------------------------------------------------------------- search

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
        for chunk in _chunks(paths):
            rows = self._db().execute(
                f"SELECT path, id FROM photos WHERE path IN ({_marks(chunk)})", tuple(chunk)
            )
            found.update((path, int(pid)) for path, pid in rows)
        return found

    def _rows_for_ids(self, ids: Sequence[int]) -> dict[int, tuple[str, str | None]]:
        found: dict[int, tuple[str, str | None]] = {}
        for chunk in _chunks(ids):
            rows = self._db().execute(
                f"SELECT id, path, label FROM photos WHERE id IN ({_marks(chunk)})", tuple(chunk)
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

    def _current(self) -> _VectorIndex:
        """The loaded vectors, brought up to the manifest's current generation."""
        conn = self._db()
        if self._vectors is not None and self._vectors_generation == _generation(conn):
            return self._vectors
        with _transaction(conn, write=False):  # one snapshot for generation, ids and vectors
            generation = _generation(conn)
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
                vectors = _build_vector_index(kind, self._dim, ids, vecs)
        self._vectors = vectors
        self._vectors_generation = generation
        if self.read_only and self._cache_generation != generation:
            self._save_opportunistically(vectors, generation)
        return vectors

    def _load_cache(self) -> _VectorIndex | None:
        """The cache file if it is intact and belongs to this manifest, else None."""
        path = self._dir / CACHE_NAME
        if not path.exists():
            return None
        try:
            vectors, tag = _read_cache(path)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            log.warning("ignoring the vector cache %s (%s); rebuilding it from the manifest", path, exc)
            return None
        if tag.get("index_uuid") != self._uuid or vectors.index.d != self._dim:
            log.warning("ignoring the vector cache %s: it belongs to another manifest", path)
            return None
        self._cache_generation = int(tag.get("generation", -1))
        return vectors

    def _catch_up(self, vectors: _VectorIndex, live: npt.NDArray[np.int64]) -> bool:
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
            if len(blob) != width:
                raise IndexStoreError(
                    f"index {self._dir} has a damaged vector for {path}; remove that photo "
                    f"or rebuild with `landmark index PHOTOS --index NEW`"
                )
            ids[i] = pid
            vecs[i] = np.frombuffer(blob, dtype=np.float32)
            count = i + 1
        return ids[:count], vecs[:count]

    def _rebuild_reason(self, vectors: _VectorIndex) -> str | None:
        n = vectors.live
        want = choose_index_type(self._index_type, n, current=vectors.kind)
        if want != vectors.kind:
            return f"{n} photos call for a {want} index instead of {vectors.kind}"
        if vectors.tombstones and len(vectors.tombstones) > REBUILD_DELETED_FRACTION * vectors.ntotal:
            return f"{len(vectors.tombstones)} of {vectors.ntotal} vectors are deleted"
        if vectors.kind == "ivf" and n > IVF_RETRAIN_GROWTH * vectors.trained_n:
            return f"ivf trained on {vectors.trained_n} vectors now holds {n}"
        return None

    def _rebuild(self) -> _VectorIndex:
        conn = self._db()
        with _transaction(conn, write=False):
            generation = _generation(conn)
            ids, vecs = self._read_vectors(after_id=None)
        kind = choose_index_type(self._index_type, len(ids), current=None)
        vectors = _build_vector_index(kind, self._dim, ids, vecs)
        self._vectors = vectors
        self._vectors_generation = generation
        return vectors

    def _write(self, vectors: _VectorIndex) -> None:
        # Only the lock holder gets here, so temp files left by a killed writer are orphans.
        for stale in glob.glob(str(self._dir / f".{CACHE_NAME}.*.tmp")):
            with contextlib.suppress(OSError):
                os.unlink(stale)
        tag = {"format_version": FORMAT_VERSION, "index_uuid": self._uuid,
               "generation": self._vectors_generation, "model_id": self._model_id}
        _write_cache(self._dir / CACHE_NAME, vectors, tag)
        self._cache_generation = self._vectors_generation

    def _save_opportunistically(self, vectors: _VectorIndex, generation: int) -> None:
        """Let a reader that had to rebuild store the cache, if no writer is busy."""
        lock = FileLock(self._dir / LOCK_NAME, description=f"index {self._dir}")
        try:
            lock.acquire()
        except (LockedError, OSError):
            return
        try:
            # A writer may have committed (and saved) between our snapshot and the lock.
            if _generation(self._db()) == generation:
                self._write(vectors)
        except OSError as exc:
            log.info("could not store the vector cache of %s: %s", self._dir, exc)
        finally:
            lock.release()


# --------------------------------------------------------------------------- SQLite helpers


def _connect(manifest: Path) -> sqlite3.Connection:
    """Connection in autocommit mode; transactions are explicit (see ``_transaction``)."""
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
def _transaction(conn: sqlite3.Connection, *, write: bool) -> Iterator[None]:
    """One SQLite transaction; a write takes the write lock up front so it cannot deadlock."""
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _marks(items: Sequence[Any]) -> str:
    return ",".join("?" * len(items))


def _generation(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])


def _bump_generation(conn: sqlite3.Connection) -> int:
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
    return _generation(conn)


def _ensure_manifest(conn: sqlite3.Connection, directory: Path, *, model_id: str, dim: int,
                     index_type: str, create: bool) -> dict[str, str]:
    """Create the manifest if empty, then check it is ours, of a known format and compatible."""
    not_ours = _not_ours(directory / MANIFEST_NAME)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables and create:
            # WAL lets readers search while a writer adds; it cannot change inside a transaction.
            conn.execute("PRAGMA journal_mode = WAL")
            with _transaction(conn, write=True):
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
