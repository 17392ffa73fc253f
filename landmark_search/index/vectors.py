"""The FAISS side of an index: the vector structure (flat, ivf, hnsw) and its cache file.

``vectors.faiss`` is a FAISS index (``faiss.read_index`` reads it) followed by a trailer that tags it
with the manifest generation it reflects and a CRC32; ``read_cache`` refuses a file whose length or
checksum does not match. Index types (``INDEX_TYPES``):

* ``"flat"``: exact ``IndexFlatIP`` search; deletions are removed at once.
* ``"ivf"``:  ``IndexIVFFlat`` (inner product), ``nlist`` ~ 4*sqrt(n) lists, ``nprobe`` lists
  searched per query; retrained when the index has grown ``IVF_RETRAIN_GROWTH`` times.
  Below ``IVF_MIN_VECTORS`` vectors there is too little to train on and it stays flat.
* ``"hnsw"``: ``IndexHNSWFlat`` graph (M, efConstruction, efSearch below); no training,
  incremental adds.
* ``"auto"``: flat up to ``EXACT_MAX_VECTORS`` photos (one exact query then costs a few ms),
  ivf above (recall@10 >= 0.95 at a fraction of a millisecond; see benchmarks/bench_ann.py).

ivf and hnsw indexes keep deleted vectors as tombstones that a search-time ``IDSelector`` skips.
Numpy in, numpy out; never imports torch.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from landmark_search.fsutil import atomic_writer

Embeddings = npt.NDArray[np.float32]

CACHE_NAME = "vectors.faiss"
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
_PARALLEL_MIN_QUERIES = 20  # faiss's own threshold for switching single queries to BLAS


def cpu_count() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


_threads_configured = False


def configure_threads() -> None:
    """Let faiss use every CPU we may run on (once per process; callers may override later)."""
    global _threads_configured
    if not _threads_configured:
        faiss.omp_set_num_threads(cpu_count())
        _threads_configured = True



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
class VectorIndex:
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


def build_vector_index(kind: str, dim: int, ids: npt.NDArray[np.int64], vectors: Embeddings) -> VectorIndex:
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
    result = VectorIndex(kind=kind, index=index, trained_n=n)
    result.add(ids, vectors)
    return result


def write_cache(path: Path, vectors: VectorIndex, tag: dict[str, Any]) -> None:
    """Write the FAISS index plus a trailer (tag, payload length, CRC32) atomically to ``path``."""
    with atomic_writer(path) as f:
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


_MAX_TRAILER_BYTES = 1 << 16  # ours is ~300 bytes of JSON


class _Walk:
    """A bounded cursor over the FAISS payload of a cache file: reads the few header fields, seeks past data."""

    def __init__(self, f: Any, size: int) -> None:
        self._f, self.pos, self.size = f, 0, size

    def _advance(self, n: int) -> None:
        """Move the count n bytes on, refused when the payload does not hold them."""
        if n > self.size - self.pos:
            raise ValueError(f"structure runs past the end of the data at byte {self.pos}")
        self.pos += n

    def take(self, n: int) -> bytes:
        self._advance(n)
        data = self._f.read(n)
        if len(data) != n:
            raise ValueError("file shorter than its trailer says")
        return data

    def skip(self, n: int) -> None:
        self._advance(n)
        self._f.seek(n, os.SEEK_CUR)

    def rewind(self, pos: int) -> None:
        self._f.seek(pos - self.pos, os.SEEK_CUR)
        self.pos = pos

    def num(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def count(self, itemsize: int, what: str) -> int:
        """A FAISS vector's length field, refused when the data left could not hold that many items."""
        n = self.num("Q")
        if n * itemsize > self.size - self.pos:
            raise ValueError(f"{what} claims {n} items of {itemsize} bytes, more than the file holds")
        return n


def _walk_header(w: _Walk, dim: int) -> int:
    """An index header (d, ntotal, 2 unused, is_trained, metric); returns ntotal."""
    d, ntotal = w.num("i"), w.num("q")
    w.skip(17)
    metric = w.num("i")
    if d != dim or ntotal < 0 or metric != faiss.METRIC_INNER_PRODUCT:
        raise ValueError(f"header says d={d} ntotal={ntotal} metric={metric}, expected d={dim}, inner product")
    return ntotal


