"""PhotoIndex: seeded vectors checked against brute force, persistence, crash safety, locking."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import unit
from landmark_search.index import vectors
from landmark_search.errors import IndexStoreError, LockedError
from landmark_search.index.store import CACHE_NAME, MANIFEST_NAME, FileLock, PhotoIndex, PhotoRecord

DIM = 16
MODEL = "test-model"
REPO = Path(__file__).resolve().parents[1]


def random_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, dim)))


def clustered(n: int, dim: int, clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((clusters, dim)))
    labels = rng.integers(0, clusters, n)
    return unit(centres[labels] + 0.6 / np.sqrt(dim) * rng.standard_normal((n, dim)))


def records(paths: list[str], label: str | None = None) -> list[PhotoRecord]:
    return [PhotoRecord(path=p, size=100 + i, mtime_ns=10**9 * i, content_hash=f"h{i}", label=label)
            for i, p in enumerate(paths)]


def names(n: int, start: int = 0, root: str = "/photos") -> list[str]:
    return [f"{root}/img{i:05d}.jpg" for i in range(start, start + n)]


def brute_force(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = q @ x.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


def open_index(path: Path, **kwargs) -> PhotoIndex:
    kwargs.setdefault("model_id", MODEL)
    kwargs.setdefault("dim", DIM)
    return PhotoIndex.open(path, **kwargs)


def assert_matches_brute_force(idx: PhotoIndex, paths: list[str], x: np.ndarray, q: np.ndarray, k: int) -> None:
    want_scores, want_rows = brute_force(x, q, k)
    hits = idx.search(q, k)
    for qi, row in enumerate(hits):
        assert [h.path for h in row] == [paths[j] for j in want_rows[qi]]
        np.testing.assert_allclose([h.score for h in row], want_scores[qi], rtol=1e-5, atol=1e-5)


def test_search_matches_brute_force_and_persists(tmp_path: Path) -> None:
    x, q = random_vectors(300), random_vectors(12, seed=1)
    paths = names(300)
    with open_index(tmp_path / "idx") as idx:
        idx.add(records(paths[:200], label="tower"), x[:200])  # two batches, two transactions
        idx.add(records(paths[200:]), x[200:])
        assert len(idx) == 300 and idx.active_type == "flat"
        assert_matches_brute_force(idx, paths, x, q, k=7)
    assert (tmp_path / "idx" / CACHE_NAME).exists()

    reader = open_index(tmp_path / "idx", create=False, lock=False)
    assert len(reader) == 300 and reader.model_id == MODEL and reader.dim == DIM
    assert reader.known()[paths[3]] == (103, 3 * 10**9, "h3")
    assert_matches_brute_force(reader, paths, x, q, k=7)
    hit = reader.search(x[5:6], 1)[0][0]
    assert (hit.path, hit.label) == (paths[5], "tower") and hit.score == pytest.approx(1.0, abs=1e-5)
    reader.close()


def test_add_replaces_same_path_and_remove(tmp_path: Path) -> None:
    x = random_vectors(50)
    paths = names(50)
    with open_index(tmp_path) as idx:
        idx.add(records(paths), x)
        new = random_vectors(1, seed=9)
        idx.add([PhotoRecord(paths[7], 1, 2, "changed", "bridge")], new)
        assert len(idx) == 50
        assert idx.known()[paths[7]] == (1, 2, "changed")
        x2 = x.copy()
        x2[7] = new[0]
        assert_matches_brute_force(idx, paths, x2, random_vectors(5, seed=3), k=5)
        assert idx.search(x[7:8], 1)[0][0].path != paths[7]  # the old vector is gone

        assert idx.remove([paths[0], paths[1], "/not/indexed.jpg"]) == 2
        assert idx.remove([]) == 0
        assert len(idx) == 48 and paths[0] not in idx.known()
        keep = list(range(2, 50))
        assert_matches_brute_force(idx, [paths[i] for i in keep], x2[keep], x2[:2], k=10)


@pytest.mark.parametrize("damage", ["missing", "stale", "truncated", "flipped", "foreign"])
def test_damaged_cache_is_rebuilt_from_manifest(tmp_path: Path, damage: str, caplog) -> None:
    x, q = random_vectors(400), random_vectors(8, seed=1)
    paths = names(400)
    with open_index(tmp_path / "a") as idx:
        idx.add(records(paths[:300]), x[:300])
    cache = tmp_path / "a" / CACHE_NAME
    if damage == "missing":
        cache.unlink()
    elif damage == "stale":
        # A run that committed more photos but died before save(): the cache is behind.
        idx = open_index(tmp_path / "a")
        idx.add(records(paths[300:]), x[300:])
        idx.remove(paths[:10])
        idx.close()
    elif damage == "truncated":
        data = cache.read_bytes()
        cache.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":
        data = bytearray(cache.read_bytes())
        data[len(data) // 3] ^= 0xFF  # inside the vectors: only the checksum notices
        cache.write_bytes(bytes(data))
    elif damage == "foreign":
        # A cache from another index with identical ids but other vectors.
        with open_index(tmp_path / "b") as other:
            other.add(records(paths[:300]), random_vectors(300, seed=5))
        os.replace(tmp_path / "b" / CACHE_NAME, cache)

    live = slice(10, 400) if damage == "stale" else slice(0, 300)
    with caplog.at_level(logging.WARNING, logger="landmark_search.index.store"):
        reader = open_index(tmp_path / "a", lock=False)
        assert_matches_brute_force(reader, paths[live], x[live], q, k=10)
        generation = reader.generation
        reader.close()
    if damage in ("truncated", "flipped", "foreign"):
        assert "ignoring the vector cache" in caplog.text
    # No writer held the lock, so the reader stored the repaired cache.
    assert vectors.read_cache(cache)[1]["generation"] == generation
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="landmark_search.index.store"):
        with open_index(tmp_path / "a") as idx:
            assert idx.save() is False  # nothing left to repair
            assert_matches_brute_force(idx, paths[live], x[live], q, k=10)
    assert caplog.text == ""


def test_kill_9_before_save_keeps_committed_batches(tmp_path: Path) -> None:
    x = clustered(1500, DIM, 20)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from landmark_search.index.store import PhotoIndex, PhotoRecord
        x = np.load({str(tmp_path / "x.npy")!r})
        recs = [PhotoRecord(f"/p/{{i}}.jpg", i, i, str(i)) for i in range(len(x))]
        idx = PhotoIndex.open({str(tmp_path / "idx")!r}, model_id={MODEL!r}, dim={DIM}, index_type="hnsw")
        idx.add(recs[:1000], x[:1000])
        idx.save()
        idx.remove([r.path for r in recs[:100]])
        idx.add(recs[1000:1400], x[1000:1400])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr

    with open_index(tmp_path / "idx") as idx:  # the lock died with the process
        assert len(idx) == 1300
        assert idx.active_type == "hnsw"
        live = np.arange(100, 1400)
        q = x[1400:1450]
        _, want = brute_force(x[live], q, 10)
        got = idx.search(q, 10)
        assert all(len(row) == 10 for row in got)  # deleted vectors do not take result slots
        got_ids = [{int(Path(h.path).stem) for h in row} for row in got]
        assert all(min(ids) >= 100 and max(ids) < 1400 for ids in got_ids)
        recall = np.mean([len(got_ids[i] & set(live[want[i]].tolist())) / 10 for i in range(len(q))])
        assert recall >= 0.95


def test_model_dim_and_format_mismatch_refused(tmp_path: Path) -> None:
    with open_index(tmp_path):
        pass
    with pytest.raises(IndexStoreError, match=r"model 'test-model', not 'other'.*--model test-model.*--index"):
        open_index(tmp_path, model_id="other")
    with pytest.raises(IndexStoreError, match=r"16-dimensional.*produces 32"):
        open_index(tmp_path, dim=32)
    with sqlite3.connect(tmp_path / MANIFEST_NAME) as conn:
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'format_version'")
    conn.close()
    with pytest.raises(IndexStoreError, match=r"newer landmark-search \(format 3.*upgrade.*--index NEW"):
        open_index(tmp_path)
    with pytest.raises(IndexStoreError, match=r"build one with `landmark index PHOTOS --index NAME`"):
        open_index(tmp_path / "nowhere", create=False)
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(IndexStoreError, match="is a file, not an index directory"):
        open_index(tmp_path / "file")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / MANIFEST_NAME).write_bytes(b"not a database at all" * 100)
    with pytest.raises(IndexStoreError, match="not a landmark-search index manifest"):
        open_index(tmp_path / "junk")


def test_exclude_paths_drops_self_and_keeps_k(tmp_path: Path) -> None:
    x = random_vectors(100)
    paths = names(100)
    with open_index(tmp_path) as idx:
        idx.add(records(paths), x)
        plain, excluded = idx.search(x[[4, 4]], 5, exclude_paths=[None, paths[4]])
    _, want = brute_force(x, x[4:5], 6)
    assert [h.path for h in plain] == [paths[j] for j in want[0][:5]]
    assert plain[0].path == paths[4]
    assert [h.path for h in excluded] == [paths[j] for j in want[0][1:6]]
    with pytest.raises(ValueError, match="exclude_paths"):
        idx2 = open_index(tmp_path, lock=False)
        try:
            idx2.search(x[:2], 3, exclude_paths=[None])
        finally:
            idx2.close()


def test_lock_refuses_second_writer_and_is_released(tmp_path: Path) -> None:
    writer = open_index(tmp_path)
    with pytest.raises(LockedError, match=rf"index .* is in use by another landmark run \(pid {os.getpid()}\)"):
        open_index(tmp_path)
    reader = open_index(tmp_path, lock=False)  # readers never wait
    assert len(reader) == 0 and reader.search(random_vectors(1), 3) == [[]]
    with pytest.raises(IndexStoreError, match="read-only"):
        reader.add(records(names(1)), random_vectors(1))
    reader.close()
    writer.close()
    held = FileLock(tmp_path / ".lock")
    held.acquire()
    threading.Timer(0.3, held.release).start()
    open_index(tmp_path, lock_timeout=10).close()  # waits for the release
    assert not held.locked


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from landmark_search.index.store import FileLock
        with FileLock({str(tmp_path / '.lock')!r}):
            print("held", flush=True)
            sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=rf"\(pid {proc.pid}\); wait for it to finish"):
            open_index(tmp_path, lock_timeout=0.2)
        lock = FileLock(tmp_path / ".lock", description="folder /x")
        with pytest.raises(LockedError, match=r"^folder /x is in use"):
            lock.acquire()
        assert not lock.locked
    finally:
        proc.communicate("\n", timeout=10)
    with FileLock(tmp_path / ".lock") as lock:
        assert lock.locked
    open_index(tmp_path).close()


def test_a_forked_child_does_not_keep_the_lock_once_its_parent_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, signal, time
        from landmark_search.locks import FileLock
        FileLock({str(tmp_path / '.lock')!r}).acquire()
        child = os.fork()
        if child == 0:  # a DataLoader worker, say, that outlives its parent for a while
            time.sleep(60)
            os._exit(0)
        print(child, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    proc.wait(timeout=30)
    try:
        with FileLock(tmp_path / ".lock", timeout=5) as lock:
            assert lock.locked
    finally:
        os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_recall_against_brute_force(tmp_path: Path, kind: str) -> None:
    dim = 32
    data = clustered(4200, dim, 40, seed=2)
    x, q = data[:4000], data[4000:]
    paths = names(4000)
    with open_index(tmp_path, dim=dim, index_type=kind) as idx:
        idx.add(records(paths), x)
        assert idx.active_type == kind  # loads the vectors, so the removal below is mirrored
        idx.remove(paths[:100])  # tombstoned in ANN indexes until a rebuild
    reader = open_index(tmp_path, dim=dim, lock=False)
    assert reader.index_type == kind and reader.active_type == kind
    _, want = brute_force(x[100:], q, 10)
    got = reader.search(q, 10)
    assert all(len(row) == 10 for row in got)
    hits = [{paths.index(h.path) - 100 for h in row} for row in got]
    assert all(min(row) >= 0 for row in hits)
    recall = np.mean([len(hits[i] & set(want[i].tolist())) / 10 for i in range(len(q))])
    assert recall >= 0.95
    reader.close()


def test_auto_switches_type_with_size(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(vectors, "EXACT_MAX_VECTORS", 1500)
    monkeypatch.setattr(vectors, "EXACT_RETURN_VECTORS", 1200)
    x = clustered(2000, DIM, 20)
    paths = names(2000)
    with open_index(tmp_path) as idx:
        idx.add(records(paths[:1000]), x[:1000])
        idx.save()
        assert idx.active_type == "flat"
        idx.add(records(paths[1000:]), x[1000:])
        assert idx.active_type == "flat"  # searches stay exact until save() rebuilds
        assert idx.save() is True
        assert idx.active_type == "ivf"
        assert idx.save() is False  # nothing changed
        idx.remove(paths[:900])
        idx.save()
        assert idx.active_type == "flat" and len(idx) == 1100
        assert_matches_brute_force(idx, paths[900:], x[900:], x[:5], k=10)


def test_index_type_can_be_changed_by_a_writer(tmp_path: Path) -> None:
    x = random_vectors(200)
    with open_index(tmp_path) as idx:
        idx.add(records(names(200)), x)
    with pytest.raises(IndexStoreError, match="open it for writing"):
        open_index(tmp_path, index_type="hnsw", lock=False)
    with open_index(tmp_path, index_type="hnsw"):
        pass
    reader = open_index(tmp_path, lock=False)
    assert reader.index_type == "hnsw" and reader.active_type == "hnsw"
    reader.close()
    with pytest.raises(ValueError, match="unknown index type"):
        open_index(tmp_path, index_type="lsh")


def test_array_validation(tmp_path: Path) -> None:
    with open_index(tmp_path) as idx:
        recs = records(names(3))
        with pytest.raises(ValueError, match="16-dimensional"):
            idx.add(recs, random_vectors(3, dim=8))
        with pytest.raises(ValueError, match="2-D"):
            idx.add(recs[:1], random_vectors(1)[0])
        with pytest.raises(TypeError, match="numeric"):
            idx.add(recs[:1], np.array([["a"] * DIM]))
        with pytest.raises(ValueError, match="3 records but 2 vectors"):
            idx.add(recs, random_vectors(2))
        bad = random_vectors(3)
        bad[1, 0] = np.nan
        with pytest.raises(ValueError, match="row 1 contains NaN"):
            idx.add(recs, bad)
        with pytest.raises(ValueError, match="L2-normalised"):
            idx.add(recs, 3 * random_vectors(3))
        with pytest.raises(ValueError, match="same path"):
            idx.add(records(["/a.jpg", "/a.jpg"]), random_vectors(2))
        idx.add(recs, random_vectors(3).astype(np.float64))  # float64 is converted
        with pytest.raises(ValueError, match="k must be a positive integer"):
            idx.search(random_vectors(1), 0)
        with pytest.raises(ValueError, match="queries has 4 columns"):
            idx.search(np.ones((1, 4), np.float32), 1)
        assert len(idx) == 3  # refused batches changed nothing


def test_index_modules_do_not_import_torch() -> None:
    import ast

    imported = {}
    for name in ("store", "manifest", "vectors"):
        tree = ast.parse((REPO / "landmark_search" / "index" / f"{name}.py").read_text())
        imported[name] = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                          for alias in node.names}
        imported[name] |= {node.module.split(".")[0] for node in ast.walk(tree)
                           if isinstance(node, ast.ImportFrom) and node.module}
    assert "faiss" in imported["vectors"] and not any("torch" in names for names in imported.values())
