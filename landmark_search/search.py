"""`landmark index` and `landmark similar`: photos -> embeddings -> the on-disk index, and back."""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import datetime
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Protocol, Sequence

from .config import ROUTE_SETTINGS, EmbedConfig, route_config
from .photos.files import iter_photos
from .errors import BadImageError, IndexStoreError, LandmarkError
from .fsutil import atomic_write_json, is_utf8, read_json, user_config_file, user_setting
from .models.ref import ModelRef, resolve_model

if TYPE_CHECKING:  # numpy only in annotations: `landmark tag` on an unchanged folder stays light
    import numpy as np
    import numpy.typing as npt

    from .embeddings import LoadedModel
    from .index.store import PhotoIndex

log = logging.getLogger(__name__)

INDEX_HOME = Path("indexes")
INDEX_HOME_ENV = "LANDMARK_INDEX_HOME"
INDEX_HOME_SETTING = "index_home"
MODEL_FILE = "model.json"


def index_home() -> tuple[Path, str]:
    """(the absolute folder that holds named indexes, what chose it): $LANDMARK_INDEX_HOME, else `index_home` in
    the user's config.toml, else indexes/ in the current folder."""
    given = os.environ.get(INDEX_HOME_ENV)
    if given:
        return Path(given).expanduser().absolute(), INDEX_HOME_ENV
    setting = user_setting(INDEX_HOME_SETTING)
    if setting:
        home = Path(setting).expanduser()
        if not home.is_absolute():  # relative to whichever folder a command runs in would defeat the setting
            raise LandmarkError(f"{user_config_file()}: {INDEX_HOME_SETTING} = {setting!r} is relative; give an "
                                f"absolute folder such as \"~/landmark-indexes\"")
        return home, f"{INDEX_HOME_SETTING} in {user_config_file()}"
    return INDEX_HOME.absolute(), "the current folder's indexes/"


def index_dir(name_or_path: str | Path) -> Path:
    """The absolute folder of an index: a bare name lives under index_home(); anything with a slash (or an
    existing index folder) is a path."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if "/" in text or os.sep in text or path.is_dir() and (path / MODEL_FILE).exists():
        return path.absolute()
    return index_home()[0] / text


def _no_index(directory: Path) -> str:
    """Why there is no index at `directory`, with the absolute path tried and how to build or find one."""
    home, chosen_by = index_home()
    text = f"no index at {directory.absolute()}; build one with `landmark index PHOTOS"
    if directory.absolute().parent != home:  # a folder the user named
        return text + f" --index {directory.absolute()}`"
    return (text + f" --index {directory.name}`. Named indexes live in {home} "
            f"({chosen_by}); to keep them in one place whatever the current folder, set {INDEX_HOME_ENV} or "
            f"{INDEX_HOME_SETTING} in {user_config_file()}")


def _read_model_file(directory: Path, identity: bool = True) -> dict | None:
    """The index's model.json (how to load the model that built it), checked, with (identity) the model id and
    vector size its manifest records ("model_id", "embedding_dim"); None when there is none yet.

    The manifest is the one record of whose vectors the index holds; model.json only says where that model
    is and how it ran. Older indexes repeat both in model.json: the manifest's values win."""
    from .index.manifest import damaged, stored_model

    path = directory / MODEL_FILE
    try:
        recorded = read_json(path, lambda why: damaged(directory, f"{MODEL_FILE} is unreadable: {why}"))
    except FileNotFoundError:
        return None
    problem = _model_file_problem(recorded)
    if problem:
        raise damaged(directory, f"{MODEL_FILE} {problem}")
    if not identity:
        return recorded
    model_id, dim = stored_model(directory)
    return {**recorded, "model_id": model_id, "embedding_dim": dim}


def landmark_floor(recorded: dict | None) -> float | None:
    """The open-set confidence below which the index's model sees no landmark at all (OpenSet.landmark_floor),
    as model.json records it for a calibrated model; None when it does not, or the value is not a fraction."""
    value = (recorded or {}).get("landmark_floor")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    return None


def _model_file_problem(recorded: object) -> str | None:
    if not isinstance(recorded, dict):
        return "is not a JSON object"
    if "spec" not in recorded:
        return "lacks spec"
    if not isinstance(recorded["spec"], str) or not recorded["spec"]:
        return "has an empty or non-text spec"
    return None


def _short_id(model_id: str) -> str:
    """A model id short enough to read: built-in names whole, file hashes to 12 hex digits."""
    return model_id if model_id.startswith("builtin:") else model_id[:19]