def _walk_flat(w: _Walk, dim: int) -> int:
    n = _walk_header(w, dim)
    floats = w.count(4, "flat codes")
    if floats != n * dim:
        raise ValueError(f"flat codes hold {floats} floats, not {n} x {dim}")
    w.skip(4 * floats)
    return n


def _walk_sub_flat(w: _Walk, dim: int, what: str) -> int:
    if w.take(4) != b"IxFI":
        raise ValueError(f"unexpected {what} (not IndexFlatIP)")
    return _walk_flat(w, dim)


def _walk_ivf(w: _Walk, dim: int) -> int:
    n = _walk_header(w, dim)
    nlist = w.num("Q")
    w.skip(8)  # nprobe
    if _walk_sub_flat(w, dim, "ivf quantizer") != nlist:
        raise ValueError("ivf centroid count differs from its list count")
    if w.take(1) != b"\0" or w.count(8, "direct map"):
        raise ValueError("unexpected ivf direct map")
    if w.take(4) != b"ilar" or w.num("Q") != nlist or w.num("Q") != 4 * dim:
        raise ValueError("unexpected ivf inverted lists")
    layout = w.take(4)
    if layout == b"full":
        if w.count(8, "ivf list sizes") != nlist:
            raise ValueError("ivf list sizes do not match the list count")
        sizes = np.frombuffer(w.take(8 * nlist), dtype="<u8")
    elif layout == b"sprs":
        pairs = np.frombuffer(w.take(8 * w.count(8, "ivf list sizes")), dtype="<u8")
        if len(pairs) % 2 or (len(pairs) and pairs[0::2].max() >= nlist):
            raise ValueError("ivf sparse list sizes are malformed")
        sizes = np.zeros(nlist, dtype="<u8")
        sizes[pairs[0::2].astype(np.int64)] = pairs[1::2]
    else:
        raise ValueError("unexpected ivf list layout")
    # faiss sizes every list before reading any: together they must fit in the bytes that follow.
    code_size = 4 * dim
    if len(sizes) and float(sizes.astype(np.float64).sum()) * (code_size + 8) > w.size - w.pos:
        raise ValueError("ivf lists claim more vectors than the file holds")
    if int(sizes.sum()) != n:
        raise ValueError(f"ivf lists hold {int(sizes.sum())} vectors, its header says {n}")
    for size in map(int, sizes):  # each list: its codes, then its ids, which searches map through the id map
        if size:
            w.skip(size * code_size)
            ids = np.frombuffer(w.take(8 * size), dtype="<i8")
            if ids.min() < 0 or ids.max() >= n:
                raise ValueError("an ivf list holds an id outside the index")
    return n


def _walk_hnsw(w: _Walk, dim: int) -> int:
    """The graph is checked as well as sized: a search follows its offsets and neighbour ids unchecked."""
    n = _walk_header(w, dim)
    w.skip(8 * w.count(8, "hnsw level probabilities"))
    cum = np.frombuffer(w.take(4 * w.count(4, "hnsw neighbours per level")), dtype="<i4").astype(np.int64)
    if w.count(4, "hnsw levels") != n:
        raise ValueError("hnsw levels do not match the vector count")
    levels = np.frombuffer(w.take(4 * n), dtype="<i4").astype(np.int64)
    if w.count(8, "hnsw offsets") != n + 1:
        raise ValueError("hnsw offsets do not match the vector count")
    offsets = np.frombuffer(w.take(8 * (n + 1)), dtype="<u8")
    links = w.count(4, "hnsw neighbours")
    if not len(cum) or cum[0] != 0 or (np.diff(cum) < 0).any() or (n and (levels.min() < 1 or levels.max() >= len(cum))):
        raise ValueError("hnsw levels are malformed")
    if offsets[0] != 0 or int(offsets[-1]) != links or (n and (np.diff(offsets).astype(np.int64) != cum[levels]).any()):
        raise ValueError("hnsw offsets do not match its levels")
    left = links
    while left:  # streamed: at 1M vectors the neighbour lists are ~300 MB
        chunk = np.frombuffer(w.take(4 * min(left, 1 << 22)), dtype="<i4")
        if chunk.min() < -1 or chunk.max() >= n:
            raise ValueError("hnsw neighbours name vectors outside the index")
        left -= len(chunk)
    entry, max_level = w.num("i"), w.num("i")
    w.skip(12)  # efConstruction, efSearch, an unused int
    if (entry, max_level) != ((-1, -1) if not n else (entry, int(levels.max()) - 1)) or (
            n and not (0 <= entry < n and levels[entry] - 1 == max_level)):
        raise ValueError("hnsw entry point is malformed")
    if _walk_sub_flat(w, dim, "hnsw storage") != n:
        raise ValueError("hnsw storage differs from its graph in size")
    return n


