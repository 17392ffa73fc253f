"""`landmark train --resume RUN --epochs N`, as the README writes it: no --data, no second feature extraction."""

from __future__ import annotations

import importlib
import json

from typer.testing import CliRunner

from landmark_search.cli import app

fit_module = importlib.import_module("landmark_search.training.fit")  # the package re-exports fit() under that name

runner = CliRunner()


def test_resume_takes_the_runs_data_and_reuses_its_frozen_features(tmp_path, monkeypatch):
    from landmark_search.data.synth import make_synthetic_dataset

    synth_data = make_synthetic_dataset(tmp_path / "data", classes=2, per_class=10, image_size=32, seed=0).root
    run = tmp_path / "run"
    common = ["--quiet", "--no-report", "--workers", "0", "--precision", "fp32"]
    first = runner.invoke(app, ["train", "--model", "efficientnet_lite0", "--data", str(synth_data), "--out", str(run),
                                "--epochs", "2", "--patience", "9", "--feature-views", "1", "--image-size", "32",
                                *common])
    assert first.exit_code == 0, first.output
    assert (run / "features.pt").is_file()

    extracted = []
    real = fit_module.extract_features
    monkeypatch.setattr(fit_module, "extract_features", lambda *a, **kw: extracted.append(kw["desc"]) or real(*a, **kw))
    again = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "3", *common])
    assert again.exit_code == 0, again.output
    assert extracted == []  # the features of the first run, not a second extraction
    history = (run / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3"]
    assert json.loads((run / "config.json").read_text())["data"] == str(synth_data)

    no_data = runner.invoke(app, ["train", "--model", "efficientnet_lite0", "--out", str(tmp_path / "new"), *common])
    assert no_data.exit_code == 1 and "pass --data DIR" in no_data.output


def test_the_feature_cache_is_used_only_when_whole_and_for_the_same_key(tmp_path):
    import torch

    from landmark_search.training.run_dir import FEATURES_NAME, cached_features

    calls = []

    def compute():
        calls.append(1)
        return {"train_f": torch.full((4, 3), 1 / 3), "train_y": torch.arange(4), "valid_f": torch.ones(1, 3),
                "valid_y": torch.zeros(1, dtype=torch.long)}

    first = cached_features(tmp_path, "photos A", compute)
    assert first["train_f"].dtype == torch.float16 and first["train_y"].dtype == torch.long
    again = cached_features(tmp_path, "photos A", compute)
    assert len(calls) == 1 and torch.equal(again["train_f"], first["train_f"])  # what the first run trained on
    cached_features(tmp_path, "photos B", compute)  # other photos, size, seed...: computed again
    (tmp_path / FEATURES_NAME).write_bytes(b"damaged")
    cached_features(tmp_path, "photos B", compute)
    assert len(calls) == 3
