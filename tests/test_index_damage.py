"""A damaged or crafted index: one line naming the index and the fix, never a traceback, nothing committed lost.

The manifest is corrupted the ways a disk, a crash or a person does (garbled pages, text where numbers belong,
a dropped table, a model.json without its embedding size, a full disk); vectors.faiss is crafted so that a length
field asks FAISS for gigabytes, with a valid checksum. The model is a stand-in (8-d vectors from the photo's
bytes), so nothing here loads torch weights or embeds a photo for real.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke, one_line_error, unit
from landmark_search.index import vectors
from landmark_search.errors import IndexStoreError
from landmark_search.index.catalog import Catalog
from landmark_search.index.manifest import SCHEMA_VERSION, connect, ensure_version
from landmark_search.index.store import CACHE_NAME, MANIFEST_NAME, PhotoIndex, PhotoRecord
from landmark_search.search import recorded_model

DIM = 8
MODEL_ID = "builtin:efficientnet_lite0"


def vector_of(path: Path) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(Path(path).read_bytes()).digest()[:8], "little")
    return unit(np.random.default_rng(seed).standard_normal((1, DIM)))[0]


class FakeModel:
    """What indexing needs of a loaded model."""

    embedding_dim = DIM
    meta: dict = {}  # no places
    kind = "checkpoint"
    openset = None  # no calibration: the most probable class is the label
    class_ids = class_names = ["a", "b"]
    int8, engine = False, None  # eager float: its vectors' route is "torch"


def Batch(paths: list[Path]):
    """A real Embedded batch with each photo's fixed vector."""
    from landmark_search.embeddings import Embedded

    vectors = np.stack([vector_of(p) for p in paths]) if paths else np.zeros((0, DIM), np.float32)
    return Embedded(paths, vectors, np.full((len(paths), 2), 0.5, np.float32), [])


@pytest.fixture()
def fake_model(monkeypatch):
    from landmark_search import embeddings

    loads = []
    monkeypatch.setattr(embeddings, "load_model", lambda ref, **kw: loads.append(ref) or FakeModel())
    monkeypatch.setattr(embeddings, "iter_embeddings", lambda paths, model, cfg=None: iter([Batch(list(paths))]))
    monkeypatch.setattr(embeddings, "embed_paths", lambda paths, model, cfg=None: Batch(list(paths)))
    monkeypatch.setattr(embeddings, "prepare_for", lambda model, cfg, count: None)
    return loads


@pytest.fixture()
def photos(tmp_path) -> Path:
    """12 photos (different bytes each; they are never decoded)."""
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(12):
        (root / f"p{i:02d}.jpg").write_bytes(b"\xff\xd8 photo %d " % i * (i + 1))
    return root


@pytest.fixture()
def built(tmp_path, photos, fake_model) -> Path:
    """An index of the photos, built by `landmark index`, with a few hundred extra rows so it spans pages."""
    index = tmp_path / "idx"
    assert invoke("index", photos, "--index", index).exit_code == 0
    with PhotoIndex.open(index, model_id=MODEL_ID, dim=DIM) as idx:
        extra = [f"/elsewhere/x{i:04d}.jpg" for i in range(300)]
        idx.add([PhotoRecord(p, 1, 1, "h") for p in extra], unit(np.random.default_rng(0).standard_normal((300, DIM))))
    return index


