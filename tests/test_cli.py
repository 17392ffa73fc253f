"""Every command through Typer's CliRunner, on generated data."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import invoke
from landmark_search.search import recorded_model



def test_version_and_help():
    assert "landmark-search" in invoke("--version", ok=True).output
    out = invoke("--help", ok=True).output
    for cmd in ("train", "classify", "tag", "index", "similar", "export", "evaluate", "models", "data", "demo"):
        assert cmd in out


def test_models_lists_every_architecture():
    rows = json.loads(invoke("models", "--json", ok=True).stdout)
    names = [r["name"] for r in rows]
    assert names[:3] == ["scratch", "residual", "efficientnet_lite0"]
    assert {"resnet18", "resnet34", "resnet50", "mobilenet_v2"} <= set(names)
    eff = next(r for r in rows if r["name"] == "efficientnet_lite0")
    assert eff["feature_dim"] == 1280 and "PyPI" in eff["pretrained"]
    assert eff["params_m"] == 3.71  # a 50-class embedding head on the 3.37 M body


def test_models_prints_its_table_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys; from landmark_search.cli import app\n"
            "try: app(['models'])\n"
            "except SystemExit as e: assert e.code == 0\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "efficientnet_lite0" in out.stdout and out.stdout.split()[-1] == "False", out.stderr


def test_data_synth(tmp_path):
    out = invoke("data", "synth", tmp_path / "d", "--classes", "3", "--per-class", "5", "--image-size", "32", ok=True).output
    assert "3 classes" in out
    assert len(list((tmp_path / "d" / "train").iterdir())) == 3


def test_train_command_writes_a_run_and_says_when_it_stopped_early(synth_data, tmp_path):
    # a learning rate too small to move the loss: no 1 % gain after the first epoch, so --patience 1 stops at 2
    out = invoke("train", "--model", "efficientnet_lite0", "--data", synth_data, "--out", tmp_path / "run",
                 "--epochs", "5", "--patience", "1", "--lr", "1e-12", "--feature-views", "1", "--image-size", "64",
                 "--quiet", "--workers", "0", "--no-report", ok=True).output
    assert "test accuracy" in out and (tmp_path / "run" / "best.pt").is_file()
    assert "stopped early at epoch 2 of 5 (no validation gain for 1 epoch)" in out


def test_train_unknown_model_is_one_clear_line(synth_data):
    result = invoke("train", "--model", "vgg99", "--data", synth_data)
    assert result.exit_code == 1
    assert "unknown model 'vgg99'" in result.output and "Traceback" not in result.output


def test_train_missing_data_layout(tmp_path):
    result = invoke("train", "--data", tmp_path)
    assert result.exit_code == 1 and "no train/ folder" in result.output


def test_evaluate_writes_png_and_json(trained_run, synth_data, tmp_path):
    out = invoke("evaluate", trained_run / "best.pt", "--data", synth_data, "--out", tmp_path, ok=True).output
    assert "accuracy" in out and (tmp_path / "test_confusion.png").is_file()
    report = json.loads((tmp_path / "test_report.json").read_text())
    assert report["accuracy"] >= 0.9 and len(report["per_class"]) == 3
    js = json.loads(invoke("evaluate", trained_run / "best.pt", "--data", synth_data, "--out", tmp_path, "--json", ok=True).stdout)
    assert js["macro_f1"] == report["macro_f1"]


def test_export_then_classify_agree_with_checkpoint(trained_run, synth_data, tmp_path):
    invoke("export", trained_run / "best.pt", "--out", tmp_path / "model.pt", ok=True)
    photos = sorted((synth_data / "test").rglob("*.jpg"))[:4]
    by_ckpt = json.loads(invoke("classify", *photos, "--model", trained_run / "best.pt", "--json", ok=True).stdout)
    by_export = json.loads(invoke("classify", *photos, "--model", tmp_path / "model.pt", "--json",
                                  "--trust-export", ok=True).stdout)
    assert [r["predictions"][0]["id"] for r in by_ckpt] == [r["predictions"][0]["id"] for r in by_export]
    first = by_ckpt[0]
    assert set(first) == {"path", "label", "unknown", "predictions"} and first["unknown"] is False
    assert first["label"] == first["predictions"][0]["label"]  # the decision, beside its candidates
    assert set(first["predictions"][0]) == {"label", "id", "score", "confidence"}  # calibrated: open-set confidence
    assert first["predictions"][0]["id"] == photos[0].parent.name


def test_classify_default_model_gives_imagenet_labels_offline(synth_data):
    photo = sorted((synth_data / "test").rglob("*.jpg"))[0]
    out = json.loads(invoke("classify", photo, "--json", "--top-k", "3", ok=True).stdout)
    preds = out[0]["predictions"]
    assert len(preds) == 3 and preds[0]["score"] >= preds[1]["score"] >= preds[2]["score"]
    import torchvision

    from landmark_search.embeddings import imagenet_categories
    assert preds[0]["label"] in imagenet_categories()
    # The package's copy of the class names (read without importing torchvision) is torchvision's list.
    assert imagenet_categories() == list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def test_classify_skips_a_corrupt_photo_and_names_it(synth_data, tmp_path):
    good = sorted((synth_data / "test").rglob("*.jpg"))[0]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    result = invoke("classify", good, bad, "--json", ok=True)
    assert len(json.loads(result.stdout)) == 1
    assert "broken.jpg" in result.stderr
    assert invoke("classify", good, bad, "--strict").exit_code == 1


def test_tag_index_similar_round_trip(trained_run, synth_data, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    shutil.copytree(synth_data / "test", photos)
    counts = json.loads(invoke("tag", photos, "--model", trained_run / "best.pt", "--json", ok=True).stdout)
    assert counts["tagged"] + counts["no_tag"] == len(list(photos.rglob("*.jpg"))) and counts["tagged"] > 0
    # Named indexes live where LANDMARK_INDEX_HOME says, whatever the current folder.
    monkeypatch.setenv("LANDMARK_INDEX_HOME", str(tmp_path / "indexes"))
    invoke("index", synth_data / "train", "--model", trained_run / "best.pt", "--index", "trip", ok=True)
    assert (tmp_path / "indexes" / "trip" / "model.json").is_file()
    query = sorted(photos.rglob("*.jpg"))[0]
    monkeypatch.chdir(query.parent)
    hits = json.loads(invoke("similar", query.name, "--index", "trip", "--json", "-k", "3", ok=True).stdout)
    assert hits["query"] == str(query) and len(hits["hits"]) == 3  # absolute, as the hits are
    assert all({"path", "score", "label", "place"} == set(h) for h in hits["hits"])
    assert all(Path(h["path"]).is_absolute() for h in hits["hits"])
    lines = invoke("similar", query.name, "--index", "trip", "-k", "1", ok=True).stdout.splitlines()
    assert lines[0].startswith(f"query: {query}  (") and f"  {hits['hits'][0]['path']}" in lines[1]
    # ... or where index_home in the user's config.toml says
    monkeypatch.delenv("LANDMARK_INDEX_HOME")
    config = tmp_path / "xdg-config" / "landmark-search" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'index_home = "{tmp_path / "indexes"}"\n', encoding="utf-8")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    assert json.loads(invoke("similar", query.name, "--index", "trip", "--json", "-k", "3", ok=True).stdout) == hits
    config.write_text('index_home = "indexes"\n', encoding="utf-8")
    relative = invoke("similar", query.name, "--index", "trip")
    assert relative.exit_code == 1 and f"{config}: index_home = 'indexes' is relative" in relative.output


def test_similar_without_an_index_says_where_it_looked_and_how_to_move_it(synth_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photo = sorted((synth_data / "test").rglob("*.jpg"))[0]
    result = invoke("similar", photo)
    assert result.exit_code == 1 and "`landmark index PHOTOS --index default`" in result.output  # a whole command
    assert f"no index at {tmp_path / 'indexes' / 'default'};" in result.output  # the absolute path tried
    assert "LANDMARK_INDEX_HOME" in result.output and "config.toml" in result.output


def test_data_download_bad_url_is_one_line(tmp_path):
    result = invoke("data", "download", tmp_path / "d", "--url", "http://127.0.0.1:9/landmark_images.zip")
    assert result.exit_code == 1 and "--url" in result.output and "Traceback" not in result.output


def test_tag_exits_1_only_when_no_photo_could_be_tagged(synth_data, tmp_path):
    bad = tmp_path / "allbad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (bad / "y.jpg").write_bytes(b"not an image")
    result = invoke("tag", bad)
    assert result.exit_code == 1 and "failed 2" in result.stdout and "x.jpg" in result.stderr
    shutil.copy(sorted((synth_data / "test").rglob("*.jpg"))[0], bad / "good.jpg")
    first = invoke("tag", bad, ok=True).stdout  # partial success: exit 0 (the ImageNet label may be under --min-score)
    assert re.search(r"tagged (\d), no tag (\d) \(unknown 0\), unchanged 0, failed 2", first)
    assert sum(map(int, re.search(r"tagged (\d), no tag (\d)", first).groups())) == 1
    assert "tagged 0, no tag 0 (unknown 0), unchanged 1, failed 2" in invoke("tag", bad, ok=True).stdout
    assert invoke("tag", bad, "--strict").exit_code == 1


def test_reindex_drops_a_photo_that_became_unreadable(trained_run, synth_data, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for src in sorted((synth_data / "test").rglob("*.jpg"))[:3]:
        shutil.copy(src, photos / f"{src.parent.name}_{src.name}")
    broken = sorted(photos.iterdir())[1]
    index, model = tmp_path / "idx", trained_run / "best.pt"
    invoke("index", photos, "--model", model, "--index", index, ok=True)
    broken.write_bytes(b"")  # the user's photo is damaged after it was indexed
    summary = json.loads(invoke("index", photos, "--model", model, "--index", index, "--json", ok=True).stdout)
    assert summary["removed"] == 1 and summary["failed"] == 1 and summary["total"] == 2
    hits = json.loads(invoke("similar", sorted(photos.iterdir())[0], "--index", index, "--json", ok=True).stdout)["hits"]
    assert [h["path"] for h in hits] == [str(sorted(photos.iterdir())[2])]  # the query itself is not a hit


def test_train_bad_option_is_one_line_and_writes_nothing(synth_data, tmp_path):
    result = invoke("train", "--model", "scratch", "--data", synth_data, "--out", tmp_path / "run", "--epochs", "0",
                    ok=False)
    assert result.exit_code == 1 and "--epochs 0: use 1 or more" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_train_missing_data_folder_says_so_before_importing_torch(tmp_path):
    import subprocess
    import sys

    result = invoke("train", "--data", tmp_path / "nope")
    assert result.exit_code == 1 and "--data" in result.output and "no such file or folder" in result.output
    code = ("import sys; from landmark_search.cli import app\n"
            "for args in (['train', '--data', '/no/such'], ['classify', '/no/such.jpg'], ['explain', '/no/such.jpg'],"
            " ['evaluate', '/no/such.pt', '--data', '/no/such'], ['tag', '/no/such'], ['index', '/no/such']):\n"
            "    try: app(args)\n"
            "    except SystemExit as e: assert e.code == 1, args\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr  # a typo answers without importing torch (5-12 s)


def test_train_diverging_run_exits_non_zero_without_a_result(synth_data, tmp_path):
    args = ("train", "--model", "scratch", "--data", synth_data, "--out", tmp_path / "run", "--epochs", "1",
            "--image-size", "32", "--quiet", "--workers", "0", "--no-report", "--seed", "1")
    result = invoke(*args, "--lr", "1e9")
    assert result.exit_code == 1 and "training diverged at epoch 1 (loss nan); lower --lr" in result.output
    assert "test accuracy" not in result.output
    again = invoke(*args)  # the folder now holds that run's files: refused, not mixed
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert "test accuracy" in invoke(*args, "--overwrite", ok=True).output


def test_report_and_evaluate_accept_run_paths_and_refuse_missing_data(trained_run, synth_data, tmp_path):
    assert (tmp_path / "r.html").name in invoke("report", trained_run / "best.pt", "--out", tmp_path / "r.html", ok=True).output
    assert (tmp_path / "r.html").is_file()
    missing = invoke("report", trained_run, "--data", tmp_path / "nope", "--out", tmp_path / "s.html")
    assert missing.exit_code == 1 and "no such folder" in missing.output and not (tmp_path / "s.html").exists()
    assert "accuracy" in invoke("evaluate", trained_run, "--data", synth_data, "--out", tmp_path, ok=True).output
    bad = invoke("evaluate", trained_run / "best.pt", "--data", tmp_path / "nope")
    assert bad.exit_code == 1 and "no such file or folder" in bad.output


def test_bad_output_paths_and_options_are_one_line_errors(trained_run, synth_data, tmp_path):
    a_file = tmp_path / "afile"
    a_file.write_text("user data")
    result = invoke("export", trained_run / "best.pt", "-o", a_file / "model.pt")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [f"error: --out {a_file / 'model.pt'}: {a_file} is a file, not a "
                                                  "folder; pick another --out"]
    assert a_file.read_text() == "user data"
    photo = sorted((synth_data / "test").rglob("*.jpg"))[0]
    for args, message in ((("--batch-size", "0"), "--batch-size 0: use 1 or more"),
                          (("--top-k", "0"), "--top-k 0: use 1 or more"),
                          (("--sheet", tmp_path / "s.txt"), "a contact sheet is .html or .png")):
        result = invoke("classify", photo, "--model", trained_run / "best.pt", *args)
        assert result.exit_code == 1 and message in result.output and photo.name not in result.stdout


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_demo_runs_end_to_end_and_again_into_the_same_folder(tmp_path):
    """`make demo` twice into one folder (at the quick size): the second run reuses the first one's photos,
    retrains its own run over the first and replaces the index and tags made with the first model."""
    from landmark_search.demo import QUICK, run_demo

    out = tmp_path / "demo"
    photos: dict = {}
    first_model = None
    for run in (1, 2):
        summary = run_demo(out, quiet=True, echo=lambda _: None, size=QUICK)
        assert "(3 classes, 72 train, 18 test)" in summary and "(72 photos)" in summary, summary
        correct, shown = re.search(r"classify +(\d+)/(\d+) test photos correct with the export", summary).groups()
        assert int(shown) == 18 and int(correct) >= 12, summary  # chance is 6 of 18
        same = int(re.search(r"similar +\S+: (\d)/5 of the top 5 are the same landmark", summary).group(1))
        assert same >= 3, summary  # chance is 5/3
        if run == 1:
            photos = {p: p.stat().st_mtime_ns for p in sorted((out / "data").rglob("*.jpg"))}
            assert len(photos) == 90
        else:  # the photos were reused, not rendered again
            assert {p: p.stat().st_mtime_ns for p in sorted((out / "data").rglob("*.jpg"))} == photos
        # The index and the tags belong to this run's model, whichever run made them.
        model_id = _sha256(out / "run" / "best.pt")
        assert recorded_model(out / "index")["model_id"] == f"sha256:{model_id}"
        tagged, untagged, unchanged, example = re.search(
            r"tag +(\d+) tagged, (\d+) untagged, (\d+) unchanged; e\.g\. (\S+)\.json", summary).groups()
        # every photo (re)tagged by this run's model; unchanged only where retraining gave the very same file
        same_model = run == 2 and model_id == first_model
        assert (int(unchanged), int(tagged) + int(untagged)) == ((18, 0) if same_model else (0, 18)), summary
        first_model = model_id
        sidecar = json.loads(Path(example + ".json").read_text())["landmark_search"]
        assert sidecar["model"]["sha256"] == model_id
        if not same_model:  # the example is one this run tagged (with the same model, nothing was tagged again)
            assert sidecar["tags"] and Path(example + ".xmp").is_file()
        assert (out / "model.pt").is_file() and (out / "run" / "report.html").is_file()


def test_a_refused_first_index_run_leaves_no_empty_index_folder(synth_data, tmp_path):
    not_a_model = tmp_path / "model.pt"
    not_a_model.write_text("not a checkpoint")
    result = invoke("index", synth_data / "test", "--model", not_a_model, "--index", tmp_path / "new")
    assert result.exit_code == 1 and "not a checkpoint" in result.output
    assert not (tmp_path / "new").exists()


def test_train_command_defaults_are_the_libraries():
    """`landmark train` without options trains what `fit(TrainConfig(...))` trains: every option the CLI shares
    with TrainConfig defaults to the config's own value (a CLI default of its own would silently override the
    measured recipe)."""
    import dataclasses
    import inspect

    from landmark_search.cli.training_cmds import train_cmd
    from landmark_search.config import TrainConfig

    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    cli = {name: p.default.default for name, p in inspect.signature(train_cmd).parameters.items()
           if hasattr(p.default, "default")}
    shared = sorted(set(fields) & set(cli) - {"data", "out", "places"})
    assert {"head", "feature_views", "valid_split", "epochs"} <= set(shared), shared
    assert {k: cli[k] for k in shared} == {k: fields[k] for k in shared}