_WALKERS = {b"IxFI": ("flat", _walk_flat), b"IwFl": ("ivf", _walk_ivf), b"IHNf": ("hnsw", _walk_hnsw)}


def check_layout(f: Any, payload: int, dim: int | None = None) -> tuple[str, int, int]:
    """Walk the FAISS payload at the start of ``f``; return (kind, ntotal, dim) or raise ``ValueError``.

    ``faiss.read_index`` sizes every array from a length field before reading it, so a crafted file
    (a length of 2^30 in a few bytes) could make it allocate gigabytes. This accepts only the
    structures write_cache produces, with every length bounded by the bytes that follow and the
    sizes consistent with each other: reading such a file allocates no more than it holds.
    """
    w = _Walk(f, payload)
    if w.take(4) != b"IxM2":
        raise ValueError("unexpected index structure (not IndexIDMap2)")
    if dim is None:
        dim = w.num("i")
        w.rewind(4)
    n = _walk_header(w, dim)
    inner = w.take(4)
    if inner not in _WALKERS:
        raise ValueError("unexpected index structure")
    kind, walk = _WALKERS[inner]
    if walk(w, dim) != n or w.count(8, "id map") != n:
        raise ValueError("the id map does not match the vectors")
    w.skip(8 * n)
    if w.pos != payload:
        raise ValueError("unexpected bytes after the index")
    return kind, n, dim


def read_cache(path: Path, dim: int | None = None) -> tuple[VectorIndex, dict[str, Any]]:
    """Read and verify a cache file (of ``dim``-dimensional vectors); raise ``ValueError`` or OSError if unusable.

    Before ``faiss.read_index`` runs, the trailer, the file's length and the structure's every size are
    checked (``check_layout``) and the CRC of the whole payload is verified, so neither a damaged nor a
    crafted file makes it allocate more than the file holds.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < _TRAILER_TAIL.size:
            raise ValueError("file too short")
        f.seek(size - _TRAILER_TAIL.size)
        blob_len, magic = _TRAILER_TAIL.unpack(f.read(_TRAILER_TAIL.size))
        if magic != _TRAILER_MAGIC or blob_len > min(size - _TRAILER_TAIL.size, _MAX_TRAILER_BYTES):
            raise ValueError("no landmark-search trailer")
        f.seek(size - _TRAILER_TAIL.size - blob_len)
        tag = json.loads(f.read(blob_len))
        if not isinstance(tag, dict):
            raise ValueError("malformed trailer")
        payload, crc_want = tag.get("payload_bytes"), tag.get("crc32")
        if not isinstance(payload, int) or not isinstance(crc_want, int) or not isinstance(tag.get("trained_n"), int):
            raise ValueError("malformed trailer")
        if payload + blob_len + _TRAILER_TAIL.size != size:
            raise ValueError("length does not match its trailer (truncated?)")
        f.seek(0)
        crc = 0
        for chunk in iter(lambda: f.read(min(1 << 20, payload - f.tell())), b""):
            crc = zlib.crc32(chunk, crc)
        if crc != crc_want:
            raise ValueError("checksum mismatch (corrupt)")
        f.seek(0)
        kind, ntotal, dim = check_layout(f, payload, dim)
        if kind != tag.get("kind") or ntotal != tag.get("ntotal"):
            raise ValueError("structure does not match its trailer")
        f.seek(0)
        remaining = payload

        def read(n: int) -> bytes:
            nonlocal remaining
            chunk = f.read(min(n, remaining))
            remaining -= len(chunk)
            return chunk

        reader = faiss.PyCallbackIOReader(read)
        index = faiss.read_index(reader)
        del reader
    if not isinstance(index, faiss.IndexIDMap2) or index.d != dim or index.ntotal != ntotal:
        raise ValueError("unexpected index structure")
    return VectorIndex(kind=kind, index=index, trained_n=tag["trained_n"]), tag