def _sql(index: Path, *statements: str) -> None:
    conn = sqlite3.connect(index / MANIFEST_NAME)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def _garble(index: Path, page: int) -> None:
    manifest = index / MANIFEST_NAME
    data = bytearray(manifest.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    assert len(data) >= (page + 1) * page_size
    data[page * page_size + 8 : (page + 1) * page_size - 8] = np.random.default_rng(page).bytes(page_size - 16)
    manifest.write_bytes(bytes(data))


DAMAGE = {
    "garbled-first-page": lambda idx: _garble(idx, 0),
    "garbled-page-2": lambda idx: _garble(idx, 2),
    "garbled-page-4": lambda idx: _garble(idx, 4),
    "format-version-text": lambda idx: _sql(idx, "UPDATE meta SET value = 'one' WHERE key = 'format_version'"),
    "dim-text": lambda idx: _sql(idx, "UPDATE meta SET value = 'eight' WHERE key = 'dim'"),
    "generation-text": lambda idx: _sql(idx, "UPDATE meta SET value = 'x' WHERE key = 'generation'"),
    "generation-row-gone": lambda idx: _sql(idx, "DELETE FROM meta WHERE key = 'generation'"),
    "photos-table-dropped": lambda idx: _sql(idx, "DROP TABLE photos"),
    "size-column-text": lambda idx: _sql(idx, "UPDATE photos SET size = 'big' WHERE id = 1"),
    "vector-wrong-length": lambda idx: (_sql(idx, "UPDATE photos SET vector = x'00' WHERE id = 2"),
                                        (idx / CACHE_NAME).unlink()),
    "model-json-without-spec": lambda idx: (idx / "model.json").write_text(json.dumps(
        {k: v for k, v in json.loads((idx / "model.json").read_text()).items() if k != "spec"})),
    "model-json-spec-a-number": lambda idx: (idx / "model.json").write_text(json.dumps(
        {**json.loads((idx / "model.json").read_text()), "spec": 8})),
    "manifest-deleted": lambda idx: (idx / "manifest.sqlite").unlink(),
    "model-json-not-json": lambda idx: (idx / "model.json").write_bytes(b"\x00{garbage"),
    "model-json-a-list": lambda idx: (idx / "model.json").write_text("[1, 2]"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_index_is_one_line_naming_it_and_the_rebuild(built, photos, damage, fake_model):
    DAMAGE[damage](built)
    # `index` with nothing new to embed, and `similar`: each either refuses in one line or works (a page
    # SQLite never needs to read may hold garbage unnoticed); never a traceback.
    refused = 0
    for args in (("index", photos, "--index", built), ("similar", photos / "p00.jpg", "--index", built)):
        result = invoke(*args)
        if result.exit_code:
            refused += 1
            line = one_line_error(result, str(built))
            assert f"landmark index PHOTOS --index {built} --rebuild" in line, line
    assert refused, f"{damage} went unnoticed"

    fixed = invoke("index", photos, "--index", built, "--rebuild", "--json")
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["total"] == 12
    hits = json.loads(invoke("similar", photos / "p03.jpg", "--index", built, "--json", "-k", "3").stdout)["hits"]
    assert len(hits) == 3 and all(Path(h["path"]).parent == photos.resolve() for h in hits)
    assert recorded_model(built)["embedding_dim"] == DIM


def test_model_json_leaves_model_id_and_size_to_the_manifest_and_old_ones_still_load(built, photos, fake_model):
    recorded = json.loads((built / "model.json").read_text())
    assert "model_id" not in recorded and "embedding_dim" not in recorded  # the manifest's meta says them
    assert recorded_model(built)["embedding_dim"] == DIM
    # An index written before: model.json repeated both (the manifest's values are the ones used).
    (built / "model.json").write_text(json.dumps({**recorded, "model_id": recorded_model(built)["model_id"],
                                                  "embedding_dim": DIM}))
    hits = json.loads(invoke("similar", photos / "p03.jpg", "--index", built, "--json", "-k", "3").stdout)["hits"]
    assert len(hits) == 3
    assert json.loads(invoke("index", photos, "--index", built, "--json").stdout)["unchanged"] == 12


def _as_version_1(index: Path) -> None:
    """Rewrite a manifest as version 1 wrote it: the same rows, without the columns version 2 added."""
    _sql(index, "CREATE TABLE old AS SELECT id, path, size, mtime_ns, content_hash, label, vector FROM photos",
         "DROP TABLE photos",
         "CREATE TABLE photos (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL, "
         "mtime_ns INTEGER NOT NULL, content_hash TEXT NOT NULL, label TEXT, vector BLOB NOT NULL)",
         "INSERT INTO photos SELECT * FROM old", "DROP TABLE old",
         "UPDATE meta SET value = '1' WHERE key = 'format_version'")


def _schema(index: Path) -> tuple[str, set[str]]:
    conn = sqlite3.connect(index / MANIFEST_NAME)
    try:
        version = conn.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()[0]
        return version, {row[1] for row in conn.execute("PRAGMA table_info(photos)")}
    finally:
        conn.close()


def test_an_index_of_the_previous_schema_is_migrated_once_and_answers_the_same(built, photos, fake_model):
    query = ("similar", photos / "p03.jpg", "--index", built, "--json", "-k", "5")
    before = invoke(*query, ok=True).stdout
    page = Catalog(built).page(0, 20)
    listed = {"confidence", "taken", "hand", "keywords"}

    _as_version_1(built)
    assert _schema(built) == ("1", {"id", "path", "size", "mtime_ns", "content_hash", "label", "vector"})
    assert invoke(*query, ok=True).stdout == before  # a reader opens it, migrates it and answers the same
    version, columns = _schema(built)
    assert version == str(SCHEMA_VERSION) and listed <= columns
    conn = connect(built / MANIFEST_NAME)
    try:
        ensure_version(conn, built)  # a current manifest: nothing to run, nothing written
        assert conn.total_changes == 0
    finally:
        conn.close()

    _as_version_1(built)  # the web app's catalog may be the first to open it
    assert Catalog(built).page(0, 20) == page
    assert _schema(built)[0] == str(SCHEMA_VERSION)
    assert json.loads(invoke("index", photos, "--index", built, "--json", ok=True).stdout)["unchanged"] == 12


def test_similar_reads_the_manifest_once(built, photos, fake_model, monkeypatch):
    from landmark_search.search import find_similar

    opened = []
    connect_sqlite = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda target, *a, **kw: opened.append(str(target)) or connect_sqlite(
        target, *a, **kw))
    hits = find_similar(photos / "p03.jpg", built, k=3).hits
    assert len(hits) == 3 and sum(MANIFEST_NAME in target for target in opened) == 1, opened


def test_every_public_method_that_reads_the_manifest_turns_sqlite_errors_into_one_line():
    """A method added later (lookup was) must keep the contract: a damaged page is never a traceback."""
    import inspect

    exempt = {"open", "close", "directory", "model_id", "dim", "index_type", "read_only"}
    for name, member in inspect.getmembers(PhotoIndex):
        if name.startswith("_") or name in exempt:
            continue
        func = member.fget if isinstance(member, property) else member
        assert hasattr(func, "__wrapped__"), f"PhotoIndex.{name} needs @_manifest_errors"


def test_a_lost_model_json_is_named_and_written_again_by_the_next_index_run(built, photos, fake_model):
    (built / "model.json").unlink()
    lost = invoke("similar", photos / "p00.jpg", "--index", built)
    one_line_error(lost, f"index {built} has lost its model.json", "--model MODEL", "--rebuild")
    again = invoke("index", photos, "--index", built, "--model", "efficientnet_lite0", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["total"] == 312  # nothing re-embedded or lost
    assert invoke("similar", photos / "p00.jpg", "--index", built).exit_code == 0


def test_rebuild_of_a_healthy_index_starts_afresh_from_the_photos(built, photos, fake_model):
    before = json.loads(invoke("index", photos, "--index", built, "--json").stdout)
    assert before["total"] == 312 and before["unchanged"] == 12
    after = json.loads(invoke("index", photos, "--index", built, "--rebuild", "--json").stdout)
    assert (after["added"], after["total"]) == (12, 12)


def test_a_full_disk_during_a_commit_keeps_every_committed_batch(tmp_path):
    x = unit(np.random.default_rng(1).standard_normal((2000, DIM)))
    paths = [f"/p/{i:05d}.jpg" for i in range(2000)]
    index = tmp_path / "idx"
    with PhotoIndex.open(index, model_id=MODEL_ID, dim=DIM) as idx:
        idx.add([PhotoRecord(p, 1, 1, "h") for p in paths[:100]], x[:100])
        # SQLite's page limit fails a commit exactly as a full disk does (SQLITE_FULL).
        pages = idx._conn.execute("PRAGMA page_count").fetchone()[0]
        idx._conn.execute(f"PRAGMA max_page_count = {pages + 1}")
        with pytest.raises(IndexStoreError) as err:
            idx.add([PhotoRecord(p, 1, 1, "h") for p in paths[100:]], x[100:])
        message = str(err.value)
        assert str(index / MANIFEST_NAME) in message and "no space left on device" in message
        assert "\n" not in message and "run the same command again" in message
        assert len(idx) == 100  # the failed batch was rolled back whole; the connection still works
    with PhotoIndex.open(index, model_id=MODEL_ID, dim=DIM, lock=False) as idx:
        assert len(idx) == 100
        hits = idx.search(x[:5], 1)
        assert [h[0].path for h in hits] == paths[:5]


def test_a_full_disk_while_storing_the_cache_names_the_file(built, photos, fake_model, monkeypatch):
    from landmark_search import fsutil

    (built / CACHE_NAME).unlink()

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fsutil.os, "fsync", fsync)
    result = invoke("index", photos, "--index", built)
    one_line_error(result, f"{built / CACHE_NAME}: No space left on device", "free some space")
    assert not list(built.glob(".*.tmp"))
    monkeypatch.undo()
    with PhotoIndex.open(built, model_id=MODEL_ID, dim=DIM, lock=False) as idx:
        assert len(idx) == 312


# ------------------------------------------------------------------------------------------- vectors.faiss


def _payload_and_tag(cache: Path) -> tuple[bytearray, dict]:
    data = cache.read_bytes()
    blob_len = struct.unpack("<Q", data[-16:-8])[0]
    tag = json.loads(data[-16 - blob_len : -16])
    return bytearray(data[: tag["payload_bytes"]]), tag


def _reseal(cache: Path, payload: bytes, tag: dict) -> None:
    """Write `payload` with a trailer whose length and CRC match it: only the structure can betray it."""
    tag = dict(tag, payload_bytes=len(payload), crc32=zlib.crc32(payload))
    blob = json.dumps(tag, sort_keys=True).encode()
    cache.write_bytes(bytes(payload) + blob + struct.pack("<Q8s", len(blob), b"LMKFAIS1"))


def _u64(buf: bytearray, at: int) -> int:
    return struct.unpack_from("<Q", buf, at)[0]


HEADER = 4 + 33  # fourcc + index header (d, ntotal, 2 unused, is_trained, metric)


def _field(kind: str, payload: bytearray, n: int, which: str) -> int:
    """Offset of a length field in the FAISS payload of an IndexIDMap2 over `kind`."""
    if which == "id map":
        return len(payload) - 8 * n - 8
    inner = HEADER + HEADER
    if kind == "flat":  # IndexFlatIP codes: a count of floats
        assert _u64(payload, inner) == n * DIM
        return inner
    if kind == "hnsw":  # level probabilities, neighbours per level, levels, offsets, then the neighbours
        at = inner
        for itemsize in (8, 4, 4, 8):
            at += 8 + itemsize * _u64(payload, at)
        return at
    at = payload.index(b"full") + 4  # ivf: the list sizes, then the first size
    assert _u64(payload, at) == _u64(payload, payload.index(b"ilar") + 4)
    return at + 8


def _refused_before_faiss(monkeypatch, cache: Path, match: str) -> None:
    """read_cache refuses the crafted file with `match`, and faiss.read_index is never called."""
    calls = []
    monkeypatch.setattr(vectors.faiss, "read_index", lambda *a: calls.append(a))
    with pytest.raises(ValueError, match=match):
        vectors.read_cache(cache, DIM)
    assert calls == []
    monkeypatch.undo()


@pytest.mark.parametrize("kind,which", [("flat", "codes"), ("flat", "id map"), ("hnsw", "neighbours"),
                                        ("ivf", "list size")])
def test_a_crafted_cache_is_refused_before_faiss_allocates(tmp_path, kind, which, monkeypatch, caplog):
    n = 1000 if kind == "ivf" else 50
    x = unit(np.random.default_rng(2).standard_normal((n, DIM)))
    q = unit(np.random.default_rng(3).standard_normal((4, DIM)))
    paths = [f"/p/{i:05d}.jpg" for i in range(n)]
    index = tmp_path / "idx"
    with PhotoIndex.open(index, model_id=MODEL_ID, dim=DIM, index_type=kind) as idx:
        idx.add([PhotoRecord(p, 1, 1, "h") for p in paths], x)
        assert idx.active_type == kind
    cache = index / CACHE_NAME
    payload, tag = _payload_and_tag(cache)
    vectors.read_cache(cache, DIM)  # the real file reads
    struct.pack_into("<Q", payload, _field(kind, payload, n, which), 2**30)  # 4-8 GiB if believed
    _reseal(cache, payload, tag)

    _refused_before_faiss(monkeypatch, cache, "than the file holds")
    # The index answers from its manifest instead, exactly.
    with PhotoIndex.open(index, model_id=MODEL_ID, dim=DIM, lock=False) as idx:
        got = [[h.path for h in row] for row in idx.search(q, 5)]
    assert "ignoring the vector cache" in caplog.text
    if kind == "flat":
        want = np.argsort(-(q @ x.T), axis=1)[:, :5]
        assert got == [[paths[j] for j in row] for row in want]
    assert vectors.read_cache(cache, DIM)[1]["generation"] == tag["generation"]  # stored again, whole


def test_a_crafted_cache_trailer_is_refused(tmp_path):
    with PhotoIndex.open(tmp_path, model_id=MODEL_ID, dim=DIM) as idx:
        idx.add([PhotoRecord("/p/a.jpg", 1, 1, "h")], unit(np.ones((1, DIM))))
    cache = tmp_path / CACHE_NAME
    payload, tag = _payload_and_tag(cache)
    for bad in ({**tag, "payload_bytes": "12"}, {**tag, "trained_n": None}, {**tag, "kind": "hnsw"},
                {**tag, "ntotal": 7}):
        blob = json.dumps(bad).encode()
        cache.write_bytes(bytes(payload) + blob + struct.pack("<Q8s", len(blob), b"LMKFAIS1"))
        with pytest.raises(ValueError):
            vectors.read_cache(cache, DIM)
    cache.write_bytes(bytes(payload) + b"[]" + struct.pack("<Q8s", 2, b"LMKFAIS1"))
    with pytest.raises(ValueError):
        vectors.read_cache(cache, DIM)


# ------------------------------------------------------------------------------------------- photo keys


def test_a_deleted_symlinked_photo_leaves_the_index(tmp_path, photos, fake_model):
    """R/link.jpg -> ext/out.jpg is indexed as the link, so deleting the link removes it."""
    ext = tmp_path / "ext"
    ext.mkdir()
    target = ext / "out.jpg"
    target.write_bytes(b"\xff\xd8 outside")
    link = photos / "link.jpg"
    link.symlink_to(target)
    index = tmp_path / "idx"
    first = json.loads(invoke("index", photos, "--index", index, "--json").stdout)
    assert first["added"] == 13
    with PhotoIndex.open(index, model_id=MODEL_ID, dim=DIM, lock=False) as idx:
        assert str(photos.resolve() / "link.jpg") in idx.known()
    hits = json.loads(invoke("similar", target, "--index", index, "--json", "-k", "1").stdout)["hits"]
    assert hits[0]["path"] == str(photos.resolve() / "link.jpg") and hits[0]["score"] > 0.999
    # duplicates and group read the index back under the same key.
    from landmark_search.config import EmbedConfig
    from landmark_search.search import IndexOptions, indexed_photos

    found = indexed_photos([photos], None, index, IndexOptions(), EmbedConfig(progress=False))
    assert link in found.paths and len(found.paths) == 13

    link.unlink()
    again = json.loads(invoke("index", photos, "--index", index, "--json").stdout)
    assert (again["removed"], again["total"]) == (1, 12)
    hits = json.loads(invoke("similar", target, "--index", index, "--json", "-k", "12").stdout)["hits"]
    assert all(Path(h["path"]).name != "link.jpg" and h["path"] != str(target) for h in hits)


def test_similar_takes_the_moved_model_by_its_hash(tmp_path, photos, fake_model):
    """A run folder moved after indexing: `similar --model NEW` (checked by its hash)."""
    model = tmp_path / "run" / "model.pt"
    model.parent.mkdir()
    model.write_bytes(b"not really a checkpoint; only hashed here")
    index = tmp_path / "idx"
    assert invoke("index", photos, "--index", index, "--model", model).exit_code == 0
    moved = tmp_path / "moved" / "model.pt"
    moved.parent.mkdir()
    shutil.move(model, moved)

    gone = one_line_error(invoke("similar", photos / "p01.jpg", "--index", index), str(model), "--model")
    assert "new path" in gone
    assert invoke("similar", photos / "p01.jpg", "--index", index, "--model", moved).exit_code == 0
    other = tmp_path / "other.pt"
    other.write_bytes(b"another model")
    one_line_error(invoke("similar", photos / "p01.jpg", "--index", index, "--model", other), "was built with")
    # `index --model NEW` records the new place, so a plain `similar` works again.
    assert invoke("index", photos, "--index", index, "--model", moved).exit_code == 0
    assert json.loads((index / "model.json").read_text())["spec"] == str(moved.resolve())
    assert invoke("similar", photos / "p01.jpg", "--index", index).exit_code == 0


def test_the_similar_sheet_names_its_scores_and_shows_the_query(built, photos, tmp_path):
    """A tile names its score ("similarity 0.768"), so it never reads as a label's probability."""
    sheet = tmp_path / "similar.html"
    assert invoke("similar", photos / "p02.jpg", "--index", built, "-k", "3", "--sheet", sheet).exit_code == 0
    page = sheet.read_text()
    assert page.count('<span class="badge">query</span>') == 1 and "p02.jpg" in page
    assert [f'<span class="badge">#{i}</span>' in page for i in (1, 2, 3, 4)] == [True, True, True, False]
    assert page.count("<b>similarity ") == 3 and "<ol>" not in page
    png = tmp_path / "similar.png"
    assert invoke("similar", photos / "p02.jpg", "--index", built, "-k", "3", "--sheet", png).exit_code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_a_crafted_graph_or_list_id_is_refused_before_faiss_reads_it(tmp_path, kind, monkeypatch):
    """Sizes right, CRC right, but an id past the end: a search would read outside the index's memory."""
    n = 1000 if kind == "ivf" else 60
    x = unit(np.random.default_rng(4).standard_normal((n, DIM)))
    with PhotoIndex.open(tmp_path, model_id=MODEL_ID, dim=DIM, index_type=kind) as idx:
        idx.add([PhotoRecord(f"/p/{i}.jpg", 1, 1, "h") for i in range(n)], x)
    cache = tmp_path / CACHE_NAME
    payload, tag = _payload_and_tag(cache)
    if kind == "hnsw":
        at = _field(kind, payload, n, "neighbours") + 8  # the first neighbour id of vector 0
        assert struct.unpack_from("<i", payload, at)[0] in range(n)
        struct.pack_into("<i", payload, at, n + 5)
    else:
        sizes = _field(kind, payload, n, "list size")
        nlist = _u64(payload, sizes - 8)
        first = next(i for i in range(nlist) if _u64(payload, sizes + 8 * i))
        at = sizes + 8 * nlist + sum(_u64(payload, sizes + 8 * i) * (4 * DIM + 8) for i in range(first))
        at += _u64(payload, sizes + 8 * first) * 4 * DIM  # past that list's codes: its first id
        assert struct.unpack_from("<q", payload, at)[0] in range(n)
        struct.pack_into("<q", payload, at, n + 7)
    _reseal(cache, payload, tag)
    _refused_before_faiss(monkeypatch, cache, "outside the index")
