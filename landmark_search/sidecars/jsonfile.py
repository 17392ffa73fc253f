"""Sidecar files beside photos: our JSON entry (`IMG_0001.jpg.json`) and XMP keywords (`IMG_0001.jpg.xmp`).

JSON sidecar layout: the file is a JSON object; everything in it belongs to the user or other tools
except the `"landmark_search"` key, which this module owns and replaces on each run:

    {"landmark_search": {
        "version": 1,
        "model": {"name": "...", "sha256": "..."},
        "tagged_at": "2024-05-01T12:00:00+00:00",
        "source": {"fingerprint": "<size>:<mtime_ns>"},   # of the photo; unchanged => skip re-tagging
        "options": {"top_k": 3, "min_score": 0.2, "recall": null, "xmp": false, ...},  # changed => re-tag
        "vocabulary": "landmarks",                          # or "imagenet": the built-in model's object names
        "tags": [{"label": "Eiffel Tower", "id": "03.Eiffel_Tower", "score": 0.91, "confidence": 0.97}, ...],
        "unknown": true, "nearest": {...},                  # only when no landmark was confident (no tags)
        "matched_keypoints": 37,                            # only when the tag rests on the geometric check
        "created": true, "before": "...", "xmp": {...}}}    # how untag gives the files back (ownership.py)

`score` is the softmax share among the model's classes; `confidence` (calibrated models) that the
photo shows that landmark at all (openset.py).

A file this module could not write back exactly as it read it (duplicate keys, numbers beyond a float,
NaN, nesting deeper than Python's recursion limit) is refused like invalid JSON and left untouched.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from landmark_search.errors import SidecarError
from landmark_search.fsutil import atomic_write_bytes, make_dirs

__all__ = [
    "JSON_SUFFIX",
    "SIDECAR_KEY",
    "SIDECAR_VERSION",
    "XMP_SUFFIX",
    "check_target",
    "safe_write",
    "symlink_message",
    "SidecarTag",
    "build_payload",
    "merge_sidecar",
    "photo_fingerprint",
    "read_sidecar",
    "Recorded",
    "checked_place",
    "read_recorded",
    "recorded",
    "sidecar_is_current",
    "sidecar_path",
    "write_sidecar",
]

SIDECAR_KEY = "landmark_search"
SIDECAR_VERSION = 1
JSON_SUFFIX = ".json"
XMP_SUFFIX = ".xmp"


class SidecarTag(NamedTuple):
    """One predicted label as stored in a sidecar."""

    label: str
    id: str  # the class id: the training folder name (or the ImageNet label)
    score: float


# ---------------------------------------------------------------------------------------------- paths


def sidecar_path(
    photo: Path, *, suffix: str = JSON_SUFFIX, output_dir: Path | None = None, root: Path | None = None
) -> Path:
    """Return `<photo name><suffix>` beside the photo, or mirrored under `output_dir` when one is given.

    The mirror keeps the photo's path relative to `root` (its absolute path when `root` is None),
    so photos with the same name in different folders never share a sidecar.
    """
    photo = Path(photo)
    name = photo.name + suffix
    if output_dir is None:
        return photo.with_name(name)
    if root is None:
        rel_parent = Path(*photo.resolve().parent.parts[1:])  # drop the anchor ("/" or "C:\\")
    else:
        try:
            rel_parent = photo.resolve().parent.relative_to(Path(root).resolve())
        except ValueError:
            raise SidecarError(
                f"{photo} is not inside {root}: pass the folder that contains it as the root"
            ) from None
    return Path(output_dir) / rel_parent / name


# ---------------------------------------------------------------------------------------------- JSON


def read_bytes(path: Path) -> bytes | None:
    """A sidecar's bytes, None when it does not exist; SidecarError naming it when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SidecarError(f"cannot read {path}: {exc.strerror or exc}: check its permissions") from None


def read_sidecar(path: Path) -> dict[str, Any]:
    """Return the sidecar's JSON object, {} when the file does not exist; never modifies the file."""
    path = Path(path)
    raw = read_bytes(path)
    if raw is None:
        return {}
    untouched = "it was left untouched"
    try:
        # -sig: tolerate a BOM written by Windows editors. The hooks refuse what json.dumps would
        # not write back as it was (a lost duplicate, 1e999 as Infinity): the file is the user's.
        data = json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_unique_keys, parse_float=_finite_float,
                          parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise SidecarError(f"{path} is not UTF-8 text: fix or delete it; {untouched}") from None
    except json.JSONDecodeError as exc:
        raise SidecarError(f"{path} is not valid JSON (line {exc.lineno}): fix or delete it; {untouched}") from None
    except _NotRewritable as exc:
        raise SidecarError(f"{path} {exc}; {untouched}") from None
    except RecursionError:
        raise SidecarError(f"{path} is nested too deeply to read: flatten or delete it; {untouched}") from None
    except ValueError:  # an integer of more than sys.get_int_max_str_digits() digits
        raise SidecarError(f"{path} holds an integer too long to read: store it as a string; {untouched}") from None
    if not isinstance(data, dict):
        raise SidecarError(
            f"{path} holds a JSON {_json_kind(data)}, not an object: fix or delete it; it was left untouched"
        )
    return data


