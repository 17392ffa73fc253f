"""The web app's library: one index, its photos (only those), its model kept warm, and what the pages ask of them.

Every read of a photo goes through `photo_file`, which admits only paths the index holds, whose file (symlinks
followed) lies in a folder that holds indexed photos: `..`, absolute paths elsewhere, encoded variants and links
out of the library all end as NotInLibrary. Index and model work runs on one worker thread: the SQLite
connection and the FAISS structure are not thread-safe, and one model at a time is all two cores can feed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from ..config import DEFAULT_MAX_PIXELS, EmbedConfig
from ..errors import LandmarkError
from ..curation.grouping import GroupOptions
from ..search import SimilarResult, index_model, index_dir, photo_key, query_index, recorded_model, refresh_browse_facts
from ..places.map import world_xy
from ..index.catalog import QUERY_WORDS, Catalog, Filter, Tile
from .thumbs import QUALITY, THUMB_SIDE, ThumbCache

T = TypeVar("T")

UPLOAD_MAX_BYTES = 40 * 1024 * 1024  # a 100-megapixel JPEG is ~30 MB
UPLOAD_MAX_PIXELS = 100_000_000
INDEX_LOCK_WAIT = 10.0  # seconds a name given in the app waits for a `landmark index` run to let the index go
NEIGHBOURS_ASKED = 20  # sidecars read beside a never-tagged photo to learn whether its folder uses XMP
SIMILAR_MAX = 60  # hits on the photo and search pages, at most
# and none less similar (cosine) than this: on 1,076 evaldata photos (built-in model) the hits above 0.6 are the
# same landmark 66% of the time (47% for the plain top 60), a median of 15 per photo (DEVELOPERS.md)
SIMILAR_MIN_SCORE = 0.6


class NotInLibrary(LandmarkError):
    """A path that is not an indexed photo of this library (the server answers 404)."""


@dataclass
class ServeOptions:
    """How `landmark serve` reads and writes."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    trust_export: bool = False
    device: str = "auto"
    precision: str = "auto"
    xmp: bool = False  # naming writes XMP keywords too (as `landmark tag --xmp`)
    train_dir: Path | None = None  # where named photos are linked for training; default INDEX/training
    review_dir: Path | None = None  # where the Duplicates page moves the others; default INDEX/duplicates-review
    group: GroupOptions = field(default_factory=GroupOptions)  # the Review page's groups, as `landmark group`'s


@dataclass
class _Cached:
    key: Any = None  # what the value was computed for: the index generation, and a stamp where one is given
    value: Any = None


class _Closed(Exception):
    """The library closed while a background job ran: the job stops."""


