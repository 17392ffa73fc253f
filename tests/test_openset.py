"""Open-set recognition: the confidence against brute force, the threshold's meaning, GAP, and "unknown" end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from landmark_search.config import EmbedConfig
from landmark_search.models.openset import OpenSet, calibrate
from landmark_search.training.openset_eval import global_average_precision, open_set_scores

CFG = EmbedConfig(progress=False, workers=0)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clusters(rng: np.random.Generator, centres: np.ndarray, n: int, spread: float = 0.1):
    labels = np.repeat(np.arange(len(centres)), n)
    return _unit(centres[labels] + spread * rng.standard_normal((len(labels), centres.shape[1]))), labels


@pytest.fixture()
def world():
    rng = np.random.default_rng(0)
    centres = _unit(rng.standard_normal((4, 32)))
    train, train_y = _clusters(rng, centres, 40)
    valid, valid_y = _clusters(rng, centres, 25)
    test, test_y = _clusters(rng, centres, 25)
    others = _unit(rng.standard_normal((200, 32)))  # everything else: no cluster
    return train, train_y, valid, valid_y, test, test_y, others


def test_similarity_is_the_nearest_training_vector_of_that_class(world):
    train, train_y, valid, valid_y, test, test_y, others = world
    model = calibrate(train, train_y, valid, valid_y, num_classes=4)
    classes = np.array([0, 1, 2, 3, 1])
    got = model.similarity(test[:5], classes)
    brute = [max(float(test[i] @ train[j]) for j in range(len(train)) if train_y[j] == c)
             for i, c in enumerate(classes)]
    np.testing.assert_allclose(got, brute, rtol=1e-3, atol=1e-3)  # the bank is stored as float16


def test_threshold_keeps_the_recall_target_and_refuses_everything_else(world):
    train, train_y, valid, valid_y, test, test_y, others = world
    model = calibrate(train, train_y, valid, valid_y, num_classes=4, recall_target=0.95)
    assert (model.validation >= model.threshold).mean() >= 0.95  # its own definition, on validation
    kept = model.confidence(test, test_y) >= model.threshold
    nearest = (others @ train.T).argmax(1)  # each random vector's most flattering class
    false = model.confidence(others, train_y[nearest]) >= model.threshold
    assert kept.mean() >= 0.9 and false.mean() <= 0.05, (kept.mean(), false.mean())
    # A stricter recall target never lowers the threshold, and its state survives the round trip.
    assert model.threshold_for(0.8) >= model.threshold_for(0.99)
    again = OpenSet.from_state(model.to_state())
    np.testing.assert_allclose(again.confidence(test, test_y), model.confidence(test, test_y), atol=1e-3)
    with pytest.raises(ValueError, match="recall"):
        model.threshold_for(1.5)


def test_tiny_validation_split_falls_back_to_leave_one_out(world):
    train, train_y, *_ = world
    model = calibrate(train, train_y, train[:0], train_y[:0], num_classes=4)
    assert len(model.validation) == len(train) and 0.0 < model.threshold < 1.0


def test_gap_against_a_hand_computed_ranking():
    # sorted by confidence: right, distractor, right, wrong-class landmark -> (1/1 + 2/3) / 3 landmarks
    conf = [0.9, 0.8, 0.7, 0.6]
    correct = [True, False, True, False]
    assert global_average_precision(conf, correct, 3) == pytest.approx((1 + 2 / 3) / 3)
    scores = open_set_scores(conf, correct, [True, False, True, True], threshold=0.75, score="test")
    assert scores.false_tag_rate == 1.0 and scores.recall == pytest.approx(1 / 3)
    assert scores.precision == pytest.approx(0.5)


def _out_of_distribution(folder: Path) -> list[Path]:
    """Photos of nothing the synthetic landmarks look like: flat colours, noise, stripes."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    images = [np.full((96, 96, 3), c, np.uint8) for c in ((250, 250, 250), (10, 10, 10), (200, 30, 30))]
    images += [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(3)]
    stripes = np.zeros((96, 96, 3), np.uint8)
    stripes[:, ::8] = 255
    images.append(stripes)
    paths = []
    for i, arr in enumerate(images):
        paths.append(folder / f"other_{i}.jpg")
        Image.fromarray(arr).save(paths[-1], quality=90)
    return paths


def test_trained_model_calls_other_photos_unknown_and_tags_its_landmarks(trained_run, synth_data, tmp_path):
    from landmark_search.embeddings import load_model
    from landmark_search.tagging import TagOptions, classify, tag

    model = load_model(trained_run / "best.pt")
    assert model.openset is not None and model.features
    others = _out_of_distribution(tmp_path / "library" / "others")
    results, failed = classify(others, model, CFG, top_k=3)
    assert not failed and all(r.unknown for r in results), [(r.path.name, r.predictions[0]) for r in results]

    landmarks = sorted((synth_data / "test").rglob("*.jpg"))
    known, _ = classify(landmarks, model, CFG, top_k=1)
    right = [not r.unknown and r.predictions[0].id == p.parent.name for r, p in zip(known, landmarks)]
    assert np.mean(right) >= 0.8

    assert results[0].predictions[0].confidence < 0.5
    summary = tag([tmp_path / "library"], str(trained_run / "best.pt"), TagOptions(), CFG)
    assert sorted(summary.unknown) == sorted(others) and not summary.tagged
    assert sorted(summary.not_written) == sorted(others) and not list((tmp_path / "library").rglob("*.json"))


def test_evaluate_with_distractors_reports_gap_and_the_report_shows_it(trained_run, synth_data, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from landmark_search.cli import app
    from landmark_search.render.report import write_report

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    _out_of_distribution(tmp_path / "distractors")
    result = CliRunner().invoke(app, ["evaluate", str(run), "--data", str(synth_data), "--distractors",
                                      str(tmp_path / "distractors"), "--json", "-q"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["false_tag_rate"] == 0.0 and printed["recall"] >= 0.8 and printed["gap"] >= 0.8
    assert printed["open_set"]["n_distractors"] == 7
    assert (run / "test_pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = write_report(run, synth_data).read_text()
    assert "Photos of anything else" in html and f"{printed['gap']:.3f}" in html and "of 7 distractors tagged" in html


def test_a_checkpoint_without_calibration_loads_and_warns(trained_run, synth_data, tmp_path):
    """A best.pt trained before the open set: every photo gets a class, and the user is told why."""
    from typer.testing import CliRunner

    from landmark_search.cli import app
    from landmark_search.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

    model, _ = load_checkpoint(trained_run / "best.pt")
    old = tmp_path / "old.pt"
    save_checkpoint(old, model, read_checkpoint(trained_run / "best.pt")["meta"])  # no "openset" entry
    others = _out_of_distribution(tmp_path / "others")
    result = CliRunner().invoke(app, ["classify", str(others[0]), "--model", str(old), "--json"])
    assert result.exit_code == 0, result.output
    assert "old.pt has no open-set calibration" in result.stderr
    assert json.loads(result.stdout)[0]["unknown"] is False


@pytest.mark.parametrize("command", ["classify", "tag"])
def test_a_recall_outside_0_1_is_one_line(command, tmp_path):
    from typer.testing import CliRunner

    from conftest import one_line_error
    from landmark_search.cli import app

    result = CliRunner().invoke(app, [command, str(tmp_path), "--recall", "1.5"])
    one_line_error(result, "--recall 1.5", "(0, 1]")
