"""Tests for landmark_search.sidecars.jsonfile: JSON sidecars and XMP keywords."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import xml.dom.minidom
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from landmark_search.errors import LandmarkError, SidecarError
from landmark_search.sidecars.jsonfile import (SIDECAR_KEY, SIDECAR_VERSION, SidecarTag, build_payload, merge_sidecar,
                                               photo_fingerprint, read_sidecar, sidecar_is_current, sidecar_path,
                                               write_sidecar)

from landmark_search.sidecars.xmp import set_keywords


def merge_xmp(path: Path, labels: list[str], hierarchy_root: str = "Landmarks") -> bytes | None:
    """Our keywords as `landmark tag` writes them for a landmark model."""
    return set_keywords(path, labels, [f"{hierarchy_root}|{label}" for label in labels])


RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC = "http://purl.org/dc/elements/1.1/"
LR = "http://ns.adobe.com/lightroom/1.0/"
DARKTABLE = "http://darktable.sf.net/"
XMP_NS = "http://ns.adobe.com/xap/1.0/"


def payload(sha: str = "abc123", fingerprint: str = "10:20") -> dict:
    return build_payload(
        model_name="resnet18-landmarks",
        model_sha256=sha,
        tags=[SidecarTag("Eiffel Tower", "03.Eiffel_Tower", 0.91), ("Louvre", "07.Louvre", 0.05)],
        photo_fingerprint=fingerprint,
        tagged_at=dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc),
    )


# ------------------------------------------------------------------------------------------- paths


def test_sidecar_path_beside_photo(tmp_path: Path) -> None:
    photo = tmp_path / "IMG_0001.jpg"
    assert sidecar_path(photo) == tmp_path / "IMG_0001.jpg.json"
    assert sidecar_path(photo, suffix=".xmp") == tmp_path / "IMG_0001.jpg.xmp"


def test_sidecar_path_mirrors_under_output_dir(tmp_path: Path) -> None:
    root, out = tmp_path / "photos", tmp_path / "out"
    photo = root / "2023" / "paris" / "IMG_1.jpg"
    assert sidecar_path(photo, output_dir=out, root=root) == out / "2023" / "paris" / "IMG_1.jpg.json"
    no_root = sidecar_path(photo, output_dir=out)
    assert no_root.is_relative_to(out) and no_root.as_posix().endswith("photos/2023/paris/IMG_1.jpg.json")
    with pytest.raises(SidecarError, match="not inside"):
        sidecar_path(tmp_path / "elsewhere" / "a.jpg", output_dir=out, root=root)


# ------------------------------------------------------------------------------------------- JSON


def test_read_missing_is_empty(tmp_path: Path) -> None:
    assert read_sidecar(tmp_path / "none.jpg.json") == {}


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b'{"title": "x",\n  "broken": }\n', r"not valid JSON \(line 2\): fix or delete it; it was left untouched"),
        (b'["a", "b"]\n', r"holds a JSON array, not an object: fix or delete it; it was left untouched"),
        (b"", r"is not valid JSON \(line 1\)"),
        # Valid enough for json.loads, but json.dumps would write them back changed.
        (b'{"big": 1e999}', r"holds the number 1e999, beyond a float: store it as a string; it was left untouched"),
        (b'{"a": {"small": -1E400}}', r"holds the number -1E400"),
        (b'{"k": 1, "k": 2}', r"repeats the key 'k': keep one of its values or delete the file; it was left untouched"),
        (b'{"n": NaN}', r"holds NaN, which is not JSON"),
        (b'{"n": -Infinity}', r"holds -Infinity, which is not JSON"),
        (b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", r"nested too deeply to read: .*left untouched"),
        (b'{"n": ' + b"7" * 5000 + b"}", r"an integer too long to read: store it as a string; it was left untouched"),
    ],
)
def test_bad_json_raises_and_is_left_byte_identical(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "a.jpg.json"
    path.write_bytes(content)
    with pytest.raises(SidecarError, match=match) as info:
        read_sidecar(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, LandmarkError)
    assert path.read_bytes() == content


def test_merge_preserves_user_keys_and_replaces_ours() -> None:
    existing = {
        "title": "Paris trip",
        "people": [{"name": "Ana", "box": [1, 2, 3, 4]}],
        "geoData": {"latitude": 48.85, "longitude": 2.29},
        SIDECAR_KEY: {"version": 1, "tags": [{"label": "old", "id": 0, "score": 1.0}]},
    }
    snapshot = json.loads(json.dumps(existing))
    merged = merge_sidecar(existing, payload())
    assert existing == snapshot  # input not mutated
    assert merged[SIDECAR_KEY] == payload()
    del merged[SIDECAR_KEY], snapshot[SIDECAR_KEY]
    assert merged == snapshot


def test_merge_refuses_newer_format() -> None:
    with pytest.raises(SidecarError, match="newer"):
        merge_sidecar({SIDECAR_KEY: {"version": SIDECAR_VERSION + 1}}, payload(), path=Path("x.json"))


def test_payload_shape() -> None:
    p = payload()
    assert p["version"] == SIDECAR_VERSION
    assert p["model"] == {"name": "resnet18-landmarks", "sha256": "abc123"}
    assert p["tagged_at"] == "2024-05-01T12:00:00+00:00"
    assert p["tags"][0] == {"label": "Eiffel Tower", "id": "03.Eiffel_Tower", "score": 0.91}
    assert p["source"] == {"fingerprint": "10:20"}


def test_sidecar_is_current(tmp_path: Path) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"jpeg")
    fp = photo_fingerprint(photo)
    data = merge_sidecar({}, payload(sha="m1", fingerprint=fp))
    assert sidecar_is_current(data, "m1", fp)
    assert not sidecar_is_current(data, "m2", fp)
    assert not sidecar_is_current({}, "m1", fp)
    assert not sidecar_is_current({SIDECAR_KEY: "junk"}, "m1", fp)
    photo.write_bytes(b"another jpeg")
    assert not sidecar_is_current(data, "m1", photo_fingerprint(photo))


def test_sidecar_is_current_compares_recorded_options() -> None:
    opts = {"top_k": 3, "min_score": 0.2, "xmp": False}
    data = merge_sidecar({}, build_payload(model_name="m", model_sha256="m1", tags=[], photo_fingerprint="1:2",
                                           options=opts))
    assert data[SIDECAR_KEY]["options"] == opts
    assert sidecar_is_current(data, "m1", "1:2", dict(opts))
    assert not sidecar_is_current(data, "m1", "1:2", {**opts, "min_score": 0.01})
    assert not sidecar_is_current(data, "m1", "1:2", {**opts, "xmp": True})
    # An entry from before options were recorded: what shaped its tags is unknown.
    assert not sidecar_is_current(merge_sidecar({}, payload(sha="m1", fingerprint="1:2")), "m1", "1:2", opts)


def test_write_round_trip_format_and_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "Café.jpg.json"
    data = merge_sidecar({"note": "naïve ☃"}, payload())
    write_sidecar(path, data, root=tmp_path)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n") and "naïve ☃" in text and '\n  "note"' in text
    assert read_sidecar(path) == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Café.jpg.json"]


def test_write_refuses_what_json_cannot_hold_and_leaves_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg.json"
    path.write_text('{"keep": true}\n')
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(SidecarError, match="nested too deeply to rewrite"):
        write_sidecar(path, {"x": deep})
    with pytest.raises(SidecarError, match="NaN or Infinity"):
        write_sidecar(path, {"x": float("inf")})
    assert path.read_text() == '{"keep": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.jpg.json"]


def test_lone_surrogate_survives_a_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg.json"
    path.write_bytes(b'{"odd": "\\ud800", "nice": "caf\\u00e9"}')
    write_sidecar(path, merge_sidecar(read_sidecar(path), payload()))
    assert json.loads(path.read_bytes())["odd"] == "\ud800"
    assert read_sidecar(path)["nice"] == "café"


def test_write_preserves_mode_bits(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg.json"
    path.write_text("{}\n")
    os.chmod(path, 0o640)
    write_sidecar(path, {"x": 1})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert json.loads(path.read_text()) == {"x": 1}


def test_new_file_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_sidecar(tmp_path / "a.jpg.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.jpg.json").stat().st_mode) == 0o644


def test_failed_write_leaves_original_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.jpg.json"
    path.write_text('{"keep": true}\n')

    def boom(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(SidecarError, match="No space left"):
        write_sidecar(path, {"new": 1})
    assert path.read_text() == '{"keep": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.jpg.json"]


def test_symlinked_sidecar_refused_target_unchanged(tmp_path: Path) -> None:
    target = tmp_path / "outside" / "precious.json"
    target.parent.mkdir()
    target.write_text('{"mine": 1}\n')
    photos = tmp_path / "photos"
    photos.mkdir()
    link = photos / "a.jpg.json"
    link.symlink_to(target)
    with pytest.raises(SidecarError, match="symlink"):
        write_sidecar(link, {"x": 1}, root=photos)
    with pytest.raises(SidecarError, match="symlink"):
        merge_xmp(link, ["Louvre"])
    assert target.read_text() == '{"mine": 1}\n'
    assert link.is_symlink()


def test_write_outside_root_through_linked_folder_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "linked").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SidecarError, match="outside"):
        write_sidecar(photos / "linked" / "a.jpg.json", {}, root=photos)
    assert list(outside.iterdir()) == []


def test_output_dir_mirror_created_only_when_asked(tmp_path: Path) -> None:
    root, out = tmp_path / "photos", tmp_path / "out"
    path = sidecar_path(root / "2023" / "a.jpg", output_dir=out, root=root)
    with pytest.raises(SidecarError, match="does not exist"):
        write_sidecar(path, {"x": 1}, root=out)  # parent missing and not asked to create it
    write_sidecar(path, {"x": 1}, root=out, create_parents=True)
    assert read_sidecar(out / "2023" / "a.jpg.json") == {"x": 1}
    assert not root.exists()


# ------------------------------------------------------------------------------------------- XMP


def li_texts(path: Path, prop: str) -> list[str]:
    """Read keywords with minidom: a second parser, independent of the ElementTree writer."""
    doc = xml.dom.minidom.parse(str(path))
    ns, local = prop.split(" ")
    out = []
    for node in doc.getElementsByTagNameNS(ns, local):
        for li in node.getElementsByTagNameNS(RDF, "li"):
            out.append("".join(t.data for t in li.childNodes if t.nodeType == t.TEXT_NODE))
    return out


def test_xmp_created_from_scratch(tmp_path: Path) -> None:
    path = tmp_path / "IMG_1.jpg.xmp"
    merge_xmp(path, ["Eiffel Tower", "Louvre", "Eiffel Tower"])
    raw = path.read_bytes()
    assert raw.startswith(b"<?xpacket begin=") and raw.rstrip().endswith(b'<?xpacket end="w"?>')
    assert li_texts(path, f"{DC} subject") == ["Eiffel Tower", "Louvre"]
    assert li_texts(path, f"{LR} hierarchicalSubject") == ["Landmarks|Eiffel Tower", "Landmarks|Louvre"]
    root = ET.parse(path).getroot()
    assert root.tag == "{adobe:ns:meta/}xmpmeta"
    bag = root.find(f"{{{RDF}}}RDF/{{{RDF}}}Description/{{{DC}}}subject/{{{RDF}}}Bag")
    assert bag is not None and len(bag) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["IMG_1.jpg.xmp"]


DARKTABLE_XMP = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:darktable="http://darktable.sf.net/"
    xmlns:acme="http://example.com/acme/1.0/"
   xmp:Rating="4"
   acme:flag="yes"
   darktable:xmp_version="5">
   <!-- edited in darktable -->
   <dc:subject>
    <rdf:Bag>
     <rdf:li>family</rdf:li>
    </rdf:Bag>
   </dc:subject>
   <darktable:history>
    <rdf:Seq>
     <rdf:li darktable:operation="exposure" darktable:enabled="1" darktable:params="0000803f"/>
    </rdf:Seq>
   </darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def test_xmp_merge_keeps_other_content_and_does_not_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "IMG_2.jpg.xmp"
    path.write_text(DARKTABLE_XMP, encoding="utf-8")
    merge_xmp(path, ["Colosseum", "family"])
    first = path.read_bytes()
    assert merge_xmp(path, ["Colosseum", "family"]) is None
    assert path.read_bytes() == first  # nothing new: file not rewritten

    assert li_texts(path, f"{DC} subject") == ["family", "Colosseum"]
    assert li_texts(path, f"{LR} hierarchicalSubject") == ["Landmarks|Colosseum", "Landmarks|family"]
    desc = ET.parse(path).getroot().find(f"{{{RDF}}}RDF/{{{RDF}}}Description")
    assert desc is not None
    assert desc.get(f"{{{XMP_NS}}}Rating") == "4"
    assert desc.get("{http://example.com/acme/1.0/}flag") == "yes"
    assert desc.get(f"{{{DARKTABLE}}}xmp_version") == "5"
    op = desc.find(f"{{{DARKTABLE}}}history/{{{RDF}}}Seq/{{{RDF}}}li")
    assert op is not None and op.get(f"{{{DARKTABLE}}}params") == "0000803f"
    text = first.decode("utf-8")
    # Original prefixes survive (not ns0:), and so do the comment and the toolkit attribute.
    assert "darktable:history" in text and "acme:flag" in text and "ns0:" not in text
    assert "<!-- edited in darktable -->" in text and 'x:xmptk="XMP Core 4.4.0-Exiv2"' in text


def test_xmp_uses_description_that_has_subject(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg.xmp"
    path.write_text(
        f"""<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{RDF}">
