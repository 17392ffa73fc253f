"""`landmark index --engine ray`: the same manifest and vectors as a local run, a worker killed mid-job loses and
duplicates nothing, and without --engine Ray is never imported.

One local Ray (2 CPUs) for the module: starting it costs ~6 s. The photos are the 90 generated training photos of
`synth_data`, not hundreds: each extra photo costs the 2-core test machine ~40 ms per engine.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'landmark-search[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'landmark-search[ray]')")

from landmark_search.cli import app  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def _rows(index: Path) -> dict[str, tuple]:
    """path -> (size, mtime, content hash, label, confidence, vector) of every manifest row."""
    with sqlite3.connect(index / "manifest.sqlite") as conn:
        rows = conn.execute("SELECT path, size, mtime_ns, content_hash, label, confidence, vector FROM photos")
        return {r[0]: (*r[1:6], np.frombuffer(r[6], np.float32)) for r in rows}


def _count(index: Path) -> int:
    try:
        with sqlite3.connect(index / "manifest.sqlite") as conn:
            return conn.execute("SELECT COUNT(*) FROM photos").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def _kill_a_worker_mid_job(index: Path, after: int, total: int, killed: dict) -> None:
    """Once `after` photos are committed, ray.kill one embedding actor (Ray restarts it and retries its task)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        done = _count(index)
        actors = [a for a in ray._private.state.actors().values()
                  if "Embedder" in a["ActorClassName"] and a["State"] == "ALIVE"]
        if done >= after and actors:
            if done >= total:
                return  # too late: the job ended first, and the test says so below
            handle = ray._private.worker.global_worker.core_worker.get_actor_handle(
                ray.ActorID.from_hex(actors[0]["ActorID"]))
            ray.kill(handle, no_restart=False)
            killed["at"] = done
            return
        time.sleep(0.005)


def test_ray_engine_matches_the_local_index_even_when_a_worker_is_killed(local_ray, synth_data, trained_run,
                                                                           tmp_path, monkeypatch):
    # Eager torch on both sides: the ONNX export would cost seconds and is not what this test is about (the
    # driver pins the runtime a local run picks, so the workers use it too).
    monkeypatch.setenv("LANDMARK_BACKEND", "torch")
    photos, ckpt = synth_data / "train", str(trained_run / "best.pt")
    total = len(list(photos.rglob("*.jpg")))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.jpg").write_bytes(b"not a jpeg")  # one photo that fails on a worker
    args = [str(photos), str(tmp_path / "bad"), "--model", ckpt, "--json", "--quiet"]
    # The local reference, in a process of its own: without --engine, Ray is never imported.
    code = ("import sys; from landmark_search.cli import app\n"
            f"try: app(['index', *{args!r}, '--index', {str(tmp_path / 'local')!r}], prog_name='landmark')\n"
            "except SystemExit: pass\n"
            "print('imported:', [m for m in ('ray', 'torchvision') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.strip().endswith("imported: []"), out  # nor torchvision: ~2 s of start-up that inference never needs

    killed: dict = {}
    killer = threading.Thread(target=_kill_a_worker_mid_job, args=(tmp_path / "ray", 8, total, killed), daemon=True)
    killer.start()
    result = runner.invoke(app, ["index", *args, "--index", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2",
                                 "--batch-size", "4"])
    killer.join()
    assert "at" in killed, "the job ended before a worker could be killed"
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert (summary["added"], summary["total"], summary["failed"]) == (total, total, 1)  # each photo once
    assert summary["failures"][0]["path"].endswith("broken.jpg")
    local, by_ray = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert by_ray.keys() == local.keys() and len(by_ray) == total
    for path, row in local.items():
        assert by_ray[path][:4] == row[:4], path  # size, mtime, content hash, label
        assert by_ray[path][4] == pytest.approx(row[4], abs=1e-5)
        np.testing.assert_allclose(by_ray[path][5], row[5], atol=1e-5)
    # Run again: nothing to embed, and no Ray job.
    again = runner.invoke(app, ["index", *args, "--index", str(tmp_path / "ray"), "--engine", "ray"])
    assert json.loads(again.stdout[again.stdout.index("{"):])["unchanged"] == total


def test_workers_take_the_route_a_local_run_takes(trained_run, monkeypatch):
    """A calibrated checkpoint keeps float numerics (ORT fp32) on a worker as it does locally, not ORT int8."""
    from landmark_search.config import EmbedConfig
    from landmark_search.embeddings import load_model, prepare_for, vector_route
    from landmark_search.scaleout.ray_index import worker_config

    monkeypatch.delenv("LANDMARK_BACKEND", raising=False)
    local, worker = load_model(trained_run / "best.pt"), load_model(trained_run / "best.pt")
    cfg = EmbedConfig(progress=False)
    prepare_for(local, cfg, 500)
    prepare_for(worker, worker_config(cfg, load_model(trained_run / "best.pt"), 500, 0.0), 8)  # one small batch
    assert vector_route(worker) == vector_route(local) == "ort-fp32"


def test_bad_ray_options_are_refused(tmp_path):
    for option, value in (("--workers", "0"), ("--gpus-per-worker", "-1"), ("--engine", "spark")):
        bad = runner.invoke(app, ["index", str(tmp_path), "--engine", "ray", option, value])
        assert bad.exit_code == 1 and f"{option} " in bad.output, bad.output
