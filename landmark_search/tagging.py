"""classify photos, tag folders with sidecars; nothing here imports torch until a photo needs a model."""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from .photos.files import HEIF_EXTENSIONS, HEIF_HINT, heif_available, iter_photos
from .errors import LandmarkError, PhotoLeftAlone, SidecarError
from .sidecars.checked import CheckedPhotos, options_key
from .fsutil import sweep_stale_temps
from .locks import FileLock, lock_dir
from .models.ref import ModelRef, resolve_model
from .sidecars.embedded import can_embed, embedding, refusal
from .places.geotag import DEFAULT_SPREAD_MINUTES, Candidate, place_photos, xmp_place_properties
from .models.openset import check_recall
from .predict import Prediction
from .sidecars.ownership import finish_xmp_record, json_record, untag_json, untag_xmp, xmp_record
from .sidecars.jsonfile import (SIDECAR_KEY, XMP_SUFFIX, build_payload, check_target, merge_sidecar, photo_fingerprint,
                                read_sidecar, sidecar_is_current, sidecar_path, write_sidecar)
from .sidecars.xmp import set_keywords

if TYPE_CHECKING:
    from .untag import UntagSummary
    from .config import EmbedConfig
    from .embeddings import LoadedModel


@dataclass(frozen=True)
class Classification:
    """Top-k predictions for one photo; `unknown` when no class is confident enough (predict.decide)."""

    path: Path
    predictions: list[Prediction]
    unknown: bool = False
    label: str | None = None  # what the photo shows, None for "none of these"
    matched_keypoints: int | None = None  # the label rests on the geometric check (models/verify.py)


def classify(paths: Sequence[Path], model: "LoadedModel", cfg: "EmbedConfig", top_k: int = 5,
             recall: float | None = None) -> tuple[list[Classification], list[tuple[Path, str]]]:
    """Classify photos; returns (results in input order, failures with reasons).

    A calibrated model marks a photo unknown when its top class is not confident enough; its
    predictions still show the nearest classes with their confidence.
    """
    from .embeddings import embed_paths

    result = embed_paths(paths, model, cfg)
    out = []
    for i, p in enumerate(result.paths):
        decision = result.decide(i, model, top_k=top_k, recall=recall)
        out.append(Classification(p, decision.predictions, decision.unknown, decision.label,
                                  decision.inliers if decision.verified else None))
    return out, result.failed


@dataclass(frozen=True)
class WalkOptions:
    """Which photos a run visits and where their sidecars are (tag and untag alike)."""

    dry_run: bool = False
    output_dir: Path | None = None  # sidecars in this mirror tree instead of beside the photos
    recursive: bool = True
    follow_links: bool = False
    exclude: tuple[str, ...] = ()
    xmp_name: str = "photo"  # "photo": IMG_1.jpg.xmp (digiKam, darktable); "basename": IMG_1.xmp (Lightroom, RAW)
    embed: bool = False  # tag: keywords inside JPEG/TIFF files too (the original kept beside); untag: put it back


XMP_NAMES = ("photo", "basename")


@dataclass(frozen=True)
class TagOptions(WalkOptions):
    """How `landmark tag` behaves."""

    top_k: int = 3
    min_score: float = 0.2
    recall: float | None = None  # open-set threshold as the fraction of true landmark photos kept; None: the checkpoint's
    xmp: bool = False
    object_keywords: bool = False  # the built-in ImageNet model's labels also as plain dc:subject keywords
    geotag: bool = False  # write the landmark's place into photos without GPS (XMP + JSON); implies xmp
    spread_minutes: float = DEFAULT_SPREAD_MINUTES  # same camera, this close in time: inherits a photo's place
    force: bool = False