def index_model(directory: Path, model_spec: str | None, trust_export: bool = False, *,
                 recorded: dict | None = None, check: bool = True) -> ModelRef:
    """The model an index is built with; reusing an index without --model reuses its model.

    ``check=False`` (a rebuild) accepts a --model other than the recorded one."""
    if model_spec is None and recorded:
        if recorded.get("kind") == "export" and not trust_export:  # never run an export's code unasked
            raise IndexStoreError(f"index {directory} was built with the TorchScript export {recorded.get('spec')}, "
                                  "which can run code when loaded; pass --trust-export if you made it with "
                                  "`landmark export`, or build a new index from the best.pt it came from")
        try:
            ref = resolve_model(recorded["spec"], trust_export=trust_export)
        except LandmarkError as exc:
            raise IndexStoreError(f"index {directory} was built with {recorded['spec']}, which is gone ({exc}); "
                                  "if it moved, pass --model with its new path (the same file), or build a new "
                                  "index") from None
    else:
        ref = resolve_model(model_spec, trust_export=trust_export)
    if check and recorded and recorded.get("model_id") != ref.model_id:
        raise IndexStoreError(
            f"index {directory} was built with {recorded.get('spec')} ({_short_id(recorded.get('model_id', '?'))}), not "
            f"{ref.spec} ({_short_id(ref.model_id)}); use --model {recorded.get('spec')} or a new --index NAME")
    return ref


def _index_config(recorded: dict | None, cfg: EmbedConfig) -> EmbedConfig:
    """How an index's new photos and queries are embedded: by the route its vectors came from (model.json
    "vectors"), or in int8 for an index built with --precision int8, unless a backend or precision is given."""
    if recorded and recorded.get("precision") == "int8" and cfg.precision == "auto":
        return replace(cfg, precision="int8")
    return route_config((recorded or {}).get("vectors"), cfg)


def _route_note(recorded: dict, route: str) -> str | None:
    """Why an index's stored vectors do not match vectors made now by `route`, or None when they do."""
    stored = recorded.get("vectors")
    if stored == route:
        return None
    if not isinstance(stored, str):
        return "the index does not record how its vectors were made (an earlier version built it)"
    return f"the index's vectors came from {stored}, this machine makes them with {route}"