@dataclass
class _Job:
    """Work that runs on its own thread while pages answer: its progress, then its value or its error."""

    generation: int
    progress: float = 0.0
    value: Any = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class Library:
    """One index opened for the web app."""

    directory: Path
    opts: ServeOptions = field(default_factory=ServeOptions)

    def __post_init__(self) -> None:
        self.recorded = recorded_model(self.directory)
        self.ref = index_model(self.directory, None, self.opts.trust_export, recorded=self.recorded)
        self.catalog = Catalog(self.directory)
        self.thumbs = ThumbCache(self.directory / "thumbs", self.opts.max_pixels)
        self.places: dict = self.recorded.get("places") or {}
        self.train_dir = self.opts.train_dir or self.directory / "training"
        self.review_dir = self.opts.review_dir or self.directory / "duplicates-review"
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="landmark-library")
        self._idx = None
        self._model = None
        self._explainer = None
        self._folders: set[str] = set()
        self._cache: dict[str, _Cached] = {}
        self._jobs: dict[str, _Job] = {}
        self._jobs_lock = threading.Lock()
        self._closing = threading.Event()  # background jobs stop at their next progress report
        self._named: set[str] = set()  # named on the Review page since its groups were computed

    @classmethod
    def open(cls, index: str | Path, opts: ServeOptions | None = None) -> Library:
        return cls(index_dir(index), opts or ServeOptions())

    # ------------------------------------------------------------------ the worker: index and model

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn on the library's one worker thread and wait for it."""
        return self._worker.submit(fn, *args).result()

    def _index(self):
        from ..index.store import PhotoIndex

        if self._idx is None:
            self._idx = PhotoIndex.open(self.directory, model_id=self.ref.model_id,
                                        dim=int(self.recorded["embedding_dim"]), create=False, lock=False)
        return self._idx

    def _loaded(self):
        if self._model is None:
            from ..embeddings import load_model

            self._model = load_model(self.ref)
        return self._model

    def warm_up(self) -> None:
        """Load the model and the vectors in the background, so the first query does not wait for them."""
        def warm() -> None:
            try:
                self._loaded()
                self._index()
            except LandmarkError:
                pass  # said again, with its fix, by the first request that needs it

        self._worker.submit(warm)

    def close(self) -> None:
        self._closing.set()
        def shut() -> None:
            if self._idx is not None:
                self._idx.close()
                self._idx = None

        self._worker.submit(shut).result()
        self._worker.shutdown(wait=True)

    def generation(self) -> int:
        return self.run(lambda: self._index().generation)

    def _memo(self, name: str, compute: Callable[[], T], stamp: Callable[[], Any] | None = None) -> T:
        """compute() once per index generation (a `landmark index` run meanwhile makes it stale) and, with `stamp`,
        again whenever stamp() changes."""
        key = (self.generation(), stamp() if stamp else None)
        entry = self._cache.setdefault(name, _Cached())
        if entry.key != key:
            entry.value, entry.key = compute(), key
        return entry.value

    def _background(self, name: str, compute: Callable[[Callable[[float], None]], T]) -> _Job:
        """compute(progress) once per index generation on a thread of its own; the job as it stands now.

        A running job is returned without asking the worker anything, so a page never waits behind the model's
        warm-up or a query; the job reads the generation it computes for when it starts. A finished job of an
        older generation is replaced by a new one (one at a time: two cores)."""
        with self._jobs_lock:
            job = self._jobs.get(name)
            if job is not None and not job.done.is_set():
                return job
        if job is not None and job.generation == self.generation():
            return job
        with self._jobs_lock:
            if self._jobs.get(name) is not job:  # another request started one meanwhile
                return self._jobs[name]
            job = self._jobs[name] = _Job(-1)

        def progress(share: float) -> None:
            if self._closing.is_set():
                raise _Closed
            job.progress = min(max(float(share), 0.0), 1.0)

        def work() -> None:
            try:
                job.generation = self.generation()
                job.value = compute(progress)
            except _Closed:
                pass
            except Exception as exc:  # noqa: BLE001 - said on the page instead of dying unseen in a thread
                job.error = str(exc) or type(exc).__name__
            finally:
                job.done.set()

        threading.Thread(target=work, name=f"landmark-{name}", daemon=True).start()
        return job

    def _awaited(self, name: str, compute: Callable[[Callable[[float], None]], T], wait: float
                 ) -> tuple[dict | None, T | None]:
        """The background job `name` after waiting at most `wait` seconds: ({"state": "computing", "progress"}
        or {"state": "failed", "error"}, None) until it is done, then (None, its value)."""
        job = self._background(name, compute)
        if wait > 0:
            job.done.wait(wait)
        if not job.done.is_set():
            return {"state": "computing", "progress": round(job.progress, 3)}, None
        if job.error is not None:
            return {"state": "failed", "error": job.error}, None
        return None, job.value

    # ------------------------------------------------------------------ which files may be served

    def photo_file(self, path: str) -> Path:
        """The file of an indexed photo of this library; NotInLibrary for anything else."""
        if not path or "\x00" in path or not os.path.isabs(path) or os.path.normpath(path) != path:
            raise NotInLibrary(f"{path[:200]!r} is not a photo of this library")
        if not self.catalog.has(path):
            raise NotInLibrary(f"{path[:200]} is not a photo of this library")
        real = os.path.realpath(path)
        folder = os.path.dirname(real)
        if folder not in self._folders:
            self._folders = {f for f, _ in self.catalog.folders()}
            if folder not in self._folders:  # a link that leads out of the library
                raise NotInLibrary(f"{path} leads outside the library's folders")
        return Path(path)

    # ------------------------------------------------------------------ pages

    def similar(self, path: str, k: int = 24, min_score: float = -1.0) -> SimilarResult:
        photo = self.photo_file(path)
        return self.run(lambda: query_index(self._index(), photo, self.recorded, self._loaded, k=k,
                                            min_score=min_score, cfg=self._cfg()))

    def search_upload(self, data: bytes, suffix: str, k: int = 24, min_score: float = -1.0,
                      preview: bool = False) -> tuple[SimilarResult, str | None]:
        """Hits of a photo that is not in the library, and with `preview` its thumbnail as a data: URI (the page
        shows it beside its hits); the upload lives in a private temp folder until answered."""
        from ..render.images import image_data_uri, thumbnail

        with tempfile.TemporaryDirectory(prefix="landmark-upload-") as tmp:
            photo = Path(tmp) / f"upload{suffix}"
            photo.write_bytes(data)
            max_pixels = min(self.opts.max_pixels, UPLOAD_MAX_PIXELS)
            cfg = self._cfg(max_pixels=max_pixels)
            result = self.run(lambda: query_index(self._index(), photo, self.recorded, self._loaded, k=k,
                                                  min_score=min_score, cfg=cfg))
            uri = image_data_uri(thumbnail(photo, THUMB_SIDE, max_pixels), quality=QUALITY) if preview else None
        return SimilarResult(Path("upload"), result.query_label, result.hits, result.places), uri

    def _cfg(self, **changes: Any) -> EmbedConfig:
        base = dict(batch_size=1, workers=0, device=self.opts.device, precision=self.opts.precision,
                    max_pixels=self.opts.max_pixels, progress=False)
        return EmbedConfig(**{**base, **changes})

    def explain(self, path: str) -> bytes:
        """Grad-CAM of the photo's top class, as a PNG (photo and heat map side by side)."""
        photo = self.photo_file(path)

        def run() -> bytes:
            from ..render.explain import explain_png, load_explainable

            if self._explainer is None:  # its own float copy: the warm model may be int8 or bf16
                self._explainer = load_explainable(self.ref)
            return explain_png(self._explainer, photo, self.opts.max_pixels)

        return self.run(run)

    def details(self, path: str) -> dict:
        """What the photo page shows: its tile, its sidecar's tags, its place and its camera facts."""
        from ..photos.exif import read_exif
        from ..sidecars.jsonfile import Recorded, checked_place, read_recorded, sidecar_path

        photo = self.photo_file(path)
        tile = self.catalog.tiles([path]).get(path) or Tile(path, None, None)
        try:
            entry = read_recorded(sidecar_path(photo))
        except (LandmarkError, OSError):
            entry = Recorded()
        facts = read_exif(photo)
        place = entry.place or checked_place(self.places.get(tile.label or ""))
        return {"inherited": _inherited(place), **tile.to_dict(), "name": photo.name, "folder": str(photo.parent),
                "tags": list(entry.tags), "named": entry.named,
                "unknown": self.unknown_means_something and tile.label is None,
                "place": place, "gps": list(facts.gps) if facts.gps else None,
                "taken": facts.taken.isoformat() if facts.taken else None, "camera": facts.camera or None,
                "size": [facts.width, facts.height] if facts.width else None}

    def landmark_names(self) -> list[str]:
        """The names offered when setting a landmark by hand: the labels the index holds and the model's places."""
        names = {label for label, _ in self.catalog.labels() if label}
        names |= {str(p["name"]) for p in self.places.values() if isinstance(p, dict) and p.get("name")}
        return sorted(names, key=str.casefold)

    @property
    def unknown_means_something(self) -> bool:
        """Only a calibrated landmark model says "none of these"; the built-in ImageNet model never does."""
        return self.recorded.get("kind") != "builtin"

    # ------------------------------------------------------------------ review: groups to name

    def review_groups(self, wait: float = 0.0) -> dict:
        """The Review page's groups: `landmark group`'s over this index's photos (grouping.group_indexed), less
        the photos named by hand. The grouping runs in the background: until it is done (waiting at most `wait`
        seconds) the answer is {"state": "computing", "progress": 0-1}; then {"state": "ready", "groups", ...}."""
        pending, value = self._awaited("review", self._review_groups, wait)
        if pending is not None:
            return pending
        named = self._named | value["named"]
        groups = []
        for group in value["groups"]:  # numbers as `landmark group` gives them: a naming renumbers nothing
            paths = [p for p in group["paths"] if p not in named]
            if paths:
                groups.append({"name": group["name"], "paths": paths})
        return {"state": "ready", "groups": groups, "ungrouped": [p for p in value["ungrouped"] if p not in named],
                "considered": value["considered"]}

    def _review_groups(self, progress: Callable[[float], None]) -> dict:
        from ..curation.grouping import group_indexed
        from ..search import landmark_floor
        from ..sidecars.jsonfile import read_recorded, sidecar_path

        keys = self.catalog.all_paths()
        records, vectors = self.run(lambda: self._index().lookup(keys))
        progress(0.05)
        report = group_indexed([r.path for r in records], records, vectors, str(self.recorded.get("kind", "")),
                               self.opts.group, progress=lambda share: progress(0.05 + 0.9 * share),
                               landmark_floor=landmark_floor(self.recorded), index_dir=self.directory,
                               max_pixels=self.opts.max_pixels)
        named = set()
        for photo in [p for g in report.groups for p in g.paths] + report.ungrouped:
            try:
                if read_recorded(sidecar_path(photo)).named:
                    named.add(str(photo))
            except (LandmarkError, OSError):
                pass
        return {"groups": [{"name": g.name, "paths": [str(p) for p in g.paths]} for g in report.groups],
                "ungrouped": [str(p) for p in report.ungrouped], "considered": report.considered, "named": named}

    def _library_uses_xmp(self) -> bool:
        """Whether `landmark tag --xmp` wrote its hierarchical keywords ("Landmarks|NAME") for any indexed photo, as
        the index read them from the XMP sidecars."""
        return self.catalog.any_keywords_holding("Landmarks ")

    def with_places(self, flt: Filter) -> Filter:
        """`flt` with, for each word of its search, the landmarks whose known place (the model's places: name,
        city, country) holds that word, any case."""
        words = (flt.q or "").split()[:QUERY_WORDS]
        if not words:  # most listings: no search, nothing to look up
            return flt
        known = {label: " ".join(str(place.get(k) or "") for k in ("name", "city", "country")).casefold()
                 for label, place in self.places.items() if isinstance(place, dict)}
        if not known:
            return flt
        return replace(flt, place_labels=tuple(tuple(sorted(label for label, text in known.items()
                                                                 if word.casefold() in text)) for word in words))

    def name_photos(self, paths: Sequence[str], name: str, train: bool) -> dict:
        """Tag the photos with `name` (sidecars as `landmark tag` writes them); with train, link them into
        TRAIN_DIR/train/<name>/ for the next `landmark train --data TRAIN_DIR`."""
        from ..curation.grouping import link_for_training

        photos = [self.photo_file(p) for p in dict.fromkeys(paths)]
        if not photos:
            raise LandmarkError("choose at least one photo to name")
        folder = _training_folder(name) if train else None  # refused before anything is written
        summary = self._write_names(photos, name)
        out = {"named": [str(p) for p in summary.tagged],
               "failed": [{"path": str(p), "reason": why} for p, why in summary.failed], "linked": []}
        if folder is not None and summary.tagged:
            self._unlink_for_training(summary.tagged, keep=folder)
            done = link_for_training([(folder, summary.tagged)], self.train_dir)
            out["linked"] = [str(dest) for _, dest in done.done]
            out["failed"] += [{"path": str(p), "reason": why} for p, why in done.failed]
            out["train_dir"] = str(self.train_dir)
        self._named.update(out["named"])
        return out

    def retag(self, paths: Sequence[str], name: str | None) -> dict:
        """Set the landmark of these photos by hand (None: none of the landmarks), as `name_photos` writes it."""
        photos = [self.photo_file(p) for p in dict.fromkeys(paths)]
        if not photos:
            raise LandmarkError("choose at least one photo to retag")
        summary = self._write_names(photos, name)
        try:
            folder = None if name is None else _training_folder(name)
        except LandmarkError:  # a name no folder can have: the photos leave the training folder
            folder = None
        relinked: list[str] = []
        trained = self._unlink_for_training(summary.tagged, keep=folder)
        if trained and folder is not None:  # photos named for training stay there, under their new name
            from ..curation.grouping import link_for_training

            relinked = [str(dest) for _, dest in link_for_training([(folder, trained)], self.train_dir).done]
        return {"retagged": [str(p) for p in summary.tagged], "name": name, "relinked": relinked,
                "failed": [{"path": str(p), "reason": why} for p, why in summary.failed]}

    def _unlink_for_training(self, photos: Sequence[Path], keep: str | None) -> list[Path]:
        """Take the links to these photos out of TRAIN_DIR/train/<other name>/ (only our symbolic links, never a
        file; a folder left empty goes too), so the training folder never says what the sidecars no longer say.
        Returns the photos that had one."""
        root = self.train_dir / "train"
        wanted = {str(p.absolute()): p for p in photos}
        try:
            folders = [f for f in root.iterdir() if f.is_dir() and not f.is_symlink() and f.name != keep]
        except OSError:  # no training folder yet
            return []
        had: list[Path] = []
        for folder in folders:
            before = len(had)
            for link in folder.iterdir():
                target = os.readlink(link) if link.is_symlink() else None
                if target in wanted:
                    link.unlink()
                    had.append(wanted[target])
            if len(had) > before:
                with contextlib.suppress(OSError):  # not empty: other photos (or the user's files) stay
                    folder.rmdir()
        return list(dict.fromkeys(had))

    def _write_names(self, photos: list[Path], name: str | None) -> Any:
        """tagging.name_photos for each photo with its library's XMP choice, then the same labels in the index,
        so the landmark filter, the photo page and the map show them at once. Returns the TagSummary."""
        from ..index.store import PhotoIndex
        from ..tagging import TagOptions, TagSummary, check_name, name_photos

        name = None if name is None else check_name(name)
        summary = TagSummary()
        by_choice: dict[bool, list[Path]] = {}
        for photo in photos:
            by_choice.setdefault(self.opts.xmp or uses_xmp(photo, self._library_uses_xmp), []).append(photo)
        for xmp, group in by_choice.items():
            done = name_photos(group, name, TagOptions(xmp=xmp))
            summary.tagged += done.tagged
            summary.failed += done.failed
        if summary.tagged:
            def relabel() -> None:
                with PhotoIndex.open(self.directory, model_id=self.ref.model_id,
                                     dim=int(self.recorded["embedding_dim"]), create=False,
                                     lock_timeout=INDEX_LOCK_WAIT) as writer:
                    refresh_browse_facts(writer, {photo_key(p): p for p in summary.tagged})

            try:
                self.run(relabel)
            except LandmarkError as exc:  # the sidecars hold the name; say what is left to do
                raise LandmarkError(f"wrote {len(summary.tagged)} photo(s)' sidecars but could not update the index "
                                    f"({exc}); the next `landmark index` shows the name") from None
            finally:
                self._named.update(str(p) for p in summary.tagged)  # no longer to review
                self._cache.pop("map", None)  # its places are called by their photos' landmarks
        return summary

    # ------------------------------------------------------------------ duplicates and map

    def duplicates(self, wait: float = 0.0) -> dict:
        """`landmark duplicates --json` over the indexed photos, computed in the background (pixel checks
        remembered in the index folder): {"state": "computing", "progress": 0-1} until done (waiting at most
        `wait` seconds), then {"state": "ready", "groups", ..., "review_dir"}."""
        pending, value = self._awaited("duplicates", self._duplicates, wait)
        return pending if pending is not None else {"state": "ready", **value}

    def _duplicates(self, progress: Callable[[float], None]) -> dict:
        from ..curation.duplicates import report_json

        stages = {"reading headers": (0.05, 0.05), "checking pixels": (0.1, 0.85)}

        def step(stage: str, done: int, total: int) -> None:
            start, width = stages.get(stage, (0.0, 0.0))
            progress(start + width * (done / total if total else 1.0))

        return {**report_json(self._duplicate_report(step)), "review_dir": str(self.review_dir)}

    def _duplicate_report(self, progress: Callable[[str, int, int], None] | None = None):
        from ..curation.duplicates import DuplicateOptions, find_groups
        from ..curation.imagematch import MATCHER
        from ..curation.pairmemory import PairMemory

        keys = self.catalog.all_paths()
        records, vectors = self.run(lambda: self._index().lookup(keys))
        memory = PairMemory(self.directory, MATCHER)
        try:
            return find_groups([Path(r.path) for r in records], [(r.size, r.content_hash) for r in records], vectors,
                               DuplicateOptions(max_pixels=self.opts.max_pixels), memory=memory, progress=progress)
        finally:
            memory.close()

    def move_duplicates(self, keep: str) -> dict:
        """Keep `keep` in its group and move the group's others (with sidecars) into the review folder, as
        `landmark duplicates --keep KEEP --action move --to REVIEW` does; `undo_duplicates` puts them back."""
        from ..curation.duplicates import apply_action, choose_keepers

        photo = self.photo_file(keep)
        report = self._duplicate_report()  # the groups as they are now (remembered pixel checks: quick)
        group = next((g for g in report.groups if photo in (g.keep, *g.others)), None)
        if group is None:
            raise LandmarkError(f"{photo.name} is in no duplicate group now; reload the page")
        report.groups = [group]
        report = choose_keepers(report, [photo])
        folders = [Path(f) for f, _ in self.catalog.folders()]
        root = Path(os.path.commonpath([str(f) for f in folders])) if folders else photo.parent

        def move():
            done = apply_action(report, "move", self.review_dir, [root], self.directory, scanned=folders)
            self._reopen()
            return done

        done = self.run(move)
        return {"kept": str(photo), "moved": [str(src) for src, _ in done.done],
                "sidecars": len(done.sidecars), "review_dir": str(self.review_dir),
                "failed": [{"path": str(p), "reason": why} for p, why in done.failed]}

    def undo_duplicates(self) -> dict:
        """Put back every photo the Duplicates page (or `landmark duplicates --action move --to REVIEW`) moved
        into the review folder, and index them again."""
        from ..search import IndexOptions, build_index
        from ..curation.relocate import undo_moves

        def undo():
            done = undo_moves(self.review_dir)
            back = [dest for _, dest in done.done]
            if back:
                build_index(back, None, self.directory, IndexOptions(prune=False), self._cfg(batch_size=16))
            self._reopen()
            return done

        done = self.run(undo)
        return {"restored": [str(dest) for _, dest in done.done], "sidecars": len(done.sidecars),
                "failed": [{"path": str(p), "reason": why} for p, why in done.failed]}

    def _reopen(self) -> None:
        """Drop the open index (on the worker), so the next request reads what a move changed."""
        if self._idx is not None:
            self._idx.close()
            self._idx = None
        self._folders = set()

    def places_map(self) -> dict:
        """The map's places as JSON: position, name, how it is known, and the photos there."""
        places, without = self.map_places()
        markers = []
        for place in places:
            x, y = world_xy(place.latitude, place.longitude)
            markers.append({"name": place.name, "latitude": place.latitude, "longitude": place.longitude,
                            "x": round(x, 1), "y": round(y, 1), "sources": sorted(place.sources),
                            "paths": [photo_key(p) for p in place.photos]})
        return {"places": markers, "without_position": without}

    def map_places(self) -> tuple[list, int]:
        """(places.map.MapPlace of the indexed photos, photos without a position), once per index generation and
        sidecar change."""
        return self._memo("map", self._map_places, self._folders_stamp)

    def _folders_stamp(self) -> tuple:
        """The modification times of the photos' folders: sidecars are written as a new file renamed into place, so
        a `landmark tag` (or any program writing one that way) changes its folder's time, with no index run.
        One stat a folder, not a read of every sidecar."""
        stamps = []
        for folder, _ in self.catalog.folders():
            try:
                stamps.append(os.stat(folder).st_mtime_ns)
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def _map_places(self) -> tuple[list, int]:
        from ..places.map import collect_places

        return collect_places([Path(p) for p in self.catalog.all_paths()])


