"""The `landmark` command: parse, call the library, print, exit codes. Nothing else.

Library modules are imported inside commands so that `landmark --help` and a re-run of
`landmark tag` on an unchanged folder never pay for importing torch.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from . import __version__
from .config import DEFAULT_MAX_PIXELS
from .errors import LandmarkError


class _OneLineErrors(TyperGroup):
    """A mistyped command line (unknown option, missing argument, bad value) is one line on stderr and exit
    code 2, like every other error is one line (exit 1), instead of a usage text and a boxed message."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except typer.Abort:
            _err("aborted")
            sys.exit(1)
        except Exception as exc:
            if not hasattr(exc, "format_message") or not hasattr(exc, "exit_code"):  # not a command-line error
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # `landmark` or `landmark data` alone: the help
                ctx = getattr(exc, "ctx", None)
                if ctx is not None:
                    typer.echo(ctx.get_help())
                sys.exit(0)
            ctx = getattr(exc, "ctx", None)
            hint = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
            _err(f"error: {exc.format_message().rstrip('.')}{hint}")
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=_OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Recognise landmarks in photos, find similar ones, tag photo libraries.")
data_app = typer.Typer(no_args_is_help=True, help="Get datasets: the original 50 landmarks, or synthetic scenes.")
app.add_typer(data_app, name="data")

DEFAULT_INDEX = "default"
ModelOpt = typer.Option(None, "--model", "-m", help="checkpoint (RUN/best.pt), export (model.pt, needs "
                        "--trust-export) or built-in name; default: efficientnet_lite0 with ImageNet labels (offline)")
PrecisionOpt = typer.Option("auto", help="auto (int8 for 256+ photos of a plain-conv model on a VNNI CPU, else bf16 "
                            "where the CPU has it)|fp32|bf16|fp16|int8.")
TrustOpt = typer.Option(False, "--trust-export", help="Allow a TorchScript export (from `landmark export`) as the "
                        "model. Risk: a TorchScript file can run code when loaded; only pass files you made or trust.")

BatchOpt = typer.Option(32, "--batch-size", help="Photos per model batch; lower it if memory runs short.")
DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA, then Apple MPS, else CPU)|cpu|cuda|mps.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")
MaxPixelsOpt = typer.Option(None, "--max-pixels", help=f"Refuse larger images (decompression bombs); default "
                            f"{DEFAULT_MAX_PIXELS} ({DEFAULT_MAX_PIXELS / 1e6:.0f} MP).")

RecallOpt = typer.Option(None, "--recall", help="Open-set threshold of a trained model, as the fraction of true "
                         "landmark photos to keep (measured on its validation photos); lower it for fewer wrong tags. "
                         "Default: the model's own (0.95).")


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _count(n: int, noun: str) -> str:
    """`1 photo`, `2 photos`, `0 photos`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def handle_errors(func):
    """Print a LandmarkError or an OS error (paths, permissions) as one line on stderr and exit 1; Ctrl-C exits 130."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except LandmarkError as exc:
            _err(f"error: {exc}")
            raise typer.Exit(code=1)
        except OSError as exc:  # an output path that is a file, a missing or read-only folder, a full disk
            where = f"{exc.filename}: " if exc.filename else ""
            if exc.errno == errno.ENOSPC:
                _err(f"error: {where}{exc.strerror}; free some space and run the same command again")
            else:
                _err(f"error: {where}{exc.strerror or exc}; check that the path exists, is a folder where one is "
                     "needed, and is writable")
            raise typer.Exit(code=1)
        except KeyboardInterrupt:
            # Nothing is ever half-written (atomic writes, one transaction per batch), but the run may not have
            # finished anything yet: say what holds either way.
            _err("interrupted: no file was left half-written; run the same command again to go on from what had "
                 "finished, if anything (`landmark train`: add --resume RUN)")
            raise typer.Exit(code=130)
    return wrapper


class _StderrLog(logging.Handler):
    """The library's log records (skipped photos, epoch lines, warnings) as plain stderr lines.

    It looks stderr up at each record, so it follows a stream swapped in later (CliRunner does)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _err(self.format(record))
        except Exception:  # a log line must never stop the work
            self.handleError(record)


def _log_to_stderr() -> None:
    library = logging.getLogger("landmark_search")
    if not any(isinstance(h, _StderrLog) for h in library.handlers):
        library.addHandler(_StderrLog())
        library.setLevel(logging.INFO)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"landmark-search {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """landmark-search: train landmark classifiers, classify, tag and search photos."""
    _log_to_stderr()
    # A file name that is not UTF-8 arrives as surrogate escapes: print its bytes as they are (as ls
    # does) rather than crash with UnicodeEncodeError where stdout is strict (e.g. en_US.UTF-8);
    # stderr gets Python's usual backslashreplace.
    for stream, errors in ((sys.stdout, "surrogateescape"), (sys.stderr, "backslashreplace")):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=errors)


def _embed_config(batch_size: int = 32, device: str = "auto", precision: str = "auto", workers: int = -1,
                  max_pixels: int | None = None, quiet: bool = False):
    from .config import DEFAULT_MAX_PIXELS, EmbedConfig

    if batch_size < 1:
        raise LandmarkError(f"--batch-size {batch_size}: use 1 or more (default 32)")
    if max_pixels is not None and max_pixels < 1:
        raise LandmarkError(f"--max-pixels {max_pixels}: use a positive pixel count (default {DEFAULT_MAX_PIXELS})")

    return EmbedConfig(batch_size=batch_size, workers=workers, device=device, precision=precision,
                       max_pixels=max_pixels or DEFAULT_MAX_PIXELS, progress=not quiet and sys.stderr.isatty())


def _json(data) -> str:
    """JSON for stdout: readable UTF-8, except that a file name which is not UTF-8 (surrogate escapes)
    makes the whole text \\u-escaped, so it stays valid JSON (json.loads + os.fsencode give the bytes back)."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        return json.dumps(data, indent=2)
    return text