@dataclass
class TagSummary:
    """What a tag run did: counts and the reason for every failure."""

    tagged: list[Path] = field(default_factory=list)  # got at least one tag
    untagged: list[Path] = field(default_factory=list)  # no tag passed (unknown, or below --min-score)
    not_written: list[Path] = field(default_factory=list)  # of those: nothing to record (no place either), no sidecar
    unknown: list[Path] = field(default_factory=list)  # of those: not one of the model's landmarks
    unchanged: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # left alone on purpose (--embed), with the reason
    planned: dict[str, dict] = field(default_factory=dict)  # dry run: sidecar path -> our entry
    model_loaded: bool = False
    uncalibrated: bool = False  # a landmark model without open-set calibration: every photo gets a class
    geotagged: list[Path] = field(default_factory=list)  # got a place (from a landmark or from its trip)
    geotag_held_back: list[Path] = field(default_factory=list)  # tagged, but not certain enough to be placed
    no_places: bool = False  # --geotag with a model that knows no place (or has no open-set calibration)
    stale_temps_removed: int = 0  # temp files an interrupted earlier run left beside its sidecars


@dataclass(frozen=True)
class _Job:
    photo: Path
    root: Path
    sidecar: Path
    existing: dict
    fingerprint: str


def _walk(paths: Sequence[Path], opts: WalkOptions, summary: "TagSummary | UntagSummary"
          ) -> Iterator[tuple[Path, Path, Path]]:
    """(photo, root, JSON sidecar) of each photo once; refusals go to summary.failed."""
    on_error: Callable[[Path, str], None] = lambda p, why: summary.failed.append((p, why))
    args = [Path(arg) for arg in paths]
    roots = [arg if arg.is_dir() else arg.parent for arg in args]
    if opts.output_dir is not None:
        _check_mirror(args, opts.output_dir)
    # The mirror keeps each photo's path relative to the argument it was found under (the same layout
    # whatever else is named with it); two photos that would share a mirrored sidecar are refused.
    mirrored: dict[Path, Path] = {}
    heif = heif_available()
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
                if opts.output_dir is not None:
                    if mirrored.setdefault(side, photo) != photo:
                        raise SidecarError(f"{side} would also hold the tags of {mirrored[side]} (same path under "
                                           "another argument); tag each folder into its own --output-dir")
                    if side.with_suffix("").exists():  # the mirror lands on another photo's own sidecar
                        raise SidecarError(f"{side} is the sidecar of {side.with_suffix('')}, not of {photo}: "
                                           "choose an --output-dir that holds no photos")
            except (SidecarError, OSError) as exc:
                summary.failed.append((photo, str(exc)))
                continue
            yield photo, root, side


def _check_mirror(args: Sequence[Path], output_dir: Path) -> None:
    """An --output-dir inside a photo folder (or holding one) would mix mirrored sidecars with in-place ones."""
    out = Path(os.path.realpath(output_dir))
    for arg in args:
        folder = Path(os.path.realpath(arg if arg.is_dir() else arg.parent))
        if out == folder or folder in out.parents or out in folder.parents:
            raise LandmarkError(f"--output-dir {output_dir} overlaps the photo folder {arg}: choose a folder "
                                "outside the photos (e.g. ~/tags)")


def _plan(paths: Sequence[Path], ref: ModelRef, opts: TagOptions, summary: TagSummary, checked: CheckedPhotos
          ) -> tuple[list[_Job], set[Path]]:
    """Walk the photos; keep those whose sidecar is missing or stale and that were not checked already with
    nothing to record (or all, with --force), and every sidecar folder."""
    jobs: list[_Job] = []
    folders: set[Path] = set()
    options = _recorded_options(opts)
    said_nothing: list[_Job] = []
    xmp_owner: dict[Path, Path] = {}
    for photo, root, side in _walk(paths, opts, summary):
        folders.add(side.parent)
        if _embed_refused(photo, opts, summary):
            continue
        if opts.xmp and opts.xmp_name == "basename":
            xmp = xmp_path(photo, root, opts)
            if xmp_owner.setdefault(xmp, photo) != photo:  # IMG_1.jpg beside IMG_1.CR2
                summary.failed.append((photo, f"{xmp} is already the XMP sidecar of {xmp_owner[xmp]} (same base "
                                              "name); tag one of the pair, or use --xmp-name photo"))
                continue
        try:
            existing = read_sidecar(side)
            fingerprint = photo_fingerprint(photo)
        except (SidecarError, OSError) as exc:
            summary.failed.append((photo, str(exc)))
            continue
        if not opts.force and is_named(existing):
            summary.unchanged.append(photo)
            continue
        if not opts.force and _is_current(existing, ref.sha256, fingerprint, options):
            if _says_something(existing[SIDECAR_KEY]):
                summary.unchanged.append(photo)
            else:  # a current entry with nothing in it (written by an earlier version): taken back, no model
                said_nothing.append(_Job(photo, root, side, existing, fingerprint))
            continue
        if not opts.force and SIDECAR_KEY not in existing and checked.is_checked(
                photo, fingerprint, ref.sha256, options_key(options)):
            summary.unchanged.append(photo)
            continue
        jobs.append(_Job(photo, root, side, existing, fingerprint))
    if said_nothing:
        checked.remember([(job.photo, job.fingerprint) for job in said_nothing
                          if _nothing_to_record(job, opts, summary)], ref.sha256, options_key(options))
        summary.unchanged.extend(job.photo for job in said_nothing)
    return jobs, folders


