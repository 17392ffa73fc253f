"""Sidecar files beside photos: our JSON entry (`IMG_0001.jpg.json`) and XMP keywords (`IMG_0001.jpg.xmp`).

JSON sidecar layout: the file is a JSON object; everything in it belongs to the user or other tools
except the `"landmark_search"` key, which this module owns and replaces on each run:

    {"landmark_search": {
        "version": 1,
        "model": {"name": "...", "sha256": "..."},
        "tagged_at": "2024-05-01T12:00:00+00:00",
        "source": {"fingerprint": "<size>:<mtime_ns>"},   # of the photo; unchanged => skip re-tagging
        "options": {"top_k": 3, "min_score": 0.2, "xmp": false},  # changed => re-tag
        "tags": [{"label": "Eiffel Tower", "id": "03.Eiffel_Tower", "score": 0.91}, ...]}}

A file this module could not write back exactly as it read it (duplicate keys, numbers beyond a float,
NaN, nesting deeper than Python's recursion limit) is refused like invalid JSON and left untouched.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import re
import secrets
import stat
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from xml.parsers import expat

from landmark_search.errors import SidecarError

__all__ = [
    "JSON_SUFFIX",
    "SIDECAR_KEY",
    "SIDECAR_VERSION",
    "XMP_SUFFIX",
    "SidecarTag",
    "build_payload",
    "folder_is_writable",
    "merge_sidecar",
    "merge_xmp",
    "photo_fingerprint",
    "read_sidecar",
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


def folder_is_writable(folder: Path) -> bool:
    """Return True when new files can be created in `folder` (False on read-only mounts too)."""
    return os.access(folder, os.W_OK | os.X_OK)


# ---------------------------------------------------------------------------------------------- JSON


def read_sidecar(path: Path) -> dict[str, Any]:
    """Return the sidecar's JSON object, {} when the file does not exist; never modifies the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SidecarError(f"cannot read {path}: {exc.strerror or exc}: check its permissions") from None
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
    tags: Iterable[tuple[str, str, float]],
    photo_fingerprint: str,
    tagged_at: _dt.datetime | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build our sidecar entry; `tags` are (label, id, score) tuples such as SidecarTag.

    `options` are the settings that shaped the tags (top_k, min_score, xmp); a later run with
    other options re-tags instead of skipping the photo as current.
    """
    when = tagged_at or _dt.datetime.now(_dt.timezone.utc)
    return {
        "version": SIDECAR_VERSION,
        "model": {"name": model_name, "sha256": model_sha256},
        "tagged_at": when.isoformat(timespec="seconds"),
        "source": {"fingerprint": photo_fingerprint},
        **({"options": dict(options)} if options is not None else {}),
        "tags": [
            {"label": str(label), "id": str(id_), "score": round(float(score), 6)}
            for label, id_, score in tags
        ],
    }


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
    _atomic_write(path, encoded, root=root, create_parents=create_parents)


# ---------------------------------------------------------------------------------------------- safe writes


def _symlink_message(path: Path) -> str:
    return f"{path} is a symlink: refusing to write through it; replace it with a regular file"


def _check_target(path: Path, root: Path | None) -> None:
    """Refuse to write through a symlink or outside `root` (a link could point out of the photo folder)."""
    if path.is_symlink():
        raise SidecarError(_symlink_message(path))
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


def _atomic_write(path: Path, data: bytes, *, root: Path | None, create_parents: bool) -> None:
    """Write via a temp file in the same folder + fsync + os.replace so readers never see half a file."""
    _check_target(path, root)
    folder = path.parent
    if create_parents and not folder.is_dir():
        if root is None:
            raise SidecarError(f"refusing to create {folder} without a root folder to contain it")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SidecarError(f"cannot create {folder}: {exc.strerror or exc}") from None
        _check_target(path, root)  # a racing symlink could have appeared while creating folders
    elif not folder.is_dir():
        raise SidecarError(f"cannot write {path}: folder {folder} does not exist")

    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    except OSError as exc:
        raise SidecarError(f"cannot read {path}: {exc.strerror or exc}") from None

    tmp: Path | None = None
    try:
        while tmp is None:
            candidate = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
            try:
                # 0o666 lets the umask decide a new file's mode, like any other program creating it.
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            tmp = candidate
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if old is not None:
            if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                try:  # keep the owner's file theirs when run as root; not possible otherwise
                    os.chown(tmp, old.st_uid, old.st_gid)
                except OSError:
                    pass
            os.chmod(tmp, stat.S_IMODE(old.st_mode))  # after chown, which may clear mode bits
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise SidecarError(
            f"cannot write {path}: {exc.strerror or exc}: "
            "make the folder writable or write sidecars to an output folder"
        ) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    _fsync_dir(folder)


_TEMP_NAME = re.compile(r"^\.(.+\.(?:json|xmp))\.[0-9a-f]{8}\.tmp$")
STALE_TEMP_SECONDS = 600.0


def sweep_stale_temps(folder: Path, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Delete this module's own temp files (`.NAME.json.1a2b3c4d.tmp`) that a killed run left behind.

    Only names of that exact shape and at least `older_than` seconds old go, so a write in progress
    (by this run or another one) is never touched. Returns how many were removed.
    """
    removed = 0
    now = _dt.datetime.now().timestamp()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not _TEMP_NAME.match(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime >= older_than:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not supported everywhere, and failure leaves a correct file anyway.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- XMP

NS_X = "adobe:ns:meta/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_DC = "http://purl.org/dc/elements/1.1/"
NS_LR = "http://ns.adobe.com/lightroom/1.0/"

# Prefixes ElementTree should keep when rewriting a file; unknown ones would otherwise become ns0, ns1...
_KNOWN_PREFIXES = {
    "x": NS_X,
    "rdf": NS_RDF,
    "dc": NS_DC,
    "lr": NS_LR,
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "xmpMM": "http://ns.adobe.com/xap/1.0/mm/",
    "stEvt": "http://ns.adobe.com/xap/1.0/sType/ResourceEvent#",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
    "exif": "http://ns.adobe.com/exif/1.0/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "crs": "http://ns.adobe.com/camera-raw-settings/1.0/",
    "Iptc4xmpCore": "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/",
    "darktable": "http://darktable.sf.net/",
    "digiKam": "http://www.digikam.org/ns/1.0/",
}
# uri -> prefix of every namespace this module registered with ElementTree (a process-wide table).
_REGISTERED: dict[str, str] = {}
for _prefix, _uri in _KNOWN_PREFIXES.items():
    ET.register_namespace(_prefix, _uri)
    _REGISTERED[_uri] = _prefix

_RDF_DESCRIPTION = f"{{{NS_RDF}}}Description"
_RDF_LI = f"{{{NS_RDF}}}li"
_RDF_CONTAINERS = {f"{{{NS_RDF}}}Bag", f"{{{NS_RDF}}}Seq", f"{{{NS_RDF}}}Alt"}
_DC_SUBJECT = f"{{{NS_DC}}}subject"
_LR_HIERARCHICAL = f"{{{NS_LR}}}hierarchicalSubject"
_XPACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_XPACKET_END = '\n<?xpacket end="w"?>\n'
_INDENT = " "


def merge_xmp(
    path: Path,
    labels: Sequence[str],
    *,
    hierarchy_root: str = "Landmarks",
    root: Path | None = None,
    create_parents: bool = False,
) -> None:
    """Create or update an XMP sidecar so dc:subject and lr:hierarchicalSubject hold each label.

    Everything else in an existing file is kept and existing keywords are not duplicated; labels
    are only added, never removed. A file that does not parse is left untouched (SidecarError).
    When nothing new would be added the file is not rewritten. `root` and `create_parents` are
    as for `write_sidecar`.
    """
    path = Path(path)
    wanted = list(dict.fromkeys(label.strip() for label in labels if label.strip()))
    if not wanted:
        return
    if path.is_symlink():
        raise SidecarError(_symlink_message(path))
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = None
    except OSError as exc:
        raise SidecarError(f"cannot read {path}: {exc.strerror or exc}: check its permissions") from None

    xmpmeta, rdf = _parse_xmp(path, raw) if raw is not None else _new_xmp()
    descriptions = rdf.findall(_RDF_DESCRIPTION)
    if not descriptions:
        desc = _append_child(rdf, _RDF_DESCRIPTION, _depth(xmpmeta, rdf) + 1)
        desc.set(f"{{{NS_RDF}}}about", "")
        descriptions = [desc]
    # Each property goes where it already lives; a second copy in another Description would be invalid RDF.
    subject_home = next((d for d in descriptions if d.find(_DC_SUBJECT) is not None), descriptions[0])
    hier_home = next((d for d in descriptions if d.find(_LR_HIERARCHICAL) is not None), subject_home)

    prefix = f"{hierarchy_root}|" if hierarchy_root else ""
    added = _add_to_bag(subject_home, _DC_SUBJECT, wanted, _depth(xmpmeta, subject_home))
    hierarchical = [prefix + label for label in wanted]
    added += _add_to_bag(hier_home, _LR_HIERARCHICAL, hierarchical, _depth(xmpmeta, hier_home))
    if raw is not None and added == 0:
        return
    try:
        body = ET.tostring(xmpmeta, encoding="unicode")
    except RecursionError:
        raise SidecarError(
            f"{path} is nested too deeply to rewrite: flatten or delete it; it was left untouched"
        ) from None
    outside = _outside_root(raw) if raw is not None else None
    if outside is None:
        packet = (_XPACKET_BEGIN + body + _XPACKET_END).encode("utf-8")
    else:
        packet = outside[0] + body.encode("utf-8") + outside[1]
    _atomic_write(path, packet, root=root, create_parents=create_parents)


def _outside_root(raw: bytes) -> tuple[bytes, bytes] | None:
    """Return the bytes before and after the root element (XML declaration, xpacket, comments) to keep.

    None for a file not in UTF-8, whose bytes cannot be spliced around a UTF-8 body; it gets a
    new xpacket wrapper instead.
    """
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 byte-order marks
        return None
    parser = expat.ParserCreate()
    encoding: list[str | None] = [None]
    span: list[int] = []
    depth = 0

    def declaration(version: str, enc: str | None, standalone: int) -> None:
        encoding[0] = enc

    def start(name: str, attrs: dict) -> None:
        nonlocal depth
        if depth == 0:
            span.append(parser.CurrentByteIndex)
        depth += 1

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1
        if depth == 0:
            # At an end tag expat points to its "</"; after an empty element (<a/>), just past it.
            at = parser.CurrentByteIndex
            span.append(raw.index(b">", at) + 1 if raw.startswith(b"</", at) else at)

    parser.XmlDeclHandler, parser.StartElementHandler, parser.EndElementHandler = declaration, start, end
    try:
        parser.Parse(raw, True)
    except expat.ExpatError:
        return None
    if len(span) != 2 or (encoding[0] or "utf-8").lower() not in ("utf-8", "utf8"):
        return None
    return raw[:span[0]], raw[span[1]:]


def _new_xmp() -> tuple[ET.Element, ET.Element]:
    xmpmeta = ET.Element(f"{{{NS_X}}}xmpmeta")
    xmpmeta.text = "\n" + _INDENT
    rdf = ET.SubElement(xmpmeta, f"{{{NS_RDF}}}RDF")
    rdf.tail = "\n"
    return xmpmeta, rdf


def _parse_xmp(path: Path, raw: bytes) -> tuple[ET.Element, ET.Element]:
    """Parse an existing XMP file, returning (root element, rdf:RDF); SidecarError if it is not one."""
    untouched = "fix or delete it; it was left untouched"
    if b"<!ENTITY" in raw:
        # XMP never declares entities; refusing them rules out entity-expansion tricks.
        raise SidecarError(f"{path} declares XML entities, which XMP never does: {untouched}")
    try:
        for _event, (prefix, uri) in ET.iterparse(io.BytesIO(raw), events=("start-ns",)):
            _register_prefix(prefix, uri)
        builder = ET.TreeBuilder(insert_comments=True, insert_pis=True)
        top = ET.fromstring(raw, parser=ET.XMLParser(target=builder))
    except ET.ParseError as exc:
        line = exc.position[0]
        raise SidecarError(f"{path} is not valid XMP (line {line}): {untouched}") from None
    if top.tag == f"{{{NS_RDF}}}RDF":  # older writers omit the x:xmpmeta wrapper
        return top, top
    rdf = top.find(f"{{{NS_RDF}}}RDF") if top.tag in {f"{{{NS_X}}}xmpmeta", f"{{{NS_X}}}xapmeta"} else None
    if rdf is None:
        raise SidecarError(f"{path} is XML but not an XMP packet (no x:xmpmeta/rdf:RDF): {untouched}")
    return top, rdf


def _register_prefix(prefix: str, uri: str) -> None:
    """Keep a file's own prefix for a namespace, unless that would clash with one already registered."""
    if not prefix or uri in _REGISTERED or prefix in _REGISTERED.values():
        return
    try:
        ET.register_namespace(prefix, uri)
    except ValueError:  # "ns0"-style prefixes are reserved by ElementTree
        return
    _REGISTERED[uri] = prefix


def _add_to_bag(desc: ET.Element, prop_tag: str, values: Sequence[str], depth: int) -> int:
    """Append missing `values` as rdf:li of the property's container, creating it if needed; return count."""
    prop = desc.find(prop_tag)
    if prop is None:
        prop = _append_child(desc, prop_tag, depth + 1)
    container = next((child for child in prop if child.tag in _RDF_CONTAINERS), None)
    if container is None:
        # A non-standard plain-text value ("<dc:subject>family</dc:subject>") becomes the bag's first item.
        existing_text = (prop.text or "").strip()
        prop.text = None
        container = _append_child(prop, f"{{{NS_RDF}}}Bag", depth + 2)
        if existing_text:
            _append_child(container, _RDF_LI, depth + 3).text = existing_text
    present = {(li.text or "").strip() for li in container.findall(_RDF_LI)}
    added = 0
    for value in values:
        if value not in present:
            _append_child(container, _RDF_LI, depth + 3).text = value
            present.add(value)
            added += 1
    return added


def _depth(top: ET.Element, target: ET.Element) -> int:
    """Return how many levels below `top` the element sits (0 for top itself); used only for indentation."""
    level: list[ET.Element] = [top]
    depth = 0
    while level:
        if any(el is target for el in level):
            return depth
        level = [child for el in level for child in el]
        depth += 1
    return depth


def _append_child(parent: ET.Element, tag: str, depth: int) -> ET.Element:
    """Append a child indented to `depth`, touching only the whitespace around the new element."""
    children = list(parent)
    child = ET.SubElement(parent, tag)
    inner = "\n" + _INDENT * depth
    outer = "\n" + _INDENT * (depth - 1)
    if not children:
        if not (parent.text or "").strip():
            parent.text = inner
        child.tail = outer
    else:
        last = children[-1]
        if last.tail is None or not last.tail.strip():
            last.tail = inner
        child.tail = outer
    return child