<rdf:Description rdf:about="" xmlns:xmp="{XMP_NS}" xmp:Rating="2"/>
<rdf:Description rdf:about="" xmlns:dc="{DC}">
<dc:subject><rdf:Bag><rdf:li>dog</rdf:li></rdf:Bag></dc:subject></rdf:Description>
</rdf:RDF></x:xmpmeta>""",
        encoding="utf-8",
    )
    merge_xmp(path, ["Big Ben"], hierarchy_root="Places")
    descs = ET.parse(path).getroot().findall(f"{{{RDF}}}RDF/{{{RDF}}}Description")
    assert len(descs) == 2
    assert descs[0].find(f"{{{DC}}}subject") is None and descs[0].get(f"{{{XMP_NS}}}Rating") == "2"
    assert li_texts(path, f"{DC} subject") == ["dog", "Big Ben"]
    assert li_texts(path, f"{LR} hierarchicalSubject") == ["Places|Big Ben"]


@pytest.mark.parametrize(
    "content",
    [
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF',
        b"<html><body>not xmp</body></html>",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
    ],
)
def test_invalid_xmp_left_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "a.jpg.xmp"
    path.write_bytes(content)
    with pytest.raises(SidecarError, match="it was left untouched"):
        merge_xmp(path, ["Louvre"])
    assert path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ["a.jpg.xmp"]


@pytest.mark.parametrize(
    ("before", "root", "after"),
    [
        (
            '<?xml version="1.0" encoding="UTF-8"?>\n<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
            "<!-- written by hand -->\n",
            f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{RDF}"></rdf:RDF></x:xmpmeta >',
            '\n<!-- trailer -->\n<?xpacket end="w"?>\n',
        ),
        ('<?xml version="1.0"?><!-- no wrapper -->', f'<rdf:RDF xmlns:rdf="{RDF}" note="a&gt;b"/>', "<!-- end -->"),
    ],
)
def test_xmp_rewrite_keeps_declaration_and_comments_outside_the_root(
    tmp_path: Path, before: str, root: str, after: str
) -> None:
    path = tmp_path / "a.jpg.xmp"
    path.write_text(before + root + after, encoding="utf-8")
    merge_xmp(path, ["Louvre"])
    text = path.read_text(encoding="utf-8")
    assert text.startswith(before) and text.endswith(after) and text.count("<?xml") == 1
    assert li_texts(path, f"{DC} subject") == ["Louvre"]


def test_deeply_nested_xmp_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg.xmp"
    content = (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{RDF}"><rdf:Description>'
               + "<q>" * 100_000 + "</q>" * 100_000 + "</rdf:Description></rdf:RDF></x:xmpmeta>").encode()
    path.write_bytes(content)
    with pytest.raises(SidecarError, match="nested too deeply to rewrite"):
        merge_xmp(path, ["Louvre"])
    assert path.read_bytes() == content


def test_atomic_writes_keep_permissions_and_follow_the_umask(tmp_path):
    import os

    from landmark_search.fsutil import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "new.json", b"{}")
        assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644  # as open() would, not mkstemp's 0600
        (tmp_path / "shared.json").write_bytes(b"{}")
        os.chmod(tmp_path / "shared.json", 0o664)
        atomic_write_bytes(tmp_path / "shared.json", b"{\"a\": 1}")
        assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o664  # the user's own choice survives
    finally:
        os.umask(old)
