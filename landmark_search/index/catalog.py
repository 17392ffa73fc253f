"""What an index holds, page by page: the library grid's queries over the SQLite manifest (read-only, no vectors).

A page is one indexed range scan (`ORDER BY path` walks the manifest's unique path index), so the first page of a
20,000-photo library costs the same as that of a 20-photo one. Folder filters are path-prefix ranges on that index.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..errors import IndexStoreError
from .manifest import LISTED_CONFIDENCE, LISTED_LABEL, LISTED_TAKEN, MANIFEST_NAME, connect, ensure_current, store_error

PAGE_MAX = 500
OFFSET_MAX = 2 ** 62  # SQLite takes a 64-bit OFFSET; past the last photo any offset gives the same empty page


@dataclass(frozen=True)
class Tile:
    """One indexed photo as the library shows it."""

    path: str
    label: str | None  # None: the model says "none of its landmarks" (or an index built before labels)
    confidence: float | None

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label,
                "confidence": None if self.confidence is None else round(self.confidence, 4)}


SORTS = ("path", "taken", "-taken")  # file path; capture time, oldest or newest first


@dataclass(frozen=True)
class Filter:
    """Which photos a page lists (all, one landmark, the unknown ones, under one folder, matching words) and in
    which order (SORTS)."""

    tag: str | None = None
    unknown: bool = False
    folder: str | None = None
    q: str | None = None
    sort: str = "path"
    # For each word of q, the landmarks whose known place (name, city, country) holds it: "rome" finds the
    # Colosseum's photos before `tag --geotag` wrote Rome into them.
    place_labels: tuple[tuple[str, ...], ...] = ()

    def where(self, cols: _Columns) -> tuple[str, list]:
        clauses, args = [], []
        if self.unknown:
            clauses.append(f"{cols.label} IS NULL")
        elif self.tag:
            clauses.append(f"{cols.label} = ?")
            args.append(self.tag)
        if self.folder:
            prefix = self.folder.rstrip(os.sep) + os.sep
            clauses.append("path >= ? AND path < ?")  # a prefix as a range: uses the path index
            args += [prefix, prefix[:-1] + chr(ord(os.sep) + 1)]
        for n, word in enumerate((self.q or "").split()[:QUERY_WORDS]):
            like = _like(word)
            labels = self.place_labels[n] if n < len(self.place_labels) else ()
            placed = f" OR {cols.label} IN ({', '.join('?' * len(labels))})" if labels else ""
            clauses.append(f"(path LIKE ? ESCAPE '\\' OR {cols.label} LIKE ? ESCAPE '\\' OR "
                           f"{cols.keywords} LIKE ? ESCAPE '\\'{placed})")
            args += [like, like, like, *labels]
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def order(self, cols: _Columns, reverse: bool = False) -> str:
        """ORDER BY terms; path breaks ties, so that every photo has one place in the order."""
        newest = (self.sort == "-taken") != reverse
        direction = " DESC" if newest else ""
        if self.sort in ("taken", "-taken"):
            return f"{cols.taken}{direction}, path{direction}"
        return "path DESC" if reverse else "path"


QUERY_WORDS = 8  # words of a search, each must match


def _like(text: str) -> str:
    """A LIKE pattern (ESCAPE '\\') that finds `text` anywhere, its %, _ and \\ taken as plain characters."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@dataclass(frozen=True)
class _Columns:
    """SQL for what a photo is listed by (the manifest's LISTED_* expressions)."""

    label: str = LISTED_LABEL
    confidence: str = LISTED_CONFIDENCE
    taken: str = LISTED_TAKEN
    keywords: str = "keywords"


_COLUMNS = _Columns()


