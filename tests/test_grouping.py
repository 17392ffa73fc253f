"""`landmark group`: naming a group folder, one grouping for the CLI and the web page, stable group numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from landmark_search.cli import app


@pytest.mark.parametrize("old", ["../../victim", "../victim", "..", "/tmp/victim", "link"])
def test_name_accepts_only_a_folder_under_out_train(tmp_path, old):
    out = tmp_path / "groups"
    (out / "train" / "group-01").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    (out / "train" / "link").symlink_to(victim)  # a link out of OUT/train is no group folder either
    old = str(victim) if old == "/tmp/victim" else old
    result = CliRunner().invoke(app, ["group", "--name", old, "NEW", "--out", str(out)])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert (victim / "keep.txt").read_text() == "mine" and (out / "train" / "link").is_symlink()
    assert sorted(p.name for p in (out / "train").iterdir()) == ["group-01", "link"]  # nothing moved
