"""`landmark similar` on a photo the index already holds: its stored vector, no model, no torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

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