@dataclass(frozen=True)
class Recorded:
    """Our entry in a photo's JSON sidecar as every reader sees it: each value checked, since the file is the
    user's and anyone may have edited it. What does not check out is left out, never passed on."""

    tags: tuple[dict[str, Any], ...] = ()  # {"label", "id", "score"[, "confidence"]}: text, and numbers in 0..1
    place: dict[str, Any] | None = None  # {"latitude", "longitude"} on Earth, and "name"/"city"/"country" text
    named: bool = False


_TEXT_MAX = 500  # a label or place name longer than this is not one


def recorded(sidecar: Mapping[str, Any]) -> Recorded:
    """The checked view of our entry in an already-read sidecar (Recorded() when there is none)."""
    entry = sidecar.get(SIDECAR_KEY)
    if not isinstance(entry, dict):
        return Recorded()
    tags = entry.get("tags")
    return Recorded(tuple(t for t in map(_checked_tag, tags if isinstance(tags, list) else []) if t is not None),
                    checked_place(entry.get("place")), entry.get("named") is True)


def read_recorded(path: Path) -> Recorded:
    """read_sidecar + recorded: SidecarError for a file that cannot be read, Recorded() when there is none."""
    return recorded(read_sidecar(path))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= _TEXT_MAX else None


def _unit(value: Any) -> float | None:
    """A number in 0..1 (bool is not a number here)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    return None


def _checked_tag(tag: Any) -> dict[str, Any] | None:
    if not isinstance(tag, dict) or not _text(tag.get("label")):
        return None
    out: dict[str, Any] = {"label": tag["label"], "id": _text(tag.get("id")) or tag["label"]}
    for key in ("score", "confidence"):
        if (value := _unit(tag.get(key))) is not None:
            out[key] = value
    return out


def checked_place(place: Any) -> dict[str, Any] | None:
    """A recorded place with a real position (finite numbers, latitude -90..90, longitude -180..180), else None."""
    if not isinstance(place, dict):
        return None
    lat, lon = place.get("latitude"), place.get("longitude")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (lat, lon)):
        return None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    minutes = place.get("minutes")  # geotag: how long after the photo it inherits from this one was taken
    return {"latitude": float(lat), "longitude": float(lon),
            **{k: place[k] for k in ("name", "city", "country", "from") if _text(place.get(k))},
            **({"minutes": float(minutes)} if isinstance(minutes, (int, float)) and not isinstance(minutes, bool)
               and math.isfinite(minutes) else {})}


class _NotRewritable(ValueError):
    """Valid-looking JSON that json.dumps could not write back unchanged; the message says why and the fix."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _NotRewritable(f"repeats the key {key!r}: keep one of its values or delete the file")
        obj[key] = value
    return obj


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotRewritable(f"holds the number {text[:40]}, beyond a float: store it as a string")
    return value


def _no_constant(name: str) -> float:
    raise _NotRewritable(f"holds {name}, which is not JSON: replace it with null or a string")


def _json_kind(value: object) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return kinds.get(type(value), "null")


def photo_fingerprint(photo: Path) -> str:
    """Return a cheap identity of the photo's content ("<size>:<mtime_ns>") to detect unchanged files."""
    st = os.stat(photo)
    return f"{st.st_size}:{st.st_mtime_ns}"


def build_payload(
    *,
    model_name: str,
    model_sha256: str,
    tags: Iterable[tuple],
    photo_fingerprint: str,
    tagged_at: _dt.datetime | None = None,
    options: Mapping[str, Any] | None = None,
    vocabulary: str | None = None,
    unknown: bool = False,
    nearest: tuple | None = None,
    runner_ups: Iterable[tuple] = (),
    matched_keypoints: int | None = None,
) -> dict[str, Any]:
    """Build our sidecar entry; `tags` are (label, id, score[, confidence]) tuples such as SidecarTag.

    `options` are the settings that shaped the tags (top_k, min_score, xmp...); a later run with
    other options re-tags instead of skipping the photo as current. `vocabulary` says what the
    labels are ("landmarks", or "imagenet" objects of the built-in model). An `unknown` photo (no
    landmark of the model is confident enough) gets no tag; `nearest` records the closest class.
    `runner_ups` are the landmark model's other candidates (landmarks exclude each other, so they are
    never tags), kept for whoever reviews the photo. `matched_keypoints`: the tag's confidence was below
    the threshold and the geometric check (models/verify.py) matched that many keypoints to a training photo.
    """
    when = tagged_at or _dt.datetime.now(_dt.timezone.utc)
    entry: dict[str, Any] = {
        "version": SIDECAR_VERSION,
        "model": {"name": model_name, "sha256": model_sha256},
        "tagged_at": when.isoformat(timespec="seconds"),
        "source": {"fingerprint": photo_fingerprint},
        **({"options": dict(options)} if options is not None else {}),
        **({"vocabulary": vocabulary} if vocabulary else {}),
        "tags": [_tag_entry(*tag) for tag in tags],
    }
    runner_ups = [_tag_entry(*tag) for tag in runner_ups]
    if runner_ups:
        entry["runner_ups"] = runner_ups
    if matched_keypoints is not None:
        entry["matched_keypoints"] = int(matched_keypoints)
    if unknown:
        entry["unknown"] = True
        if nearest is not None:
            entry["nearest"] = _tag_entry(*nearest)
    return entry


