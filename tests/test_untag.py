"""Keywords the tool can take back: re-tagging replaces ours, untag gives the user's files back, exiftool agrees."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import exiftool, exiftool_json
from landmark_search.config import EmbedConfig
from landmark_search.tagging import TagOptions, tag
from landmark_search.untag import UntagOptions, untag

CFG = EmbedConfig(progress=False, workers=0)

USER_XMP = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/" xmp:Rating="4">
   <dc:subject>
    <rdf:Bag>
     <rdf:li>family</rdf:li>
    </rdf:Bag>
   </dc:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def read_xmp(path: Path, *tags: str) -> dict:
    """The XMP tags exiftool reads (structured), e.g. read_xmp(p, "dc:Subject")."""
    return exiftool_json(path, "-struct", *[f"-XMP-{t}" for t in tags])


def _as_list(value) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]


@pytest.fixture()
def library(synth_data, tmp_path) -> tuple[Path, Path, Path]:
    """A photo with the user's own XMP and JSON sidecars, and one with none."""
    root = tmp_path / "library"
    root.mkdir()
    first, second = sorted((synth_data / "test").rglob("*.jpg"))[:2]
    mine, bare = root / "mine.jpg", root / "bare.jpg"
    shutil.copy(first, mine)
    shutil.copy(second, bare)
    Path(f"{mine}.xmp").write_text(USER_XMP, encoding="utf-8")
    Path(f"{mine}.json").write_text('{"title": "Our trip",   "people": ["Ann"]}\n', encoding="utf-8")
    return root, mine, bare


def test_default_model_writes_no_landmark_keywords_and_a_trained_one_replaces_them(library, trained_run):
    root, mine, bare = library
    user_xmp, user_json = Path(f"{mine}.xmp").read_bytes(), Path(f"{mine}.json").read_bytes()

    first = tag([root], None, TagOptions(xmp=True, min_score=0.0, top_k=2), CFG)  # the built-in ImageNet model
    assert not first.failed
    seen = read_xmp(Path(f"{mine}.xmp"), "dc:Subject", "lr:HierarchicalSubject", "xmp:Rating")
    assert _as_list(seen.get("Subject")) == ["family"]  # ImageNet words are not flat keywords by default
    hierarchical = _as_list(seen.get("HierarchicalSubject"))
    assert hierarchical and all(h.startswith("ImageNet|") for h in hierarchical)
    assert seen["Rating"] == 4

    second = tag([root], str(trained_run / "best.pt"), TagOptions(xmp=True, recall=1.0), CFG)
    assert not second.failed and second.tagged
    seen = read_xmp(Path(f"{mine}.xmp"), "dc:Subject", "lr:HierarchicalSubject")
    hierarchical = _as_list(seen.get("HierarchicalSubject"))
    assert not any(h.startswith("ImageNet|") for h in hierarchical)  # the earlier run's keywords are gone
    assert hierarchical and all(h.startswith("Landmarks|") for h in hierarchical)
    assert _as_list(seen["Subject"])[0] == "family" and len(_as_list(seen["Subject"])) == 1 + len(hierarchical)
    assert json.loads(Path(f"{mine}.json").read_text())["title"] == "Our trip"

    done = untag([root], UntagOptions(xmp=True))
    assert not done.failed and sorted(done.cleaned) == sorted([mine, bare])
    assert Path(f"{mine}.xmp").read_bytes() == user_xmp and Path(f"{mine}.json").read_bytes() == user_json
    assert not Path(f"{bare}.xmp").exists() and not Path(f"{bare}.json").exists()  # ours alone: deleted
    again = untag([root], UntagOptions(xmp=True))
    assert not again.cleaned and sorted(again.untouched) == sorted([mine, bare])