def _says_something(entry: Mapping[str, Any]) -> bool:
    """An entry worth a sidecar: a tag, a place, or a name a person gave."""
    return bool(entry.get("tags")) or bool(entry.get("place")) or entry.get("named") is True


def _embed_refused(photo: Path, opts: TagOptions, summary: TagSummary) -> bool:
    """A photo --embed must leave alone (a link, read-only) is skipped before any work, with the reason."""
    why = refusal(photo) if opts.embed and can_embed(photo) else None
    if why:
        summary.skipped.append((photo, why))
    return why is not None


def is_named(sidecar: dict) -> bool:
    """A person named this photo (`landmark serve`'s review page): a model run keeps it unless forced."""
    entry = sidecar.get(SIDECAR_KEY)
    return isinstance(entry, dict) and entry.get("named") is True



@dataclass
class Outcome:
    """Whether the work on one photo inside `one_photo` finished (False: it was counted as skipped or failed)."""

    done: bool = False


@contextmanager
def one_photo(summary: Any, photo: Path) -> Iterator[Outcome]:
    """Count a photo's refusal (PhotoLeftAlone: skipped, with the reason) or failure (unreadable sidecar, I/O)
    in `summary` instead of stopping the run; the yielded Outcome says whether the work finished."""
    outcome = Outcome()
    try:
        yield outcome
        outcome.done = True
    except PhotoLeftAlone as exc:
        summary.skipped.append((photo, str(exc)))
    except (SidecarError, OSError) as exc:
        summary.failed.append((photo, str(exc)))


NAMED_BY_HAND = "named by hand"
_MAX_NAME = 200


def name_photos(paths: Sequence[Path], name: str | None, opts: TagOptions) -> TagSummary:
    """Tag photos with a landmark name a person gave: the sidecars `landmark tag` writes (JSON, and XMP keywords
    `Landmarks|NAME` with opts.xmp), marked as named so that a later `landmark tag` keeps them (--force replaces).

    name None: the person says the photo shows none of them: no landmark tag (our earlier XMP keywords go), kept
    the same way."""
    if name is not None:
        name = check_name(name)
    summary = TagSummary()
    kept = [Prediction(name, name, 1.0)] if name is not None else []
    with _folder_lock(paths, opts.output_dir):
        folders: set[Path] = set()
        for photo, root, side in _walk(paths, opts, summary):
            folders.add(side.parent)
            if _embed_refused(photo, opts, summary):
                continue
            with one_photo(summary, photo) as outcome:
                fingerprint = photo_fingerprint(photo)
                job = _Job(photo, root, side, read_sidecar(side), fingerprint)
                payload = build_payload(model_name=NAMED_BY_HAND, model_sha256=NAMED_BY_HAND,
                                        tags=[(p.label, p.id, p.score) for p in kept], photo_fingerprint=fingerprint,
                                        options=_recorded_options(opts), vocabulary="landmarks")
                _write(job, {**payload, "named": True}, kept, False, opts, summary)
            if outcome.done:
                summary.tagged.append(photo)
        _sweep(folders, summary)
    return summary


def check_name(name: str) -> str:
    """A landmark name as a person typed it, spaces collapsed; LandmarkError when it cannot be one."""
    name = " ".join(name.split())
    if not name or len(name) > _MAX_NAME or not name.isprintable():
        raise LandmarkError(f"{name[:40]!r} is not a landmark name: use 1-{_MAX_NAME} printable characters")
    return name