def _tag_entry(label: str, id_: str, score: float, confidence: float | None = None) -> dict[str, Any]:
    out = {"label": str(label), "id": str(id_), "score": round(float(score), 6)}
    if confidence is not None:
        out["confidence"] = round(float(confidence), 6)
    return out


def merge_sidecar(
    existing: Mapping[str, Any], payload: Mapping[str, Any], *, path: Path | None = None
) -> dict[str, Any]:
    """Return a new dict: every existing key kept, our `SIDECAR_KEY` entry replaced by `payload`.

    Raises SidecarError rather than overwrite an entry written by a newer format version.
    `path` is used only to name the file in that message.
    """
    where = f"{path}: " if path is not None else ""
    old = existing.get(SIDECAR_KEY)
    if isinstance(old, dict):
        version = old.get("version")
        if isinstance(version, int) and version > SIDECAR_VERSION:
            raise SidecarError(
                f"{where}'{SIDECAR_KEY}' entry has format version {version}, newer than this "
                f"landmark-search ({SIDECAR_VERSION}): upgrade landmark-search; the file was left untouched"
            )
    merged = dict(existing)
    merged[SIDECAR_KEY] = dict(payload)
    return merged


def sidecar_is_current(
    existing: Mapping[str, Any],
    model_sha256: str,
    photo_fingerprint: str,
    options: Mapping[str, Any] | None = None,
) -> bool:
    """Return True when our entry was written by this format, this model and for this exact photo.

    When `options` is given the entry must also record exactly these options (an entry from before
    options were recorded is not current, since what shaped its tags is unknown).
    """
    entry = existing.get(SIDECAR_KEY)
    if not isinstance(entry, dict) or entry.get("version") != SIDECAR_VERSION:
        return False
    model = entry.get("model")
    source = entry.get("source")
    return (
        isinstance(model, dict)
        and isinstance(source, dict)
        and model.get("sha256") == model_sha256
        and source.get("fingerprint") == photo_fingerprint
        and (options is None or entry.get("options") == dict(options))
    )


def write_sidecar(
    path: Path, data: Mapping[str, Any], *, root: Path | None = None, create_parents: bool = False
) -> None:
    """Atomically write `data` as UTF-8 JSON (indent 2, trailing newline), keeping the old file's mode.

    Refuses a symlinked sidecar and, when `root` is given, any target whose real folder is outside
    it. `create_parents` (for output_dir mirrors; requires `root`) creates missing folders under root.
    """
    path = Path(path)
    try:
        text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") read from the file: keep it escaped
            encoded = (json.dumps(data, indent=2, allow_nan=False) + "\n").encode("ascii")
    except RecursionError:
        raise SidecarError(
            f"{path} is nested too deeply to rewrite: flatten or delete it; it was left untouched"
        ) from None
    except ValueError:  # NaN or Infinity: never written, since strict JSON readers reject them
        raise SidecarError(f"cannot write {path}: the data holds NaN or Infinity, which JSON cannot store") from None
    safe_write(path, encoded, root=root, create_parents=create_parents)


# ---------------------------------------------------------------------------------------------- safe writes


def symlink_message(path: Path) -> str:
    return f"{path} is a symlink: refusing to write through it; replace it with a regular file"


def check_target(path: Path, root: Path | None) -> None:
    """Refuse to write through a symlink or outside `root` (a link could point out of the photo folder)."""
    if path.is_symlink():
        raise SidecarError(symlink_message(path))
    if root is not None:
        real_parent = path.parent.resolve()
        real_root = Path(root).resolve()
        if real_parent != real_root and real_root not in real_parent.parents:
            raise SidecarError(
                f"{path} resolves to {real_parent}, outside {real_root}: refusing to write there; "
                "check for symlinked folders"
            )
    if path.exists() and not path.is_file():
        raise SidecarError(f"{path} exists and is not a regular file: move it away")


def safe_write(path: Path, data: bytes, *, root: Path | None, create_parents: bool) -> None:
    """Write via a temp file in the same folder + fsync + os.replace so readers never see half a file."""
    check_target(path, root)
    folder = path.parent
    if create_parents and not folder.is_dir():
        if root is None:
            raise SidecarError(f"refusing to create {folder} without a root folder to contain it")
        make_dirs(folder, lambda why: SidecarError(f"cannot create {folder}: {why}"))
        check_target(path, root)  # a racing symlink could have appeared while creating folders
    elif not folder.is_dir():
        raise SidecarError(f"cannot write {path}: folder {folder} does not exist")

    try:
        atomic_write_bytes(path, data)  # keeps the replaced file's mode and owner; a new one follows the umask
    except OSError as exc:
        raise SidecarError(
            f"cannot write {path}: {exc.strerror or exc}: "
            "make the folder writable or write sidecars to an output folder"
        ) from None
