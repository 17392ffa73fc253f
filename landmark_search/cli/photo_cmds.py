"""`landmark classify|tag|untag|explain|map`: what the photos show, written where photo apps read it."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import LandmarkError
from . import (
    BatchOpt, DeviceOpt, ExcludeOpt, FollowLinksOpt, JsonOpt, JsonSummaryOpt, MaxPixelsOpt, ModelOpt, PhotosArg,
    PrecisionOpt, QuietOpt, RecallOpt, RecursiveOpt, SheetOpt, StrictOpt, TrustOpt, _check_sheet, _collect_photos,
    _count, _embed_config, _err, _exit_on_failures, _failures_json, _json, _no_photos, _report_failures,
    _warn_uncalibrated, app, handle_errors,
)


@app.command("classify")
@handle_errors
def classify_cmd(photos: List[Path] = PhotosArg,
                 model: Optional[str] = ModelOpt,
                 top_k: int = typer.Option(5, "--top-k", "-k", help="Labels per photo."),
                 recall: Optional[float] = RecallOpt,
                 as_json: bool = JsonOpt,
                 sheet: Optional[Path] = SheetOpt,
                 batch_size: int = BatchOpt, device: str = DeviceOpt,
                 precision: str = PrecisionOpt,
                 max_pixels: Optional[int] = MaxPixelsOpt,
                 strict: bool = StrictOpt,
                 quiet: bool = QuietOpt, trust_export: bool = TrustOpt) -> None:
    """Top-k landmark labels with probabilities for each photo."""
    if top_k < 1:
        raise LandmarkError(f"--top-k {top_k}: use 1 or more")
    from ..models.openset import check_recall  # numpy: not at `landmark --help`

    check_recall(recall)
    _check_sheet(sheet)
    found, failed = _collect_photos(photos)
    if not found and not failed:
        _err(_no_photos(photos))
        raise typer.Exit(code=1)
    from ..embeddings import load_model  # torch: only once the arguments are known to be good
    from ..tagging import classify

    loaded = load_model(model, trust_export=trust_export)
    cfg = _embed_config(batch_size, device, precision, max_pixels=max_pixels, quiet=quiet)
    results, bad = classify(found, loaded, cfg, top_k, recall=recall)
    if loaded.uncalibrated:
        _warn_uncalibrated(loaded.name)
    failed += bad
    if as_json:
        typer.echo(_json([{"path": str(r.path), "label": r.label, "unknown": r.unknown,
                           **({"matched_keypoints": r.matched_keypoints} if r.matched_keypoints is not None else {}),
                           "predictions": [{k: v for k, v in p.__dict__.items() if v is not None}
                                           for p in r.predictions]} for r in results]))
    else:
        for r in results:
            said = ("  unknown: not one of this model's landmarks" if r.unknown else
                    f"  {r.label}: {r.matched_keypoints} keypoints match a training photo"
                    if r.matched_keypoints is not None else "")
            typer.echo(str(r.path) + said)
            for p in r.predictions:
                conf = "" if p.confidence is None else f"  (confidence {p.confidence:.2f})"
                typer.echo(f"  {p.score:6.1%}  {p.label}{conf}")
    if sheet:
        from ..render.sheets import write_sheet

        write_sheet(sheet, [(r.path, [("unknown", 1.0 - (r.predictions[0].confidence or 0.0))] if r.unknown
                                 else [(p.label, p.score) for p in r.predictions[:3]]) for r in results],
                    title=f"landmark classify ({loaded.name})", max_pixels=cfg.max_pixels)
        typer.echo(f"contact sheet: {sheet}", err=as_json)
    _report_failures(failed)
    unknown = sum(r.unknown for r in results)
    if failed or unknown:
        _err(f"{len(results)} classified ({unknown} unknown), {len(failed)} failed")
    _exit_on_failures(failed, strict=strict, worked=bool(results))


# -------------------------------------------------------------------------------------------------- tag

@app.command("tag")
@handle_errors
def tag_cmd(photos: List[Path] = PhotosArg,
            model: Optional[str] = ModelOpt,
            top_k: int = typer.Option(3, "--top-k", "-k", help="At most this many tags per photo."),
            min_score: float = typer.Option(0.2, help="Only tags with at least this probability among the model's classes."),
            recall: Optional[float] = RecallOpt,
            xmp: bool = typer.Option(False, "--xmp", help="Also write keywords into <photo>.xmp (digiKam, darktable): "
                                     "Landmarks|NAME from a trained model, ImageNet|NAME from the built-in one; a re-run "
                                     "replaces the keywords this tool wrote before and never touches yours."),
            xmp_name: str = typer.Option("photo", "--xmp-name", help="photo: IMG_1.jpg.xmp (digiKam, darktable read "
                                         "it); basename: IMG_1.xmp (Lightroom Classic beside RAW files; darktable "
                                         "and digiKam read it too)."),
            embed: bool = typer.Option(False, "--embed", help="Also write the keywords into the JPEG/TIFF files "
                                       "themselves (for apps that read only embedded metadata). Off by default; "
                                       "each photo's original is first kept as .NAME.landmark-original beside it, "
                                       "and `untag --embed` puts it back. Symlinked, hard-linked and read-only "
                                       "photos are skipped."),
            object_keywords: bool = typer.Option(False, "--object-keywords", help="With the built-in ImageNet model, "
                                                 "also write its object names as plain keywords (dc:subject)."),
            geotag: bool = typer.Option(False, "--geotag", help="Put the landmark's place (GPS, city, country) into the "
                                        "XMP sidecar (implies --xmp) and the JSON of photos that have no position of "
                                        "their own; never overwrites one. Needs a model trained with places."),
            spread_minutes: float = typer.Option(30.0, "--spread-minutes", help="With --geotag: photos by the same "
                                                 "camera this close in time to a placed photo inherit its place "
                                                 "(at half its confidence); 0 turns it off."),
            dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be written; write nothing."),
            force: bool = typer.Option(False, "--force", help="Re-tag photos whose sidecar is current."),
            output_dir: Optional[Path] = typer.Option(None, help="Write sidecars into this mirror tree instead."),
            recursive: bool = RecursiveOpt,
            follow_links: bool = FollowLinksOpt,
            exclude: Optional[List[str]] = ExcludeOpt,
            as_json: bool = JsonSummaryOpt,
            strict: bool = StrictOpt,
            batch_size: int = BatchOpt, device: str = DeviceOpt,
            precision: str = PrecisionOpt,
            max_pixels: Optional[int] = MaxPixelsOpt,
            quiet: bool = QuietOpt, trust_export: bool = TrustOpt) -> None:
    """Write landmark tags into a sidecar JSON per photo (<photo>.json), keeping every existing key."""
    from ..tagging import TagOptions, tag

    if not 0.0 <= min_score <= 1.0:
        raise LandmarkError(f"--min-score {min_score}: use a probability between 0 and 1 (default 0.2)")
    from ..models.openset import check_recall  # numpy: not at `landmark --help`

    check_recall(recall)
    opts = TagOptions(top_k=top_k, min_score=min_score, recall=recall, xmp=xmp or geotag,
                      object_keywords=object_keywords, geotag=geotag, spread_minutes=spread_minutes, xmp_name=xmp_name,
                      embed=embed,
                      dry_run=dry_run, force=force, output_dir=output_dir,
                      recursive=recursive, follow_links=follow_links, exclude=tuple(exclude or ()))
    summary = tag(photos, model, opts, _embed_config(batch_size, device, precision, max_pixels=max_pixels, quiet=quiet),
                  trust_export=trust_export)
    _report_failures(summary.failed + summary.skipped)
    if summary.uncalibrated:
        _warn_uncalibrated(str(model or "this model"))
    if summary.no_places:
        _err("warning: --geotag placed nothing: this model knows no landmark's place (or cannot say 'unknown'); "
             "retrain it with a places.csv beside train/ (or --places FILE), or on geotagged photos")
    counts = {"tagged": len(summary.tagged), "no_tag": len(summary.untagged), "unknown": len(summary.unknown),
              "no_sidecar": len(summary.not_written),
              **({"geotagged": len(summary.geotagged), "geotag_held_back": len(summary.geotag_held_back)}
                 if geotag else {}),
              "unchanged": len(summary.unchanged), **({"skipped": len(summary.skipped)} if embed else {}),
              "failed": len(summary.failed), "stale_temps_removed": summary.stale_temps_removed}
    if as_json:
        typer.echo(_json({**counts, "dry_run": dry_run,
                          "failures": _failures_json(summary.failed),
                          **({"skips": _failures_json(summary.skipped)} if embed else {}),
                          **({"planned": summary.planned} if dry_run else {})}))
    else:
        if dry_run:
            for side, entry in summary.planned.items():
                tags = (", ".join(f"{t['label']} {t['score']:.0%}" for t in entry["tags"])
                        or ("(unknown: not one of this model's landmarks)" if entry.get("unknown")
                            else "(no tag above --min-score)"))
                typer.echo(f"would write {side}: {tags}")
        verb = "would tag" if dry_run else "tagged"
        typer.echo(f"{verb} {counts['tagged']}, no tag {counts['no_tag']} (unknown {counts['unknown']}), "
                   + (f"geotagged {counts['geotagged']} (held back {counts['geotag_held_back']}: landmark not "
                      "certain enough to place), " if geotag else "")
                   + f"unchanged {counts['unchanged']}, "
                   + (f"skipped {counts['skipped']}, " if embed else "") + f"failed {counts['failed']}"
                   + (f"; {_count(counts['no_sidecar'], 'photo')} with nothing to record "
                      + ("would get no sidecar" if dry_run else "got no sidecar (remembered as checked)")
                      if counts["no_sidecar"] else "")
                   + (f"; removed {summary.stale_temps_removed} temp file(s) an interrupted run left"
                      if summary.stale_temps_removed else ""))
    worked = bool(summary.tagged or summary.untagged or summary.unchanged)
    if not (summary.failed or summary.skipped or worked):
        _err(_no_photos(photos))
    _exit_on_failures(summary.failed + summary.skipped, strict=strict, worked=worked)


# How each untag result reads in the summary, per kind of file.
_UNTAG_WORDS = {("json", "deleted"): "deleted (this tool had created them)",
                ("json", "restored"): "given back byte for byte", ("json", "removed"): "kept, our entry taken out",
                ("xmp", "deleted"): "deleted (this tool had created them)",
                ("xmp", "restored"): "given back byte for byte", ("xmp", "removed"): "kept, our keywords taken out",
                ("originals", "restored"): "put back from their originals",
                ("originals", "removed"): "kept, our keywords taken out"}


@app.command("untag")
@handle_errors
def untag_cmd(photos: List[Path] = PhotosArg,
              xmp: bool = typer.Option(False, "--xmp", help="Also take this tool's keywords out of <photo>.xmp."),
              output_dir: Optional[Path] = typer.Option(None, help="The mirror tree given to `landmark tag --output-dir`."),
              dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be removed; change nothing."),
              recursive: bool = RecursiveOpt,
              follow_links: bool = FollowLinksOpt,
              exclude: Optional[List[str]] = ExcludeOpt,
              xmp_name: str = typer.Option("photo", "--xmp-name", help="Where to look when the JSON sidecar does not say: "
                                           "photo (IMG_1.jpg.xmp) or basename (IMG_1.xmp)."),
              embed: bool = typer.Option(False, "--embed", help="Give back the photos `tag --embed` wrote into: the "
                                         "original is put back when the photo is byte for byte as tag left it; "
                                         "otherwise only our keywords are taken out and your edits stay."),
              as_json: bool = JsonSummaryOpt) -> None:
    """Remove exactly what `landmark tag` added (its JSON key, its XMP keywords); everything of yours stays."""
    from ..untag import UntagOptions, untag

    summary = untag(photos, UntagOptions(xmp=xmp, dry_run=dry_run, output_dir=output_dir, recursive=recursive,
                                         follow_links=follow_links, exclude=tuple(exclude or ()), xmp_name=xmp_name,
                                         embed=embed))
    _report_failures(summary.failed + summary.skipped)
    for backup in summary.kept_backups:
        _err(f"kept {backup}: not put back, since the photo beside it is not byte for byte what `tag --embed` "
             "wrote (edited since, or another photo under that name); delete it if you do not need it")
    files = {kind: {what: n for what, n in sorted(done.items()) if what in ("deleted", "restored", "removed")}
             for kind, done in summary.files.items()}
    counts = {"cleaned": len(summary.cleaned), "untouched": len(summary.untouched), "skipped": len(summary.skipped),
              "failed": len(summary.failed)}
    if as_json:
        typer.echo(_json({**counts, "files": files, "dry_run": dry_run,
                          "failures": _failures_json(summary.failed), "skips": _failures_json(summary.skipped),
                          "kept_backups": [str(p) for p in summary.kept_backups]}))
    else:
        verb = "would clean" if dry_run else "cleaned"
        typer.echo(f"{verb} {_count(counts['cleaned'], 'photo')}, nothing of ours in {counts['untouched']}, "
                   f"skipped {counts['skipped']}, failed {counts['failed']}")
        for kind, label in (("json", "JSON sidecars"), ("xmp", "XMP sidecars"), ("originals", "photos tag --embed "
                                                                                              "wrote into")):
            if files[kind]:
                typer.echo(f"  {label}{' (dry run: nothing changed)' if dry_run else ''}: "
                           + ", ".join(f"{n} {_UNTAG_WORDS[kind, what]}" for what, n in files[kind].items()))
    if not (summary.failed or summary.skipped or summary.cleaned or summary.untouched):
        _err(_no_photos(photos))
        raise typer.Exit(code=1)
    if summary.failed:
        raise typer.Exit(code=1)


# ------------------------------------------------------------------------------------- explain, report

@app.command("explain")
@handle_errors
def explain_cmd(photos: List[Path] = PhotosArg,
                model: Optional[str] = typer.Option(None, "--model", "-m", help="checkpoint (RUN/best.pt) or built-in "
                                                    "name (not an export); default: efficientnet_lite0 (ImageNet)"),
                class_label: Optional[str] = typer.Option(None, "--class", help="Explain this class (display name or "
                                                          "class id, any case) instead of each photo's top class."),
                out: Path = typer.Option(Path("explain"), "--out", "-o", help="Folder for <photo>.gradcam.png."),
                raw: bool = typer.Option(False, "--raw", help="Also save the heat map as <photo>.gradcam.npy."),
                device: str = DeviceOpt) -> None:
    """Grad-CAM heat maps: which part of each photo made the model choose its label."""
    # Never explain our own overlays: a second `landmark explain .` would make a.gradcam.gradcam.png.
    found, failed = _collect_photos(photos, exclude=["*.gradcam.png"])
    found = [p for p in found if out.resolve() not in p.resolve().parents]
    if not found:
        _report_failures(failed)
        if not failed:
            _err(_no_photos(photos))
        raise typer.Exit(code=1)
    from ..render.explain import explain_photos  # torch: only once there are photos to explain

    results = explain_photos(found, model, class_label, out, raw, device=device,
                             on_error=lambda path, why: failed.append((path, why)))
    for r in results:
        typer.echo(f"{r.path} -> {r.overlay_png}  {r.label}  p={r.probability:.2f}"
                   + (f"  (raw: {r.raw_npy})" if r.raw_npy else ""))
    _report_failures(failed)
    if not results:
        if not failed:
            _err(_no_photos(photos))
        raise typer.Exit(code=1)


@app.command("map")
@handle_errors
def map_cmd(photos: List[Path] = typer.Argument(..., help="Photos or folders (their EXIF GPS, or the place "
                                                "`landmark tag --geotag` wrote)."),
            out: Path = typer.Option(Path("map.html"), "--out", "-o", help="The HTML page to write."),
            max_pixels: Optional[int] = MaxPixelsOpt) -> None:
    """One self-contained HTML map with a marker per place (drawn in the page: nothing is loaded from the network)."""
    from ..config import DEFAULT_MAX_PIXELS
    from ..places.map import write_map

    path, places, without = write_map(photos, out, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
    typer.echo(f"map: {path}  ({len(places)} place(s), {sum(len(p.photos) for p in places)} photo(s) with a "
               f"position, {without} without)")
