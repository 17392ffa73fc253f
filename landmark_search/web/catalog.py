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
from ..manifest import MANIFEST_NAME, store_error

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


@dataclass(frozen=True)
class Filter:
    """Which photos a page lists: all, one landmark, the unknown ones, and/or those under one folder."""

    tag: str | None = None
    unknown: bool = False
    folder: str | None = None

    def where(self) -> tuple[str, list]:
        clauses, args = [], []
        if self.unknown:
            clauses.append("label IS NULL")
        elif self.tag:
            clauses.append("label = ?")
            args.append(self.tag)
        if self.folder:
            prefix = self.folder.rstrip(os.sep) + os.sep
            clauses.append("path >= ? AND path < ?")  # a prefix as a range: uses the path index
            args += [prefix, prefix[:-1] + chr(ord(os.sep) + 1)]
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


class Catalog:
    """Read-only listings of one index's manifest; a connection per call, so any server thread may ask."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._manifest = directory / MANIFEST_NAME
        self._memo: dict[str, tuple[str, object]] = {}
        self._confidence_column = False

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
        try:
            conn = sqlite3.connect(f"{self._manifest.absolute().as_uri()}?mode=ro", uri=True, timeout=30.0)
            try:
                return conn.execute(sql, args).fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise store_error(self.directory, exc) from None

    def _has_confidence(self) -> bool:
        # Asked again until seen: a writer adds the column to an older manifest, and never takes it away.
        if not self._confidence_column:
            self._confidence_column = any(row[1] == "confidence" for row in self._query("PRAGMA table_info(photos)"))
        return self._confidence_column

    def page(self, offset: int = 0, limit: int = 100, flt: Filter = Filter()) -> tuple[list[Tile], int]:
        """(tiles of photos offset..offset+limit in path order, how many photos match in all)."""
        limit = max(1, min(int(limit), PAGE_MAX))
        where, args = flt.where()
        conf = "confidence" if self._has_confidence() else "NULL"
        rows = self._query(f"SELECT path, label, {conf} FROM photos{where} ORDER BY path LIMIT ? OFFSET ?",
                           [*args, limit, min(max(0, int(offset)), OFFSET_MAX)])
        total = int(self._query(f"SELECT COUNT(*) FROM photos{where}", args)[0][0])
        return [Tile(str(p), lab, None if c is None else float(c)) for p, lab, c in rows], total

    def tiles(self, paths: list[str]) -> dict[str, Tile]:
        """The tiles of these indexed paths (those not indexed are left out)."""
        conf = "confidence" if self._has_confidence() else "NULL"
        out: dict[str, Tile] = {}
        for start in range(0, len(paths), 500):
            chunk = paths[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for p, lab, c in self._query(f"SELECT path, label, {conf} FROM photos WHERE path IN ({marks})", chunk):
                out[p] = Tile(str(p), lab, None if c is None else float(c))
        return out

    def labels(self) -> list[tuple[str | None, int]]:
        """(label, photos) for every label, the most common first; None counts the unknown photos."""
        rows = self._per_generation("labels", lambda: self._query(
            "SELECT label, COUNT(*) FROM photos GROUP BY label ORDER BY COUNT(*) DESC, label"))
        return [(lab, int(n)) for lab, n in rows]

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

    def has(self, path: str) -> bool:
        return bool(self._query("SELECT 1 FROM photos WHERE path = ?", (path,)))
