"""The generated bad-input corpus (tests/corpus.py) through classify, index, similar, tag and train.

Every command must process every good photo, name every bad one with its reason, crash on none,
change no user file except our own sidecars, and follow the exit-code rule (0 unless --strict and
something failed; `similar` on a bad query: 1 with one line).

Tests run as root, which reads chmod-000 files and writes into read-only folders; the commands
run inside `file_permissions_enforced()`, which drops root's two file-permission capabilities from
the test thread so the kernel refuses exactly as it would for any other user.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from conftest import invoke
from corpus import (BAD_SIDECAR, BIG_SIZE, LATIN1_NAME, UNICODE_NAME, USER_KEYS, Corpus, build_corpus, copy_entry,
                    deadline, file_permissions_enforced, non_sidecars, permissions_can_be_enforced, snapshot)
from landmark_search import search, tagging
from landmark_search.config import DEFAULT_MAX_PIXELS
from landmark_search.photos import files



@pytest.fixture(scope="module")
def sources(synth_data) -> list[Path]:
    """10 different good photos, classes interleaved."""
    by_class = [sorted(d.glob("*.jpg")) for d in sorted((synth_data / "test").iterdir())]
    return [p for group in zip(*by_class) for p in group][:10]


@pytest.fixture()
def corpus(tmp_path, sources) -> Corpus:
    return build_corpus(tmp_path / "photos", sources, enforce_permissions=permissions_can_be_enforced(tmp_path))


@pytest.fixture()
def ckpt(trained_run) -> Path:
    return trained_run / "best.pt"


class Vanish:
    """Removes `folder` in the middle of a run: once the walk is over ("decode": its photos were
    found and are gone when they are read) or as the walk starts ("walk": it was listed, then gone)."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.when = "decode"

    def _remove(self) -> None:
        if self.folder is not None and self.folder.exists():
            shutil.rmtree(self.folder)


@pytest.fixture()
def vanish(monkeypatch) -> Vanish:
    state = Vanish()
    real = files.iter_photos

    def iter_photos(*args, **kwargs):
        for photo in real(*args, **kwargs):
            if state.when == "walk":
                state._remove()
            yield photo
        state._remove()

    for module in (files, tagging, search):  # tagging and search imported the name itself
        monkeypatch.setattr(module, "iter_photos", iter_photos)
    return state


def as_user(corpus: Corpus, *args):
    """Run `landmark ARGS` in-process as an ordinary user (file permissions enforced) within two minutes."""
    guard = file_permissions_enforced() if corpus.permissions_enforced else contextlib.nullcontext()
    with guard, deadline(120):
        return invoke(*args)


def stdout(result) -> str:
    """stdout as Python spells file names: bytes that are not UTF-8 become surrogate escapes."""
    return result.stdout_bytes.decode("utf-8", "surrogateescape")


def assert_reasons(failures: dict[Path, str], expected: dict[Path, str]) -> None:
    """Exactly the expected paths failed, each with its reason words."""
    assert set(failures) == set(expected), (sorted(map(str, set(failures) ^ set(expected))), failures)
    for path, words in expected.items():
        assert words in failures[path], (path, failures[path])


def skipped_lines(stderr: str, expected: dict[Path, str]) -> dict[Path, str]:
    """The `skipped PATH: reason` line of each expected path, checking there are no others."""
    lines = [line for line in stderr.splitlines() if line.startswith("skipped ")]
    found = {}
    for path in expected:
        mine = [line for line in lines if line.startswith(f"skipped {path}:")]
        assert len(mine) == 1, (path, lines)
        found[path] = mine[0]
    assert len(lines) == len(expected), lines
    return found