def _content_hash(path: Path) -> str:
    """A fast fingerprint of the bytes: blake2b of the file (photos are read once anyway)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class IndexOptions:
    """How `landmark index` walks and stores."""

    recursive: bool = True
    follow_links: bool = False
    exclude: tuple[str, ...] = ()
    index_type: str = "auto"
    prune: bool = True
    rebuild: bool = False  # start the index afresh from the given photos (a damaged one included)


@dataclass
class IndexSummary:
    """What an index run did."""

    directory: Path
    model_name: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    total: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    reembedded: str | None = None  # why every stored photo was embedded again (its vectors came from another route)


@dataclass(frozen=True)
class IndexBatch:
    """What the index stores for a batch of photos (those that decoded), and the ones that failed."""

    paths: list[Path]
    vectors: npt.NDArray[np.float32]
    labels: list[str | None]
    confidences: list[float | None]
    hashes: list[str]
    failed: list[tuple[Path, str]]


def index_batches(paths: Sequence[Path], model: LoadedModel, cfg: EmbedConfig) -> Iterator[IndexBatch]:
    """The one way from photos to index rows (vector, label, confidence, content hash), batch by batch: a local
    run calls it here, the Ray engine (scaleout/ray_index.py) inside each of its workers."""
    from .embeddings import iter_embeddings

    for batch in iter_embeddings(paths, model, cfg):
        decisions = [batch.decide(i, model) for i in range(len(batch.paths))]
        yield IndexBatch(list(batch.paths), batch.embeddings, [d.label for d in decisions],
                         [d.confidence for d in decisions],
                         [_content_hash(p) for p in batch.paths], list(batch.failed))


class IndexEngine(Protocol):
    """Where index_batches runs when not in this process (`landmark index --engine ray`)."""

    def index_batches(self, paths: Sequence[Path], ref: ModelRef, model: LoadedModel,
                      cfg: EmbedConfig) -> Iterator[IndexBatch]: ...


def build_index(photos: Sequence[Path], model_spec: str | None, index: str | Path, opts: IndexOptions,
                cfg: EmbedConfig, *, trust_export: bool = False, engine: IndexEngine | None = None) -> IndexSummary:
    """Embed new or changed photos into the index; drop photos that vanished from the given folders.

    `engine` embeds elsewhere (Ray workers); this process alone writes the manifest, batch by batch, either way."""
    directory = index_dir(index)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return _build_index(directory, photos, model_spec, opts, cfg, trust_export, engine)
    except BaseException:
        if created and not any(directory.iterdir()):  # a refused first run leaves no empty index behind
            directory.rmdir()
        raise


def _load_model(ref: ModelRef) -> LoadedModel:
    from .embeddings import load_model  # torch: imported only when a photo needs embedding

    return load_model(ref)


def _build_index(directory: Path, photos: Sequence[Path], model_spec: str | None, opts: IndexOptions,
                 cfg: EmbedConfig, trust_export: bool = False, engine: IndexEngine | None = None) -> IndexSummary:
    from .index.store import PhotoIndex, PhotoRecord

    if opts.rebuild:
        # A damaged model.json is no reason to refuse: its model is reused only when it can be read.
        try:
            old = _read_model_file(directory)
        except IndexStoreError:
            old = None
        ref = index_model(directory, model_spec, trust_export, recorded=old, check=False)
        recorded = None
    else:
        recorded = _read_model_file(directory)
        ref = index_model(directory, model_spec, trust_export, recorded=recorded)
    summary = IndexSummary(directory, ref.name)
    found = list(iter_photos(photos, recursive=opts.recursive, follow_links=opts.follow_links, exclude=opts.exclude,
                             on_error=lambda p, why: summary.failed.append((p, why))))
    cfg = _index_config(recorded, cfg)
    model = None if recorded else _load_model(ref)
    dim = int(recorded["embedding_dim"]) if recorded else model.embedding_dim
    with PhotoIndex.open(directory, model_id=ref.model_id, dim=dim, create=True,
                         index_type=None if opts.index_type == "auto" and recorded else opts.index_type,
                         lock=True, rebuild=opts.rebuild) as idx:
        if not recorded or (model_spec is not None and recorded.get("spec") != _portable_spec(ref)):
            # A new index, or its model file moved (same contents, as the model id says): record where it is now.
            # The places of the model's landmarks travel with the index, keyed by the label each photo
            # records, so that `similar` can say where its hits are without loading the model.
            places = (recorded or {}).get("places") or (_label_places(model) if model is not None else {})
            floor = landmark_floor(recorded) if recorded else (
                model.openset.landmark_floor() if model is not None and model.openset is not None else None)
            atomic_write_json(directory / MODEL_FILE, {"spec": _portable_spec(ref), "name": ref.name, "kind": ref.kind,
                                                       "precision": recorded.get("precision", cfg.precision)
                                                       if recorded else cfg.precision,
                                                       **({"vectors": recorded["vectors"]}
                                                          if recorded and "vectors" in recorded else {}),
                                                       **({"places": places} if places else {}),
                                                       **({"landmark_floor": floor} if floor is not None else {})})
        known = idx.known()
        todo: dict[Path, tuple[int, int]] = {}
        unchanged: dict[str, Path] = {}
        for photo in found:
            try:
                st = photo.stat()
            except OSError as exc:
                summary.failed.append((photo, f"{photo}: {exc.strerror or exc}"))
                continue
            key = photo_key(photo)
            if not is_utf8(key):
                summary.failed.append((photo, f"{photo}: the file name is not valid UTF-8, which the index "
                                              "cannot store; rename the file"))
                continue
            old = known.get(key)
            if old and old[0] == st.st_size and old[1] == st.st_mtime_ns:
                summary.unchanged += 1
                unchanged[key] = photo
            else:
                todo[photo] = (st.st_size, st.st_mtime_ns)
        route, stored = None, (recorded or {}).get("vectors")
        # Nothing to embed: the model loads only where the stored route is known to be stale (not recorded, or
        # one this version does not make, such as an older int8 recipe); another machine's route is met when
        # photos are added.
        if todo or unchanged and (stored if isinstance(stored, str) else None) not in ROUTE_SETTINGS:
            model = model or _load_model(ref)
            before = len(unchanged)
            route, summary.reembedded = _one_route(model, cfg, recorded or {}, known, todo, unchanged)
            cfg = route_config(route, cfg)  # the batches take the route recorded, whatever their count
            summary.unchanged -= before - len(unchanged)
            if summary.reembedded:
                log.warning("re-embedding all %d photos of the index: %s", len(todo), summary.reembedded)
            else:  # nothing stored is from another route: the route is recorded before the work, as it holds
                _record_route(directory, route)
        if todo:
            # Each batch is committed on its own: an interrupted run keeps what it finished.
            batches = (index_batches(list(todo), model, cfg) if engine is None
                       else engine.index_batches(list(todo), ref, model, cfg))
            for batch in batches:
                summary.failed.extend(batch.failed)
                # A photo that changed and no longer decodes must not keep answering queries with its old vector.
                stale = [key for key in (photo_key(p) for p, _ in batch.failed) if key in known]
                if stale:
                    idx.remove(stale)
                    summary.removed += len(stale)
                if not batch.paths:
                    continue
                records = []
                for photo, digest, label, conf in zip(batch.paths, batch.hashes, batch.labels, batch.confidences):
                    key = photo_key(photo)
                    records.append(PhotoRecord(key, *todo[photo], digest, label, conf,
                                               *browse_facts(photo, todo[photo][1])))
                    summary.updated += key in known
                    summary.added += key not in known
                idx.add(records, batch.vectors)
        if summary.reembedded:  # only once every vector is the route's (otherwise recorded before the work)
            _record_route(directory, route)
        refresh_browse_facts(idx, unchanged)
        if opts.prune:
            summary.removed += _prune(idx, photos, {photo_key(p) for p in found}, known)
        idx.save()
        summary.total = len(idx)
    return summary


def _one_route(model: LoadedModel, cfg: EmbedConfig, recorded: dict, known: dict, todo: dict[Path, tuple[int, int]],
               unchanged: dict[str, Path]) -> tuple[str, str | None]:
    """(the route this run embeds with, why the stored vectors are made again, or None). Where the index's
    vectors came from another route, every photo it holds that is still there joins `todo` and leaves
    `unchanged`, those of folders this run does not name included: one index, one route."""
    from .embeddings import prepare_for, vector_route

    prepare_for(model, cfg, len(known) + len(todo))
    route = vector_route(model)
    note = _route_note(recorded, route) if known else None
    if note:
        queued = {photo_key(p) for p in todo}
        for key in known:
            photo = unchanged.pop(key, None) or Path(key)
            if key in queued:
                continue
            try:
                st = photo.stat()
            except OSError:  # gone: the prune (or the next run) takes it out
                continue
            todo[photo] = (st.st_size, st.st_mtime_ns)
    return route, note


def _record_route(directory: Path, route: str) -> None:
    """Write into the index's model.json the route (embeddings.vector_route) its vectors come from."""
    recorded = _read_model_file(directory, identity=False)
    if recorded is not None and recorded.get("vectors") != route:
        atomic_write_json(directory / MODEL_FILE, {**recorded, "vectors": route})