def _recorded_options(opts: TagOptions) -> dict:
    """The options that shape a sidecar's content; a change in any of them re-tags the photo."""
    options = {"top_k": opts.top_k, "min_score": opts.min_score, "recall": opts.recall, "xmp": opts.xmp,
               "object_keywords": opts.object_keywords}
    if opts.geotag:
        options.update(geotag=True, spread_minutes=opts.spread_minutes)
    if opts.xmp_name != "photo":
        options["xmp_name"] = opts.xmp_name
    if opts.embed:
        options["embed"] = True
    return options


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


def _sweep(folders: set[Path], summary: "TagSummary | UntagSummary") -> None:
    # A run killed mid-write (SIGKILL, power loss) leaves a temp file: every run that writes sidecars (tag,
    # untag, naming in `landmark serve`) clears old ones from the folders it visits, with or without work there.
    for folder in sorted(set(folders)):
        summary.stale_temps_removed += sweep_stale_temps(folder)


def tag(paths: Sequence[Path], model_spec: str | None, opts: TagOptions, cfg: "EmbedConfig",
        load: Callable[[ModelRef], "LoadedModel"] | None = None, *, trust_export: bool = False) -> TagSummary:
    """Write a sidecar per photo with the model's confident tags; unchanged photos cost no model work."""
    if opts.top_k < 1:
        raise LandmarkError("--top-k must be at least 1")
    if opts.embed and opts.output_dir is not None:
        raise LandmarkError("--embed changes the photos themselves; it cannot go with --output-dir (a read-only "
                            "library): use one or the other")
    if opts.xmp_name not in XMP_NAMES:
        raise LandmarkError(f"--xmp-name {opts.xmp_name}: use photo (IMG_1.jpg.xmp) or basename (IMG_1.xmp)")
    check_recall(opts.recall)
    if opts.spread_minutes < 0:
        raise LandmarkError(f"--spread-minutes {opts.spread_minutes}: use 0 (off) or more minutes")
    if opts.geotag and not opts.xmp:
        opts = replace(opts, xmp=True)  # the place goes where photo apps read it: the XMP sidecar
    summary = TagSummary()
    ref = resolve_model(model_spec, trust_export=trust_export)
    with _folder_lock(paths, opts.output_dir), CheckedPhotos() as checked:
        jobs, folders = _plan(paths, ref, opts, summary, checked)
        if not jobs:
            if not opts.dry_run:
                _sweep(folders, summary)
            return summary
        from .embeddings import iter_embeddings, load_model

        model = (load or load_model)(ref)
        summary.model_loaded = True
        summary.uncalibrated = model.uncalibrated
        by_photo = {job.photo: job for job in jobs}
        # Sidecars are written batch by batch, so a killed run keeps what it finished; only --geotag waits for
        # the whole run, since a photo may inherit its place from one taken later in the same trip.
        pending: list[tuple[_Job, dict, list[Prediction], bool]] = []
        for batch in iter_embeddings([job.photo for job in jobs], model, cfg):
            summary.failed.extend(batch.failed)
            for i, photo in enumerate(batch.paths):
                job = by_photo[photo]
                decision = batch.decide(i, model, top_k=opts.top_k, min_score=opts.min_score, recall=opts.recall)
                kept, unknown, top = decision.kept, decision.unknown, decision.predictions[0]
                payload = build_payload(model_name=model.name, model_sha256=ref.sha256,
                                        tags=[(p.label, p.id, p.score, p.confidence) for p in kept],
                                        photo_fingerprint=job.fingerprint, options=_recorded_options(opts),
                                        vocabulary="imagenet" if model.kind == "builtin" else "landmarks",
                                        unknown=unknown, nearest=(top.label, top.id, top.score,
                                                                  top.confidence) if unknown else None,
                                        runner_ups=[] if model.kind == "builtin" else
                                        [(p.label, p.id, p.score, p.confidence) for p in decision.runner_ups],
                                        matched_keypoints=decision.inliers if decision.verified else None)
                pending.append((job, payload, kept, unknown))
            if not opts.geotag:
                _write_all(pending, model, opts, summary, {}, checked)
                pending = []
        if opts.geotag:
            summary.no_places = model.openset is None or not model.meta.get("places")
            places, summary.geotag_held_back = _geotag(pending, model, opts)
            _write_all(pending, model, opts, summary, places, checked)
        if not opts.dry_run:
            _sweep(folders, summary)
    return summary


