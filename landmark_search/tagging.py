"""classify photos, tag folders with sidecars; nothing here imports torch until a photo needs a model."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .data.files import HEIF_EXTENSIONS, HEIF_HINT, heif_available, iter_photos
from .errors import LandmarkError, SidecarError
from .locks import FileLock, lock_dir
from .modelref import ModelRef, resolve_model
from .sidecar import (XMP_SUFFIX, build_payload, merge_sidecar, merge_xmp, photo_fingerprint,
                      read_sidecar, sidecar_is_current, sidecar_path, sweep_stale_temps, write_sidecar)

if TYPE_CHECKING:
    from .config import EmbedConfig
    from .embeddings import LoadedModel


@dataclass(frozen=True)
class Prediction:
    """One label with its probability."""

    label: str
    id: str
    score: float


@dataclass(frozen=True)
class Classification:
    """Top-k predictions for one photo."""

    path: Path
    predictions: list[Prediction]


def top_predictions(probs, model: "LoadedModel", k: int, min_score: float = 0.0) -> list[Prediction]:
    """The k most probable classes at or above min_score, best first."""
    order = probs.argsort()[::-1][:max(1, k)]
    return [Prediction(model.class_names[i], model.class_ids[i], float(probs[i])) for i in order
            if probs[i] >= min_score]


def classify(paths: Sequence[Path], model: "LoadedModel", cfg: "EmbedConfig", top_k: int = 5
             ) -> tuple[list[Classification], list[tuple[Path, str]]]:
    """Classify photos; returns (results in input order, failures with reasons)."""
    from .embeddings import embed_paths

    result = embed_paths(paths, model, cfg)
    out = [Classification(p, top_predictions(pr, model, top_k)) for p, pr in zip(result.paths, result.probs)]
    return out, result.failed


@dataclass(frozen=True)
class TagOptions:
    """How `landmark tag` behaves."""

    top_k: int = 3
    min_score: float = 0.2
    xmp: bool = False
    dry_run: bool = False
    force: bool = False
    output_dir: Path | None = None
    recursive: bool = True
    follow_links: bool = False
    exclude: tuple[str, ...] = ()


@dataclass
class TagSummary:
    """What a tag run did: counts and the reason for every failure."""

    tagged: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    planned: dict[str, dict] = field(default_factory=dict)  # dry run: sidecar path -> our entry
    model_loaded: bool = False
    stale_temps_removed: int = 0  # temp files an interrupted earlier run left beside its sidecars


@dataclass(frozen=True)
class _Job:
    photo: Path
    root: Path
    sidecar: Path
    existing: dict
    fingerprint: str


def _plan(paths: Sequence[Path], ref: ModelRef, opts: TagOptions, summary: TagSummary) -> list[_Job]:
    """Walk the photos and keep those whose sidecar is missing or stale (or all, with --force)."""
    jobs: list[_Job] = []
    on_error: Callable[[Path, str], None] = lambda p, why: summary.failed.append((p, why))
    args = [Path(arg) for arg in paths]
    roots = [arg if arg.is_dir() else arg.parent for arg in args]
    # The mirror keeps each photo's path relative to the argument it was found under (the same layout
    # whatever else is named with it); two photos that would share a mirrored sidecar are refused.
    mirrored: dict[Path, Path] = {}
    heif = heif_available()
    options = _recorded_options(opts)
    seen: set[str] = set()
    for arg, root in zip(args, roots):
        for photo in iter_photos([arg], recursive=opts.recursive, follow_links=opts.follow_links,
                                 exclude=opts.exclude, on_error=on_error):
            key = os.path.realpath(photo)
            if key in seen:  # `tag t2 t2/a.jpg ./t2` names one photo three times
                continue
            seen.add(key)
            if not heif and photo.suffix.lower() in HEIF_EXTENSIONS:  # refused before the model loads
                summary.failed.append((photo, f"{photo}: {HEIF_HINT}"))
                continue
            try:
                side = sidecar_path(photo, output_dir=opts.output_dir, root=root)
                if opts.output_dir is not None and mirrored.setdefault(side, photo) != photo:
                    raise SidecarError(f"{side} would also hold the tags of {mirrored[side]} (same path under "
                                       "another argument); tag each folder into its own --output-dir")
                existing = read_sidecar(side)
                fingerprint = photo_fingerprint(photo)
            except (SidecarError, OSError) as exc:
                summary.failed.append((photo, str(exc)))
                continue
            if not opts.force and _is_current(existing, ref.sha256, fingerprint, options):
                summary.unchanged.append(photo)
                continue
            jobs.append(_Job(photo, root, side, existing, fingerprint))
    return jobs


def _recorded_options(opts: TagOptions) -> dict:
    """The options that shape a sidecar's content; a change in any of them re-tags the photo."""
    return {"top_k": opts.top_k, "min_score": opts.min_score, "xmp": opts.xmp}