def browse_facts(photo: Path, mtime_ns: int, taken: str | None = None) -> tuple[str | None, str | None, str | None]:
    """(capture time, landmark given by hand, search keywords) of a photo for the index; `taken` when known."""
    from .photos.exif import read_exif
    from .sidecars.facts import sidecar_facts

    if taken is None:
        when = read_exif(photo).taken or datetime.fromtimestamp(mtime_ns / 1e9)
        taken = when.isoformat(timespec="seconds")
    facts = sidecar_facts(photo)
    return taken, facts.hand, facts.keywords or None


def refresh_browse_facts(idx: PhotoIndex, unchanged: dict[str, Path]) -> None:
    """Sidecars change without the photo changing (a name given, keywords set in another app): read them again
    for these indexed, unchanged photos (key -> photo) and store what differs (a capture time only where none is
    stored yet)."""
    stored = idx.browse_facts()
    changed = {}
    for key, photo in unchanged.items():
        old = stored.get(key)
        if old is None:
            continue
        try:
            mtime = photo.stat().st_mtime_ns
        except OSError:
            continue
        new = browse_facts(photo, mtime, old[0])
        if new != old:
            changed[key] = new
    idx.set_browse_facts(changed)


def photo_key(photo: Path) -> str:
    """The path a photo is indexed under: absolute, its folders resolved, but a symlinked file kept as the link,
    so deleting the link (or the file it points to) removes it from the index on the next run."""
    return os.path.join(os.path.realpath(photo.parent), photo.name)


def _portable_spec(ref: ModelRef) -> str:
    return str(ref.path.resolve()) if ref.path else ref.spec


