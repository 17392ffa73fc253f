"""Grad-CAM: shapes on every architecture, localisation on a hand-built model and on a trained one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from landmark_search.config import TrainConfig
from landmark_search.data.synth import make_synthetic_dataset
from landmark_search.data.transforms import resize_size
from landmark_search.embeddings import LoadedModel, load_model
from landmark_search.errors import CheckpointError, LandmarkError
from landmark_search.render.explain import PANEL, explain_image, explain_photos, gradcam, resolve_class
from landmark_search.models import LandmarkModel, build_model, list_models
from landmark_search.training import fit

# Measured on this dataset (3 classes, seeds 0-3): mean Grad-CAM mass inside the structure's box
# 0.61-0.68, box area 0.26-0.29 of the crop, CAMs of *other* photos in the same box 0.41-0.47.
MIN_MASS_IN_BOX = 0.55
MIN_LIFT_OVER_AREA = 1.8
MIN_GAIN_OVER_SHUFFLED = 0.08


@pytest.mark.parametrize("arch", list_models())
def test_gradcam_shape_range_and_no_side_effects(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 3, pretrained=False).train()
    x = torch.randn(1, 3, 64, 64)
    cam, index, prob = gradcam(model, x, None)
    assert cam.shape == (64, 64) and cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() <= 1.0
    assert cam.max() == pytest.approx(1.0) or cam.max() == 0.0
    assert model.training, "the caller's train/eval mode is restored"
    assert all(p.grad is None for p in model.parameters()), "no gradients left on the weights"
    with torch.no_grad():
        expected = model.eval()(x).softmax(1)[0]
    assert index == int(expected.argmax())
    assert prob == pytest.approx(float(expected[index]), rel=1e-4, abs=1e-5)
    _, forced, forced_prob = gradcam(model, x, 2)
    assert forced == 2 and forced_prob == pytest.approx(float(expected[2]), rel=1e-4, abs=1e-5)


def test_gradcam_rejects_a_batch_and_a_bad_class() -> None:
    model = build_model("scratch", 3, pretrained=False)
    with pytest.raises(TypeError, match=r"\(1, 3, H, W\)"):
        gradcam(model, torch.randn(2, 3, 32, 32))
    with pytest.raises(LandmarkError, match="out of range"):
        gradcam(model, torch.randn(1, 3, 32, 32), 3)


def _colour_model() -> LandmarkModel:
    """Class 0 = 'red stuff', class 1 = 'green stuff', on a 4x downsampled feature map."""
    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0
        conv.weight[1, 1] = 1.0
    model = LandmarkModel(nn.Sequential(conv, nn.AvgPool2d(4)), 2, 2, head="linear", dropout=0.0)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.eye(2))
        model.classifier.bias.zero_()
    return model.eval()


def test_gradcam_finds_the_evidence_where_it_is() -> None:
    # Off-centre, non-square patches: a transposed, flipped or misaligned map would miss them.
    x = torch.zeros(1, 3, 64, 64)
    x[0, 0, 8:24, 36:60] = 1.0  # red, top right
    x[0, 1, 40:60, 4:20] = 1.0  # green, bottom left
    red = np.zeros((64, 64), bool)
    red[8:24, 36:60] = True
    green = np.zeros((64, 64), bool)
    green[40:60, 4:20] = True
    model = _colour_model()
    cam0, i0, _ = gradcam(model, x, 0)
    cam1, i1, _ = gradcam(model, x, 1)
    assert (i0, i1) == (0, 1)
    # Bilinear upsampling spills a little past the patch edges; 0.85 leaves room for that only.
    assert cam0[red].sum() / cam0.sum() > 0.85
    assert cam1[green].sum() / cam1.sum() > 0.85
    assert cam0[green].sum() < 1e-6 and cam1[red].sum() < 1e-6


def test_resolve_class_by_name_or_id_case_insensitive() -> None:
    ids = ["00.Tower", "01.Stone_Arch", "02.Dome"]
    names = ["Tower", "Stone Arch", "Dome"]
    assert resolve_class("stone arch", ids, names) == 1
    assert resolve_class("02.DOME", ids, names) == 2
    assert resolve_class(" Tower ", ids, names) == 0
    with pytest.raises(LandmarkError, match="unknown class 'stone ark'; did you mean: 'Stone Arch'"):
        resolve_class("stone ark", ids, names)
    with pytest.raises(LandmarkError, match="unknown class 'Big Ben'.*e.g.: 'Tower', 'Stone Arch', 'Dome'"):
        resolve_class("Big Ben", ids, names)


# ------------------------------------------------------------------------------ a trained model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """EfficientNet-Lite0 (offline ImageNet weights) with a head trained on 3 synthetic landmarks.

    The from-scratch CNN was measured first: 10 epochs at 64 px took 87 s on 2 cores and reached
    44 % test accuracy with Grad-CAM mass in the box at chance (0.28 vs box area 0.30); its 2x2
    feature map at 64 px is too coarse to localise anything anyway. The frozen backbone trains in
    seconds and its 7x7 map at 224 px localises.
    """
    root = tmp_path_factory.mktemp("explain")
    data = make_synthetic_dataset(root / "data", classes=3, per_class=16, image_size=96, seed=0,
                                  test_fraction=0.5).root
    cfg = TrainConfig(model="efficientnet_lite0", data=str(data), out=str(root / "run"), epochs=30, batch_size=16,
                      image_size=224, feature_views=1, patience=100, workers=0, quiet=True, seed=0)
    result = fit(cfg)
    assert result.metrics["test_accuracy"] >= 0.9, "the localisation test needs a model that recognises the scenes"
    return data, result.paths.best


def _box_mask(box: list[int], generated: int, image_size: int) -> np.ndarray:
    """The structure's box mapped through resize-shorter-side + center crop."""
    scale = resize_size(image_size) / generated
    offset = (resize_size(image_size) - image_size) / 2
    x0, y0, x1, y1 = box
    mask = np.zeros((image_size, image_size), bool)
    r0, r1 = max(0, int(np.floor(y0 * scale - offset))), max(0, int(np.ceil(y1 * scale - offset)))
    c0, c1 = max(0, int(np.floor(x0 * scale - offset))), max(0, int(np.ceil(x1 * scale - offset)))
    mask[r0:r1, c0:c1] = True
    return mask