class Catalog:
    """Read-only listings of one index's manifest; a connection per call, so any server thread may ask."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._manifest = directory / MANIFEST_NAME
        self._memo: dict[str, tuple[str, object]] = {}
        self._current = False  # the manifest is known to be of this version's schema

    def _per_generation(self, name: str, compute):
        """compute() again only when the manifest changed (its generation counts every committed change)."""
        generation = self._query("SELECT value FROM meta WHERE key = 'generation'")
        key = str(generation[0][0]) if generation else ""
        cached = self._memo.get(name)
        if cached is None or cached[0] != key:
            cached = self._memo[name] = (key, compute())
        return cached[1]

    def _query(self, sql: str, args: list | tuple = ()) -> list[tuple]:
        if not self._manifest.exists():
            raise IndexStoreError(f"no index at {self.directory}; build one with `landmark index PHOTOS`")
        if not self._current:  # an index from an older version is migrated once, before the first listing
            ensure_current(self.directory)
            self._current = True
        conn = connect(self._manifest, read_only=True)
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise store_error(self.directory, exc) from None
        finally:
            conn.close()

    def page(self, offset: int = 0, limit: int = 100, flt: Filter = Filter()) -> tuple[list[Tile], int]:
        """(tiles of photos offset..offset+limit in the filter's order, how many photos match in all)."""
        limit = max(1, min(int(limit), PAGE_MAX))
        cols = _COLUMNS
        where, args = flt.where(cols)
        rows = self._query(f"SELECT path, {cols.label}, {cols.confidence} FROM photos{where} ORDER BY "
                           f"{flt.order(cols)} LIMIT ? OFFSET ?", [*args, limit, min(max(0, int(offset)), OFFSET_MAX)])
        total = int(self._query(f"SELECT COUNT(*) FROM photos{where}", args)[0][0])
        return [Tile(str(p), lab, None if c is None else float(c)) for p, lab, c in rows], total

    def tiles(self, paths: list[str]) -> dict[str, Tile]:
        """The tiles of these indexed paths (those not indexed are left out)."""
        cols = _COLUMNS
        out: dict[str, Tile] = {}
        for start in range(0, len(paths), 500):
            chunk = paths[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for p, lab, c in self._query(f"SELECT path, {cols.label}, {cols.confidence} FROM photos "
                                         f"WHERE path IN ({marks})", chunk):
                out[p] = Tile(str(p), lab, None if c is None else float(c))
        return out

    def any_keywords_holding(self, words: str) -> bool:
        """Whether any indexed photo's sidecar keywords hold the text `words` (once per generation)."""
        return self._per_generation(f"keyword {words}", lambda: bool(self._query(
            f"SELECT 1 FROM photos WHERE {_COLUMNS.keywords} LIKE ? ESCAPE '\\' LIMIT 1", [_like(words)])))

    def labels(self) -> list[tuple[str | None, int]]:
        """(label, photos) for every label (a name given by hand first), the most common first; None counts the
        photos with none."""
        # Asked each time (one scan, ~10 ms at 20,000 photos): a name given by hand changes it within a generation.
        rows = self._query(f"SELECT {_COLUMNS.label} AS shown, COUNT(*) FROM photos GROUP BY shown "
                           "ORDER BY COUNT(*) DESC, shown")
        return [(lab, int(n)) for lab, n in rows]

    def months(self, flt: Filter = Filter()) -> list[tuple[str, int]]:
        """("YYYY-MM", photos) of the months the filter's photos were taken in, oldest first."""
        cols = _COLUMNS
        where, args = flt.where(cols)
        rows = self._query(f"SELECT substr({cols.taken}, 1, 7) AS month, COUNT(*) FROM photos{where} "
                           "GROUP BY month ORDER BY month", args)
        return [(str(m), int(n)) for m, n in rows if m]

    def month_offset(self, month: str, flt: Filter) -> int:
        """Where the photos of `month` ("YYYY-MM") begin in the filter's capture-time order."""
        cols = _COLUMNS
        where, args = flt.where(cols)
        joint = " AND " if where else " WHERE "
        before = "<" if flt.sort != "-taken" else ">"
        return int(self._query(f"SELECT COUNT(*) FROM photos{where}{joint}substr({cols.taken}, 1, 7) {before} ?",
                               [*args, month])[0][0])

    def neighbours(self, path: str, flt: Filter = Filter()) -> tuple[str | None, str | None]:
        """(the photo before `path`, the one after it) in the order the library lists `flt`'s photos."""
        cols = _COLUMNS
        where, args = flt.where(cols)
        joint = " AND " if where else " WHERE "
        if flt.sort in ("taken", "-taken"):
            row = self._query(f"SELECT {cols.taken} FROM photos WHERE path = ?", [path])
            if not row:
                return None, None
            key, at = f"({cols.taken}, path)", [row[0][0], path]
            later = "<" if flt.sort == "-taken" else ">"
        else:
            key, at, later = "path", [path], ">"
        earlier = "<" if later == ">" else ">"
        marks = "(?, ?)" if len(at) == 2 else "?"
        before = self._query(f"SELECT path FROM photos{where}{joint}{key} {earlier} {marks} ORDER BY "
                             f"{flt.order(cols, reverse=True)} LIMIT 1", [*args, *at])
        after = self._query(f"SELECT path FROM photos{where}{joint}{key} {later} {marks} ORDER BY {flt.order(cols)} "
                            "LIMIT 1", [*args, *at])
        return (str(before[0][0]) if before else None), (str(after[0][0]) if after else None)

    def all_paths(self) -> list[str]:
        """Every indexed path, in path order (the path index alone answers: no vectors are read)."""
        return [str(p) for (p,) in self._query("SELECT path FROM photos ORDER BY path")]

    def folders(self) -> list[tuple[str, int]]:
        """(folder, photos directly in it) for every folder that holds indexed photos."""
        def count() -> list[tuple[str, int]]:
            counts: dict[str, int] = {}
            for path in self.all_paths():
                folder = os.path.dirname(path)
                counts[folder] = counts.get(folder, 0) + 1
            return sorted(counts.items())

        return self._per_generation("folders", count)

    def folder_tree(self) -> list[tuple[str, int]]:
        """(folder, photos in it and below) for every folder that holds indexed photos and every folder between
        those and the one folder above them all, in path order: a trip's folder lists all its days' photos."""
        def tree() -> list[tuple[str, int]]:
            direct = self.folders()
            if not direct:
                return []
            top = os.path.commonpath([f for f, _ in direct])
            totals: dict[str, int] = {}
            for folder, n in direct:
                while True:
                    totals[folder] = totals.get(folder, 0) + n
                    if folder == top or os.path.dirname(folder) == folder:
                        break
                    folder = os.path.dirname(folder)
            return sorted(totals.items())

        return self._per_generation("folder tree", tree)

    def has(self, path: str) -> bool:
        return bool(self._query("SELECT 1 FROM photos WHERE path = ?", (path,)))
