"""`landmark data ...`: get datasets (download, synth, from-gps)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import (
    _count, _report_failures, data_app, handle_errors,
)


# ------------------------------------------------------------------------------------------------ data

@data_app.command("download")
@handle_errors
def data_download(dest: Path = typer.Argument(Path("data/landmark_images"), help="Destination folder."),
                  url: Optional[str] = typer.Option(None, help="Mirror URL, file:// URL or local zip path."),
                  sha256: Optional[str] = typer.Option(None, help="Expected sha256 of the zip."),
                  max_size: str = typer.Option("8G", help="Largest download and extracted total (K/M/G/T); raise it "
                                               "for a bigger mirror."),
                  max_ratio: float = typer.Option(100.0, help="Largest extracted/zip size ratio (photos barely "
                                                  "compress; a zip bomb is ~1000x).")) -> None:
    """Download the original 50-landmark dataset (resumable, verified, safely extracted)."""
    from ..data.download import DEFAULT_URL, download_dataset, parse_size

    out = download_dataset(dest, url or DEFAULT_URL, sha256=sha256, progress=sys.stderr.isatty(),
                           max_bytes=parse_size(max_size), max_ratio=max_ratio)
    typer.echo(f"dataset ready in {out} (train/ and test/)")


@data_app.command("from-gps")
@handle_errors
def data_from_gps(photos: List[Path] = typer.Argument(..., help="Photos or folders, some of them geotagged."),
                  out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to create (DIR/train/<place>/, "
                                           "DIR/places.csv)."),
                  radius: float = typer.Option(300.0, "--radius", help="Metres: photos this close belong together."),
                  min_photos: int = typer.Option(5, "--min-photos", help="Photos a place needs to become a class."),
                  copy: bool = typer.Option(False, "--copy", help="Copy the photos instead of linking them."),
                  quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar.")) -> None:
    """Build a training set from your geotagged photos: one class per place, named from keywords or the nearest city."""
    from tqdm import tqdm

    from ..places.from_gps import dataset_from_gps

    with tqdm(unit="photo", desc="reading GPS", disable=quiet or not sys.stderr.isatty()) as bar:
        summary = dataset_from_gps(photos, out, radius_m=radius, min_photos=min_photos, copy=copy,
                                   progress=bar.update)
    _report_failures(summary.failed)
    typer.echo(f"{'place':<28}{'photos':>7}{'latitude':>11}{'longitude':>12}{'spread m':>10}  city, country")
    for c in summary.clusters:
        typer.echo(f"{c.name[:27]:<28}{len(c.photos):>7}{c.latitude:>11.5f}{c.longitude:>12.5f}{c.spread_m:>10.0f}"
                   f"  {c.city}, {c.country}")
    typer.echo(f"{_count(len(summary.clusters), 'place')} from {summary.geotagged} geotagged photo(s) ({summary.noise} in no "
               f"place, {summary.without_gps} without GPS); next: landmark train --data {out}")


@data_app.command("synth")
@handle_errors
def data_synth(dest: Path = typer.Argument(..., help="Destination folder."),
               classes: int = typer.Option(6, help="Number of landmark classes."),
               per_class: int = typer.Option(60, help="Photos per class (train + test)."),
               image_size: int = typer.Option(128, help="Square image size in pixels."),
               seed: int = typer.Option(0, help="Random seed.")) -> None:
    """Render a synthetic landmark dataset (seconds; the demo's and tests' default data)."""
    from ..data.synth import make_synthetic_dataset

    s = make_synthetic_dataset(dest, classes=classes, per_class=per_class, image_size=image_size, seed=seed)
    typer.echo(f"synthetic dataset in {s.root}: {len(s.classes)} classes, {s.n_train} train, {s.n_test} test")