def test_gradcam_mass_falls_on_the_landmark(trained: tuple[Path, Path]) -> None:
    data, best = trained
    loaded = load_model(best)
    boxes = json.loads((data / "boxes.json").read_text())
    cams, masks = [], []
    for rel, box in sorted(boxes.items()):
        if not rel.startswith("test/"):
            continue
        true = loaded.class_ids.index(rel.split("/")[1])
        _, cam, index, _ = explain_image(loaded, data / rel, true)
        assert index == true
        cams.append(cam)
        masks.append(_box_mask(box, 96, loaded.image_size))
    assert len(cams) == 24

    def mass(cam: np.ndarray, mask: np.ndarray) -> float:
        return float(cam[mask].sum() / max(cam.sum(), 1e-9))

    inside = np.mean([mass(c, m) for c, m in zip(cams, masks)])
    area = np.mean([m.mean() for m in masks])
    # Control: each photo's box scored with the next photo's CAM. A map that only learnt
    # "the middle of the picture" scores as well there as on its own photo.
    shuffled = np.mean([mass(cams[(i + 1) % len(cams)], m) for i, m in enumerate(masks)])
    assert inside > MIN_MASS_IN_BOX, (inside, area, shuffled)
    assert inside > MIN_LIFT_OVER_AREA * area, (inside, area, shuffled)
    assert inside > shuffled + MIN_GAIN_OVER_SHUFFLED, (inside, area, shuffled)


