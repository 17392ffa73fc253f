"""`landmark similar` on a photo the index already holds: its stored vector, no model, no torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from conftest import invoke
from landmark_search.config import EmbedConfig
from landmark_search.search import IndexOptions, build_index, find_similar

CFG = EmbedConfig(progress=False, workers=0)


def test_indexed_unchanged_query_uses_its_stored_vector_without_torch(synth_data, trained_run, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(synth_data / "test", photos)
    ckpt = str(trained_run / "best.pt")
    build_index([photos], ckpt, tmp_path / "idx", IndexOptions(), CFG)
    query = sorted(photos.rglob("*.jpg"))[0]
    copy = tmp_path / "copy.jpg"  # not in the index: the model embeds it
    shutil.copy(query, copy)
    by_model = [h.path for h in find_similar(copy, tmp_path / "idx", k=4, cfg=CFG).hits]
    assert by_model[0] == str(query.resolve())  # its twin first
    stored = find_similar(query, tmp_path / "idx", k=3, cfg=CFG)
    labelled = [h for h in stored.hits if h.label]
    assert labelled and all(stored.place(h.label)["country"] for h in labelled)  # where each landmark is
    code = ("import sys; from pathlib import Path; from landmark_search.search import find_similar; "
            f"r = find_similar(Path({str(query)!r}), Path({str(tmp_path / 'idx')!r}), k=3); "
            "print([h.path for h in r.hits], r.query_label, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False"), out  # no torch was imported
    assert out.startswith(str(by_model[1:]))  # then the same neighbours as the model gives
    # Several queries in one call (the CLI), still torch-free while each is in the index unchanged.
    second = sorted(photos.rglob("*.jpg"))[1]
    code_many = ("import sys, json; from landmark_search.cli import app\n"
                 f"try: app(['similar', {str(query)!r}, {str(second)!r}, '--index', {str(tmp_path / 'idx')!r}, "
                 "'-k', '3', '--json'])\n"
                 "except SystemExit: pass\n"
                 "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code_many], capture_output=True, text=True, check=True).stdout
    listing, torch_loaded, _ = out.rsplit("\n", 2)
    answers = json.loads(listing)
    assert [a["query"] for a in answers] == [str(query), str(second)] and torch_loaded == "False", out
    assert [h["path"] for h in answers[0]["hits"]] == by_model[1:]
    query.write_bytes(query.read_bytes() + b"\0")  # changed since indexed: the model embeds it again
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("True"), out


def test_an_index_keeps_one_route_for_all_its_vectors(synth_data, trained_run, tmp_path, caplog):
    """model.json records the route the vectors came from; stored vectors from another route (or from a version
    that did not record it) are embedded again, once, and a query by another route says its scores are off."""
    photos, idx = tmp_path / "photos", tmp_path / "idx"
    shutil.copytree(synth_data / "test" / "00.Tower", photos)
    n = len(list(photos.glob("*.jpg")))
    ckpt = str(trained_run / "best.pt")
    model_file = idx / "model.json"

    def index():
        return build_index([photos], ckpt, idx, IndexOptions(), CFG)

    def record(**change):
        recorded = json.loads(model_file.read_text())
        recorded.update(change)
        recorded = {k: v for k, v in recorded.items() if v is not None}
        model_file.write_text(json.dumps(recorded))

    assert index().added == n
    route = json.loads(model_file.read_text())["vectors"]
    assert route == "ort-fp32"  # a trained lite0 keeps float numerics in ONNX Runtime
    again = index()
    assert (again.unchanged, again.reembedded) == (n, None)

    record(vectors="ort-int8+an-older-recipe")
    moved = index()
    assert (moved.updated, moved.unchanged) == (n, 0) and "ort-int8+an-older-recipe" in moved.reembedded
    assert json.loads(model_file.read_text())["vectors"] == route

    record(vectors=None)  # an index from before routes were recorded; the CLI says why it embeds them all again
    older = json.loads(invoke("index", photos, "--model", ckpt, "--index", idx, "--json", "-q", ok=True).stdout)
    assert older["updated"] == n and "does not record" in older["reembedded"]
    assert json.loads(model_file.read_text())["vectors"] == route and index().unchanged == n

    record(vectors="torch")  # queries follow the recorded route (eager torch here), and say when it is not theirs
    copy = tmp_path / "copy.jpg"
    shutil.copy(sorted(photos.glob("*.jpg"))[0], copy)
    with caplog.at_level("WARNING", logger="landmark_search"):
        find_similar(copy, idx, k=2, cfg=CFG)
    assert not any("approximate" in r.getMessage() for r in caplog.records)  # the route was followed
    record(vectors="a route from elsewhere")
    with caplog.at_level("WARNING", logger="landmark_search"):
        find_similar(copy, idx, k=2, cfg=CFG)
    assert any("approximate" in r.getMessage() and str(idx) in r.getMessage() for r in caplog.records)
