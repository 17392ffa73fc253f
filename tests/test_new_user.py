"""What a new user runs into (issue 18, new-user defects): each a one-line answer that says what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from landmark_search.cli import app
from landmark_search.data.datasets import discover
from landmark_search.errors import DataError

runner = CliRunner()


def one_line_error(result, *words: str) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture()
def test_only(synth_data, tmp_path) -> Path:
    """A data folder with only test/ (photos to evaluate on, none to train with)."""
    root = tmp_path / "held-out"
    shutil.copytree(synth_data / "test", root / "test")
    return root


def test_a_test_only_folder_can_be_evaluated_but_not_trained_on(test_only):
    layout = discover(test_only)
    assert layout.test and len(layout.classes) == 3
    with pytest.raises(DataError, match=f"{test_only}: no train/ folder"):
        layout.train
    trained = runner.invoke(app, ["train", "--data", str(test_only), "--out", str(test_only / "run"), "-q"])
    one_line_error(trained, f"{test_only}: no train/ folder")
    assert not (test_only / "run").exists()


def test_evaluate_on_a_folder_with_only_test(trained_run, test_only, tmp_path):
    """Issue 18 item 14: `evaluate RUN --data DIR` refused a data folder with only test/."""
    result = runner.invoke(app, ["evaluate", str(trained_run), "--data", str(test_only), "--out", str(tmp_path / "o"),
                                 "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] > 0.5
    one_line_error(runner.invoke(app, ["evaluate", str(trained_run), "--data", str(test_only), "--split", "train"]),
                   "no train/ folder")


def test_train_data_mistakes_say_what_to_pass(synth_data, tmp_path):
    """Issue 18 item 23: `--data photo.jpg` is a file; `--data DATA/test` means its parent."""
    photo = next((synth_data / "test").rglob("*.jpg"))
    one_line_error(runner.invoke(app, ["train", "--data", str(photo), "-q"]), f"{photo} is a file")
    for split in ("test", "train"):
        one_line_error(runner.invoke(app, ["train", "--data", str(synth_data / split), "-q"]),
                       f"--data {synth_data}")
