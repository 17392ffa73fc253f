"""`landmark index` and `landmark similar`: photos -> embeddings -> the on-disk index, and back."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from .config import EmbedConfig
from .data.files import iter_photos
from .errors import IndexStoreError, LandmarkError
from .fsutil import atomic_write_json
from .modelref import ModelRef, resolve_model

INDEX_HOME = Path("indexes")
MODEL_FILE = "model.json"


def index_dir(name_or_path: str | Path) -> Path:
    """A bare name lives under indexes/; anything with a slash (or an existing folder) is a path."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if "/" in text or os.sep in text or path.is_dir() and (path / MODEL_FILE).exists():
        return path
    return INDEX_HOME / text


def _read_model_file(directory: Path) -> dict | None:
    try:
        return json.loads((directory / MODEL_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise IndexStoreError(f"{directory / MODEL_FILE}: unreadable ({exc}); rebuild the index with "
                              f"`landmark index PHOTOS --index NEW`") from None


def _short_id(model_id: str) -> str:
    """A model id short enough to read: built-in names whole, file hashes to 12 hex digits."""
    return model_id if model_id.startswith("builtin:") else model_id[:19]


def _index_model(directory: Path, model_spec: str | None, trust_export: bool = False) -> ModelRef:
    """The model an index is built with; reusing an index without --model reuses its model."""
    recorded = _read_model_file(directory)
    if model_spec is None and recorded:
        if recorded.get("kind") == "export" and not trust_export:  # never run an export's code unasked
            raise IndexStoreError(f"index {directory} was built with the TorchScript export {recorded.get('spec')}, "
                                  "which can run code when loaded; pass --trust-export if you made it with "
                                  "`landmark export`, or build a new index from the best.pt it came from")
        try:
            ref = resolve_model(recorded["spec"], trust_export=trust_export)
        except LandmarkError as exc:
            raise IndexStoreError(f"index {directory} was built with {recorded['spec']}, which is gone ({exc}); "
                                  "pass --model with the same model, or build a new index") from None
    else:
        ref = resolve_model(model_spec, trust_export=trust_export)
    if recorded and recorded.get("model_id") != ref.model_id:
        raise IndexStoreError(
            f"index {directory} was built with {recorded.get('spec')} ({_short_id(recorded.get('model_id', '?'))}), not "
            f"{ref.spec} ({_short_id(ref.model_id)}); use --model {recorded.get('spec')} or a new --index NAME")
    return ref


def _index_precision(recorded: dict | None, cfg: EmbedConfig) -> EmbedConfig:
    """An index built in int8 keeps embedding (and querying) in int8 unless a precision is given."""
    if recorded and recorded.get("precision") == "int8" and cfg.precision == "auto":
        return replace(cfg, precision="int8")
    return cfg


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


def build_index(photos: Sequence[Path], model_spec: str | None, index: str | Path, opts: IndexOptions,
                cfg: EmbedConfig, *, trust_export: bool = False) -> IndexSummary:
    """Embed new or changed photos into the index; drop photos that vanished from the given folders."""
    directory = index_dir(index)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return _build_index(directory, photos, model_spec, opts, cfg, trust_export)
    except BaseException:
        if created and not any(directory.iterdir()):  # a refused first run leaves no empty index behind
            directory.rmdir()
        raise


def _build_index(directory: Path, photos: Sequence[Path], model_spec: str | None, opts: IndexOptions,
                 cfg: EmbedConfig, trust_export: bool = False) -> IndexSummary:
    from .index import PhotoIndex, PhotoRecord

    ref = _index_model(directory, model_spec, trust_export)
    summary = IndexSummary(directory, ref.name)
    found = list(iter_photos(photos, recursive=opts.recursive, follow_links=opts.follow_links, exclude=opts.exclude,
                             on_error=lambda p, why: summary.failed.append((p, why))))
    from .embeddings import iter_embeddings, load_model

    recorded = _read_model_file(directory)
    cfg = _index_precision(recorded, cfg)
    model = None if recorded else load_model(ref)
    dim = int(recorded["embedding_dim"]) if recorded else model.embedding_dim
    with PhotoIndex.open(directory, model_id=ref.model_id, dim=dim, create=True,
                         index_type=None if opts.index_type == "auto" and recorded else opts.index_type,
                         lock=True) as idx:
        if not recorded:
            atomic_write_json(directory / MODEL_FILE, {"spec": _portable_spec(ref), "model_id": ref.model_id,
                                                       "name": ref.name, "kind": ref.kind, "embedding_dim": dim,
                                                       "precision": cfg.precision})
        known = idx.known()
        todo: dict[Path, tuple[int, int]] = {}
        for photo in found:
            try:
                st = photo.stat()
            except OSError as exc:
                summary.failed.append((photo, f"{photo}: {exc.strerror or exc}"))
                continue
            key = str(photo.resolve())
            if not _is_utf8(key):
                summary.failed.append((photo, f"{photo}: the file name is not valid UTF-8, which the index "
                                              "cannot store; rename the file"))
                continue
            old = known.get(key)
            if old and old[0] == st.st_size and old[1] == st.st_mtime_ns:
                summary.unchanged += 1
            else:
                todo[photo] = (st.st_size, st.st_mtime_ns)
        if todo:
            model = model or load_model(ref)
            # Each batch is committed on its own: an interrupted run keeps what it finished.
            for batch in iter_embeddings(list(todo), model, cfg):
                summary.failed.extend(batch.failed)
                # A photo that changed and no longer decodes must not keep answering queries with its old vector.
                stale = [key for key in (str(p.resolve()) for p, _ in batch.failed) if key in known]
                if stale:
                    idx.remove(stale)
                    summary.removed += len(stale)
                if not batch.paths:
                    continue
                records = []
                for i, (photo, probs) in enumerate(zip(batch.paths, batch.probs)):
                    key = str(photo.resolve())
                    label = model.predicted_label(probs, None if batch.features is None else batch.features[i])
                    records.append(PhotoRecord(key, *todo[photo], _content_hash(photo), label))
                    summary.updated += key in known
                    summary.added += key not in known
                idx.add(records, batch.embeddings)
        if opts.prune:
            summary.removed += _prune(idx, photos, {str(p.resolve()) for p in found}, known)
        idx.save()
        summary.total = len(idx)
    return summary


def _is_utf8(path: str) -> bool:
    """False for a name with bytes that are not UTF-8 (surrogate escapes), which SQLite text cannot hold."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _portable_spec(ref: ModelRef) -> str:
    return str(ref.path.resolve()) if ref.path else ref.spec


def _prune(idx, roots: Sequence[Path], seen: set[str], known: dict) -> int:
    """Remove indexed photos under the given folders that no longer exist (or were excluded)."""
    prefixes = [str(Path(r).resolve()) + os.sep for r in roots if Path(r).is_dir()]
    gone = [p for p in known if p not in seen and any(p.startswith(pre) for pre in prefixes) and not Path(p).exists()]
    if gone:
        idx.remove(gone)
    return len(gone)


@dataclass(frozen=True)
class SimilarResult:
    """Hits for one query photo."""

    query: Path
    query_label: str | None
    hits: list


def find_similar(photo: Path, index: str | Path, *, k: int = 10, min_score: float = -1.0,
                 cfg: EmbedConfig = EmbedConfig(), trust_export: bool = False) -> SimilarResult:
    """The k nearest indexed photos by cosine similarity; the query itself is never its own hit."""
    from .embeddings import embed_paths, load_model
    from .index import PhotoIndex

    directory = index_dir(index)
    recorded = _read_model_file(directory)
    if recorded is None:
        raise IndexStoreError(f"no index at {directory}; build one with `landmark index PHOTOS` "
                              f"(add --index {index} for this name)")
    if k < 1:
        raise LandmarkError("-k must be at least 1")
    ref = _index_model(directory, None, trust_export)
    model = load_model(ref)
    result = embed_paths([photo], model, _index_precision(recorded, cfg))
    if result.failed:
        raise LandmarkError(f"cannot read the query photo: {result.failed[0][1]}")
    with PhotoIndex.open(directory, model_id=ref.model_id, dim=model.embedding_dim, create=False, lock=False) as idx:
        own = str(photo.resolve())  # a name that is not UTF-8 is never indexed, so never its own hit
        hits = idx.search(result.embeddings, k, exclude_paths=[own if _is_utf8(own) else None])[0]
    hits = [h for h in hits if h.score >= min_score]
    label = (model.predicted_label(result.probs[0], None if result.features is None else result.features[0])
             if len(result.probs) else None)
    return SimilarResult(photo, label, hits)