def _write_all(decided: Sequence[tuple[_Job, dict, list[Prediction], bool]], model: "LoadedModel",
               opts: TagOptions, summary: TagSummary, places: dict[Path, dict], checked: CheckedPhotos) -> None:
    """Write the sidecars of decided photos that have something to record (a tag, a place), remember the others
    as checked, and count each in the summary."""
    said_nothing: list[_Job] = []
    for job, payload, kept, unknown in decided:
        place = places.get(job.photo)
        ours = job.existing.get(SIDECAR_KEY)
        # An entry that holds the original of a photo it embedded keywords into stays (untag needs it).
        embedded = isinstance(ours, dict) and bool(ours.get("embedded"))
        with one_photo(summary, job.photo) as outcome:
            if kept or place or embedded:
                _write(job, {**payload, **({"place": place} if place else {})}, kept, model.kind == "builtin",
                       opts, summary, place)
            elif _nothing_to_record(job, opts, summary):
                said_nothing.append(job)
        if not outcome.done:
            continue
        (summary.tagged if kept else summary.untagged).append(job.photo)
        if unknown:
            summary.unknown.append(job.photo)
        if place:
            summary.geotagged.append(job.photo)
    if not opts.dry_run:
        options = options_key(_recorded_options(opts))
        checked.remember([(job.photo, job.fingerprint) for job in said_nothing], model.sha256, options)
        nothing = {job.photo for job in said_nothing}
        checked.forget([job.photo for job, *_ in decided if job.photo not in nothing], model.sha256, options)


def _nothing_to_record(job: _Job, opts: TagOptions, summary: TagSummary) -> bool:
    """No sidecar for a photo with nothing to record; an entry of ours an earlier run left (with its XMP
    keywords) is taken back. True when the photo can be remembered as checked."""
    summary.not_written.append(job.photo)
    if opts.dry_run:
        return False
    root = opts.output_dir if opts.output_dir is not None else job.root
    entry = read_sidecar(job.sidecar).get(SIDECAR_KEY)  # as it is now: the user may have edited it
    if isinstance(entry, dict):
        if isinstance(entry.get("xmp"), dict):
            untag_xmp(recorded_xmp_path(job.photo, job.root, job.sidecar, entry, opts), entry, root=root)
        untag_json(job.sidecar, root=root)
    return True


def recorded_xmp_path(photo: Path, root: Path, side: Path, entry: Any, opts: WalkOptions) -> Path:
    """The XMP sidecar our JSON entry says we wrote (either naming), else the one opts.xmp_name names."""
    record = entry.get("xmp") if isinstance(entry, dict) else None
    named = record.get("file") if isinstance(record, dict) else None
    return side.with_name(named) if isinstance(named, str) and "/" not in named else xmp_path(photo, root, opts)


def keywords(labels: Sequence[str], imagenet: bool, object_keywords: bool) -> tuple[list[str], list[str]]:
    """(dc:subject, lr:hierarchicalSubject) for the labels of a landmark model or of the built-in ImageNet one.

    ImageNet labels are objects, not places: they go under `ImageNet|` and into the flat keyword list
    only when asked (--object-keywords). Only a landmark model writes `Landmarks|...`.
    """
    if imagenet:
        return (list(labels) if object_keywords else []), [f"ImageNet|{label}" for label in labels]
    return list(labels), [f"Landmarks|{label}" for label in labels]


def _xmp_path(job: _Job, opts: WalkOptions) -> Path:
    return xmp_path(job.photo, job.root, opts)


def xmp_path(photo: Path, root: Path, opts: WalkOptions) -> Path:
    """The photo's XMP sidecar: IMG_1.jpg.xmp, or IMG_1.xmp with xmp_name "basename" (mirrored under output_dir)."""
    mirror = opts.output_dir is not None
    side = sidecar_path(photo, suffix=XMP_SUFFIX, output_dir=opts.output_dir, root=root if mirror else None)
    return side.with_name(photo.stem + XMP_SUFFIX) if opts.xmp_name == "basename" else side


