"""`landmark index|similar|duplicates|group`: the similarity index and what it finds."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import LandmarkError
from . import (
    BatchOpt, DEFAULT_INDEX, DeviceOpt, ExcludeOpt, FollowLinksOpt, IndexOpt, JsonOpt, JsonSummaryOpt,
    MaxPixelsOpt, ModelOpt, PrecisionOpt, QuietOpt, RecursiveOpt, SheetOpt, StrictOpt, TrustOpt, _check_sheet,
    _count, _embed_config, _err, _failures_json, _json, _no_photos, _report_failures, app, handle_errors,
)


# --------------------------------------------------------------------------------------- index, similar

@app.command("index")
@handle_errors
def index_cmd(photos: List[Path] = typer.Argument(..., help="Photos or folders to index."),
              model: Optional[str] = ModelOpt,
              index: str = IndexOpt,
              recursive: bool = RecursiveOpt,
              follow_links: bool = FollowLinksOpt,
              exclude: Optional[List[str]] = ExcludeOpt,
              index_type: str = typer.Option("auto", help="auto|flat|hnsw|ivf."),
              prune: bool = typer.Option(True, "--prune/--no-prune", help="Drop photos that disappeared under the given folders."),
              rebuild: bool = typer.Option(False, "--rebuild", help="Start the index afresh from PHOTOS (the fix for a "
                                           "damaged index): deletes its manifest and vector cache first."),
              batch_size: int = BatchOpt, device: str = DeviceOpt,
              precision: str = PrecisionOpt,
              max_pixels: Optional[int] = MaxPixelsOpt,
              as_json: bool = JsonSummaryOpt,
              strict: bool = StrictOpt,
              engine: str = typer.Option("local", "--engine", help="local (this process) | ray (a Ray Data actor "
                                         "pool embeds; this process writes the index; pip install "
                                         "'landmark-search[ray]')."),
              address: Optional[str] = typer.Option(None, "--address", help="With --engine ray: auto (the cluster "
                                                    "on this machine) or ray://HOST:PORT; default: a local Ray "
                                                    "started for this run."),
              workers: int = typer.Option(2, "--workers", help="With --engine ray: embedding workers (actors), each "
                                          "loading the model once."),
              gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="With --engine ray: GPUs per "
                                                    "worker (0.5: two workers share one GPU); 0 = CPU."),
              quiet: bool = QuietOpt, trust_export: bool = TrustOpt) -> None:
    """Add photos to a similarity index (incremental: only new or changed photos are embedded)."""
    from ..index.store import INDEX_TYPES
    from ..search import IndexOptions, build_index

    if index_type not in INDEX_TYPES:
        raise LandmarkError(f"--index-type {index_type!r}: use {', '.join(INDEX_TYPES)}")
    if engine not in ("local", "ray"):
        raise LandmarkError(f"--engine {engine!r}: use local or ray")
    runner = None
    if engine == "ray":  # Ray is imported only here
        from ..scaleout.ray_index import RayEngine, RayOptions

        runner = RayEngine(RayOptions(address=address, workers=workers, gpus_per_worker=gpus_per_worker))
    opts = IndexOptions(recursive=recursive, follow_links=follow_links, exclude=tuple(exclude or ()),
                        index_type=index_type, prune=prune, rebuild=rebuild)
    s = build_index(photos, model, index, opts, _embed_config(batch_size, device, precision, max_pixels=max_pixels,
                                                              quiet=quiet), trust_export=trust_export,
                    engine=runner)
    _report_failures(s.failed)
    out = {"index": str(s.directory), "model": s.model_name, "added": s.added, "updated": s.updated,
           "unchanged": s.unchanged, "removed": s.removed, "failed": len(s.failed), "total": s.total,
           "reembedded": s.reembedded}
    if as_json:
        typer.echo(_json({**out, "failures": _failures_json(s.failed)}))
    else:
        typer.echo(f"index {s.directory}: added {s.added}, updated {s.updated}, unchanged {s.unchanged}, "
                   f"removed {s.removed}, failed {len(s.failed)}; {_count(s.total, 'photo')} in total")
    if not (s.added or s.updated or s.unchanged or s.failed):
        _err(_no_photos(photos))
    if strict and s.failed:
        raise typer.Exit(code=1)


@app.command("similar")
@handle_errors
def similar_cmd(photos: List[Path] = typer.Argument(..., help="Query photos (inside the index or not); the model "
                                                   "loads once, and only for a photo the index does not hold."),
                index: str = IndexOpt,
                model: Optional[str] = typer.Option(None, "--model", "-m", help="The index's model where it moved "
                                                    "since the index was built (the same file: checked by its hash)."),
                k: int = typer.Option(10, "-k", "--top-k", help="Number of neighbours."),
                min_score: float = typer.Option(-1.0, help="Only hits with at least this cosine score."),
                as_json: bool = JsonOpt,
                sheet: Optional[Path] = SheetOpt,
                device: str = DeviceOpt, precision: str = PrecisionOpt,
                max_pixels: Optional[int] = MaxPixelsOpt,
                trust_export: bool = typer.Option(False, "--trust-export", help="Query an index built with a "
                                                  "TorchScript export, loading it. Risk: a TorchScript file can run "
                                                  "code when loaded; only for exports you made or trust.")) -> None:
    """The photos in an index most similar to each PHOTO, with cosine scores and predicted labels."""
    from ..search import find_similar_many, photo_key

    _check_sheet(sheet)
    if sheet and len(photos) > 1:
        raise LandmarkError("--sheet draws one query's hits; pass one photo with it")
    cfg = _embed_config(1, device, precision, workers=0, max_pixels=max_pixels, quiet=True)
    results = find_similar_many(photos, index, k=k, min_score=min_score, cfg=cfg, trust_export=trust_export,
                                model_spec=model)
    # The query in the form of the hits (absolute, as the index holds paths), whatever form it was given in.
    queries = [photo_key(p) for p in photos]
    if as_json:  # one photo: its object; several: a list of them
        out = [r.to_json(q) for q, r in zip(queries, results)]
        typer.echo(_json(out[0] if len(out) == 1 else out))
    else:
        for query, result in zip(queries, results):
            typer.echo(f"query: {query}  (" + (f"looks like: {result.query_label}" if result.query_label
                                               else "none of the model's landmarks") + ")")
            for rank, h in enumerate(result.hits, 1):
                where = result.place(h.label)
                at = f" · {', '.join(v for v in (where.get('city'), where.get('country')) if v)}" if where else ""
                typer.echo(f"{rank:>3}. similarity {h.score:.3f}  {h.path}"
                           + (f"  [{h.label}{at}]" if h.label else ""))
            if not result.hits:
                typer.echo("no hits (lower --min-score, or index more photos)")
    if sheet:
        from ..render.sheets import write_sheet

        photo, result = photos[0], results[0]
        write_sheet(sheet, [(Path(h.path), [(h.label or "", h.score)]) for h in result.hits],
                    title=f"similar to {photo.name}", query=photo, max_pixels=cfg.max_pixels, score_name="similarity")
        typer.echo(f"contact sheet: {sheet}", err=as_json)


# --------------------------------------------------------------------------------- duplicates, group

@app.command("duplicates")
@handle_errors
def duplicates_cmd(photos: Optional[List[Path]] = typer.Argument(None, help="Photos or folders."),
                   model: Optional[str] = ModelOpt,
                   index: str = typer.Option(DEFAULT_INDEX, "--index", "-i", help="Index name (see "
                                             "`landmark index --help`) or folder; updated incrementally, so a "
                                             "second run embeds nothing and checks on pixels only pairs it has "
                                             "not checked before."),
                   tier: Optional[List[str]] = typer.Option(None, "--tier", help="exact|near|same_scene "
                                                            "(repeatable; default all three)."),
                   action: str = typer.Option("list", help="list | link (a folder of links per group, to review) | "
                                              "move (the others into --to DIR, keeping relative paths and "
                                              "sidecars; `--undo DIR` puts them back). Nothing is ever deleted."),
                   to: Optional[Path] = typer.Option(None, "--to", help="Target folder of link/move: outside the "
                                                     "scanned folders."),
                   keep: Optional[List[Path]] = typer.Option(None, "--keep", help="Keep this photo of its group "
                                                             "instead of the keep rule's choice (repeatable)."),
                   undo: Optional[Path] = typer.Option(None, "--undo", help="Put back every photo (and sidecar) "
                                                       "that --action move moved into this folder."),
                   as_json: bool = typer.Option(False, "--json", help="Print {\"groups\": [...]} as JSON."),
                   sheet: Optional[Path] = typer.Option(None, help="Write a contact sheet of the groups (.html or .png)."),
                   recursive: bool = RecursiveOpt,
                   follow_links: bool = FollowLinksOpt,
                   exclude: Optional[List[str]] = ExcludeOpt,
                   batch_size: int = BatchOpt, device: str = DeviceOpt,
                   precision: str = PrecisionOpt, max_pixels: Optional[int] = MaxPixelsOpt,
                   quiet: bool = QuietOpt, trust_export: bool = TrustOpt) -> None:
    """Exact copies, near duplicates (re-encoded, resized, cropped, edited) and same-scene bursts, with the one to keep."""
    from ..curation.duplicates import (ACTIONS, TIERS, DuplicateOptions, apply_action, check_target, choose_keepers,
                                       find_duplicates, member_line, report_json, sheet_items)
    from ..search import IndexOptions

    if undo is not None:
        if photos or action != "list" or to is not None:
            raise LandmarkError("--undo DIR puts moved photos back and takes no PHOTOS, --action or --to")
        from ..curation.relocate import undo_moves

        done = undo_moves(undo)
        _report_failures(done.failed)
        typer.echo(f"put back {len(done.done)} photo(s)" + (f" and {len(done.sidecars)} sidecar(s)" if done.sidecars
                                                             else "") + f" from {undo}")
        if done.done:
            typer.echo("they left the index when moved: the next `landmark index` or `landmark duplicates` on "
                       "their folders adds them again")
        if done.failed:
            raise typer.Exit(code=1)
        return
    if not photos:
        raise LandmarkError("give the photos or folders to look in: landmark duplicates PHOTOS... "
                            "(or --undo DIR to put moved photos back)")
    if action not in ACTIONS:
        raise LandmarkError(f"--action {action!r}: use {', '.join(ACTIONS)}")
    if action != "list" and to is None:
        raise LandmarkError(f"--action {action} needs --to DIR, a folder outside the photos; nothing was "
                            f"{'moved' if action == 'move' else 'linked'}")
    if to is not None:
        check_target(to, photos)
    _check_sheet(sheet)
    bad = [t for t in tier or () if t not in TIERS]
    if bad:
        raise LandmarkError(f"--tier {bad[0]!r}: use {', '.join(TIERS)}")
    cfg = _embed_config(batch_size, device, precision, max_pixels=max_pixels, quiet=quiet)
    iopts = IndexOptions(recursive=recursive, follow_links=follow_links, exclude=tuple(exclude or ()))
    report, _ = find_duplicates(photos, model, index, DuplicateOptions(tiers=tuple(tier or TIERS),
                                                                       max_pixels=cfg.max_pixels),
                                cfg, index_opts=iopts, trust_export=trust_export)
    report = choose_keepers(report, keep or ())
    _report_failures(report.failed)
    if as_json:
        typer.echo(_json(report_json(report)))
    else:
        for n, g in enumerate(report.groups, 1):
            typer.echo(f"#{n} {g.tier} {g.score:.3f}  keep {g.keep}  ({g.reason})")
            for m in g.members[1:]:
                typer.echo(f"      {m.path}  [{member_line(m)}]")
        counts = {t: sum(1 for g in report.groups if g.tier == t) for t in TIERS}
        typer.echo(f"{_count(report.photos, 'photo')}: " + ", ".join(f"{counts[t]} {t}" for t in TIERS) + " group(s), "
                   f"{sum(len(g.others) for g in report.groups)} photo(s) to review")
    if sheet:
        from ..render.sheets import write_sheet

        write_sheet(sheet, sheet_items(report), title=f"duplicates ({len(report.groups)} groups)",
                    max_pixels=cfg.max_pixels)
        typer.echo(f"contact sheet: {sheet}", err=as_json)
    if action != "list" and report.groups:
        done = apply_action(report, action, to, photos, index)
        _report_failures(done.failed)
        verb = "moved" if action == "move" else "linked"
        typer.echo(f"{verb} {len(done.done)} photo(s)" + (f" and {len(done.sidecars)} sidecar(s)" if done.sidecars
                                                           else "") + f" into {to}; nothing was deleted" +
                   (f" (undo: landmark duplicates --undo {to})" if action == "move" and done.done else ""),
                   err=as_json)
    if not report.photos and not report.failed:
        _err(_no_photos(photos))


@app.command("group")
@handle_errors
def group_cmd(photos: Optional[List[Path]] = typer.Argument(None, help="Photos or folders (with --name: the new "
                                                            "landmark name)."),
              model: Optional[str] = ModelOpt,
              index: str = IndexOpt,
              min_size: int = typer.Option(5, help="Fewest photos in a group."),
              method: str = typer.Option("auto", help="auto (graph when every photo is grouped, hdbscan for a "
                                         "trained model's unknown photos) | graph (whitened k-NN graphs, Leiden, "
                                         "majority vote) | hdbscan (density; better when most photos are of no "
                                         "landmark: leaves them ungrouped) | kmeans (faiss k-means, centroids "
                                         "merged)."),
              everything: bool = typer.Option(False, "--all", help="Group every photo, not only those the model "
                                              "calls unknown (the built-in model: always every photo)."),
              any_subject: bool = typer.Option(False, "--any-subject", help="Built-in model: keep groups of any "
                                               "subject (pets, meals, ...), not only of buildings and landforms."),
              verify: bool = typer.Option(True, "--verify/--no-verify", help="graph: rejoin neighbour photos whose "
                                          "keypoints match (the same facade seen twice); remembered in the index, "
                                          "so only new pairs are matched next time. --no-verify: faster, "
                                          "whole-photo features only."),
              out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write OUT/train/group-NN/ links: rename "
                                                 "the folders to landmark names, then `landmark train --data OUT`."),
              name: Optional[str] = typer.Option(None, "--name", help="Rename group folder NAME (under --out, "
                                                 "default groups/) to the landmark name given as the argument."),
              sheet: Optional[Path] = typer.Option(None, help="Contact sheet of the groups (.html or .png)."),
              as_json: bool = typer.Option(False, "--json", help="Print {\"groups\": [...], \"ungrouped\": [...]}."),
              recursive: bool = RecursiveOpt,
              exclude: Optional[List[str]] = ExcludeOpt,
              batch_size: int = BatchOpt, device: str = DeviceOpt, precision: str = PrecisionOpt,
              max_pixels: Optional[int] = MaxPixelsOpt,
              quiet: bool = QuietOpt, trust_export: bool = TrustOpt) -> None:
    """Cluster unlabelled photos into candidate landmarks; name each group once."""
    from ..curation.grouping import GroupOptions, group_photos, rename_group, write_group_links
    from ..search import IndexOptions

    if name is not None:
        if not photos or len(photos) != 1:
            raise LandmarkError('--name NAME takes the new name as its one argument: '
                                'landmark group --name group-07 "Eiffel Tower" --out DIR')
        dest = rename_group(out or Path("groups"), name, str(photos[0]))
        typer.echo(f"renamed {name} -> {dest}")
        return
    if not photos:
        raise LandmarkError("give photos or folders to group")
    _check_sheet(sheet)
    cfg = _embed_config(batch_size, device, precision, max_pixels=max_pixels, quiet=quiet)
    report = group_photos(photos, model, index, GroupOptions(min_size=min_size, method=method, everything=everything,
                                                              any_subject=any_subject, verify=verify),
                          cfg, index_opts=IndexOptions(recursive=recursive, exclude=tuple(exclude or ())),
                          trust_export=trust_export)
    _report_failures(report.failed)
    if as_json:
        typer.echo(_json({"groups": [{"name": g.name, "paths": [str(p) for p in g.paths]} for g in report.groups],
                          "ungrouped": [str(p) for p in report.ungrouped]}))
    else:
        for g in report.groups:
            typer.echo(f"{g.name}: {_count(len(g.paths), 'photo')}, e.g. {g.paths[0]}")
        typer.echo(f"{len(report.groups)} group(s) of {report.considered} photo(s); {len(report.ungrouped)} in no "
                   f"group" + (f"; {report.named} already named by the model (--all groups them too)"
                               if report.named else ""))
    if sheet:
        from ..render.sheets import write_sheet

        write_sheet(sheet, [(p, [(f"{g.name}: {_count(len(g.paths), 'photo')}", t)]) for g in report.groups
                            for p, t in zip(g.paths, g.typicality)],
                    title=f"{len(report.groups)} groups (score: likeness to the group, most typical first)",
                    max_pixels=cfg.max_pixels, sections=True)
        typer.echo(f"contact sheet: {sheet}", err=as_json)
    if out is not None and report.groups:
        done = write_group_links(report, out)
        _report_failures(done.failed)
        typer.echo(f"{len(done.done)} link(s) in {out / 'train'}; rename each group-NN folder to its landmark "
                   f"(or `landmark group --name group-01 NAME --out {out}`), then `landmark train --data {out}`",
                   err=as_json)
