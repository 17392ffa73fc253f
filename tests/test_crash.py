"""Crash consistency: `landmark index` and `landmark tag` SIGKILLed at seeded random points, and two at once.

Each run is a real `landmark` process (the console script's `landmark_search.cli:app`), forked from
a server that imported the CLI once (tests/corpus.py: ForkServer), so a run costs its work and not
3 s of imports. Kill points are drawn from a seeded generator, two ways: a delay after the start
(anywhere: argument parsing, model loading, the walk, the lock, the first batch, the final save)
or "after k committed batches plus a fraction of a batch" (in the middle of the job, where writes
happen). After every kill: the index opens, its manifest rows and FAISS ids agree, `similar`
works, no sidecar is torn, the user's sidecar keys survive; then a re-run completes the job.
"""

from __future__ import annotations

import json
import re
import os
import random
import shutil
import signal
import sqlite3
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from corpus import ForkServer, snapshot
from landmark_search.cli import app
from landmark_search.search import recorded_model

runner = CliRunner()
KILLS = 6  # per command; runs 0 and 3 start from nothing, the others re-do half the photos
BATCH = 2  # small batches: many commits (index) and sidecar writes (tag) to land between
# fp32: the crash behaviour does not depend on precision, and bf16 pays a kernel warm-up in every process.
RUN = ("--batch-size", str(BATCH), "--precision", "fp32", "-q")
N_PHOTOS = 15
USER = {"title": "mine", "people": ["Ann"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ForkServer(tmp_path_factory.mktemp("fork-server"))
    yield srv
    srv.close()


@pytest.fixture()
def photos(synth_data, tmp_path) -> list[Path]:
    """15 photos in 3 class folders; the first of each folder has a sidecar of the user's own."""
    root = tmp_path / "photos"
    out = []
    for cls in sorted((synth_data / "train").iterdir()):
        (root / cls.name).mkdir(parents=True)
        for i, src in enumerate(sorted(cls.glob("*.jpg"))[:N_PHOTOS // 3]):
            shutil.copyfile(src, root / cls.name / src.name)
            out.append(root / cls.name / src.name)
            if i == 0:
                Path(f"{out[-1]}.json").write_text(json.dumps(USER))
    return out


@pytest.fixture()
def ckpt(trained_run) -> Path:
    return trained_run / "best.pt"


def _touch(paths: list[Path]) -> None:
    """New mtimes (same bytes): these photos must be re-embedded / re-tagged."""
    for p in paths:
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _watch(server: ForkServer, child, progress) -> tuple[float, float]:
    """Let `child` (a run from nothing) finish; return its duration and the mean seconds per batch."""
    seen = [(0, 0.0)]
    while server.poll(child) is None:
        now = progress()
        if now > seen[-1][0]:
            seen.append((now, time.monotonic()))
        time.sleep(0.005)
    assert child.code == 0, child.output()
    (first, t_first), (last, t_last) = seen[min(1, len(seen) - 1)], seen[-1]
    per_batch = (t_last - t_first) / (last - first) if last > first else 0.05
    return time.monotonic() - child.started, per_batch


def _kill_somewhere(server: ForkServer, child, rng: random.Random, timing: tuple[float, float], anywhere: bool,
                    progress, batches: int) -> str:
    """SIGKILL `child` at a seeded random point: `anywhere` up to a whole run's time after its start,
    else after 1 to batches-2 committed batches plus up to one batch's time. "killed" or "finished"."""
    window, per_batch = timing
    if anywhere or batches < 2:
        time.sleep(max(0.0, child.started + rng.uniform(0, window) - time.monotonic()))
    else:
        target = rng.randint(1, max(1, batches - 2))
        while progress() < target and server.poll(child) is None:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, per_batch))
    if server.poll(child) is None:
        os.kill(child.pid, signal.SIGKILL)
    code = server.wait(child)
    assert code in (0, -signal.SIGKILL), child.output()
    return "finished" if code == 0 else "killed"


# ------------------------------------------------------------------------------------------- index


def _manifest(index: Path) -> dict[str, tuple[int, int, np.ndarray]]:
    """path -> (size, mtime_ns, vector), read straight from SQLite."""
    if not (index / "manifest.sqlite").exists():
        return {}
    conn = sqlite3.connect(f"file:{index / 'manifest.sqlite'}?mode=ro", uri=True)
    try:
        if not conn.execute("SELECT name FROM sqlite_master WHERE name = 'photos'").fetchone():
            return {}
        rows = conn.execute("SELECT path, size, mtime_ns, vector FROM photos").fetchall()
    finally:
        conn.close()
    return {p: (s, m, np.frombuffer(v, dtype=np.float32)) for p, s, m, v in rows}


def _generation(index: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{index / 'manifest.sqlite'}?mode=ro", uri=True, timeout=0.05)
        try:
            return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
        finally:
            conn.close()
    except (sqlite3.Error, TypeError):
        return 0


def _check_index(index: Path, query: Path) -> int:
    """The index as a kill left it: opens read-only, manifest and FAISS agree, `similar` answers."""
    from landmark_search.index.store import CACHE_NAME, PhotoIndex
    from landmark_search.index.vectors import read_cache

    if not (index / "model.json").exists():  # killed before the index was made: a clear one-line error
        result = runner.invoke(app, ["similar", str(query), "--index", str(index)])
        assert result.exit_code == 1 and "no index at" in result.output, result.output
        return 0
    rows = _manifest(index)
    model = recorded_model(index)
    if (index / CACHE_NAME).exists():
        read_cache(index / CACHE_NAME)  # the FAISS file on disk is whole (it may lag the manifest)
    with PhotoIndex.open(index, model_id=model["model_id"], dim=model["embedding_dim"], create=False,
                         lock=False) as idx:
        assert len(idx) == len(rows)
        if rows:
            paths = list(rows)
            hits = idx.search(np.stack([rows[p][2] for p in paths]), k=len(rows))
            for path, found in zip(paths, hits):
                # FAISS holds exactly the manifest's ids, each with its own row's vector.
                assert sorted(h.path for h in found) == sorted(paths)
                assert next(h for h in found if h.path == path).score > 0.999
    result = runner.invoke(app, ["similar", str(query), "--index", str(index), "--json", "-k", "3"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["hits"]) == min(3, len(rows) - (str(query.resolve()) in rows))
    return len(rows)


def test_index_survives_sigkill_at_random_points(server, photos, ckpt, tmp_path):
    rng = random.Random(20261127)
    index = tmp_path / "index"
    args = ("index", photos[0].parent.parent, "--model", ckpt, "--index", index, *RUN)
    reference = server.start("index", photos[0].parent.parent, "--model", ckpt, "--index", tmp_path / "reference",
                             *RUN)
    timing = _watch(server, reference, lambda: _generation(tmp_path / "reference"))  # uninterrupted, from nothing
    expected = {path: vector for path, (_, _, vector) in _manifest(tmp_path / "reference").items()}
    assert len(expected) == len(photos)
    outcomes = []
    for run in range(KILLS):
        if run % 3 == 0:
            shutil.rmtree(index, ignore_errors=True)
            pending = photos
        else:
            pending = rng.sample(photos, len(photos) // 2)
            _touch(pending)
        start = _generation(index)
        child = server.start(*args)
        outcomes.append(_kill_somewhere(server, child, rng, timing, run % 3 == 0, lambda: _generation(index) - start,
                                        -(-len(pending) // BATCH)))
        done = {p: row for p, row in _manifest(index).items()
                if row[:2] == (Path(p).stat().st_size, Path(p).stat().st_mtime_ns)}
        if outcomes[-1] == "killed" and 0 < len(done) - (len(photos) - len(pending)) < len(pending):
            outcomes[-1] = "killed mid-job"
        _check_index(index, photos[0])

        rerun = server.run(*args)  # at once: a killed run leaves no lock behind
        assert rerun.code == 0, rerun.output()
        assert f"failed 0; {len(photos)} photos in total" in rerun.output()
        assert _check_index(index, photos[0]) == len(photos)
        rows = _manifest(index)
        for p in photos:  # every photo indexed as it is now, with the vector an uninterrupted run gives it
            size, mtime, vector = rows[str(p.resolve())]
            assert (size, mtime) == (p.stat().st_size, p.stat().st_mtime_ns)
            assert float(vector @ expected[str(p.resolve())]) > 0.999
    assert outcomes.count("killed mid-job") >= 2, outcomes


# --------------------------------------------------------------------------------------------- tag


def _check_sidecars(photos: list[Path], xmp_everywhere: bool = False) -> int:
    """No sidecar is torn; the user's keys survive; return how many photos carry a current entry."""
    current = 0
    for photo in photos:
        side, xmp = Path(f"{photo}.json"), Path(f"{photo}.xmp")
        data = json.loads(side.read_text()) if side.exists() else None
        if photo.name == "0.jpg":
            assert data is not None and {k: data[k] for k in USER} == USER
        entry = (data or {}).get("landmark_search")
        if entry is not None:
            assert (entry["tags"] or entry.get("unknown")) and entry["model"]["sha256"]
            st = photo.stat()
            current += entry["source"]["fingerprint"] == f"{st.st_size}:{st.st_mtime_ns}"
        if xmp.exists():
            ET.parse(xmp)
        assert xmp.exists() or not xmp_everywhere or not (entry or {}).get("tags")  # no keyword, no XMP
    return current


def _written_since(photos: list[Path], since_ns: int) -> int:
    """How many JSON sidecars were replaced after `since_ns` (a cheap progress probe while tag runs)."""
    count = 0
    for photo in photos:
        try:
            count += os.stat(f"{photo}.json").st_mtime_ns >= since_ns
        except FileNotFoundError:
            pass
    return count


def test_tag_survives_sigkill_at_random_points(server, photos, ckpt, tmp_path):
    rng = random.Random(11272026)
    root = photos[0].parent.parent
    args = ("tag", root, "--model", ckpt, "--xmp", *RUN)
    photo_bytes = {p: p.read_bytes() for p in photos}
    since = time.time_ns()
    first = server.start(*args)
    timing = _watch(server, first, lambda: _written_since(photos, since) // BATCH)
    done = re.search(r"tagged (\d+), no tag (\d+) \(unknown \d+\), unchanged 0, failed 0", first.output())
    assert done and sum(map(int, done.groups())) == len(photos), first.output()
    outcomes = []
    for run in range(KILLS):
        if run % 3 == 0:  # from nothing: our sidecars deleted, the user's restored to their own keys
            for p in photos:
                Path(f"{p}.xmp").unlink()
                if p.name == "0.jpg":
                    Path(f"{p}.json").write_text(json.dumps(USER))
                else:
                    Path(f"{p}.json").unlink()
            pending = photos
        else:
            pending = rng.sample(photos, len(photos) // 2)
            _touch(pending)
        start = _check_sidecars(photos)
        since = time.time_ns()
        child = server.start(*args)
        outcomes.append(_kill_somewhere(server, child, rng, timing, run % 3 == 0,
                                        lambda: _written_since(photos, since) // BATCH,  # batches written
                                        -(-len(pending) // BATCH)))
        if outcomes[-1] == "killed" and 0 < _check_sidecars(photos) - start < len(pending):
            outcomes[-1] = "killed mid-job"

        rerun = server.run(*args)  # at once: a killed run leaves no lock behind
        assert rerun.code == 0, rerun.output()
        assert "failed 0" in rerun.output()
        assert _check_sidecars(photos, xmp_everywhere=True) == len(photos)
    assert outcomes.count("killed mid-job") >= 2, outcomes
    assert {p: p.read_bytes() for p in photos} == photo_bytes
    # Nothing but the photos, our sidecars, and (where a kill hit a write) our hidden temp files.
    visible = {rel for rel in snapshot(root) if not Path(rel).name.startswith(".")}
    assert visible == {str(p.relative_to(root)) + s for p in photos for s in ("", ".json", ".xmp")} | {
        d.name for d in root.iterdir()}


def test_tag_dying_as_it_writes_an_xmp_is_completed_by_the_rerun(photos, ckpt, monkeypatch):
    """The deterministic case of a kill between one photo's two sidecar writes."""
    from landmark_search import tagging
    from landmark_search.config import EmbedConfig

    real, calls = tagging.set_keywords, []

    def dies_at_the_fifth(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 5:
            raise KeyboardInterrupt  # stands for the process dying here
        return real(*args, **kwargs)

    root, cfg = photos[0].parent.parent, EmbedConfig(batch_size=BATCH, workers=0, precision="fp32", progress=False)
    monkeypatch.setattr(tagging, "set_keywords", dies_at_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        tagging.tag([root], str(ckpt), tagging.TagOptions(xmp=True), cfg)
    monkeypatch.setattr(tagging, "set_keywords", real)
    assert 0 < _check_sidecars(photos) < len(photos)
    again = tagging.tag([root], str(ckpt), tagging.TagOptions(xmp=True), cfg)
    assert not again.failed and len(again.tagged) == len(photos) - len(again.unchanged)
    assert _check_sidecars(photos, xmp_everywhere=True) == len(photos)


# -------------------------------------------------------------------------------------- two at once


@pytest.mark.parametrize("command", ["index", "tag"])
def test_a_second_run_is_refused_while_the_first_holds_the_lock(server, photos, ckpt, tmp_path, command):
    from landmark_search.tagging import _folder_lock

    root = photos[0].parent.parent
    index = tmp_path / "index"
    args = [command, root, "--model", ckpt, *RUN] + (
        ["--index", index] if command == "index" else [])
    lock = index / ".lock" if command == "index" else _folder_lock([root], None).path
    first = server.start(*args)
    deadline = time.monotonic() + 120
    while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
        assert server.poll(first) is None and time.monotonic() < deadline, first.output()
        time.sleep(0.005)
    os.kill(first.pid, signal.SIGSTOP)  # frozen while it holds the lock: the overlap is certain
    try:
        second = server.run(*args)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.code == 1
    lines = second.output().strip().splitlines()
    assert len(lines) == 1 and "in use by another landmark run" in lines[0] and f"(pid {first.pid})" in lines[0]
    assert server.wait(first) == 0, first.output()
    if command == "index":
        assert f"added {len(photos)}" in first.output() and _check_index(index, photos[0]) == len(photos)
    else:
        done = re.search(r"tagged (\d+), no tag (\d+)", first.output())
        assert done and sum(map(int, done.groups())) == len(photos) and _check_sidecars(photos) == len(photos)