def test_corpus_files_are_what_they_claim(corpus):
    from PIL import Image

    bomb = corpus.p("bomb.png").read_bytes()
    assert len(bomb) < 200_000 and bomb[12:16] == b"IHDR"
    assert struct.unpack(">IIBB", bomb[16:26]) == (30_000, 30_000, 1, 0)  # 1-bit grayscale
    # A complete image, not a header alone: every row is in the IDAT stream (only a size check stops it).
    stream, rows_bytes = zlib.decompressobj(), 0
    data = bomb[41:-16]  # the IDAT payload: after signature 8, IHDR 25, IDAT header 8; before CRC 4, IEND 12
    for _ in range(100):
        rows_bytes += len(stream.decompress(data, 1 << 24))
        data = stream.unconsumed_tail
        if not data:
            break
    assert rows_bytes == 30_000 * (1 + 30_000 // 8) and stream.eof
    with Image.open(corpus.p("sixteen-bit.png")) as img:
        assert img.mode == "I;16"
    with Image.open(corpus.p("cmyk.jpg")) as img:
        assert img.mode == "CMYK"
    with Image.open(corpus.p("palette.gif")) as img:
        assert img.mode == "P" and "transparency" in img.info
    with Image.open(corpus.p("exif-rotated.jpg")) as img:
        assert img.getexif()[0x0112] == 6 and img.size == (64, 96)
    assert corpus.p("empty.jpg").stat().st_size == 0
    if corpus.permissions_enforced:
        with file_permissions_enforced(), pytest.raises(PermissionError):
            corpus.p("unreadable.jpg").read_bytes()
        with file_permissions_enforced(), pytest.raises(PermissionError):
            (corpus.p("readonly") / "new.json").write_text("{}")


def test_exif_rotation_is_applied_before_embedding(corpus, ckpt):
    import numpy as np

    from landmark_search.config import EmbedConfig
    from landmark_search.photos.images import load_image
    from landmark_search.embeddings import embed_paths, load_model

    upright, rotated, sideways = (corpus.p(n) for n in ("upright.jpg", "exif-rotated.jpg", "sideways-no-exif.jpg"))
    a, b = (np.asarray(load_image(p), dtype=np.float32) for p in (upright, rotated))
    assert a.shape == b.shape == (64, 96, 3) and np.abs(a - b).mean() < 3  # JPEG noise only
    emb = embed_paths([upright, rotated, sideways], load_model(str(ckpt)), EmbedConfig(progress=False, workers=0))
    cos = emb.embeddings @ emb.embeddings[0]
    assert cos[1] > 0.98, cos  # JPEG noise of a 64x96 re-encode moves the trained model's fp32 vector ~0.01
    assert cos[2] < cos[1] - 0.02, f"the test photo is not asymmetric enough to notice a missed rotation: {cos}"


def test_classify(corpus, ckpt, vanish):
    vanish.folder = corpus.vanishing_dir
    before = snapshot(corpus.root, skip=(corpus.vanishing_dir,))
    result = as_user(corpus, "classify", corpus.root, "--model", ckpt, "--json", "--top-k", "1")
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout_bytes.decode("utf-8"))  # strict: a Latin-1 file name stays valid JSON
    assert {Path(r["path"]) for r in done} == corpus.good - corpus.vanishing
    expected = {**corpus.bad, **{p: "file not found" for p in corpus.vanishing}}
    lines = skipped_lines(result.stderr, expected)
    assert_reasons(lines, expected)
    unknown = sum(r["unknown"] for r in done)  # corpus pictures are no landmark: the model may say so
    assert f"{len(done)} classified ({unknown} unknown), {len(expected)} failed" in result.stderr
    assert snapshot(corpus.root, skip=(corpus.vanishing_dir,)) == before

    fifo = corpus.p("fifo.jpg")
    strict = as_user(corpus, "classify", corpus.p("plain-0.jpg"), corpus.p("truncated.jpg"), fifo, "--model", ckpt,
                    "--strict")
    assert strict.exit_code == 1
    expected = {corpus.p("truncated.jpg"): "truncated", fifo: "not a regular file"}
    assert_reasons(skipped_lines(strict.stderr, expected), expected)
    # The pixel limit is a setting: big.png passed above by default, a lower limit refuses it.
    small = as_user(corpus, "classify", corpus.p("big.png"), "--model", ckpt, "--max-pixels", "1000000")
    assert small.exit_code == 1  # nothing classified at all
    assert (f"{BIG_SIZE[0]}x{BIG_SIZE[1]} pixels ({BIG_SIZE[0] * BIG_SIZE[1] / 1e6:.3g} megapixels) is more than "
            f"the 1-megapixel limit; if the file is trusted, run again with --max-pixels {BIG_SIZE[0] * BIG_SIZE[1]}"
            in small.stderr)


