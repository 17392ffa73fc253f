"""Every command through Typer's CliRunner, on generated data."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from landmark_search.cli import app

runner = CliRunner()


def invoke(*args: str, ok: bool = True):
    result = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_version_and_help():
    assert "landmark-search" in invoke("--version").output
    out = invoke("--help").output
    for cmd in ("train", "classify", "tag", "index", "similar", "export", "evaluate", "models", "data", "demo"):
        assert cmd in out


def test_models_lists_every_architecture():
    rows = json.loads(invoke("models", "--json").stdout)
    names = [r["name"] for r in rows]
    assert names[:3] == ["scratch", "residual", "efficientnet_lite0"]
    assert {"resnet18", "resnet34", "resnet50", "mobilenet_v2"} <= set(names)
    eff = next(r for r in rows if r["name"] == "efficientnet_lite0")
    assert eff["feature_dim"] == 1280 and "PyPI" in eff["pretrained"]


def test_data_synth(tmp_path):
    out = invoke("data", "synth", tmp_path / "d", "--classes", "3", "--per-class", "5", "--image-size", "32").output
    assert "3 classes" in out
    assert len(list((tmp_path / "d" / "train").iterdir())) == 3


def test_train_command_writes_a_run(synth_data, tmp_path):
    out = invoke("train", "--model", "efficientnet_lite0", "--data", synth_data, "--out", tmp_path / "run",
                 "--epochs", "2", "--feature-views", "1", "--image-size", "64", "--quiet", "--workers", "0",
                 "--no-report").output
    assert "test accuracy" in out and (tmp_path / "run" / "best.pt").is_file()


def test_train_unknown_model_is_one_clear_line(synth_data):
    result = invoke("train", "--model", "vgg99", "--data", synth_data, ok=False)
    assert result.exit_code == 1
    assert "unknown model 'vgg99'" in result.output and "Traceback" not in result.output


def test_train_missing_data_layout(tmp_path):
    result = invoke("train", "--data", tmp_path, ok=False)
    assert result.exit_code == 1 and "no train/ folder" in result.output


def test_evaluate_writes_png_and_json(trained_run, synth_data, tmp_path):
    out = invoke("evaluate", trained_run / "best.pt", "--data", synth_data, "--out", tmp_path).output
    assert "accuracy" in out and (tmp_path / "test_confusion.png").is_file()
    report = json.loads((tmp_path / "test_report.json").read_text())
    assert report["accuracy"] >= 0.9 and len(report["per_class"]) == 3
    js = json.loads(invoke("evaluate", trained_run / "best.pt", "--data", synth_data, "--out", tmp_path, "--json").stdout)
    assert js["macro_f1"] == report["macro_f1"]


def test_export_then_classify_agree_with_checkpoint(trained_run, synth_data, tmp_path):
    invoke("export", trained_run / "best.pt", "--out", tmp_path / "model.pt")
    photos = sorted((synth_data / "test").rglob("*.jpg"))[:4]
    by_ckpt = json.loads(invoke("classify", *photos, "--model", trained_run / "best.pt", "--json").stdout)
    by_export = json.loads(invoke("classify", *photos, "--model", tmp_path / "model.pt", "--json").stdout)
    assert [r["predictions"][0]["id"] for r in by_ckpt] == [r["predictions"][0]["id"] for r in by_export]
    first = by_ckpt[0]
    assert set(first) == {"path", "predictions"} and set(first["predictions"][0]) == {"label", "id", "score"}
    assert first["predictions"][0]["id"] == photos[0].parent.name


def test_classify_default_model_gives_imagenet_labels_offline(synth_data):
    photo = sorted((synth_data / "test").rglob("*.jpg"))[0]
    out = json.loads(invoke("classify", photo, "--json", "--top-k", "3").stdout)
    preds = out[0]["predictions"]
    assert len(preds) == 3 and preds[0]["score"] >= preds[1]["score"] >= preds[2]["score"]
    from landmark_search.embeddings import imagenet_categories
    assert preds[0]["label"] in imagenet_categories()


def test_classify_skips_a_corrupt_photo_and_names_it(synth_data, tmp_path):
    good = sorted((synth_data / "test").rglob("*.jpg"))[0]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    result = invoke("classify", good, bad, "--json")
    assert len(json.loads(result.stdout)) == 1
    assert "broken.jpg" in result.stderr
    assert invoke("classify", good, bad, "--strict", ok=False).exit_code == 1


def test_tag_index_similar_round_trip(trained_run, synth_data, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(synth_data / "test", photos)
    out = invoke("tag", photos, "--model", trained_run / "best.pt", "--json").stdout
    assert json.loads(out)["tagged"] == len(list(photos.rglob("*.jpg")))
    index = tmp_path / "idx"
    invoke("index", synth_data / "train", "--model", trained_run / "best.pt", "--index", index)
    query = sorted(photos.rglob("*.jpg"))[0]
    hits = json.loads(invoke("similar", query, "--index", index, "--json", "-k", "3").stdout)
    assert hits["query"] == str(query) and len(hits["hits"]) == 3
    assert all({"path", "score", "label"} == set(h) for h in hits["hits"])


def test_similar_without_an_index_says_how_to_build_one(synth_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photo = sorted((synth_data / "test").rglob("*.jpg"))[0]
    result = invoke("similar", photo, ok=False)
    assert result.exit_code == 1 and "landmark index PHOTOS" in result.output


def test_data_download_bad_url_is_one_line(tmp_path):
    result = invoke("data", "download", tmp_path / "d", "--url", "http://127.0.0.1:9/landmark_images.zip", ok=False)
    assert result.exit_code == 1 and "--url" in result.output and "Traceback" not in result.output
