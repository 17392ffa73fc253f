"""Are two photos of the same place? Local-feature verification for grouping, remembered per content hash.

Whole-photo features call two temples alike; the same facade seen twice shares dozens of keypoints that one
affine transform explains. `SamePlace` answers that for pairs of photos with the SIFT matching of
`models/verify.py` (RootSIFT, ratio test, affine RANSAC) and counts a pair with at least
SAME_PLACE_INLIERS inliers as one place. Measured (DEVELOPERS.md, "Duplicates and groups"): among the 10
nearest photos, >= 12 inliers were the same landmark in 99.7-100 % of pairs of landmark photos.

Counts are remembered in INDEX/place_checks.sqlite (pairmemory: per content-hash pair, a cache rebuilt when
damaged or made by other matcher settings), CHUNK pairs at a time, so grouping the same library again (or
after a stopped run) matches only new pairs.
Keypoints of a photo are kept in memory only until its last pair is matched (pairs in reverse Cuthill-McKee
order of the pair graph), so 20,000 photos do not hold 20,000 sets of descriptors.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import numpy.typing as npt

from ..config import DEFAULT_MAX_PIXELS
from ..models import verify
from .pairmemory import PairMemory, pair_key

SAME_PLACE_INLIERS = 12  # verify.MIN_INLIERS: 12 of 300 everyday photos reached 8-12 against a landmark by chance
MATCHER = (f"sift{verify.KEYPOINTS}@{verify.MAX_SIDE}px,ratio{verify.RATIO},affine{verify.RANSAC_PIXELS}px,"
           f"v{verify.VERSION}")
FILE_NAME = "place_checks.sqlite"
CHUNK = 256  # pairs matched between two progress reports (and between two frees of finished photos)


class SamePlace:
    """Callable on (m, 2) row pairs of `paths`: True where the two photos show the same place."""

    def __init__(self, paths: Sequence[Path | str], hashes: Sequence[str], directory: Path | None = None,
                 threads: int = 2, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.paths, self.hashes, self.threads = [Path(p) for p in paths], list(hashes), max(1, threads)
        self.max_pixels = max_pixels  # the run's decoding limit: a photo it embedded is matched too
        self.memory = PairMemory(directory, MATCHER, FILE_NAME)
        self.matched = 0  # pairs matched by this object (not remembered)

    def inliers(self, pairs: npt.ArrayLike, progress: Callable[[float], None] | None = None
                ) -> npt.NDArray[np.int64]:
        """The affine inliers of each pair (0 where a photo does not decode; that is not remembered, so a photo on a
        drive that was away is matched when it is back)."""
        pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
        keys = [pair_key(self.hashes[a], self.hashes[b]) for a, b in pairs]
        known = self.memory.scores(keys)
        # A remembered count that is no count (a damaged cache) is matched again, never trusted.
        out = np.array([_count_or_unknown(known.get(k)) for k in keys], np.int64)
        todo = np.flatnonzero(out < 0)

        def keep(rows: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]) -> None:
            # Remembered chunk by chunk: a run stopped after minutes of matching keeps what it matched.
            out[todo[rows]] = counts
            self.matched += len(rows)
            self.memory.remember({keys[r]: float(c) for r, c in zip(todo[rows], counts) if c >= 0}, {})

        with ThreadPoolExecutor(self.threads) as pool:
            _matched(pairs[todo], self._local, pool, progress, keep)
        return np.maximum(out, 0)

    def __call__(self, pairs: npt.ArrayLike, progress: Callable[[float], None] | None = None
                 ) -> npt.NDArray[np.bool_]:
        return self.inliers(pairs, progress) >= SAME_PLACE_INLIERS

    def _local(self, row: int) -> verify.LocalFeatures | None:
        return verify.photo_local_features(self.paths[row], self.max_pixels)

    def close(self) -> None:
        self.memory.close()


def _count_or_unknown(value: object) -> int:
    if isinstance(value, (int, float)) and 0 <= value <= verify.KEYPOINTS:
        return int(value)
    return -1


def _matched(pairs: npt.NDArray[np.int64], local: Callable[[int], verify.LocalFeatures | None],
             pool: ThreadPoolExecutor, progress: Callable[[float], None] | None,
             done: Callable[[npt.NDArray[np.int64], npt.NDArray[np.int64]], None] | None = None
             ) -> npt.NDArray[np.int64]:
    """The inliers of each pair (-1: a photo did not decode), also given to `done(rows, counts)` chunk by chunk.
    Each photo's keypoints are found once, when a pair first needs them, and dropped after its last pair."""
    counts = np.zeros(len(pairs), np.int64)
    if not len(pairs):
        return counts
    order = _bandwidth_order(pairs)
    last = {}
    for n, (a, b) in enumerate(pairs[order]):
        last[int(a)] = last[int(b)] = n
    held: dict[int, verify.LocalFeatures | None] = {}
    for start in range(0, len(order), CHUNK):
        chunk = order[start:start + CHUNK]
        new = sorted({int(r) for r in pairs[chunk].ravel()} - held.keys())
        held.update(zip(new, pool.map(local, new)))
        counts[chunk] = list(pool.map(lambda p: _count(held[int(p[0])], held[int(p[1])]), pairs[chunk]))
        if done is not None:
            done(chunk, counts[chunk])
        end = start + len(chunk)
        for r in [r for r in held if last[r] < end]:
            del held[r]
        if progress is not None:
            progress(end / len(order))
    return counts


def _count(a: verify.LocalFeatures | None, b: verify.LocalFeatures | None) -> int:
    return -1 if a is None or b is None else verify.inliers(a, b)


def _bandwidth_order(pairs: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Pair indices ordered so that photos' pairs come close together (reverse Cuthill-McKee of the pair graph,
    pairs sorted by their later photo): few photos' keypoints are held at once."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    n = int(pairs.max()) + 1
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)).tocsr()
    position = np.empty(n, np.int64)
    position[reverse_cuthill_mckee(graph + graph.T, symmetric_mode=True)] = np.arange(n)
    ends = position[pairs]
    return np.lexsort((ends.min(1), ends.max(1)))