def _is_current(existing: dict, model_sha256: str, fingerprint: str, options: dict) -> bool:
    if sidecar_is_current(existing, model_sha256, fingerprint, options):
        return True
    # A photo tagged with --xmp already has everything a run without --xmp would write.
    return not options["xmp"] and sidecar_is_current(existing, model_sha256, fingerprint, {**options, "xmp": True})


def _folder_lock(paths: Sequence[Path], output_dir: Path | None) -> FileLock:
    """One lock per set of folders, kept outside the (possibly read-only) photo folders."""
    key = "\n".join(sorted(str(Path(p).resolve()) for p in paths)) + f"\n{output_dir}"
    name = hashlib.sha256(key.encode()).hexdigest()[:16]
    return FileLock(lock_dir() / f"tag-{name}.lock", description=f"tagging {', '.join(str(p) for p in paths)}")


def tag(paths: Sequence[Path], model_spec: str | None, opts: TagOptions, cfg: "EmbedConfig",
        load: Callable[[ModelRef], "LoadedModel"] | None = None) -> TagSummary:
    """Write a sidecar per photo with the model's top tags; unchanged photos cost no model work."""
    if opts.top_k < 1:
        raise LandmarkError("--top-k must be at least 1")
    summary = TagSummary()
    ref = resolve_model(model_spec)
    with _folder_lock(paths, opts.output_dir):
        jobs = _plan(paths, ref, opts, summary)
        if not jobs:
            return summary
        from .embeddings import iter_embeddings, load_model

        model = (load or load_model)(ref)
        summary.model_loaded = True
        by_photo = {job.photo: job for job in jobs}
        for batch in iter_embeddings([job.photo for job in jobs], model, cfg):
            summary.failed.extend(batch.failed)
            for photo, probs in zip(batch.paths, batch.probs):
                job = by_photo[photo]
                preds = top_predictions(probs, model, opts.top_k, opts.min_score)
                payload = build_payload(model_name=model.name, model_sha256=ref.sha256,
                                        tags=[(p.label, p.id, p.score) for p in preds],
                                        photo_fingerprint=job.fingerprint, options=_recorded_options(opts))
                try:
                    _write(job, payload, preds, opts, summary)
                except (SidecarError, OSError) as exc:
                    summary.failed.append((photo, str(exc)))
        if not opts.dry_run:
            # A run killed mid-write (SIGKILL, power loss) leaves a temp file; its photo is tagged
            # again now, so its folder is among the jobs' folders.
            for folder in sorted({job.sidecar.parent for job in jobs}):
                summary.stale_temps_removed += sweep_stale_temps(folder)
    return summary


def _write(job: _Job, payload: dict, preds: list[Prediction], opts: TagOptions, summary: TagSummary) -> None:
    merged = merge_sidecar(job.existing, payload, path=job.sidecar)
    if opts.dry_run:
        summary.planned[str(job.sidecar)] = payload
        summary.tagged.append(job.photo)
        return
    mirror = opts.output_dir is not None
    root = opts.output_dir if mirror else job.root
    # The XMP first: the JSON sidecar marks the photo done, so a run killed between the two writes
    # tags the photo again next time instead of leaving its XMP without the keywords.
    if opts.xmp and preds:
        xmp = sidecar_path(job.photo, suffix=XMP_SUFFIX, output_dir=opts.output_dir,
                           root=job.root if mirror else None)
        merge_xmp(xmp, [p.label for p in preds], root=root, create_parents=mirror)
    write_sidecar(job.sidecar, merged, root=root, create_parents=mirror)
    summary.tagged.append(job.photo)

