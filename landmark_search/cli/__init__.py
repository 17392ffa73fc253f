"""The `landmark` command: parse, call the library, print, exit codes. Nothing else.

Library modules are imported inside commands so that `landmark --help` and a re-run of
`landmark tag` on an unchanged folder never pay for importing torch. This module holds the app, the
options and helpers every command shares; the commands live by job in data_cmds, training_cmds,
photo_cmds and index_cmds.
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

from .. import __version__
from ..config import DEFAULT_MAX_PIXELS
from ..errors import LandmarkError


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

PhotosArg = typer.Argument(..., help="Photos or folders.")
RecursiveOpt = typer.Option(True, "--recursive/--no-recursive", help="Walk sub-folders.")
FollowLinksOpt = typer.Option(False, "--follow-links", help="Follow symlinked folders.")
ExcludeOpt = typer.Option(None, help="Glob of names/paths to skip (repeatable).")
RecallOpt = typer.Option(None, "--recall", help="Open-set threshold of a trained model, as the fraction of its own "
                         "landmark photos to keep (leave-one-out on its training photos); lower it for fewer wrong "
                         "tags. Default: the model's own threshold, which tags at most 5 % of photos of landmarks it "
                         "was never shown (metrics.json says what it keeps).")
StrictOpt = typer.Option(False, help="Exit 1 when any photo failed.")
SheetOpt = typer.Option(None, help="Write a contact sheet (.html or .png).")
JsonOpt = typer.Option(False, "--json", help="Print JSON.")
JsonSummaryOpt = typer.Option(False, "--json", help="Print the summary as JSON.")
IndexOpt = typer.Option(DEFAULT_INDEX, "--index", "-i", help="Index name (kept in $LANDMARK_INDEX_HOME, else "
                        "index_home in the user's config.toml, else ./indexes/) or folder.")


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _count(n: int, noun: str) -> str:
    """`1 photo`, `2 photos`, `0 photos`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# Nothing is ever half-written (atomic writes, one transaction per batch), but the run may not have finished
# anything yet: the message says what holds either way.
INTERRUPTED = ("interrupted: no file was left half-written; run the same command again to go on from what had "
               "finished, if anything")


def handle_errors(func=None, *, interrupted: str = INTERRUPTED):
    """Print a LandmarkError or an OS error (paths, permissions) as one line on stderr and exit 1; Ctrl-C prints
    `interrupted` and exits 130. Use as @handle_errors, or @handle_errors(interrupted=...) for a command whose
    interrupted work is continued some other way."""
    if func is None:
        return functools.partial(handle_errors, interrupted=interrupted)

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
            _err(interrupted)
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
    from ..config import DEFAULT_MAX_PIXELS, EmbedConfig

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


def _failures_json(failed) -> list[dict]:
    """The --json form of the photos that were skipped: [{"path", "reason"}]."""
    return [{"path": str(path), "reason": str(reason)} for path, reason in failed]


def _exit_on_failures(failed, *, strict: bool, worked: bool) -> None:
    """Exit 1 when a photo failed under --strict, or when photos failed and none worked."""
    if failed and (strict or not worked):
        raise typer.Exit(code=1)


def _write_report(run: Path, data: Optional[Path], out: Optional[Path] = None) -> Optional[Path]:
    from ..render.report import write_report

    path = write_report(run, data=data, out=out)
    typer.echo(f"report: {path}")
    return path


# --------------------------------------------------------------------------------------------- classify

def _must_exist(path: Optional[Path], what: str, fix: str) -> None:
    """A path argument that is not there: one line, before anything heavy is imported."""
    if path is not None and not Path(path).exists():
        raise LandmarkError(f"{what} {path}: no such file or folder; {fix}")


def _warn_uncalibrated(name: str) -> None:
    _err(f"warning: {name} has no open-set calibration (trained before it existed): every photo is named "
         "as one of its landmarks; retrain it to get 'unknown' for photos of anything else")


def _no_photos(photos: Optional[List[Path]] = None) -> str:
    from ..photos.files import PHOTO_EXTENSIONS, RAW_EXTENSIONS

    where = f" in {', '.join(str(p) for p in photos)}" if photos else ""
    return (f"no photos found{where}: give photo files or folders holding "
            f"{', '.join(sorted(PHOTO_EXTENSIONS - RAW_EXTENSIONS))} or camera RAW ({', '.join(sorted(RAW_EXTENSIONS))}) "
            "files")


def _check_sheet(sheet: Optional[Path]) -> None:
    """Refuse a contact-sheet path that cannot work before any photo is processed."""
    if sheet:
        from ..render.sheets import check_sheet_path

        check_sheet_path(sheet)


def _collect_photos(photos: List[Path], recursive: bool = True, follow_links: bool = False,
                    exclude: Optional[List[str]] = None) -> tuple[list[Path], list]:
    from ..photos.files import iter_photos

    failed: list = []
    found = list(iter_photos(photos, recursive=recursive, follow_links=follow_links, exclude=exclude or (),
                             on_error=lambda p, why: failed.append((p, why))))
    return found, failed


# The commands register themselves on `app` when their modules load (help lists them in this order).
from . import data_cmds, training_cmds, photo_cmds, index_cmds, serve_cmd  # noqa: E402,F401


if __name__ == "__main__":  # pragma: no cover
    app()
