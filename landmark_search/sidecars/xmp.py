"""XMP sidecar keywords (`IMG_0001.jpg.xmp`): ours are added, replaced and taken back; the user's are never touched.

What this tool wrote is recorded in the file itself, in its own namespace, so a later run (or
`landmark untag`) knows which keywords are its own even without the JSON sidecar:

    <rdf:Description ... xmlns:landmarksearch="http://ns.landmark-search.org/xmp/1.0/">
      <landmarksearch:addedSubject><rdf:Bag><rdf:li>Taj Mahal</rdf:li></rdf:Bag></landmarksearch:addedSubject>
      <landmarksearch:addedHierarchicalSubject>...<rdf:li>Landmarks|Taj Mahal</rdf:li>...
      <landmarksearch:createdFile>True</landmarksearch:createdFile>      (only when this tool created the file)

A keyword the file already held before this tool added it is the user's: it is not recorded, so
it is never removed. Everything else in the file is kept; a file that does not parse, declares
entities or DTDs (defusedxml), or is larger than MAX_XMP_BYTES is refused and left untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence
from xml.etree import ElementTree as ET
from xml.parsers import expat

import defusedxml
import defusedxml.ElementTree as DET

from ..errors import SidecarError
from .jsonfile import check_target, read_bytes, safe_write, symlink_message

NS_X = "adobe:ns:meta/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_DC = "http://purl.org/dc/elements/1.1/"
NS_LR = "http://ns.adobe.com/lightroom/1.0/"
NS_OURS = "http://ns.landmark-search.org/xmp/1.0/"
# Real XMP sidecars are kilobytes; a bigger file is not one this tool will parse and rewrite.
MAX_XMP_BYTES = 16 << 20

# Prefixes ElementTree should keep when rewriting a file; unknown ones would otherwise become ns0, ns1...
_KNOWN_PREFIXES = {
    "x": NS_X,
    "rdf": NS_RDF,
    "dc": NS_DC,
    "lr": NS_LR,
    "landmarksearch": NS_OURS,
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
_RDF_ABOUT = f"{{{NS_RDF}}}about"
_RDF_LI = f"{{{NS_RDF}}}li"
_RDF_CONTAINERS = {f"{{{NS_RDF}}}Bag", f"{{{NS_RDF}}}Seq", f"{{{NS_RDF}}}Alt"}
_DC_SUBJECT = f"{{{NS_DC}}}subject"
_LR_HIERARCHICAL = f"{{{NS_LR}}}hierarchicalSubject"
_OURS_SUBJECT = f"{{{NS_OURS}}}addedSubject"
_OURS_HIERARCHICAL = f"{{{NS_OURS}}}addedHierarchicalSubject"
_OURS_CREATED = f"{{{NS_OURS}}}createdFile"
_OURS_PROPERTIES = f"{{{NS_OURS}}}addedProperties"  # Clark names ("{uri}local") of simple properties we added
NS_EXIF = "http://ns.adobe.com/exif/1.0/"
NS_PHOTOSHOP = "http://ns.adobe.com/photoshop/1.0/"
GPS_LATITUDE = f"{{{NS_EXIF}}}GPSLatitude"
GPS_LONGITUDE = f"{{{NS_EXIF}}}GPSLongitude"
_OURS = {_DC_SUBJECT: _OURS_SUBJECT, _LR_HIERARCHICAL: _OURS_HIERARCHICAL}
_XPACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_XPACKET_END = '\n<?xpacket end="w"?>\n'
_INDENT = " "


def set_keywords(path: Path, subjects: Sequence[str], hierarchical: Sequence[str], *, root: Path | None = None,
                 create_parents: bool = False, properties: Mapping[str, str] | None = None) -> bytes | None:
    """Make this tool's keywords (and simple properties) in `path` exactly these: its earlier ones go, the user's stay.

    `subjects` go into dc:subject, `hierarchical` ("Landmarks|Taj Mahal") into lr:hierarchicalSubject,
    `properties` ({"{ns}GPSLatitude": "27,10.506N", ...}) become simple properties, each only where
    the file does not already have it. A missing file is created only when there is something to
    write; a file this tool created that would be left empty is deleted. Returns the bytes written, or
    None when the file did not need to change (or was deleted).
    `root`/`create_parents` are as for sidecar.write_sidecar.
    """
    path = Path(path)
    wanted = {_DC_SUBJECT: _clean(subjects), _LR_HIERARCHICAL: _clean(hierarchical)}
    props = {k: v for k, v in (properties or {}).items() if v}
    raw = _read(path)
    if raw is None and not any(wanted.values()) and not props:
        return None
    doc = _Doc.parse(path, raw) if raw is not None else _Doc.new()
    before = (doc.ours(), doc.our_properties())
    created = raw is None or doc.created()
    doc.drop_ours()
    home = doc.keyword_home()
    after: dict[str, list[str]] = {}
    for prop, values in wanted.items():
        after[prop] = _add_to_bag(doc, home, prop, values) if values else []
        if not values:
            doc.drop_empty(prop)
    added_props = {tag: text for tag, text in props.items() if not doc.has_property(tag)}
    if raw is not None and (after, added_props) == before:
        return None
    if raw is not None and created and not any(after.values()) and not added_props and doc.is_empty():
        check_target(path, root)  # a file this tool created, with nothing left in it: gone, as untag would do
        path.unlink()
        return None
    doc.record(home, after, created, added_props)
    packet = doc.serialize(path)
    safe_write(path, packet, root=root, create_parents=create_parents)
    return packet


def remove_keywords(path: Path, *, root: Path | None = None) -> str:
    """Take back what this tool added; returns "missing", "unchanged", "removed" or "deleted".

    The file is deleted only when this tool created it and nothing but its own record is left.
    """
    path = Path(path)
    raw = _read(path)
    if raw is None:
        return "missing"
    doc = _Doc.parse(path, raw)
    if not doc.has_record():
        return "unchanged"
    created = doc.created()
    doc.drop_ours()
    for prop in _OURS:
        doc.drop_empty(prop)
    if created and doc.is_empty():
        check_target(path, root)
        path.unlink()
        return "deleted"
    safe_write(path, doc.serialize(path), root=root, create_parents=False)
    return "removed"


def read_keywords(path: Path) -> dict[str, list[str]]:
    """{"subject": [...], "hierarchical": [...], "ours": [...]} of an XMP sidecar ({} lists when missing)."""
    raw = _read(Path(path))
    if raw is None:
        return {"subject": [], "hierarchical": [], "ours": []}
    doc = _Doc.parse(Path(path), raw)
    ours = doc.ours()
    return {"subject": doc.values(_DC_SUBJECT), "hierarchical": doc.values(_LR_HIERARCHICAL),
            "ours": ours[_DC_SUBJECT] + ours[_LR_HIERARCHICAL] + list(doc.our_properties())}


def has_own_location(path: Path) -> bool:
    """The XMP sidecar holds a GPS position that this tool did not write (the user's, or another tool's)."""
    raw = _read(Path(path))
    if raw is None:
        return False
    doc = _Doc.parse(Path(path), raw)
    return doc.has_property(GPS_LATITUDE) and GPS_LATITUDE not in doc.our_properties()


def packet_has_position(raw: bytes, where: Path) -> bool:
    """An XMP packet (embedded in a photo) holds a GPS position; one that does not parse holds one when it names
    GPSLatitude anywhere, so that nothing is written over a position this parser could not see."""
    try:
        return _Doc.parse(where, raw.strip(b"\x00 \t\r\n")).has_property(GPS_LATITUDE)
    except SidecarError:
        return b"GPSLatitude" in raw


def _clean(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(v.strip() for v in values if v and v.strip()))


def _read(path: Path) -> bytes | None:
    if path.is_symlink():
        raise SidecarError(symlink_message(path))
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # missing or unreadable: read_bytes says which
    if size > MAX_XMP_BYTES:
        raise SidecarError(f"{path} is {size >> 20} MiB, far larger than any XMP sidecar (limit "
                           f"{MAX_XMP_BYTES >> 20} MiB): move it away or trim it; it was left untouched")
    return read_bytes(path)


class _Doc:
    """A parsed XMP packet: the root element and its rdf:RDF."""

    def __init__(self, top: ET.Element, rdf: ET.Element, layout: "_Layout | None" = None):
        self.top, self.rdf = top, rdf
        self.layout = layout  # of the file it was parsed from (None: a new packet)

    @classmethod
    def new(cls) -> "_Doc":
        xmpmeta = ET.Element(f"{{{NS_X}}}xmpmeta")
        xmpmeta.text = "\n" + _INDENT
        rdf = ET.SubElement(xmpmeta, f"{{{NS_RDF}}}RDF")
        rdf.tail = "\n"
        return cls(xmpmeta, rdf)

    @classmethod
    def parse(cls, path: Path, raw: bytes) -> "_Doc":
        """Parse with defusedxml (no entities, no DTD); SidecarError if it is not an XMP packet."""
        untouched = "fix or delete it; it was left untouched"
        try:
            parser = DET.DefusedXMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True),
                                          forbid_dtd=True)
            parser.feed(raw)
            top = parser.close()
        except (defusedxml.DTDForbidden, defusedxml.EntitiesForbidden, defusedxml.ExternalReferenceForbidden):
            raise SidecarError(f"{path} declares a DTD or XML entities, which XMP never does: {untouched}") from None
        except ET.ParseError as exc:
            raise SidecarError(f"{path} is not valid XMP (line {exc.position[0]}): {untouched}") from None
        layout = _Layout.of(raw)
        for prefix, uri in layout.namespaces:
            _register_prefix(prefix, uri)
        if top.tag == f"{{{NS_RDF}}}RDF":  # older writers omit the x:xmpmeta wrapper
            return cls(top, top, layout)
        rdf = top.find(f"{{{NS_RDF}}}RDF") if top.tag in {f"{{{NS_X}}}xmpmeta", f"{{{NS_X}}}xapmeta"} else None
        if rdf is None:
            raise SidecarError(f"{path} is XML but not an XMP packet (no x:xmpmeta/rdf:RDF): {untouched}")
        return cls(top, rdf, layout)

    def descriptions(self) -> list[ET.Element]:
        return self.rdf.findall(_RDF_DESCRIPTION)

    def keyword_home(self) -> ET.Element:
        """The Description that holds dc:subject (a second copy elsewhere would be invalid RDF)."""
        descs = self.descriptions()
        if not descs:
            desc = _append_child(self.rdf, _RDF_DESCRIPTION, _depth(self.top, self.rdf) + 1)
            desc.set(_RDF_ABOUT, "")
            return desc
        return next((d for d in descs if d.find(_DC_SUBJECT) is not None), descs[0])

    def home_of(self, prop: str, default: ET.Element) -> ET.Element:
        return next((d for d in self.descriptions() if d.find(prop) is not None), default)

    def values(self, prop: str) -> list[str]:
        out: list[str] = []
        for desc in self.descriptions():
            for el in desc.findall(prop):
                out += [(li.text or "").strip() for li in el.iter(_RDF_LI)] or [(el.text or "").strip()]
        return [v for v in out if v]

    def has_record(self) -> bool:
        return any(d.find(tag) is not None or d.get(tag) is not None
                   for d in self.descriptions() for tag in (*_OURS.values(), _OURS_CREATED, _OURS_PROPERTIES))

    def has_property(self, tag: str) -> bool:
        return any(d.find(tag) is not None or d.get(tag) is not None for d in self.descriptions())

    def our_properties(self) -> dict[str, str]:
        """{Clark name: value} of the simple properties this tool added (and that are still there)."""
        out = {}
        for tag in self.values(_OURS_PROPERTIES):
            for d in self.descriptions():
                el = d.find(tag)
                if el is not None:
                    out[tag] = (el.text or "").strip()
        return out

    def ours(self) -> dict[str, list[str]]:
        return {prop: self.values(record) for prop, record in _OURS.items()}

    def created(self) -> bool:
        return any((d.get(_OURS_CREATED) or "").strip() == "True" or
                   any((el.text or "").strip() == "True" for el in d.findall(_OURS_CREATED))
                   for d in self.descriptions())

    def drop_ours(self) -> None:
        """Remove this tool's keywords from the user's bags and the properties it added, then its record."""
        for tag in self.values(_OURS_PROPERTIES):
            for desc in self.descriptions():
                for el in desc.findall(tag):
                    _remove_child(desc, el)
        ours = self.ours()
        for prop, values in ours.items():
            gone = set(values)
            for desc in self.descriptions():
                for el in desc.findall(prop):
                    for container in [c for c in el if c.tag in _RDF_CONTAINERS]:
                        for li in [li for li in container.findall(_RDF_LI) if (li.text or "").strip() in gone]:
                            _remove_child(container, li)
        for desc in self.descriptions():
            for tag in (*_OURS.values(), _OURS_CREATED, _OURS_PROPERTIES):
                for el in desc.findall(tag):
                    _remove_child(desc, el)
                desc.attrib.pop(tag, None)

    def drop_empty(self, prop: str) -> None:
        """Remove a keyword property left with an empty bag."""
        for desc in self.descriptions():
            for el in desc.findall(prop):
                containers = [c for c in el if c.tag in _RDF_CONTAINERS]
                if containers and not any(c.findall(_RDF_LI) for c in containers) and not (el.text or "").strip():
                    _remove_child(desc, el)

    def record(self, home: ET.Element, added: dict[str, list[str]], created: bool,
               properties: Mapping[str, str] | None = None) -> None:
        depth = _depth(self.top, home)
        for tag, text in (properties or {}).items():
            _append_child(home, tag, depth + 1).text = text
        if properties:
            bag = _append_child(_append_child(home, _OURS_PROPERTIES, depth + 1), f"{{{NS_RDF}}}Bag", depth + 2)
            for tag in properties:
                _append_child(bag, _RDF_LI, depth + 3).text = tag
        for prop, record in _OURS.items():
            if added[prop]:
                bag = _append_child(_append_child(home, record, depth + 1), f"{{{NS_RDF}}}Bag", depth + 2)
                for value in added[prop]:
                    _append_child(bag, _RDF_LI, depth + 3).text = value
        if created:
            _append_child(home, _OURS_CREATED, depth + 1).text = "True"

    def is_empty(self) -> bool:
        """Nothing left but empty Descriptions (rdf:about, namespace declarations)."""
        return all(len(d) == 0 and set(d.attrib) <= {_RDF_ABOUT} and not (d.text or "").strip()
                   for d in self.descriptions()) and all(
            child.tag == _RDF_DESCRIPTION for child in self.rdf)

    def serialize(self, path: Path) -> bytes:
        try:
            body = ET.tostring(self.top, encoding="unicode")
        except RecursionError:
            raise SidecarError(f"{path} is nested too deeply to rewrite: flatten or delete it; "
                               "it was left untouched") from None
        outside = self.layout.outside if self.layout is not None else None
        if outside is None:
            return (_XPACKET_BEGIN + body + _XPACKET_END).encode("utf-8")
        return outside[0] + body.encode("utf-8") + outside[1]


def _add_to_bag(doc: _Doc, home: ET.Element, prop: str, values: Sequence[str]) -> list[str]:
    """Append the values the property lacks to its container; returns those added (ours)."""
    desc = doc.home_of(prop, home)
    depth = _depth(doc.top, desc)
    el = desc.find(prop)
    if el is None:
        el = _append_child(desc, prop, depth + 1)
    container = next((child for child in el if child.tag in _RDF_CONTAINERS), None)
    if container is None:
        # A non-standard plain-text value ("<dc:subject>family</dc:subject>") becomes the bag's first item.
        existing_text = (el.text or "").strip()
        el.text = None
        container = _append_child(el, f"{{{NS_RDF}}}Bag", depth + 2)
        if existing_text:
            _append_child(container, _RDF_LI, depth + 3).text = existing_text
    present = {(li.text or "").strip() for li in container.findall(_RDF_LI)}
    added = []
    for value in values:
        if value not in present:
            _append_child(container, _RDF_LI, depth + 3).text = value
            present.add(value)
            added.append(value)
    return added


class _Layout:
    """One linear expat pass: the namespaces a file declares and the bytes around its root element."""

    def __init__(self, namespaces: list[tuple[str, str]], outside: tuple[bytes, bytes] | None):
        self.namespaces, self.outside = namespaces, outside

    @classmethod
    def of(cls, raw: bytes) -> "_Layout":
        """`outside` is None for a file not in UTF-8, whose bytes cannot be spliced around a UTF-8 body."""
        parser = expat.ParserCreate()
        encoding: list[str | None] = [None]
        namespaces: list[tuple[str, str]] = []
        span: list[int] = []
        depth = 0

        def declaration(version: str, enc: str | None, standalone: int) -> None:
            encoding[0] = enc

        def start(name: str, attrs: dict) -> None:
            nonlocal depth
            if depth == 0:
                span.append(parser.CurrentByteIndex)
            depth += 1
            namespaces.extend((key[6:], uri) for key, uri in attrs.items() if key.startswith("xmlns:"))

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
            return cls(namespaces, None)
        utf8 = (encoding[0] or "utf-8").lower() in ("utf-8", "utf8") and not raw.startswith((b"\xff\xfe", b"\xfe\xff"))
        return cls(namespaces, (raw[:span[0]], raw[span[1]:]) if len(span) == 2 and utf8 else None)


def _register_prefix(prefix: str, uri: str) -> None:
    """Keep a file's own prefix for a namespace, unless that would clash with one already registered."""
    if not prefix or uri in _REGISTERED or prefix in _REGISTERED.values():
        return
    try:
        ET.register_namespace(prefix, uri)
    except ValueError:  # "ns0"-style prefixes are reserved by ElementTree
        return
    _REGISTERED[uri] = prefix


def _depth(top: ET.Element, target: ET.Element) -> int:
    """How many levels below `top` the element sits (0 for top itself); used only for indentation."""
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


def _remove_child(parent: ET.Element, child: ET.Element) -> None:
    """Remove a child; the closing indentation it carried moves to the sibling before it."""
    children = list(parent)
    at = children.index(child)
    if at == len(children) - 1:
        if at > 0:
            children[at - 1].tail = child.tail
        elif not (parent.text or "").strip():
            parent.text = child.tail
    parent.remove(child)
