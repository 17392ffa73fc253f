"""Errors the library raises; each message says what went wrong and how to fix it."""

from __future__ import annotations


class LandmarkError(Exception):
    """Base class: the CLI prints the message on one line and exits with code 1."""


class BadImageError(LandmarkError):
    """A photo that cannot be decoded (corrupt, truncated, not an image, too large)."""


class CheckpointError(LandmarkError):
    """A checkpoint or export that cannot be loaded safely or does not describe itself."""


class ModelNotFoundError(LandmarkError):
    """An unknown model name, or pretrained weights that are not available offline."""


class DataError(LandmarkError):
    """A dataset folder with the wrong layout, or a download/extraction that failed."""


class IndexStoreError(LandmarkError):
    """An index that is missing, built with another model, of a future format, or locked."""


class SidecarError(LandmarkError):
    """A sidecar file that cannot be read or merged safely."""


class LockedError(LandmarkError):
    """Another landmark run holds the lock on this index or folder."""


class PhotoLeftAlone(SidecarError):
    """A photo `--embed` will not write into or put a backup over (a link, read-only, a backup that is not its own);
    the run counts it as skipped and says why in one line."""
