"""untag: remove exactly what `landmark tag` added; no model, no torch."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import PhotoLeftAlone
from .sidecars.embedded import backup_path, take_back
from .sidecars.ownership import untag_json, untag_xmp
from .sidecars.jsonfile import SIDECAR_KEY, read_sidecar
from .tagging import WalkOptions, _folder_lock, _sweep, _walk, one_photo, recorded_xmp_path


@dataclass(frozen=True)
class UntagOptions(WalkOptions):
    """How `landmark untag` behaves."""

    xmp: bool = False


@dataclass
class UntagSummary:
    """What an untag run did."""

    cleaned: list[Path] = field(default_factory=list)  # something of ours was taken back
    untouched: list[Path] = field(default_factory=list)  # nothing of ours there
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # left alone on purpose, with the reason
    kept_backups: list[Path] = field(default_factory=list)  # --embed originals not put back (not what tag wrote)
    # What happened to each kind of file: "json"/"xmp" -> {"deleted": n, "restored": n, "removed": n}
    # (deleted: this tool created it; restored: your file's exact bytes back; removed: only ours taken out of it),
    # and "originals" -> {"restored": n, "removed": n} for photos `tag --embed` wrote into.
    files: dict[str, Counter] = field(default_factory=lambda: {"json": Counter(), "xmp": Counter(),
                                                               "originals": Counter()})
    stale_temps_removed: int = 0  # temp files an interrupted earlier run left beside its sidecars


def untag(paths: Sequence[Path], opts: UntagOptions) -> UntagSummary:
    """Remove exactly what `landmark tag` added: our JSON key and, with xmp, our XMP keywords. No model, no torch."""
    summary = UntagSummary()
    with _folder_lock(paths, opts.output_dir):
        folders: set[Path] = set()
        for photo, root, side in _walk(paths, opts, summary):
            folders.add(side.parent)
            mirror = opts.output_dir is not None
            write_root = opts.output_dir if mirror else root
            with one_photo(summary, photo) as outcome:
                entry = read_sidecar(side).get(SIDECAR_KEY)
                xmp = recorded_xmp_path(photo, root, side, entry, opts)
                results: dict[str, str] = {}
                if opts.xmp:
                    results["xmp"] = untag_xmp(xmp, entry, root=write_root, dry_run=opts.dry_run)
                elif isinstance(entry, dict) and isinstance(entry.get("xmp"), dict) and xmp.exists():
                    # Our JSON entry is the record of what to take out of the XMP: dropping it alone would leave
                    # our keywords there for good (a later tag would take them for the user's).
                    raise PhotoLeftAlone(f"{photo}: {xmp.name} holds the keywords `tag --xmp` wrote: add --xmp to "
                                         "`landmark untag` to take them out too")
                embedded = entry.get("embedded") if isinstance(entry, dict) else None
                if embedded is not None and not opts.embed:
                    raise PhotoLeftAlone(f"{photo} holds keywords `tag --embed` wrote into it: run `landmark untag "
                                         "--embed` to take them out (and put its original back)")
                if opts.embed:
                    results["originals"] = take_back(photo, embedded, dry_run=opts.dry_run)
                    if not opts.dry_run and results["originals"] != "restored" and backup_path(photo).exists():
                        summary.kept_backups.append(backup_path(photo))
                results["json"] = untag_json(side, root=write_root, dry_run=opts.dry_run)
            if not outcome.done:
                continue
            for kind, result in results.items():
                summary.files[kind][result] += 1
            changed = set(results.values()) & {"removed", "deleted", "restored"}
            (summary.cleaned if changed else summary.untouched).append(photo)
        if not opts.dry_run:
            _sweep(folders, summary)
    return summary
