"""Tagging's limits and housekeeping without a model: big XMP sidecars, and stale temps on an unchanged re-run."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corpus import deadline
from landmark_search.sidecars import xmp
from landmark_search.cli import app
from landmark_search.errors import SidecarError

runner = CliRunner()
PACKET = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
          b'%s<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag>'
          b'<rdf:li>mine</rdf:li></rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>\n')


def test_a_big_xmp_comment_merges_and_an_oversized_xmp_is_refused_untouched(tmp_path):
    """A 50 MB XMP with one big comment is parsed in linear time (a quadratic parse took 111 s)."""
    big = tmp_path / "a.jpg.xmp"
    comment = b"<!-- " + b"lorem ipsum " * (4 << 20 >> 4) + b" -->"  # ~3 MB in one comment
    big.write_bytes(PACKET % comment)
    with deadline(60):
        written = xmp.set_keywords(big, ["Taj Mahal"], ["Landmarks|Taj Mahal"])
    assert written is not None and comment in written and big.read_bytes() == written
    assert xmp.read_keywords(big)["subject"] == ["mine", "Taj Mahal"]

    huge = tmp_path / "b.jpg.xmp"
    huge.write_bytes(PACKET % (b"<!-- " + b"x" * (50 << 20) + b" -->"))
    before = (hashlib.sha256(huge.read_bytes()).hexdigest(), huge.stat().st_mtime_ns)
    with deadline(20), pytest.raises(SidecarError, match=f"{huge} is 50 MiB.*left untouched"):
        xmp.set_keywords(huge, ["Taj Mahal"], ["Landmarks|Taj Mahal"])
    assert (hashlib.sha256(huge.read_bytes()).hexdigest(), huge.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg.xmp", "b.jpg.xmp"]  # no temp left either


def test_an_unchanged_rerun_sweeps_stale_temps_without_loading_the_model(tmp_path):
    """Every run sweeps the temps a killed run left, whether or not it has work to do."""
    from landmark_search.models.ref import resolve_model
    from landmark_search.sidecars.jsonfile import SIDECAR_KEY, build_payload, photo_fingerprint
    from landmark_search.tagging import TagOptions, _recorded_options

    model = tmp_path / "model.pt"
    model.write_bytes(b"only hashed: an unchanged folder never loads it")
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    sha = resolve_model(str(model)).sha256
    for photo in (photos / "a.jpg", photos / "sub" / "b.jpg"):
        photo.write_bytes(b"\xff\xd8" + photo.name.encode())
        entry = build_payload(model_name="model.pt", model_sha256=sha, tags=[("Taj Mahal", "0", 0.9)],
                              photo_fingerprint=photo_fingerprint(photo), options=_recorded_options(TagOptions()))
        Path(f"{photo}.json").write_text(json.dumps({"title": "mine", SIDECAR_KEY: entry}))
    old = time.time() - 3600
    stale = [photos / ".a.jpg.json.0123abcd.tmp", photos / "sub" / ".b.jpg.xmp.89abcdef.tmp"]
    for temp in stale:
        temp.write_bytes(b"half a sidecar")
        os.utime(temp, (old, old))
    fresh = photos / ".a.jpg.json.fedcba98.tmp"  # a write in progress elsewhere: never touched
    fresh.write_bytes(b"being written")
    user = photos / ".notes.json.0123abcd.txt"
    user.write_bytes(b"not ours")
    os.utime(user, (old, old))

    result = runner.invoke(app, ["tag", str(photos), "--model", str(model), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["unchanged"], summary["tagged"], summary["stale_temps_removed"]) == (2, 0, 2)
    assert not any(t.exists() for t in stale) and fresh.exists() and user.exists()
    assert json.loads((photos / "a.jpg.json").read_text())["title"] == "mine"