def _inherited(place: dict | None) -> dict | None:
    """{"from": NAME, "minutes": M or None} for a (checked) place `tag --geotag` passed on from a photo of the same
    trip."""
    source = (place or {}).get("from", "")
    if not source.startswith("time: "):
        return None
    return {"from": source[len("time: "):], "minutes": place.get("minutes")}


def _training_folder(name: str) -> str:
    """The folder under TRAIN_DIR/train/ that photos given the landmark `name` are linked in: the name checked as a
    folder name, its spaces collapsed as the sidecars write it (tagging.check_name)."""
    from ..curation.grouping import check_folder_name

    return " ".join(check_folder_name(name).split())


def _recorded_xmp(side: Path) -> bool | None:
    """Whether the `landmark tag` entry in this JSON sidecar wrote XMP too (None: no readable entry)."""
    from ..sidecars.jsonfile import SIDECAR_KEY, read_sidecar

    try:
        entry = read_sidecar(side).get(SIDECAR_KEY)
    except (LandmarkError, OSError):
        return None
    if not isinstance(entry, dict):
        return None
    options = entry.get("options")
    return isinstance(entry.get("xmp"), dict) or (isinstance(options, dict) and options.get("xmp") is True)


def uses_xmp(photo: Path, library_choice: Callable[[], bool] = lambda: False) -> bool:
    """Whether `landmark tag --xmp` tagged this photo or, never tagged, the photos beside it, else anywhere in the
    library (`library_choice`): a name given in the app then goes into the XMP sidecar too, with no flag to
    remember."""
    from ..sidecars.jsonfile import sidecar_path

    own = _recorded_xmp(sidecar_path(photo))
    if own is not None:
        return own
    try:
        siblings = sorted(photo.parent.glob("*.json"))[:NEIGHBOURS_ASKED]
    except OSError:
        siblings = []
    beside = next((choice for choice in map(_recorded_xmp, siblings) if choice is not None), None)
    return library_choice() if beside is None else beside
