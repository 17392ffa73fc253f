"""What a new user runs into: each a one-line answer that says what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import one_line_error
from landmark_search.cli import app
from landmark_search.data.datasets import discover
from landmark_search.errors import DataError

runner = CliRunner()


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
    """`evaluate RUN --data DIR` takes a data folder with only test/; training on it is refused with the fix."""
    result = runner.invoke(app, ["evaluate", str(trained_run), "--data", str(test_only), "--out", str(tmp_path / "o"),
                                 "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] > 0.5
    one_line_error(runner.invoke(app, ["evaluate", str(trained_run), "--data", str(test_only), "--split", "train"]),
                   "no train/ folder")


def test_train_data_mistakes_say_what_to_pass(synth_data, tmp_path):
    """`--data photo.jpg` is a file; `--data DATA/test` means its parent."""
    photo = next((synth_data / "test").rglob("*.jpg"))
    one_line_error(runner.invoke(app, ["train", "--data", str(photo), "-q"]), f"{photo} is a file")
    for split in ("test", "train"):
        one_line_error(runner.invoke(app, ["train", "--data", str(synth_data / split), "-q"]),
                       f"--data {synth_data}")


def _jpeg(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_raw_files_are_read_through_their_embedded_preview(tmp_path):
    """RAW files (.NEF/.CR2/.ARW/.DNG) are read through the full-size JPEG every camera embeds."""
    import io

    import numpy as np
    from PIL import Image

    from landmark_search.photos.files import iter_photos
    from landmark_search.photos.images import load_image
    from landmark_search.errors import BadImageError

    noise = np.random.default_rng(0).bytes
    container = io.BytesIO()  # a TIFF-based RAW: IFD0 says "rotate 90" for the photo it holds
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (16, 8)).save(container, "TIFF", exif=exif)
    nef = tmp_path / "DSC_0001.NEF"
    nef.write_bytes(container.getvalue() + noise(4000) + b"\xff\xd8\xff\xe0 not a jpeg" + _jpeg((40, 30), (0, 255, 0))
                    + noise(3000) + _jpeg((64, 48), (255, 0, 0)) + noise(5000))  # thumbnail, then the preview
    cr3 = tmp_path / "IMG_0002.CR3"
    cr3.write_bytes(b"ftypcrx " + noise(20000))
    assert sorted(p.name for p in iter_photos([tmp_path])) == ["DSC_0001.NEF", "IMG_0002.CR3"]

    img = load_image(nef)
    assert img.size == (48, 64)  # the largest preview, turned as the camera recorded
    assert img.getpixel((20, 20))[0] > 240 and img.getpixel((20, 20))[1] < 15
    with pytest.raises(BadImageError, match=f"{cr3}: a camera RAW file without an embedded JPEG preview.*export a JPEG"):
        load_image(cr3)
    limit = r"\(0\.00307 megapixels\) is more than the 0\.001-megapixel limit; .* --max-pixels 3072$"
    with pytest.raises(BadImageError, match=limit):
        load_image(nef, max_pixels=1000)


def test_help_describes_every_option_with_its_default():
    """Every option is described with its default; a flag shows no `<bool>`."""
    import typer.main

    root = runner.invoke(app, ["--help"])
    assert root.exit_code == 0 and "<bool>" not in root.output and "--version  Print the version" in root.output
    group = typer.main.get_command(app)
    commands = [(name, cmd) for name, cmd in group.commands.items()]
    commands += [(f"data {n}", c) for n, c in group.commands["data"].commands.items()]
    for name, cmd in commands:
        for param in getattr(cmd, "params", []):
            if param.param_type_name == "option":
                assert (param.help or "").strip(), f"landmark {name} {param.opts[0]} has no help"
    help_of = {name: runner.invoke(app, [*name.split(), "--help"]).output for name in ("index", "train")}
    assert "--max-pixels" in help_of["index"] and "default 178956970" in help_of["index"]
    assert "<bool>" not in help_of["index"] and "-q, --quiet" in help_of["index"]
    assert "120 from scratch" in help_of["train"] and "3e-3" in help_of["train"]


def test_readme_models_table_matches_the_models():
    """The README's models table says what `landmark models` says (embedding sizes included)."""
    from landmark_search.models import build_model

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in ("scratch", "residual"):
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}` |"))
        embed = int(row.split("|")[4].split()[0])
        assert embed == build_model(name, 3, pretrained=False).embedding_dim, row


def test_usage_mistakes_are_one_line(tmp_path):
    """Usage errors are one line, as the README promises."""
    for args, words in ((["index"], "Missing argument"), (["index", str(tmp_path), "--bogus"], "No such option: --bogus"),
                        (["index", str(tmp_path), "--batch-size", "many"], "'--batch-size'")):
        result = runner.invoke(app, args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert lines[0].startswith("error: ") and words in lines[0] and "index --help`" in lines[0]
    assert runner.invoke(app, []).exit_code == 0  # `landmark` alone prints the help

    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"never read")
    typo = runner.invoke(app, ["classify", str(photo), "-m", "efficientnet_lit0"])
    one_line_error(typo, "unknown model 'efficientnet_lit0'; did you mean 'efficientnet_lite0'?")
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = runner.invoke(app, ["untag", str(empty)])
    assert nothing.exit_code == 1 and f"no photos found in {empty}:" in nothing.stderr


def test_small_things_a_new_user_notices(tmp_path, monkeypatch):
    """export makes no folder tree a typo names, synth's folders are 0755, "1 photo" is singular, and Ctrl-C
    before anything finished claims no saved work."""
    import os

    from landmark_search import tagging, untag
    from landmark_search.cli import _count
    from landmark_search.data.synth import make_synthetic_dataset

    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"only its path matters here")
    result = runner.invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "typo" / "dir" / "m.pt")])
    one_line_error(result, f"the folder {tmp_path / 'typo' / 'dir'} does not exist")
    assert not (tmp_path / "typo").exists()

    old = os.umask(0o022)
    try:
        data = make_synthetic_dataset(tmp_path / "synth", classes=2, per_class=2, image_size=32).root
    finally:
        os.umask(old)
    assert (data.stat().st_mode & 0o777, (data / "train").stat().st_mode & 0o777) == (0o755, 0o755)

    assert (_count(1, "photo"), _count(0, "photo"), _count(2, "place")) == ("1 photo", "0 photos", "2 places")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(untag, "untag", interrupted)
    stopped = runner.invoke(app, ["untag", str(tmp_path)])
    assert stopped.exit_code == 130 and "finished work was saved" not in stopped.output
    assert "no file was left half-written" in stopped.output and "--resume" not in stopped.output
    monkeypatch.setattr(tagging, "tag", interrupted)
    stopped = runner.invoke(app, ["tag", str(tmp_path)])
    assert stopped.exit_code == 130 and "--resume" not in stopped.output

    import landmark_search.training as training

    monkeypatch.setattr(training, "fit", interrupted)
    stopped = runner.invoke(app, ["train", "--data", str(data)])
    assert stopped.exit_code == 130 and "landmark train --resume RUN" in stopped.output