def _report_failures(failed) -> None:
    """One stderr line per photo that was skipped, naming it and the reason."""
    for path, reason in failed:
        text = str(reason)
        _err(f"skipped {text}" if text.startswith(str(path)) else f"skipped {path}: {text}")


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
    from .data.download import DEFAULT_URL, download_dataset, parse_size

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

    from .data.from_gps import dataset_from_gps

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
    from .data.synth import make_synthetic_dataset

    s = make_synthetic_dataset(dest, classes=classes, per_class=per_class, image_size=image_size, seed=seed)
    typer.echo(f"synthetic dataset in {s.root}: {len(s.classes)} classes, {s.n_train} train, {s.n_test} test")


# ----------------------------------------------------------------------------------------------- models

@app.command("models")
@handle_errors
def models_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the registered models: parameters, embedding size, pretrained source."""
    from .models import build_model, get_spec, list_models

    rows = []
    for name in list_models():
        spec = get_spec(name)
        model = build_model(name, 50, pretrained=False)
        params = sum(p.numel() for p in model.parameters())
        rows.append({"name": name, "params_m": round(params / 1e6, 2), "feature_dim": spec.feature_dim,
                     "embedding_dim": model.embedding_dim, "image_size": spec.image_size,
                     "pretrained": spec.pretrained_source or "none (trains from scratch)",
                     "description": spec.description})
    if as_json:
        typer.echo(_json(rows))
        return
    typer.echo(f"{'name':<20}{'params':>9}{'features':>10}{'embed':>7}{'size':>6}  pretrained")
    for r in rows:
        typer.echo(f"{r['name']:<20}{r['params_m']:>8}M{r['feature_dim']:>10}{r['embedding_dim']:>7}"
                   f"{r['image_size']:>6}  {r['pretrained']}")
    typer.echo("(params and embed are for a 50-class head; transfer models embed 256-d by default)")


# ------------------------------------------------------------------------------------------------ train

@app.command("train")
@handle_errors
def train_cmd(model: str = typer.Option("efficientnet_lite0", "--model", "-m", help="Architecture (see `landmark models`)."),
              data: Optional[Path] = typer.Option(None, "--data", "-d", help="Dataset folder with train/ (+ test/); "
                                                  "with --resume, the run's own unless given."),
              out: Optional[Path] = typer.Option(None, help="Run folder; default runs/<model>-<timestamp>. One that holds a run is refused (see --resume, --overwrite)."),
              epochs: Optional[int] = typer.Option(None, help="Epochs (default: 60 for a frozen backbone's head, 15 "
                                                   "with --finetune, 120 from scratch, residual 60)."),
              batch_size: Optional[int] = typer.Option(None, help="Batch size (default 64; 32 when training from scratch)."),
              lr: Optional[float] = typer.Option(None, help="Learning rate (default: 3e-3 head, 3e-4 with --finetune, "
                                                 "2e-3 from scratch)."),
              optimizer: str = typer.Option("adamw", help="adamw (decoupled weight decay)|adam (L2 weight decay)|sgd (Nesterov momentum)."),
              weight_decay: float = typer.Option(5e-4, help="Weight decay."),
              dropout: float = typer.Option(0.3, help="Dropout before the embedding/classifier."),
              scheduler: str = typer.Option("auto", help="auto (cosine from scratch, plateau for transfer)|plateau|cosine|exponential|none."),
              image_size: Optional[int] = typer.Option(None, help="Input size (default per model)."),
              valid_split: float = typer.Option(0.2, help="Validation fraction of train/ (stratified)."),
              patience: int = typer.Option(8, help="Early stop after this many epochs without improvement."),
              head: str = typer.Option("embed", help="embed (Linear-BN-ReLU embedding + classifier) or linear."),
              embedding_dim: int = typer.Option(256, help="Embedding size of the embed head."),
              finetune: bool = typer.Option(False, "--finetune", help="Also train the pretrained backbone (lower LR)."),
              weights: str = typer.Option("default", help="default (ImageNet when available) or none."),
              device: str = typer.Option("auto", help="auto|cpu|cuda|mps."),
              precision: str = typer.Option("auto", help="auto|fp32|bf16|fp16."),
              label_smoothing: float = typer.Option(0.1, help="Cross-entropy label smoothing."),
              feature_views: int = typer.Option(8, help="Augmented views cached per photo (frozen backbone)."),
              workers: int = typer.Option(-1, help="DataLoader workers (-1: auto)."),
              time_limit: Optional[float] = typer.Option(None, help="Training time budget in seconds (scratch models: 780 by default; 0 = none); the LR schedule anneals within it."),
              mix: str = typer.Option("auto", help="Batch mixing: auto (CutMix/MixUp for from-scratch runs of 40+ epochs)|none|mixup|cutmix|both."),
              progressive: Optional[bool] = typer.Option(None, "--progressive/--no-progressive", help="Progressive resizing (3/4 -> 7/8 -> full size; residual 1/2 -> 3/4 -> full); default on when training from scratch at 64 px and up."),
              seed: int = typer.Option(0, help="Random seed."),
              places: Optional[Path] = typer.Option(None, "--places", help="CSV class,latitude,longitude[,name,country] "
                                                    "saying where each landmark is (default: DATA/places.csv, else "
                                                    "the training photos' GPS, else the shipped table); used by "
                                                    "`tag --geotag`."),
              resume: Optional[Path] = typer.Option(None, help="Continue the run in this folder (its last.pt)."),
              overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in --out (deletes only the files landmark wrote there)."),
              report: bool = typer.Option(True, "--report/--no-report", help="Write report.html at the end."),
              quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.")) -> None:
    """Train a landmark classifier; writes best.pt, last.pt, history.csv, curves.png, metrics.json."""
    # Paths are checked before torch is imported: a typo answers in a moment.
    _must_exist(data, "--data", "make a dataset with `landmark data synth DIR` or `landmark data download DIR`")
    _must_exist(resume, "--resume", "pass the run folder `landmark train` wrote")
    _must_exist(places, "--places", "pass a CSV with columns class,latitude,longitude")
    from .config import TrainConfig
    from .training import fit

    cfg = TrainConfig(model=model, data=str(data or ""), out=str(out or ""), epochs=epochs, batch_size=batch_size, lr=lr,
                      optimizer=optimizer, weight_decay=weight_decay, dropout=dropout, scheduler=scheduler,
                      image_size=image_size, valid_split=valid_split, patience=patience, head=head,
                      embedding_dim=embedding_dim, finetune=finetune, weights=weights, device=device,
                      precision=precision, label_smoothing=label_smoothing, feature_views=feature_views,
                      workers=workers, seed=seed, quiet=quiet, time_limit=time_limit, mix=mix,
                      progressive=progressive, places=str(places) if places else None)
    result = fit(cfg, resume=resume, overwrite=overwrite)
    m = result.metrics
    typer.echo(f"run: {result.paths.root}  ({m['epochs_run']} epochs, {result.seconds:.1f}s)")
    if "test_accuracy" in m:
        typer.echo(f"test accuracy {m['test_accuracy']:.4f}  macro-F1 {m['test_macro_f1']:.4f}  "
                   f"({_count(m['n_test'], 'photo')})")
    if report:
        _write_report(result.paths.root, None)
    typer.echo(f"best checkpoint: {result.paths.best}")


def _write_report(run: Path, data: Optional[Path], out: Optional[Path] = None) -> Optional[Path]:
    from .report import write_report

    path = write_report(run, data=data, out=out)
    typer.echo(f"report: {path}")
    return path


# --------------------------------------------------------------------------------------------- evaluate

@app.command("evaluate")
@handle_errors
def evaluate_cmd(checkpoint: Path = typer.Argument(..., help="Checkpoint (RUN/best.pt) or its run folder."),
                 data: Path = typer.Option(..., "--data", "-d", help="Dataset folder."),
                 split: str = typer.Option("test", help="test or train."),
                 out: Optional[Path] = typer.Option(None, help="Folder for the PNG and JSON (default: beside the checkpoint)."),
                 distractors: Optional[Path] = typer.Option(None, "--distractors", help="A folder of photos that show "
                                                            "none of the landmarks (people, pets, food...): adds GAP, "
                                                            "the false-tag rate and the recall at the threshold, and a "
                                                            "precision-recall PNG."),
                 recall: Optional[float] = RecallOpt,
                 as_json: bool = typer.Option(False, "--json", help="Print the JSON report."),
                 device: str = DeviceOpt, precision: str = typer.Option("auto", help="auto (bf16 where the CPU has it)|fp32|bf16|fp16|int8 (CPU, quantized body)."),
                 quiet: bool = QuietOpt) -> None:
    """Accuracy, macro/weighted F1, per-class table, confusion-matrix PNG and a JSON report."""
    _check_recall(recall)
    _must_exist(checkpoint, "checkpoint", "pass RUN/best.pt or the run folder from `landmark train`")
    _must_exist(data, "--data", "pass the dataset folder the model was trained on (with test/)")
    _must_exist(distractors, "--distractors", "pass a folder of photos that show none of the landmarks")
    from .training import evaluate_checkpoint

    done = evaluate_checkpoint(checkpoint, data, split, out, device=device, precision=precision,
                               quiet=quiet or not sys.stderr.isatty(),  # no progress bars in a log file
                               distractors=distractors, recall=recall)
    result, files = done.result, done.files
    if result.skipped:  # each was named on stderr as it was skipped
        _err(f"{len(result.skipped)} unreadable photo(s) skipped")
    if as_json:
        typer.echo(files["report"].read_text())
        return
    typer.echo(f"{split}: accuracy {result.accuracy:.4f}  macro-F1 {result.macro_f1:.4f}  "
               f"weighted-F1 {result.weighted_f1:.4f}  ({_count(len(result.y_true), 'photo')})")
    typer.echo(f"{'class':<32}{'precision':>10}{'recall':>8}{'f1':>8}{'n':>5}")
    for name, row in result.per_class.items():
        typer.echo(f"{name[:31]:<32}{row['precision']:>10.3f}{row['recall']:>8.3f}{row['f1-score']:>8.3f}"
                   f"{int(row['support']):>5}")
    if done.open_set is not None:
        o = done.open_set
        typer.echo(f"with {o.n_distractors} distractors ({o.score}): GAP {o.gap:.4f}  false-tag rate "
                   f"{o.false_tag_rate:.3f}  recall {o.recall:.3f}  precision {o.precision:.3f}  "
                   f"(threshold {o.threshold:.3f})\nprecision-recall curve: {files['pr_curve']}")
    typer.echo(f"confusion matrix: {files['confusion']}\nreport: {files['report']}")


# ----------------------------------------------------------------------------------------------- export

@app.command("export")
@handle_errors
def export_cmd(checkpoint: Path = typer.Argument(..., help="Checkpoint (RUN/best.pt)."),
               out: Path = typer.Option(Path("model.pt"), "--out", "-o", help="Output file."),
               fmt: str = typer.Option("torchscript", "--format", help="torchscript (torch.jit.load) or pt2 (torch.export).")) -> None:
    """Export a predictor that resizes, crops, normalises and applies softmax itself."""
    from .export import export_model

    path = export_model(checkpoint, out, fmt)
    typer.echo(f"exported {fmt} predictor to {path}")
    if fmt == "torchscript":
        typer.echo("load it with: model = torch.jit.load(path); probs = model(uint8_image_tensor); "
                   "model.class_names")


# --------------------------------------------------------------------------------------------- classify

def _must_exist(path: Optional[Path], what: str, fix: str) -> None:
    """A path argument that is not there: one line, before anything heavy is imported."""
    if path is not None and not Path(path).exists():
        raise LandmarkError(f"{what} {path}: no such file or folder; {fix}")


def _check_recall(recall: Optional[float]) -> Optional[float]:
    if recall is not None and not 0.0 < recall <= 1.0:
        raise LandmarkError(f"--recall {recall}: use a fraction of landmark photos to keep, in (0, 1] (e.g. 0.9)")
    return recall


def _warn_uncalibrated(loaded) -> None:
    if loaded.kind != "builtin" and loaded.openset is None:
        _err(f"warning: {loaded.name} has no open-set calibration (trained before it existed): every photo is named "
             "as one of its landmarks; retrain it to get 'unknown' for photos of anything else")


def _no_photos(photos: Optional[List[Path]] = None) -> str:
    from .data.files import PHOTO_EXTENSIONS, RAW_EXTENSIONS

    where = f" in {', '.join(str(p) for p in photos)}" if photos else ""
    return (f"no photos found{where}: give photo files or folders holding "
            f"{', '.join(sorted(PHOTO_EXTENSIONS - RAW_EXTENSIONS))} or camera RAW ({', '.join(sorted(RAW_EXTENSIONS))}) "
            "files")


def _check_sheet(sheet: Optional[Path]) -> None:
    """Refuse a contact-sheet path that cannot work before any photo is processed."""
    if sheet:
        from .sheets import check_sheet_path

        check_sheet_path(sheet)


def _collect_photos(photos: List[Path], recursive: bool = True, follow_links: bool = False,
                    exclude: Optional[List[str]] = None) -> tuple[list[Path], list]:
    from .data.files import iter_photos

    failed: list = []
    found = list(iter_photos(photos, recursive=recursive, follow_links=follow_links, exclude=exclude or (),
                             on_error=lambda p, why: failed.append((p, why))))
    return found, failed


@app.command("classify")
@handle_errors
def classify_cmd(photos: List[Path] = typer.Argument(..., help="Photos or folders."),
                 model: Optional[str] = ModelOpt,
                 top_k: int = typer.Option(5, "--top-k", "-k", help="Labels per photo."),
                 recall: Optional[float] = RecallOpt,
                 as_json: bool = typer.Option(False, "--json", help="Print JSON."),
                 sheet: Optional[Path] = typer.Option(None, help="Write a contact sheet (.html or .png)."),
                 batch_size: int = BatchOpt, device: str = DeviceOpt,
                 precision: str = PrecisionOpt,
                 max_pixels: Optional[int] = MaxPixelsOpt,
                 strict: bool = typer.Option(False, help="Exit 1 when any photo failed."),
                 quiet: bool = QuietOpt, trust_export: bool = TrustOpt) -> None:
    """Top-k landmark labels with probabilities for each photo."""
    if top_k < 1:
        raise LandmarkError(f"--top-k {top_k}: use 1 or more")
    _check_recall(recall)
    _check_sheet(sheet)
    found, failed = _collect_photos(photos)
    if not found and not failed:
        _err(_no_photos(photos))
        raise typer.Exit(code=1)
    from .embeddings import load_model  # torch: only once the arguments are known to be good
    from .tagging import classify

    loaded = load_model(model, trust_export=trust_export)
    cfg = _embed_config(batch_size, device, precision, max_pixels=max_pixels, quiet=quiet)
    results, bad = classify(found, loaded, cfg, top_k, recall=recall)
    _warn_uncalibrated(loaded)
    failed += bad
    if as_json:
        typer.echo(_json([{"path": str(r.path), "unknown": r.unknown,
                           "predictions": [{k: v for k, v in p.__dict__.items() if v is not None}
                                           for p in r.predictions]} for r in results]))
    else:
        for r in results:
            typer.echo(str(r.path) + ("  unknown: not one of this model's landmarks" if r.unknown else ""))
            for p in r.predictions:
                conf = "" if p.confidence is None else f"  (confidence {p.confidence:.2f})"
                typer.echo(f"  {p.score:6.1%}  {p.label}{conf}")
    if sheet:
        from .sheets import write_sheet

        write_sheet(sheet, [(r.path, [("unknown", 1.0 - (r.predictions[0].confidence or 0.0))] if r.unknown
                                 else [(p.label, p.score) for p in r.predictions[:3]]) for r in results],
                    title=f"landmark classify ({loaded.name})", max_pixels=cfg.max_pixels)
        typer.echo(f"contact sheet: {sheet}", err=as_json)
    _report_failures(failed)
    unknown = sum(r.unknown for r in results)
    if failed or unknown:
        _err(f"{len(results)} classified ({unknown} unknown), {len(failed)} failed")
    if strict and failed:
        raise typer.Exit(code=1)
    if not results and failed:
        raise typer.Exit(code=1)


# -------------------------------------------------------------------------------------------------- tag

@app.command("tag")
@handle_errors
def tag_cmd(photos: List[Path] = typer.Argument(..., help="Photos or folders."),
            model: Optional[str] = ModelOpt,
            top_k: int = typer.Option(3, "--top-k", "-k", help="At most this many tags per photo."),
            min_score: float = typer.Option(0.2, help="Only tags with at least this probability among the model's classes."),
            recall: Optional[float] = RecallOpt,
            xmp: bool = typer.Option(False, "--xmp", help="Also write keywords into <photo>.xmp (digiKam, darktable): "
                                     "Landmarks|NAME from a trained model, ImageNet|NAME from the built-in one; a re-run "
                                     "replaces the keywords this tool wrote before and never touches yours."),
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
            recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Walk sub-folders."),
            follow_links: bool = typer.Option(False, "--follow-links", help="Follow symlinked folders."),
            exclude: Optional[List[str]] = typer.Option(None, help="Glob of names/paths to skip (repeatable)."),
            as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
            strict: bool = typer.Option(False, help="Exit 1 when any photo failed."),
            batch_size: int = BatchOpt, device: str = DeviceOpt,
            precision: str = PrecisionOpt,
            max_pixels: Optional[int] = MaxPixelsOpt,
            quiet: bool = QuietOpt, trust_export: bool = TrustOpt) -> None:
    """Write landmark tags into a sidecar JSON per photo (<photo>.json), keeping every existing key."""
    from .tagging import TagOptions, tag

    if not 0.0 <= min_score <= 1.0:
        raise LandmarkError(f"--min-score {min_score}: use a probability between 0 and 1 (default 0.2)")
    _check_recall(recall)
    opts = TagOptions(top_k=top_k, min_score=min_score, recall=recall, xmp=xmp or geotag,
                      object_keywords=object_keywords, geotag=geotag, spread_minutes=spread_minutes,
                      dry_run=dry_run, force=force, output_dir=output_dir,
                      recursive=recursive, follow_links=follow_links, exclude=tuple(exclude or ()))
    summary = tag(photos, model, opts, _embed_config(batch_size, device, precision, max_pixels=max_pixels, quiet=quiet),
                  trust_export=trust_export)
    _report_failures(summary.failed)
    if summary.uncalibrated:
        _err("warning: this model has no open-set calibration (trained before it existed): every photo is named as "
             "one of its landmarks; retrain it to get 'unknown' for photos of anything else")
    if summary.no_places:
        _err("warning: --geotag placed nothing: this model knows no landmark's place (or cannot say 'unknown'); "
             "retrain it with a places.csv beside train/ (or --places FILE), or on geotagged photos")
    counts = {"tagged": len(summary.tagged), "no_tag": len(summary.untagged), "unknown": len(summary.unknown),
              **({"geotagged": len(summary.geotagged)} if geotag else {}),
              "unchanged": len(summary.unchanged), "failed": len(summary.failed),
              "stale_temps_removed": summary.stale_temps_removed}
    if as_json:
        typer.echo(_json({**counts, "dry_run": dry_run,
                          "failures": [{"path": str(p), "reason": str(r)} for p, r in summary.failed],
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
                   + (f"geotagged {counts['geotagged']}, " if geotag else "")
                   + f"unchanged {counts['unchanged']}, failed {counts['failed']}"
                   + (f"; removed {summary.stale_temps_removed} temp file(s) an interrupted run left"
                      if summary.stale_temps_removed else ""))
    if not (summary.failed or summary.tagged or summary.untagged or summary.unchanged):
        _err(_no_photos(photos))
    if strict and summary.failed:
        raise typer.Exit(code=1)
    if summary.failed and not summary.tagged and not summary.untagged and not summary.unchanged:  # nothing worked: as classify does
        raise typer.Exit(code=1)


@app.command("untag")
@handle_errors
def untag_cmd(photos: List[Path] = typer.Argument(..., help="Photos or folders."),
              xmp: bool = typer.Option(False, "--xmp", help="Also take this tool's keywords out of <photo>.xmp."),
              output_dir: Optional[Path] = typer.Option(None, help="The mirror tree given to `landmark tag --output-dir`."),
              dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be removed; change nothing."),
              recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Walk sub-folders."),
              follow_links: bool = typer.Option(False, "--follow-links", help="Follow symlinked folders."),
              exclude: Optional[List[str]] = typer.Option(None, help="Glob of names/paths to skip (repeatable)."),
              as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON.")) -> None:
    """Remove exactly what `landmark tag` added (its JSON key, its XMP keywords); everything of yours stays."""
    from .tagging import UntagOptions, untag

    summary = untag(photos, UntagOptions(xmp=xmp, dry_run=dry_run, output_dir=output_dir, recursive=recursive,
                                         follow_links=follow_links, exclude=tuple(exclude or ())))
    _report_failures(summary.failed)
    counts = {"cleaned": len(summary.cleaned), "sidecars_deleted": len(summary.deleted),
              "untouched": len(summary.untouched), "failed": len(summary.failed)}
    if as_json:
        typer.echo(_json({**counts, "dry_run": dry_run,
                          "failures": [{"path": str(p), "reason": str(r)} for p, r in summary.failed]}))
    else:
        verb = "would clean" if dry_run else "cleaned"
        typer.echo(f"{verb} {counts['cleaned']} photo(s) (sidecars deleted: {counts['sidecars_deleted']}), "
                   f"nothing of ours in {counts['untouched']}, failed {counts['failed']}")
    if not (summary.failed or summary.cleaned or summary.untouched):
        _err(_no_photos(photos))
        raise typer.Exit(code=1)
    if summary.failed:
        raise typer.Exit(code=1)


# --------------------------------------------------------------------------------------- index, similar

@app.command("index")
@handle_errors
def index_cmd(photos: List[Path] = typer.Argument(..., help="Photos or folders to index."),
              model: Optional[str] = ModelOpt,
              index: str = typer.Option(DEFAULT_INDEX, "--index", "-i", help="Index name (under indexes/) or folder."),
              recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Walk sub-folders."),
              follow_links: bool = typer.Option(False, "--follow-links", help="Follow symlinked folders."),
              exclude: Optional[List[str]] = typer.Option(None, help="Glob of names/paths to skip (repeatable)."),
              index_type: str = typer.Option("auto", help="auto|flat|hnsw|ivf."),
              prune: bool = typer.Option(True, "--prune/--no-prune", help="Drop photos that disappeared under the given folders."),
              rebuild: bool = typer.Option(False, "--rebuild", help="Start the index afresh from PHOTOS (the fix for a "
                                           "damaged index): deletes its manifest and vector cache first."),
              batch_size: int = BatchOpt, device: str = DeviceOpt,
              precision: str = PrecisionOpt,
              max_pixels: Optional[int] = MaxPixelsOpt,
              as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
              strict: bool = typer.Option(False, help="Exit 1 when any photo failed."),
              quiet: bool = QuietOpt, trust_export: bool = TrustOpt) -> None:
    """Add photos to a similarity index (incremental: only new or changed photos are embedded)."""
    from .index import INDEX_TYPES
    from .indexing import IndexOptions, build_index

    if index_type not in INDEX_TYPES:
        raise LandmarkError(f"--index-type {index_type!r}: use {', '.join(INDEX_TYPES)}")
    opts = IndexOptions(recursive=recursive, follow_links=follow_links, exclude=tuple(exclude or ()),
                        index_type=index_type, prune=prune, rebuild=rebuild)
    s = build_index(photos, model, index, opts, _embed_config(batch_size, device, precision, max_pixels=max_pixels,
                                                              quiet=quiet), trust_export=trust_export)
    _report_failures(s.failed)
    out = {"index": str(s.directory), "model": s.model_name, "added": s.added, "updated": s.updated,
           "unchanged": s.unchanged, "removed": s.removed, "failed": len(s.failed), "total": s.total}
    if as_json:
        typer.echo(_json({**out, "failures": [{"path": str(p), "reason": str(r)} for p, r in s.failed]}))
    else:
        typer.echo(f"index {s.directory}: added {s.added}, updated {s.updated}, unchanged {s.unchanged}, "
                   f"removed {s.removed}, failed {len(s.failed)}; {_count(s.total, 'photo')} in total")
    if not (s.added or s.updated or s.unchanged or s.failed):
        _err(_no_photos(photos))
    if strict and s.failed:
        raise typer.Exit(code=1)


@app.command("similar")
@handle_errors
def similar_cmd(photo: Path = typer.Argument(..., help="Query photo (inside the index or not)."),
                index: str = typer.Option(DEFAULT_INDEX, "--index", "-i", help="Index name (under indexes/) or folder."),
                model: Optional[str] = typer.Option(None, "--model", "-m", help="The index's model where it moved "
                                                    "since the index was built (the same file: checked by its hash)."),
                k: int = typer.Option(10, "-k", "--top-k", help="Number of neighbours."),
                min_score: float = typer.Option(-1.0, help="Only hits with at least this cosine score."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON."),
                sheet: Optional[Path] = typer.Option(None, help="Write a contact sheet (.html or .png)."),
                device: str = DeviceOpt, precision: str = PrecisionOpt,
                max_pixels: Optional[int] = MaxPixelsOpt,
                trust_export: bool = typer.Option(False, "--trust-export", help="Query an index built with a "
                                                  "TorchScript export, loading it. Risk: a TorchScript file can run "
                                                  "code when loaded; only for exports you made or trust.")) -> None:
    """The photos in an index most similar to PHOTO, with cosine scores and predicted labels."""
    from .indexing import find_similar

    _check_sheet(sheet)
    cfg = _embed_config(1, device, precision, workers=0, max_pixels=max_pixels, quiet=True)
    result = find_similar(photo, index, k=k, min_score=min_score, cfg=cfg, trust_export=trust_export, model_spec=model)
    if as_json:
        typer.echo(_json({"query": str(photo), "label": result.query_label,
                          "hits": [{"path": h.path, "score": round(h.score, 6), "label": h.label}
                                   for h in result.hits]}))
    else:
        typer.echo(f"query: {photo}  (" + (f"looks like: {result.query_label}" if result.query_label
                                           else "none of the model's landmarks") + ")")
        for rank, h in enumerate(result.hits, 1):
            typer.echo(f"{rank:>3}. similarity {h.score:.3f}  {h.path}" + (f"  [{h.label}]" if h.label else ""))
        if not result.hits:
            typer.echo("no hits (lower --min-score, or index more photos)")
    if sheet:
        from .sheets import write_sheet

        write_sheet(sheet, [(Path(h.path), [(h.label or "", h.score)]) for h in result.hits],
                    title=f"similar to {photo.name}", query=photo, max_pixels=cfg.max_pixels, score_name="similarity")
        typer.echo(f"contact sheet: {sheet}", err=as_json)


# --------------------------------------------------------------------------------- duplicates, group

@app.command("duplicates")
@handle_errors
def duplicates_cmd(photos: List[Path] = typer.Argument(..., help="Photos or folders (with --action link|move "
                                                       "and no --to, the last one is the target folder DIR)."),
                   model: Optional[str] = ModelOpt,
                   index: str = typer.Option(DEFAULT_INDEX, "--index", "-i", help="Index name (under indexes/) or "
                                             "folder; updated incrementally, so a second run embeds nothing."),
                   tier: Optional[List[str]] = typer.Option(None, "--tier", help="exact|near|same_scene "
                                                            "(repeatable; default all three)."),
                   action: str = typer.Option("list", help="list | link (a folder of links per group, to review) | "
                                              "move (the others into DIR, keeping relative paths and sidecars). "
                                              "Nothing is ever deleted."),
                   to: Optional[Path] = typer.Option(None, "--to", help="Target folder DIR of link/move."),
                   as_json: bool = typer.Option(False, "--json", help="Print {\"groups\": [...]} as JSON."),
                   sheet: Optional[Path] = typer.Option(None, help="Write a contact sheet of the groups (.html or .png)."),
                   recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Walk sub-folders."),
                   follow_links: bool = typer.Option(False, "--follow-links", help="Follow symlinked folders."),
                   exclude: Optional[List[str]] = typer.Option(None, help="Glob of names/paths to skip (repeatable)."),
                   batch_size: int = BatchOpt, device: str = DeviceOpt,
                   precision: str = PrecisionOpt, max_pixels: Optional[int] = MaxPixelsOpt,
                   quiet: bool = QuietOpt, trust_export: bool = TrustOpt) -> None:
    """Exact copies, near duplicates (re-encoded, resized, cropped, edited) and same-scene bursts, with the one to keep."""
    from .duplicates import ACTIONS, TIERS, DuplicateOptions, apply_action, find_duplicates, report_json, \
        sheet_items, skip_patterns
    from .indexing import IndexOptions

    if action not in ACTIONS:
        raise LandmarkError(f"--action {action!r}: use {', '.join(ACTIONS)}")
    if action != "list" and to is None:
        if len(photos) < 2:
            raise LandmarkError(f"--action {action} needs a target folder: PHOTOS... --action {action} DIR "
                                "(or --to DIR)")
        photos, to = photos[:-1], photos[-1]
    if to is not None and to.exists() and not to.is_dir():
        raise LandmarkError(f"{to} is a file; --action {action} needs a folder")
    _check_sheet(sheet)
    bad = [t for t in tier or () if t not in TIERS]
    if bad:
        raise LandmarkError(f"--tier {bad[0]!r}: use {', '.join(TIERS)}")
    cfg = _embed_config(batch_size, device, precision, max_pixels=max_pixels, quiet=quiet)
    skip = skip_patterns(to, photos) if to is not None else ()
    iopts = IndexOptions(recursive=recursive, follow_links=follow_links, exclude=tuple(exclude or ()) + skip)
    report, _ = find_duplicates(photos, model, index, DuplicateOptions(tiers=tuple(tier or TIERS),
                                                                       max_pixels=cfg.max_pixels),
                                cfg, index_opts=iopts, trust_export=trust_export)
    _report_failures(report.failed)
    if as_json:
        typer.echo(_json(report_json(report)))
    else:
        for n, g in enumerate(report.groups, 1):
            typer.echo(f"#{n} {g.tier} {g.score:.3f}  keep {g.keep}  ({g.reason})")
            for other in g.others:
                typer.echo(f"      {other}")
        counts = {t: sum(1 for g in report.groups if g.tier == t) for t in TIERS}
        typer.echo(f"{_count(report.photos, 'photo')}: " + ", ".join(f"{counts[t]} {t}" for t in TIERS) + " group(s), "
                   f"{sum(len(g.others) for g in report.groups)} photo(s) to review")
    if sheet:
        from .sheets import write_sheet

        write_sheet(sheet, sheet_items(report), title=f"duplicates ({len(report.groups)} groups)",
                    max_pixels=cfg.max_pixels)
        typer.echo(f"contact sheet: {sheet}", err=as_json)
    if action != "list" and report.groups:
        done = apply_action(report, action, to, photos, index)
        _report_failures(done.failed)
        verb = "moved" if action == "move" else "linked"
        typer.echo(f"{verb} {len(done.done)} photo(s)" + (f" and {len(done.sidecars)} sidecar(s)" if done.sidecars
                                                           else "") + f" into {to}; nothing was deleted",
                   err=as_json)
    if not report.photos and not report.failed:
        _err(_no_photos(photos))


@app.command("group")
@handle_errors
def group_cmd(photos: Optional[List[Path]] = typer.Argument(None, help="Photos or folders (with --name: the new "
                                                            "landmark name)."),
              model: Optional[str] = ModelOpt,
              index: str = typer.Option(DEFAULT_INDEX, "--index", "-i", help="Index name (under indexes/) or folder."),
              min_size: int = typer.Option(5, help="Fewest photos in a group."),
              method: str = typer.Option("hdbscan", help="hdbscan (density; leaves outliers ungrouped) | kmeans "
                                         "(faiss k-means, centroids merged)."),
              everything: bool = typer.Option(False, "--all", help="Group every photo, not only those the model "
                                              "calls unknown (the built-in model: always every photo)."),
              out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write OUT/train/group-NN/ links: rename "
                                                 "the folders to landmark names, then `landmark train --data OUT`."),
              name: Optional[str] = typer.Option(None, "--name", help="Rename group folder NAME (under --out, "
                                                 "default groups/) to the landmark name given as the argument."),
              sheet: Optional[Path] = typer.Option(None, help="Contact sheet of the groups (.html or .png)."),
              as_json: bool = typer.Option(False, "--json", help="Print {\"groups\": [...], \"ungrouped\": [...]}."),
              recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Walk sub-folders."),
              exclude: Optional[List[str]] = typer.Option(None, help="Glob of names/paths to skip (repeatable)."),
              batch_size: int = BatchOpt, device: str = DeviceOpt, precision: str = PrecisionOpt,
              max_pixels: Optional[int] = MaxPixelsOpt,
              quiet: bool = QuietOpt, trust_export: bool = TrustOpt) -> None:
    """Cluster unlabelled photos into candidate landmarks; name each group once."""
    from .grouping import GroupOptions, group_photos, rename_group, write_group_links
    from .indexing import IndexOptions

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
    report = group_photos(photos, model, index, GroupOptions(min_size=min_size, method=method, everything=everything),
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
        from .sheets import write_sheet

        write_sheet(sheet, [(p, [(g.name, float(len(g.paths)))]) for g in report.groups for p in g.paths],
                    title=f"{len(report.groups)} groups (score: photos in the group)", max_pixels=cfg.max_pixels)
        typer.echo(f"contact sheet: {sheet}", err=as_json)
    if out is not None and report.groups:
        done = write_group_links(report, out)
        _report_failures(done.failed)
        typer.echo(f"{len(done.done)} link(s) in {out / 'train'}; rename each group-NN folder to its landmark "
                   f"(or `landmark group --name group-01 NAME --out {out}`), then `landmark train --data {out}`",
                   err=as_json)


# ------------------------------------------------------------------------------------- explain, report

@app.command("explain")
@handle_errors
def explain_cmd(photos: List[Path] = typer.Argument(..., help="Photos or folders."),
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
    from .explain import explain_photos  # torch: only once there are photos to explain

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
    """One self-contained HTML map with a marker per place (works offline; OpenStreetMap tiles when online)."""
    from .config import DEFAULT_MAX_PIXELS
    from .placemap import write_map

    path, places, without = write_map(photos, out, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
    typer.echo(f"map: {path}  ({len(places)} place(s), {sum(len(p.photos) for p in places)} photo(s) with a "
               f"position, {without} without)")


@app.command("report")
@handle_errors
def report_cmd(run: Path = typer.Argument(..., help="Run folder written by `landmark train` (or its best.pt)."),
               data: Optional[Path] = typer.Option(None, "--data", "-d", help="Dataset folder (default: the one in "
                                                   "the run's config.json); its test/ photos fill the mistakes grid."),
               out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file (default: RUN/report.html).")) -> None:
    """One self-contained HTML page: config, curves, metrics, per-class table, confusions, mistakes with Grad-CAM."""
    from .errors import DataError
    from .report import write_report
    from .training import dataset_dir

    if run.is_file():
        if run.suffix != ".pt":
            raise DataError(f"{run} is a file; pass the run folder `landmark train` wrote (the one holding best.pt)")
        run = run.parent  # RUN/best.pt names its run
    if data is not None:
        data = dataset_dir(data)
    typer.echo(f"report: {write_report(run, data=data, out=out)}")


# ------------------------------------------------------------------------------------------------- demo

@app.command("demo")
@handle_errors
def demo_cmd(out: Path = typer.Option(Path("demo-output"), help="Folder for everything the demo makes."),
             quiet: bool = QuietOpt) -> None:
    """Synthetic data -> train -> evaluate -> export -> classify -> index -> tag -> similar, with a summary."""
    from .demo import run_demo

    summary = run_demo(out, quiet=quiet, echo=typer.echo)
    typer.echo("\n" + summary)


if __name__ == "__main__":  # pragma: no cover
    app()