def _prune(idx, roots: Sequence[Path], seen: set[str], known: dict) -> int:
    """Remove indexed photos under the given folders that no longer exist (or were excluded)."""
    prefixes = [str(Path(r).resolve()) + os.sep for r in roots if Path(r).is_dir()]
    gone = [p for p in known if p not in seen and any(p.startswith(pre) for pre in prefixes)
            and not os.path.exists(p)]
    if gone:
        idx.remove(gone)
    return len(gone)


@dataclass(frozen=True)
class SimilarResult:
    """Hits for one query photo."""

    query: Path
    query_label: str | None
    hits: list
    places: dict = field(default_factory=dict)  # label -> where that landmark is (Place.to_dict()), when known

    def place(self, label: str | None) -> dict | None:
        """Where a hit (or the query) with this label is, when the model knows."""
        return self.places.get(label) if label else None

    def to_json(self, query: str | None = None) -> dict:
        """What `landmark similar --json` prints and the web app's /api/similar answers."""
        return {"query": query if query is not None else str(self.query), "label": self.query_label,
                "place": self.place(self.query_label),
                "hits": [{"path": h.path, "score": round(h.score, 6), "label": h.label,
                          "place": self.place(h.label)} for h in self.hits]}


def find_similar(photo: Path, index: str | Path, *, k: int = 10, min_score: float = -1.0,
                 cfg: EmbedConfig = EmbedConfig(), trust_export: bool = False,
                 model_spec: str | None = None) -> SimilarResult:
    """The k nearest indexed photos by cosine similarity; the query itself is never its own hit.

    ``model_spec`` names the index's model where it moved since the index was built (checked by its id)."""
    return find_similar_many([photo], index, k=k, min_score=min_score, cfg=cfg, trust_export=trust_export,
                             model_spec=model_spec)[0]


def find_similar_many(photos: Sequence[Path], index: str | Path, *, k: int = 10, min_score: float = -1.0,
                      cfg: EmbedConfig = EmbedConfig(), trust_export: bool = False,
                      model_spec: str | None = None) -> list[SimilarResult]:
    """find_similar for each photo, with one index opening and at most one model load (only when a photo is
    not in the index unchanged)."""
    import functools

    directory = index_dir(index)
    # The index is opened (and checked) before the model loads: a damaged one fails in a moment.
    idx, recorded = open_index(directory)
    with idx:
        if k < 1:
            raise LandmarkError("-k must be at least 1")
        ref = index_model(directory, model_spec, trust_export, recorded=recorded)

        @functools.cache
        def load():
            from .embeddings import load_model

            return load_model(ref)

        return [query_index(idx, photo, recorded, load, k=k, min_score=min_score, cfg=cfg) for photo in photos]


def open_index(directory: Path, *, lock: bool = False) -> tuple[PhotoIndex, dict]:
    """An existing index, opened with its manifest read (and checked) once, and its recorded model: model.json
    with the model id and vector size from that same reading."""
    from .index.manifest import MANIFEST_NAME, damaged
    from .index.store import PhotoIndex

    recorded = recorded_model(directory, identity=False)
    if not (directory / MANIFEST_NAME).is_file():  # opening would say "no index"; it is one that lost a file
        raise damaged(directory, f"{MANIFEST_NAME} is missing")
    idx = PhotoIndex.open(directory, model_id=None, dim=None, create=False, lock=lock)
    return idx, {**recorded, "model_id": idx.model_id, "embedding_dim": idx.dim}


def recorded_model(directory: Path, identity: bool = True) -> dict:
    """An existing index's model.json (with, identity, the manifest's model id and vector size); a one-line error
    naming the fix when there is no index or it lost it."""
    recorded = _read_model_file(directory, identity)
    if recorded is None and (directory / "manifest.sqlite").exists():
        raise IndexStoreError(f"index {directory} has lost its {MODEL_FILE} (which model built it); `landmark index "
                              f"PHOTOS --index {directory} --model MODEL` with that model writes it again, or rebuild "
                              f"it with `landmark index PHOTOS --index {directory} --rebuild`")
    if recorded is None:
        raise IndexStoreError(_no_index(directory))
    return recorded