def test_explain_photos_writes_overlays_and_skips_bad_photos(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, best = trained
    photos = [data / "test/00.Tower/0.jpg", data / "test/02.Dome/0.jpg"]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    failures: list[tuple[Path, str]] = []
    out = tmp_path / "explain"
    results = explain_photos([photos[0], bad, photos[1]], best, None, out, save_raw=True,
                             on_error=lambda p, why: failures.append((p, why)))
    assert [r.path for r in results] == photos
    assert [r.label for r in results] == ["Tower", "Dome"]
    assert [p for p, _ in failures] == [bad] and "not a readable image" in failures[0][1]
    # Both photos are named 0.jpg: the second overlay must not overwrite the first.
    assert [r.overlay_png.name for r in results] == ["0.gradcam.png", "0-2.gradcam.png"]
    # One photo, one number: explain gives the probability classify (and tag, and the report) gives.
    from landmark_search.config import EmbedConfig
    from landmark_search.embeddings import load_model
    from landmark_search.tagging import classify

    classified, _ = classify(photos, load_model(best), EmbedConfig(progress=False, workers=0), top_k=1)
    assert [r.probability for r in results] == [c.predictions[0].score for c in classified]
    for r in results:
        assert 0.0 < r.probability <= 1.0
        with Image.open(r.overlay_png) as img:  # the photo and its map side by side, 480 px each, title on top
            assert img.format == "PNG" and img.size == (2 * PANEL + 30, PANEL + 56)
        cam = np.load(r.raw_npy)
        assert cam.shape == (224, 224) and 0.0 <= cam.min() and cam.max() <= 1.0

    # A wide photo is shown whole (not its 224 px centre crop), the map over the part the model
    # saw and the rest dimmed.
    with Image.open(photos[0]) as src:
        wide = Image.new("RGB", (2 * src.width, src.height))
        wide.paste(src, (0, 0))
        wide.paste(src, (src.width, 0))
    wide.save(tmp_path / "wide.png")
    (figure,) = explain_photos([tmp_path / "wide.png"], best, None, tmp_path / "wide", save_raw=False)
    with Image.open(figure.overlay_png) as img:
        assert img.size == (2 * PANEL + 30, PANEL // 2 + 56)
        photo_edge, map_edge = img.getpixel((14, 32 + PANEL // 4)), img.getpixel((PANEL + 24, 32 + PANEL // 4))
        assert sum(map_edge) < 0.6 * sum(photo_edge)  # left of the crop: dimmed on the right, as it is on the left

    forced = explain_photos([photos[0]], best, "DOME", tmp_path / "forced", save_raw=False)
    assert forced[0].label == "Dome" and forced[0].raw_npy is None
    assert forced[0].probability < results[0].probability, "the Tower photo is less Dome than Tower"
    with pytest.raises(LandmarkError, match="unknown class 'Eiffel'"):
        explain_photos([photos[0]], best, "Eiffel", tmp_path / "x")


def test_explain_refuses_an_export(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, best = trained
    loaded = load_model(best)
    export = LoadedModel(name="model.pt", kind="export", model_id="sha256:0", sha256="0", image_size=loaded.image_size,
                         mean=loaded.mean, std=loaded.std, class_ids=loaded.class_ids, class_names=loaded.class_names,
                         embedding_dim=loaded.embedding_dim, module=nn.Identity())
    with pytest.raises(CheckpointError, match=r"pass the checkpoint it was exported from \(RUN/best.pt\)"):
        explain_photos([tmp_path / "a.jpg"], export, None, tmp_path / "out")


def test_cli_explain(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from landmark_search.cli import app

    data, best = trained
    photo = data / "test/01.Stone_Arch/2.jpg"
    out = tmp_path / "maps"
    result = CliRunner().invoke(app, ["explain", str(photo), "--model", str(best), "--class", "stone arch",
                                      "--out", str(out), "--raw"])
    assert result.exit_code == 0, result.output
    assert f"{photo} -> {out / '2.gradcam.png'}  Stone Arch  p=" in result.output
    assert (out / "2.gradcam.png").is_file() and (out / "2.gradcam.npy").is_file()
    result = CliRunner().invoke(app, ["explain", str(photo), "--model", str(best), "--class", "Big Ben",
                                      "--out", str(out)])
    assert result.exit_code == 1 and "error: unknown class 'Big Ben'" in result.output


def test_cli_explain_twice_in_a_folder_never_explains_its_own_overlays(trained: tuple[Path, Path],
                                                                       tmp_path: Path, monkeypatch) -> None:
    import shutil

    from typer.testing import CliRunner

    from landmark_search.cli import app

    data, best = trained
    shutil.copy(data / "test/01.Stone_Arch/2.jpg", tmp_path / "a.jpg")
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        result = CliRunner().invoke(app, ["explain", ".", "--model", str(best)])
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "explain").iterdir()) == ["a.gradcam.png"]
    (tmp_path / "elsewhere.gradcam.png").write_bytes((tmp_path / "explain/a.gradcam.png").read_bytes())
    result = CliRunner().invoke(app, ["explain", ".", "--model", str(best)])
    assert result.output.count(" -> ") == 1  # an overlay outside explain/ is not a photo either
