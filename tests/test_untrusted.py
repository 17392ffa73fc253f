"""Untrusted model files: TorchScript loads only with --trust-export, zip bombs are refused unread."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import invoke, one_line_error
from landmark_search.embeddings import load_model
from landmark_search.errors import CheckpointError
from landmark_search.models.ref import archive_format, resolve_model
from landmark_search.models import build_model
from landmark_search.models.checkpoint import MAX_BYTES_ENV, load_checkpoint, make_meta, save_checkpoint

PRECIOUS = b"precious"


class Evil(torch.nn.Module):
    """What an attacker ships: scripted __setstate__ runs on torch.jit.load and overwrites a file."""

    def __init__(self, victim: str):
        super().__init__()
        self.victim = victim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.victim, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.training = state[1]
        mapped = torch.from_file(state[0], shared=True, size=8, dtype=torch.uint8)
        mapped.fill_(88)
        self.victim = state[0] + str(int(mapped[0]))  # used, so the scripted write is not optimised away


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A run folder with an untrained 2-class mobilenet_v2 checkpoint, its export, and two photos."""
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", 2, pretrained=False, embedding_dim=16)
    meta = make_meta(model, arch="mobilenet_v2", classes=["00.a", "01.b"], display_names=["a", "b"], image_size=32,
                     mean=(0.5,) * 3, std=(0.5,) * 3, head="embed", dropout=0.0)
    run = root / "run"
    run.mkdir()
    save_checkpoint(run / "best.pt", model, meta)
    export = root / "model.pt"
    result = invoke("export", run / "best.pt", "--out", export)
    assert result.exit_code == 0, result.output
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photos / f"p{i}.jpg")
    return {"root": root, "run": run, "ckpt": run / "best.pt", "export": export, "photos": photos}


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    """(a malicious TorchScript file, the victim file it overwrites when loaded)."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(PRECIOUS)
    path = tmp_path / "evil.pt"
    torch.jit.save(torch.jit.script(Evil(str(victim))), str(path))
    assert victim.read_bytes() == PRECIOUS
    return path, victim


def test_the_malicious_file_really_runs_code_when_loaded(evil):
    """The payload works, so the tests below that find the victim intact mean it was never loaded."""
    path, victim = evil
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.load(str(path))
    assert victim.read_bytes() == b"X" * 8


def test_real_export_needs_trust_export(tiny):
    export = tiny["export"]
    result = invoke("classify", tiny["photos"], "--model", export, "--json")
    one_line_error(result, str(export), "--trust-export", "run code", "best.pt")
    with pytest.raises(CheckpointError, match="--trust-export"):
        load_model(export)
    with pytest.raises(CheckpointError, match="--trust-export"):
        resolve_model(str(export))

    trusted = invoke("classify", tiny["photos"], "--model", export, "--json", "--trust-export")
    assert trusted.exit_code == 0, trusted.output
    by_ckpt = invoke("classify", tiny["photos"], "--model", tiny["ckpt"], "--json")
    tops = [[r["predictions"][0]["id"] for r in json.loads(res.stdout)] for res in (trusted, by_ckpt)]
    assert tops[0] == tops[1] and len(tops[0]) == 2
    loaded = load_model(export, trust_export=True)
    assert loaded.kind == "export" and loaded.class_ids == ["00.a", "01.b"]
    # A ModelRef carries the user's decision; an untrusted one is refused at load time too.
    assert load_model(resolve_model(str(export), trust_export=True)).kind == "export"


@pytest.mark.parametrize("command", ["classify", "tag", "index"])
def test_malicious_torchscript_is_never_loaded_without_the_flag(evil, tiny, tmp_path, command):
    path, victim = evil
    extra = ["--index", tmp_path / "idx"] if command == "index" else []
    result = invoke(command, tiny["photos"], "--model", path, *extra)
    one_line_error(result, str(path), "--trust-export")
    assert victim.read_bytes() == PRECIOUS
    assert not list(tiny["photos"].glob("*.json"))


def test_torchscript_at_run_best_pt_is_refused_even_with_the_flag(evil, tmp_path, tiny):
    path, victim = evil
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(path.read_bytes())
    (run / "config.json").write_text("{}")
    for spec in (run, run / "best.pt"):
        result = invoke("classify", tiny["photos"], "--model", spec, "--trust-export")
        one_line_error(result, str(run / "best.pt"), "checkpoint")
    # evaluate / export take a checkpoint: named a TorchScript export, never a .pt2, never loaded.
    for args in (("evaluate", run, "--data", tmp_path), ("export", run / "best.pt", "--out", tmp_path / "m.pt")):
        err = one_line_error(invoke(*args), "TorchScript export", "best.pt")
        assert ".pt2" not in err
    assert victim.read_bytes() == PRECIOUS


def test_evaluate_and_export_name_a_real_export_correctly(tiny, tmp_path):
    """Every export's code/ holds a `.../models/...` path, which was mistaken for a .pt2 program."""
    with zipfile.ZipFile(tiny["export"]) as zf:
        names = zf.namelist()
    assert any("/models/" in n for n in names) and archive_format(names) == "torchscript"
    err = one_line_error(invoke("evaluate", tiny["export"], "--data", tmp_path), str(tiny["export"]),
                          "TorchScript export", "best.pt")
    assert "pt2" not in err
    err = one_line_error(invoke("export", tiny["export"], "--out", tmp_path / "again.pt"), "TorchScript export")
    assert "pt2" not in err

    class Double(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    pt2 = tmp_path / "double.pt2"
    torch.export.save(torch.export.export(Double(), (torch.zeros(2),)), str(pt2))
    with zipfile.ZipFile(pt2) as zf:
        assert archive_format(zf.namelist()) == "pt2"
    with pytest.raises(CheckpointError, match=r"torch\.export \(\.pt2\)"):
        load_checkpoint(pt2)


def test_similar_never_loads_an_export_implicitly(tiny, tmp_path):
    index = tmp_path / "idx"
    refused = invoke("index", tiny["photos"], "--model", tiny["export"], "--index", index)
    one_line_error(refused, "--trust-export")
    built = invoke("index", tiny["photos"], "--model", tiny["export"], "--index", index, "--trust-export")
    assert built.exit_code == 0, built.output
    assert json.loads((index / "model.json").read_text())["kind"] == "export"

    query = tiny["photos"] / "p0.jpg"
    one_line_error(invoke("similar", query, "--index", index), str(index), "TorchScript export", "--trust-export")
    # Re-running `index` without --model reuses the recorded export: the same rule.
    one_line_error(invoke("index", tiny["photos"], "--index", index), "--trust-export")
    ok = invoke("similar", query, "--index", index, "--trust-export", "--json")
    assert ok.exit_code == 0, ok.output
    assert [Path(h["path"]).name for h in json.loads(ok.stdout)["hits"]] == ["p1.jpg"]


def test_similar_refuses_a_recorded_checkpoint_swapped_for_torchscript(tiny, evil, tmp_path):
    path, victim = evil
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(tiny["ckpt"].read_bytes())
    index = tmp_path / "idx"
    assert invoke("index", tiny["photos"], "--model", run / "best.pt", "--index", index).exit_code == 0
    (run / "best.pt").write_bytes(path.read_bytes())
    for flag in ([], ["--trust-export"]):
        result = invoke("similar", tiny["photos"] / "p0.jpg", "--index", index, *flag)
        one_line_error(result, str(run / "best.pt"))
    assert victim.read_bytes() == PRECIOUS


# ------------------------------------------------------------------------------------------- zip bombs

def _bomb(path: Path, *, torchscript: bool = False, mib: int = 64) -> Path:
    """A torch-style zip whose data.pkl is `mib` MiB of zeros, deflated to about 1/1000 of that."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/version", "3\n")
        if torchscript:
            zf.writestr("archive/constants.pkl", b"\x80\x02).")
            zf.writestr("archive/code/__torch__/m.py", "")
        info = zipfile.ZipInfo("archive/data.pkl")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w") as out:
            chunk = bytes(1 << 20)
            for _ in range(mib):
                out.write(chunk)
    return path


def test_checkpoint_zip_bomb_is_refused_before_loading(tiny, tmp_path):
    bomb = _bomb(tmp_path / "bomb.pt")
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(CheckpointError, match=r"a zip bomb: declares 67\.1 MB uncompressed in a \d+ KB file"):
        load_checkpoint(bomb)
    err = one_line_error(invoke("classify", tiny["photos"], "--model", bomb), str(bomb), "zip bomb")
    assert "run code" not in err
    one_line_error(invoke("evaluate", bomb, "--data", tmp_path), "zip bomb")


def test_torchscript_zip_bomb_is_refused_even_when_trusted(tiny, tmp_path):
    bomb = _bomb(tmp_path / "bomb.pt", torchscript=True)
    with pytest.raises(CheckpointError, match="zip bomb"):
        load_model(bomb, trust_export=True)
    one_line_error(invoke("classify", tiny["photos"], "--model", bomb, "--trust-export"), str(bomb), "zip bomb")


def test_absolute_cap_is_overridable(tiny, monkeypatch):
    model, _ = load_checkpoint(tiny["ckpt"])
    monkeypatch.setenv(MAX_BYTES_ENV, "100")
    with pytest.raises(CheckpointError, match=f"over the 100 bytes limit.*{MAX_BYTES_ENV}"):
        load_checkpoint(tiny["ckpt"])
    monkeypatch.setenv(MAX_BYTES_ENV, "lots")
    with pytest.raises(CheckpointError, match="whole number of bytes"):
        load_checkpoint(tiny["ckpt"])
    monkeypatch.setenv(MAX_BYTES_ENV, str(1 << 40))
    again, _ = load_checkpoint(tiny["ckpt"])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