def query_index(idx, photo: Path, recorded: dict, load_model: Callable[[], LoadedModel], *, k: int = 10,
                min_score: float = -1.0, cfg: EmbedConfig = EmbedConfig()) -> SimilarResult:
    """Hits of one photo in an open index: its stored vector when indexed and unchanged (no model, no torch),
    else embedded by `load_model()` (called only then: the web app passes its warm model)."""
    own = photo_key(photo)  # a name that is not UTF-8 is never indexed, so never its own hit
    stored = _stored_query(idx, photo, own)
    if stored is not None:
        record, vector = stored
        hits = idx.search(vector, k, exclude_paths=[own])[0]
        return SimilarResult(photo, record.label, [h for h in hits if h.score >= min_score],
                             recorded.get("places") or {})
    from .embeddings import embed_paths

    model = load_model()
    if model.embedding_dim != idx.dim:
        raise IndexStoreError(f"index {idx.directory} holds {idx.dim}-dimensional vectors but {model.name} produces "
                              f"{model.embedding_dim}; rebuild the index with `landmark index PHOTOS --index "
                              f"{idx.directory} --rebuild`")
    result = embed_paths([photo], model, _index_config(recorded, cfg))
    if result.failed:
        raise BadImageError(f"cannot read the query photo: {result.failed[0][1]}")
    _warn_route(idx.directory, recorded, model)
    hits = idx.search(result.embeddings, k, exclude_paths=[own if is_utf8(own) else None])[0]
    hits = [h for h in hits if h.score >= min_score]
    label = result.decide(0, model).label if len(result.probs) else None
    return SimilarResult(photo, label, hits, recorded.get("places") or _label_places(model))


_ROUTES_WARNED: set[Path] = set()


def _warn_route(directory: Path, recorded: dict, model: LoadedModel) -> None:
    """Say once per index and process when a query's vector comes from another route than the stored ones."""
    from .embeddings import vector_route

    note = _route_note(recorded, vector_route(model))
    if note and directory not in _ROUTES_WARNED:
        _ROUTES_WARNED.add(directory)
        log.warning("warning: %s: %s, so scores against a new photo are approximate; `landmark index PHOTOS "
                    "--index %s` embeds the stored photos again", directory, note, directory)


def _label_places(model) -> dict:
    """{display name: place} from a model's meta (its places are keyed by class id)."""
    by_id = model.meta.get("places") or {}
    return {name: by_id[cid] for cid, name in zip(model.class_ids, model.class_names) if cid in by_id}


def _stored_query(idx, photo: Path, key: str):
    """(record, 1 x dim vector) of a query photo the index holds unchanged (same size and mtime), else None."""
    if not is_utf8(key):
        return None
    try:
        st = os.stat(photo)
    except OSError:
        return None
    records, vectors = idx.lookup([key])
    if records and (records[0].size, records[0].mtime_ns) == (st.st_size, st.st_mtime_ns):
        return records[0], vectors[:1]
    return None


@dataclass(frozen=True)
class IndexedPhotos:
    """Photos found under the arguments, with what the index holds for them (duplicates, groups)."""

    summary: IndexSummary
    model_kind: str  # "builtin" | "checkpoint" | "export": a built-in model never says "unknown"
    landmark_floor: float | None  # search.landmark_floor of the index's model
    paths: list[Path]  # as walked (the user's spelling), aligned with records and vectors
    records: list  # index.PhotoRecord: resolved path, size, mtime, content hash, label (None: unknown)
    vectors: npt.NDArray[np.float32]


def indexed_photos(photos: Sequence[Path], model_spec: str | None, index: str | Path, opts: IndexOptions,
                   cfg: EmbedConfig, *, trust_export: bool = False) -> IndexedPhotos:
    """Bring the index up to date for `photos` (only new or changed ones are embedded), then read back
    their records and vectors, so that every command that needs vectors shares the index's work."""
    summary = build_index(photos, model_spec, index, opts, cfg, trust_export=trust_export)
    # build_index reported unreadable folders; this second walk only lists names (~1 s per 100k photos).
    found = [p for p in iter_photos(photos, recursive=opts.recursive, follow_links=opts.follow_links,
                                    exclude=opts.exclude) if is_utf8(photo_key(p))]
    by_key = {photo_key(p): p for p in found}
    idx, recorded = open_index(summary.directory)
    with idx:
        records, vectors = idx.lookup(list(by_key))
    return IndexedPhotos(summary, str(recorded.get("kind", "")), landmark_floor(recorded),
                         [by_key[r.path] for r in records], records, vectors)


def forget_photos(index: str | Path, keys: Sequence[str]) -> int:
    """Take photos (their photo_key, as the index stores them) out of the index; returns how many were there."""
    from .index.store import PhotoIndex

    directory = index_dir(index)
    recorded = _read_model_file(directory)
    if recorded is None or not keys:
        return 0
    with PhotoIndex.open(directory, model_id=recorded["model_id"], dim=int(recorded["embedding_dim"]),
                         create=False, lock=True) as idx:
        return idx.remove(keys)