def test_index_and_similar(corpus, ckpt, vanish, sources, tmp_path):
    from landmark_search.index.store import PhotoIndex

    index = tmp_path / "index"
    latin1 = corpus.p(LATIN1_NAME)
    vanish.folder = corpus.vanishing_dir
    before = snapshot(corpus.root, skip=(corpus.vanishing_dir,))
    result = as_user(corpus, "index", corpus.root, "--model", ckpt, "--index", index, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(stdout(result))
    indexed = corpus.good - corpus.vanishing - {latin1}
    expected = {**corpus.bad, **{p: "No such file or directory" for p in corpus.vanishing},
                latin1: "not valid UTF-8"}
    assert_reasons({Path(f["path"]): f["reason"] for f in summary["failures"]}, expected)
    assert (summary["added"], summary["failed"], summary["total"]) == (len(indexed), len(expected), len(indexed))
    assert (f"is more than the {DEFAULT_MAX_PIXELS / 1e6:.3g}-megapixel limit; if the file is trusted, run again "
            "with --max-pixels") in next(
        f["reason"] for f in summary["failures"] if f["path"].endswith("bomb.png"))
    model = search.recorded_model(index)
    with PhotoIndex.open(index, model_id=model["model_id"], dim=model["embedding_dim"], create=False,
                         lock=False) as idx:
        assert set(idx.known()) == {str(p.resolve()) for p in indexed}

    # Again, following links (loop -> . must not repeat anything), with the folder vanishing
    # between being listed and being read, and --strict: exit 1, nothing re-embedded.
    corpus.restore_vanishing(sources)
    vanish.when = "walk"
    again = as_user(corpus, "index", corpus.root, "--model", ckpt, "--index", index, "--json", "--follow-links",
                   "--strict")
    assert again.exit_code == 1
    summary = json.loads(stdout(again))
    assert (summary["added"], summary["unchanged"], summary["total"]) == (0, len(indexed), len(indexed))
    expected = {**corpus.bad, latin1: "not valid UTF-8", corpus.vanishing_dir: "No such file or directory"}
    assert_reasons({Path(f["path"]): f["reason"] for f in summary["failures"]}, expected)

    # The EXIF-rotated photo is the upright one's nearest neighbour, at cosine ~1 (JPEG noise: 0.988).
    hits = json.loads(stdout(as_user(corpus, "similar", corpus.p("upright.jpg"), "--index", index, "--json",
                                     "-k", "3")))["hits"]
    assert hits[0]["path"] == str(corpus.p("exif-rotated.jpg").resolve()) and hits[0]["score"] > 0.98, hits
    found = as_user(corpus, "similar", latin1, "--index", index, "--json", "-k", "2")  # never indexed, still a query
    assert found.exit_code == 0 and json.loads(stdout(found))["query"] == str(latin1)
    assert len(json.loads(stdout(found))["hits"]) == 2

    queries = {**corpus.bad, corpus.p("fifo.jpg"): "not a regular file", corpus.p("missing.jpg"): "file not found",
               corpus.p("readonly"): "is a folder"}
    for query, words in queries.items():
        bad = as_user(corpus, "similar", query, "--index", index)
        lines = bad.output.strip().splitlines()
        assert bad.exit_code == 1 and len(lines) == 1, bad.output
        assert lines[0].startswith("error: cannot read the query photo: ") and str(query) in lines[0], lines
        assert words in lines[0], lines
    assert snapshot(corpus.root, skip=(corpus.vanishing_dir,)) == before


def test_tag(corpus, ckpt, vanish, sources, tmp_path):
    vanish.folder = corpus.vanishing_dir
    bad_sidecar, user_keys = corpus.p("bad-sidecar.jpg"), corpus.p("user-keys.jpg")
    before = snapshot(corpus.root, skip=(corpus.vanishing_dir,))
    result = as_user(corpus, "tag", corpus.root, "--model", ckpt, "--xmp", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(stdout(result))
    after = snapshot(corpus.root, skip=(corpus.vanishing_dir,))

    def ours(photo: Path) -> dict | None:
        side = Path(f"{photo}.json")
        return json.loads(side.read_text()).get("landmark_search") if side.is_file() else None

    # A read-only photo fails only where there is something to write: as its twin in the writable folder does.
    twins = {corpus.p(f"readonly/ro-{i}.jpg"): corpus.p(f"plain-{i}.jpg") for i in (0, 1)}
    expected = {**corpus.bad, bad_sidecar: "not valid JSON", **{p: "file not found" for p in corpus.vanishing},
                **{p: "cannot write" for p in corpus.readonly if ours(twins[p])}}
    assert_reasons({Path(f["path"]): f["reason"] for f in summary["failures"]}, expected)
    tagged = corpus.good - set(expected)
    # a photo without a tag (unknown to the model) is counted apart from the tagged ones, and gets no sidecar
    assert (summary["tagged"] + summary["no_tag"], summary["failed"]) == (len(tagged), len(expected))
    assert summary["no_sidecar"] == summary["no_tag"]
    reasons = {Path(f["path"]): f["reason"] for f in summary["failures"]}
    assert all("write sidecars to an output folder" in reasons[p] for p in corpus.readonly if p in expected)

    assert non_sidecars(after) == non_sidecars(before)  # photos, links, FIFO, notes, modes: untouched
    new = set(after) - set(before)
    # a JSON entry and an XMP only where there is a keyword (never for "unknown")
    keyworded = {p for p in tagged if ours(p)}
    assert new == ({str(p.relative_to(corpus.root)) + ".json" for p in keyworded} - {"user-keys.jpg.json"}) | {
        str(p.relative_to(corpus.root)) + ".xmp" for p in keyworded}
    assert len(keyworded) == summary["tagged"]
    assert corpus.p("bad-sidecar.jpg.json").read_bytes() == BAD_SIDECAR
    mine = json.loads(Path(f"{user_keys}.json").read_text())
    assert {k: mine[k] for k in USER_KEYS} == USER_KEYS and ("landmark_search" in mine) == (user_keys in keyworded)
    for photo in keyworded:
        entry = ours(photo)
        assert entry["tags"] and entry["source"]["fingerprint"]

    # A re-run rewrites nothing, fails the same photos again, and --strict turns that into exit 1.
    corpus.restore_vanishing(sources)
    again = as_user(corpus, "tag", corpus.root, "--model", ckpt, "--xmp", "--json", "--strict")
    assert again.exit_code == 1
    summary = json.loads(stdout(again))
    assert (summary["tagged"], summary["unchanged"]) == (0, len(tagged))
    assert_reasons({Path(f["path"]): f["reason"] for f in summary["failures"]}, expected)
    assert snapshot(corpus.root, skip=(corpus.vanishing_dir,)) == after

    # --output-dir: the photo folder (read-only part included) stays exactly as it was.
    corpus.restore_vanishing(sources)
    out = tmp_path / "sidecars"
    mirrored = as_user(corpus, "tag", corpus.root, "--model", ckpt, "--output-dir", out, "--xmp", "--json")
    assert mirrored.exit_code == 0
    summary = json.loads(stdout(mirrored))
    expected = {**corpus.bad, **{p: "file not found" for p in corpus.vanishing}}
    assert_reasons({Path(f["path"]): f["reason"] for f in summary["failures"]}, expected)
    # photos checked with nothing to record stay checked whatever folder sidecars would go to
    assert summary["tagged"] + summary["no_tag"] + summary["unchanged"] == len(corpus.good - corpus.vanishing)
    assert snapshot(corpus.root, skip=(corpus.vanishing_dir,)) == after
    mirrored = [out / photo.relative_to(corpus.root).parent / photo.name for photo in corpus.good - corpus.vanishing]
    assert sum(Path(f"{m}.json").is_file() for m in mirrored) == summary["tagged"]
    for mirror in mirrored:  # a JSON and an XMP where there is a keyword, neither where there is none
        side = Path(f"{mirror}.json")
        entry = json.loads(side.read_text())["landmark_search"] if side.is_file() else {}
        assert Path(f"{mirror}.xmp").is_file() == bool(entry.get("tags"))


def test_training_on_a_dataset_with_the_corpus(corpus, synth_data, tmp_path):
    data = tmp_path / "data"
    classes = sorted(d.name for d in (synth_data / "train").iterdir())[:2]
    for split, count in (("train", 8), ("test", 3)):
        for cls in classes:
            (data / split / cls).mkdir(parents=True)
            for src in sorted((synth_data / split / cls).glob("*.jpg"))[:count]:
                shutil.copyfile(src, data / split / cls / src.name)
    variants = ["alpha.png", "sixteen-bit.png", "gray.jpg", "palette.gif", "cmyk.jpg", "exif-rotated.jpg",
                UNICODE_NAME, LATIN1_NAME, "fifo.jpg", "bad-sidecar.jpg", "bad-sidecar.jpg.json"]
    bad_train = {data / "train" / classes[0] / p.name: why for p, why in corpus.bad.items()}
    bad_test = {data / "test" / classes[1] / n: corpus.bad[corpus.p(n)] for n in ("empty.jpg", "bomb.png")}
    for name in [*variants, *[p.name for p in corpus.bad]]:
        copy_entry(corpus.p(name), data / "train" / classes[0] / name)
    for name in ["cmyk.jpg", "sixteen-bit.png", "empty.jpg", "bomb.png"]:
        copy_entry(corpus.p(name), data / "test" / classes[1] / name)
    before = snapshot(data)
    run = tmp_path / "run"
    result = as_user(corpus, "train", "--model", "efficientnet_lite0", "--data", data, "--out", run, "--epochs", "2",
                    "--feature-views", "2", "--image-size", "64", "--workers", "0", "--quiet", "--no-report")
    assert result.exit_code == 0, result.output
    # self-loop.jpg is no file to the dataset listing (like the FIFO), so it is passed over unnamed.
    named = {p: why for p, why in {**bad_train, **bad_test}.items() if p.name != "self-loop.jpg"}
    warned = [line for line in result.stderr.splitlines() if line.startswith("skipping ")]
    for path, words in named.items():
        mine = [line for line in warned if line.startswith(f"skipping {path}:")]
        assert len(mine) >= 1 and words in mine[0], (path, warned)
    assert all(any(line.startswith(f"skipping {p}:") for p in named) for line in warned), warned
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_test"] == 3 * 2 + 2 and set(metrics["test_skipped"]) == {str(p) for p in bad_test}
    assert snapshot(data) == before