def _geotag(decided: Sequence[tuple[_Job, dict, list[Prediction], bool]], model: "LoadedModel",
            opts: TagOptions) -> tuple[dict[Path, dict], list[Path]]:
    """Places for the photos of this run, and the tagged photos held back: their landmark has a place, but
    its confidence is below the geotag threshold (openset.py), its keypoints did not match a training photo
    (models/verify.py: no false match was measured) and no photo of their trip gave them one."""
    places = model.meta.get("places") or {}
    if model.openset is None or not places:
        return {}, []
    floor = model.openset.geotag_threshold(model.openset.threshold_for(opts.recall))
    sure = [kept[0] if kept and (payload.get("matched_keypoints") is not None
                                 or kept[0].confidence is not None and kept[0].confidence >= floor) else None
            for _, payload, kept, _ in decided]
    candidates = [Candidate(job.photo, _xmp_path(job, opts), top.id if top else None, top.confidence if top else None)
                  for (job, _, _, _), top in zip(decided, sure)]
    placed = place_photos(candidates, places, opts.spread_minutes)
    held = [job.photo for (job, _, kept, _), top in zip(decided, sure)
            if kept and top is None and kept[0].id in places and job.photo not in placed]
    return placed, held


def _write(job: _Job, payload: dict, kept: list[Prediction], imagenet: bool, opts: TagOptions,
           summary: TagSummary, place: dict | None = None) -> None:
    if opts.dry_run:
        summary.planned[str(job.sidecar)] = payload
        return
    mirror = opts.output_dir is not None
    root = opts.output_dir if mirror else job.root
    check_target(job.sidecar, root)  # a refused JSON sidecar refuses the XMP too, before either is written
    # Re-read right before writing: the user may have edited the sidecar since the run planned it.
    current = read_sidecar(job.sidecar)
    entry = payload
    ours = current.get(SIDECAR_KEY) if isinstance(current.get(SIDECAR_KEY), dict) else {}
    if opts.embed and can_embed(job.photo):
        subjects, hierarchical = keywords([p.label for p in kept], imagenet, opts.object_keywords)
        with embedding(job.photo, subjects, hierarchical, ours.get("embedded")) as done:
            if done is not None:
                # Recorded before the new bytes replace the photo, so that untag gives it back after a kill at
                # any point; "pending" matches no photo, so the next run tags it again.
                _write_entry(job.sidecar, {**(ours or entry), "embedded": done.ahead,
                                           "source": {"fingerprint": "pending"}}, root, mirror)
        if done is not None:
            # the photo's bytes changed (its metadata, not its pixels): the entry describes it as it is now
            entry = {**entry, "embedded": done.record, "source": {"fingerprint": photo_fingerprint(job.photo)}}
    elif isinstance(ours.get("embedded"), dict):
        entry = {**entry, "embedded": ours["embedded"]}  # kept until `untag --embed` has given the photo back
    if opts.xmp:
        # The XMP first: the JSON sidecar marks the photo done, so a run killed between the two writes
        # tags the photo again next time instead of leaving its XMP without the keywords.
        xmp = _xmp_path(job, opts)
        subjects, hierarchical = keywords([p.label for p in kept], imagenet, opts.object_keywords)
        record = xmp_record(xmp, current.get(SIDECAR_KEY))
        written = set_keywords(xmp, subjects, hierarchical, root=root, create_parents=mirror,
                               properties=xmp_place_properties(place) if place else None)
        entry = {**entry, "xmp": {**finish_xmp_record(xmp, record, written), "file": xmp.name}}
    _write_entry(job.sidecar, entry, root, mirror)


def _write_entry(side: Path, entry: dict, root: Path, mirror: bool) -> None:
    """Put our entry into the JSON sidecar as it is now (read again: the user may have saved it meanwhile)."""
    current = read_sidecar(side)
    merged = merge_sidecar(current, {**entry, **json_record(side, current)}, path=side)
    write_sidecar(side, merged, root=root, create_parents=mirror)
