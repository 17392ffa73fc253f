"""Find photo files under folders: deterministic, loop-safe, and tolerant of folders that vanish."""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from landmark_search.errors import DataError

__all__ = [
    "HEIF_EXTENSIONS",
    "HEIF_HINT",
    "PHOTO_EXTENSIONS",
    "RAW_EXTENSIONS",
    "SIDECAR_EXTENSIONS",
    "ErrorCallback",
    "heif_available",
    "is_photo_name",
    "iter_photos",
    "register_optional_formats",
    "supported_extensions",
    "warn_skipped",
]

HEIF_EXTENSIONS: frozenset[str] = frozenset({".heic", ".heif"})
HEIF_HINT = "HEIC/HEIF needs the optional decoder: pip install 'landmark-search[heif]'"
# Camera RAW files are read through the full-size JPEG preview every camera embeds in them (data/images.py).
RAW_EXTENSIONS: frozenset[str] = frozenset({".nef", ".nrw", ".cr2", ".cr3", ".arw", ".srf", ".sr2", ".dng", ".orf",
                                            ".rw2", ".raf", ".pef", ".srw", ".raw", ".rwl", ".3fr", ".iiq", ".x3f"})
PHOTO_EXTENSIONS: frozenset[str] = (
    frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"}) | HEIF_EXTENSIONS | RAW_EXTENSIONS
)
# Our own sidecars (IMG_0001.jpg.json, IMG_0001.jpg.xmp) live beside the photos and are never photos.
SIDECAR_EXTENSIONS: frozenset[str] = frozenset({".json", ".xmp"})

ErrorCallback = Callable[[Path, str], None]


def warn_skipped(path: Path, reason: str) -> None:
    """The default ErrorCallback: one warning (a stderr line from the CLI) naming the photo and why it was skipped."""
    logging.getLogger(__name__).warning("skipping %s", reason if reason.startswith(str(path)) else f"{path}: {reason}")


@functools.lru_cache(maxsize=1)
def heif_available() -> bool:
    """Return True when pillow-heif can be imported, so .heic/.heif photos can be decoded."""
    try:
        import pillow_heif  # noqa: F401
    except Exception:  # a broken native libheif raises more than ImportError
        return False
    return True


@functools.lru_cache(maxsize=1)
def register_optional_formats() -> frozenset[str]:
    """Register optional Pillow openers (HEIF) once; return the extensions they enabled."""
    if not heif_available():
        return frozenset()
    import pillow_heif

    pillow_heif.register_heif_opener()
    return HEIF_EXTENSIONS


def supported_extensions() -> frozenset[str]:
    """Return the lower-case photo extensions this environment can decode."""
    if heif_available():
        return PHOTO_EXTENSIONS
    return PHOTO_EXTENSIONS - HEIF_EXTENSIONS


def is_photo_name(name: str, extensions: frozenset[str] | None = None) -> bool:
    """Return True when a file name has a photo extension (case-insensitive) and is not a sidecar."""
    suffix = os.path.splitext(name)[1].lower()
    return suffix in (supported_extensions() if extensions is None else extensions)


def _is_excluded(name: str, rel: str, patterns: Sequence[str]) -> bool:
    # Lower-cased on both sides since extensions match case-insensitively: "*.png" should drop "A.PNG".
    name, rel = name.lower(), rel.lower()
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(rel, p) for p in patterns)


def _report(on_error: ErrorCallback | None, path: Path, exc: OSError | str) -> None:
    if on_error is None:
        return
    reason = exc if isinstance(exc, str) else (exc.strerror or str(exc))
    on_error(path, reason)


def _stat_argument(path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise DataError(f"no such file or folder: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}: check its permissions") from None


def iter_photos(
    paths: Sequence[Path | str],
    *,
    recursive: bool = True,
    follow_links: bool = False,
    exclude: Sequence[str] = (),
    on_error: ErrorCallback | None = None,
) -> Iterator[Path]:
    """Yield photo files named by or found under `paths`, each once, in a deterministic order.

    Arguments are taken in the order given; inside a folder its files come first, then its
    subfolders, each sorted by name. Every argument is checked before anything is yielded.
    Raises DataError for an argument that does not exist; folders that cannot be listed while
    walking are skipped and passed to `on_error(path, reason)` instead.
    """
    patterns = tuple(p.lower() for p in exclude)
    # HEIC/HEIF are walked even without their optional decoder: decoding then skips and counts each one
    # with the install hint, instead of a library of iPhone photos silently coming out as "0 photos".
    extensions = PHOTO_EXTENSIONS
    # Validate every argument up front so a typo fails before any work is done.
    arguments = [(Path(p), _stat_argument(Path(p))) for p in paths]
    seen_files: set[str] = set()
    seen_dirs: set[tuple[int, int]] = set()

    for path, st in arguments:
        if stat.S_ISDIR(st.st_mode):
            # A folder named explicitly is walked even when it is a symlink (like `find -H`).
            yield from _walk(
                path, recursive, follow_links, patterns, extensions, seen_files, seen_dirs, on_error
            )
        elif stat.S_ISREG(st.st_mode):
            suffix = os.path.splitext(path.name)[1].lower()
            # Shell globs like `*` expand to our sidecars too: skip them, don't report them as bad photos.
            if suffix in SIDECAR_EXTENSIONS or _is_excluded(path.name, path.as_posix(), patterns):
                continue
            # Other extensions are still yielded: the user named the file; the decoder reports why it fails.
            key = os.path.realpath(path)
            if key not in seen_files:
                seen_files.add(key)
                yield path
        else:
            _report(on_error, path, "not a regular file or folder")


def _walk(
    root: Path,
    recursive: bool,
    follow_links: bool,
    patterns: Sequence[str],
    extensions: frozenset[str],
    seen_files: set[str],
    seen_dirs: set[tuple[int, int]],
    on_error: ErrorCallback | None,
) -> Iterator[Path]:
    """Depth-first walk of one folder; an explicit stack keeps deep trees off the recursion limit."""
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        folder, rel = stack.pop()
        try:
            st = os.stat(folder)
            # Identity of the real folder: a symlink back to an ancestor is recognised and not re-entered.
            ident = (st.st_dev, st.st_ino)
            if ident in seen_dirs:
                continue
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
            real_folder = os.path.realpath(folder)
        except OSError as exc:  # PermissionError, FileNotFoundError (vanished), NotADirectoryError, ...
            _report(on_error, folder, exc)
            continue
        seen_dirs.add(ident)

        subfolders: list[tuple[Path, str]] = []
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            entry_rel = f"{rel}/{name}" if rel else name
            if _is_excluded(name, entry_rel, patterns):
                continue
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir()  # follows symlinks
                is_file = not is_dir and entry.is_file()
            except OSError as exc:
                _report(on_error, Path(entry.path), exc)
                continue
            if is_dir:
                if recursive and (follow_links or not is_link):
                    subfolders.append((Path(entry.path), entry_rel))
                continue
            # Broken links, FIFOs and sockets are not files; a link to a file is.
            if not is_file or not is_photo_name(name, extensions):
                continue
            # realpath of the folder is computed once; only links need their own resolution.
            key = os.path.realpath(entry.path) if is_link else os.path.join(real_folder, name)
            if key in seen_files:
                continue
            seen_files.add(key)
            yield Path(entry.path)
        stack.extend(reversed(subfolders))