def test_untag_summary_counts_what_happened_to_each_file(library, trained_run):
    from typer.testing import CliRunner

    from landmark_search.cli import app

    root, mine, bare = library
    assert len(tag([root], str(trained_run / "best.pt"), TagOptions(xmp=True, recall=1.0, min_score=0.0),
                   CFG).tagged) == 2
    data = json.loads(Path(f"{mine}.json").read_text())
    Path(f"{mine}.json").write_text(json.dumps({**data, "rating": 5}))  # the user's edit after tagging
    dry = CliRunner().invoke(app, ["untag", str(root), "--xmp", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert ("JSON sidecars (dry run: nothing changed): 1 deleted (this tool had created them), 1 kept, our entry "
            "taken out") in dry.stdout
    done = CliRunner().invoke(app, ["untag", str(root), "--xmp", "--json"])
    assert json.loads(done.stdout)["files"] == {"json": {"deleted": 1, "removed": 1},
                                                "xmp": {"deleted": 1, "restored": 1}, "originals": {}}
    assert not Path(f"{bare}.json").exists() and not Path(f"{bare}.xmp").exists()
    assert Path(f"{mine}.xmp").read_text(encoding="utf-8") == USER_XMP
    assert json.loads(Path(f"{mine}.json").read_text())["rating"] == 5


def test_untag_without_xmp_leaves_a_photo_whose_xmp_holds_our_keywords(library, trained_run):
    """The JSON entry is the record of what to take out of the XMP: untag without --xmp keeps both and says why."""
    root, mine, bare = library
    assert len(tag([root], str(trained_run / "best.pt"), TagOptions(xmp=True, recall=1.0), CFG).tagged) == 2
    before = {p: p.read_bytes() for p in root.iterdir()}
    done = untag([root], UntagOptions())
    assert sorted(p for p, _ in done.skipped) == sorted([mine, bare]) and not done.cleaned
    assert all("add --xmp" in why for _, why in done.skipped)
    assert {p: p.read_bytes() for p in root.iterdir()} == before
    assert untag([root], UntagOptions(xmp=True)).cleaned
    assert Path(f"{mine}.xmp").read_text(encoding="utf-8") == USER_XMP and not Path(f"{bare}.xmp").exists()


def test_user_edits_after_tagging_survive_retag_and_untag(library, trained_run):
    root, mine, bare = library
    ckpt = str(trained_run / "best.pt")
    tag([root], ckpt, TagOptions(xmp=True, recall=1.0), CFG)
    ours = _as_list(read_xmp(Path(f"{bare}.xmp"), "lr:HierarchicalSubject").get("HierarchicalSubject"))
    assert ours
    # The user adds their own keyword to the file this tool created, and a key to its JSON sidecar.
    exiftool("-q", "-overwrite_original", "-XMP-dc:Subject+=holiday", f"{bare}.xmp")
    data = json.loads(Path(f"{bare}.json").read_text())
    Path(f"{bare}.json").write_text(json.dumps({**data, "rating": 5}), encoding="utf-8")

    tag([root], ckpt, TagOptions(xmp=True, recall=1.0, top_k=1), CFG)  # other options: a re-tag
    untag([root], UntagOptions(xmp=True))
    seen = read_xmp(Path(f"{bare}.xmp"), "dc:Subject", "lr:HierarchicalSubject")
    assert _as_list(seen.get("Subject")) == ["holiday"] and not seen.get("HierarchicalSubject")
    assert json.loads(Path(f"{bare}.json").read_text()) == {"rating": 5}


def test_a_json_edit_made_during_a_run_is_kept(library, trained_run):
    """The sidecar is read again right before it is replaced."""
    root, mine, bare = library
    from landmark_search.embeddings import load_model

    def load_then_edit(ref):
        model = load_model(ref)  # the run has planned every photo by now; the user saves an edit
        Path(f"{mine}.json").write_text('{"title": "Edited while tagging"}', encoding="utf-8")
        return model

    tag([root], str(trained_run / "best.pt"), TagOptions(), CFG, load=load_then_edit)
    data = json.loads(Path(f"{mine}.json").read_text())
    assert data["title"] == "Edited while tagging" and "landmark_search" in data


def test_symlinked_json_sidecar_refuses_the_xmp_too(library, trained_run, tmp_path):
    """Refuse both sidecars, or neither."""
    root, mine, bare = library
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    os.symlink(target, f"{bare}.json")
    summary = tag([root], str(trained_run / "best.pt"), TagOptions(xmp=True, recall=1.0), CFG)
    assert [p for p, _ in summary.failed] == [bare] and "symlink" in summary.failed[0][1]
    assert not Path(f"{bare}.xmp").exists() and target.read_text() == "{}"


def test_output_dir_overlapping_the_photos_is_refused(library, trained_run):
    """A mirror inside a photo folder would land on other photos' own sidecars."""
    from landmark_search.errors import LandmarkError

    root, mine, bare = library
    with pytest.raises(LandmarkError, match="overlaps the photo folder"):
        tag([root], str(trained_run / "best.pt"), TagOptions(output_dir=root / "tags"), CFG)


def test_xmp_name_basename_for_lightroom(library, trained_run):
    """IMG.xmp beside the photo (Lightroom Classic's name for RAW sidecars); a pair sharing it is refused."""
    root, mine, bare = library
    twin = root / "bare.png"  # bare.jpg and bare.png would share bare.xmp
    from PIL import Image

    Image.open(bare).save(twin)
    summary = tag([root], str(trained_run / "best.pt"), TagOptions(xmp=True, recall=1.0, xmp_name="basename"), CFG)
    assert [p for p, _ in summary.failed] == [twin] and "same base name" in summary.failed[0][1]
    seen = read_xmp(root / "bare.xmp", "lr:HierarchicalSubject")
    assert all(h.startswith("Landmarks|") for h in _as_list(seen["HierarchicalSubject"]))
    assert not Path(f"{bare}.xmp").exists()
    untag([root], UntagOptions(xmp=True))  # the JSON entry says which XMP it wrote
    assert not (root / "bare.xmp").exists() and Path(f"{mine}.xmp").read_text(encoding="utf-8") == USER_XMP


def test_embed_keeps_the_original_and_untag_puts_it_back(library, trained_run):
    """Keywords inside the JPEG for apps that read nothing else, never without the backup rule."""
    from landmark_search.sidecars.embedded import backup_path

    root, mine, bare = library
    original = bare.read_bytes()
    ckpt = str(trained_run / "best.pt")
    summary = tag([root], ckpt, TagOptions(embed=True, recall=1.0), CFG)
    assert not summary.failed and bare in summary.tagged
    assert backup_path(bare).read_bytes() == original  # the original, byte for byte, beside it
    inside = read_xmp(bare, "dc:Subject", "lr:HierarchicalSubject")
    assert _as_list(inside["HierarchicalSubject"])[0].startswith("Landmarks|")
    again = tag([root], ckpt, TagOptions(embed=True, recall=1.0), CFG)
    assert sorted(again.unchanged) == sorted([mine, bare]) and not again.model_loaded  # the new bytes are known
    untag([root], UntagOptions(embed=True))
    assert bare.read_bytes() == original and not backup_path(bare).exists()


def test_a_retag_that_takes_back_every_keyword_deletes_the_xmp_it_created(library, trained_run, tmp_path):
    """A photo the ImageNet model keyworded and the landmark model calls unknown keeps no empty XMP of ours."""
    import numpy as np
    from PIL import Image

    root, mine, bare = library
    noise = root / "noise.jpg"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(noise)
    tag([root], None, TagOptions(xmp=True, min_score=0.0, top_k=1), CFG)
    assert Path(f"{noise}.xmp").is_file()
    again = tag([root], str(trained_run / "best.pt"), TagOptions(xmp=True), CFG)
    assert noise in again.unknown and not Path(f"{noise}.xmp").exists()
    assert "family" in _as_list(read_xmp(Path(f"{mine}.xmp"), "dc:Subject").get("Subject"))  # the user's XMP stays
