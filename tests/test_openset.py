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
    """Non-negative features (as pooled ReLU activations are) around 5 centres; the 5th is never trained on."""
    rng = np.random.default_rng(0)
    centres = _unit(np.abs(rng.standard_normal((5, 32))) ** 3)  # sparse, as ReLU features are
    train, train_y = _clusters(rng, centres[:4], 40)
    test, test_y = _clusters(rng, centres[:4], 25)
    unseen, _ = _clusters(rng, centres[4:], 40)  # a landmark the model was never shown
    others = _unit(np.abs(rng.standard_normal((200, 32))))  # everything else: no cluster
    return np.abs(train), train_y, np.abs(test), test_y, np.abs(unseen), others


def _power(x: np.ndarray) -> np.ndarray:
    return _unit(np.sqrt(np.maximum(x, 0)))


def test_similarity_is_the_nearest_training_vector_of_that_class(world):
    train, train_y, test, *_ = world
    model = calibrate(train, train_y, num_classes=4)
    classes = np.array([0, 1, 2, 3, 1])
    got = model.similarity(test[:5], classes)
    brute = [max(float(_power(test[i:i + 1])[0] @ _power(train[j:j + 1])[0]) for j in range(len(train))
                 if train_y[j] == c) for i, c in enumerate(classes)]
    np.testing.assert_allclose(got, brute, rtol=1e-3, atol=1e-3)


def test_threshold_lets_few_unknown_landmarks_through_and_keeps_known_ones(world):
    train, train_y, test, test_y, unseen, others = world
    model = calibrate(train, train_y, num_classes=4, unknown_rate=0.05)
    assert model.rates(model.threshold)["unknown_tagged"] <= 0.05  # its own definition, leave-one-class-out
    kept = model.confidence(test, test_y) >= model.threshold
    for strangers in (unseen, others):  # each stranger's most flattering class
        guess = model.class_similarity(strangers).argmax(1)
        false = model.confidence(strangers, guess) >= model.threshold
        assert kept.mean() >= 0.9 and false.mean() <= 0.1, (kept.mean(), false.mean())
    # --recall: a stricter target never lowers the threshold; the state survives the round trip.
    assert model.threshold_for(0.8) >= model.threshold_for(0.99)
    assert model.threshold_for(None) == model.threshold
    again = OpenSet.from_state(model.to_state())
    np.testing.assert_allclose(again.confidence(test, test_y), model.confidence(test, test_y), atol=1e-3)
    with pytest.raises(ValueError, match="recall"):
        model.threshold_for(1.5)


def test_margin_tells_an_unseen_landmark_between_two_known_ones():
    """A photo halfway between two known landmarks is as near to each as their own photos are to each other
    (wide clusters), but near both: the margin says "neither"."""
    rng = np.random.default_rng(3)
    centres = _unit(np.abs(rng.standard_normal((4, 64))) ** 3)
    train, train_y = _clusters(rng, centres, 30, spread=0.04)
    train = np.abs(train)
    model = calibrate(train, train_y, num_classes=4)
    assert model.weights[1] > 0  # a larger margin means more confident
    between = _unit(train[train_y == 0][:10] + train[train_y == 1][:10])
    own = _unit(train[train_y == 0][:10] + 0.02 * np.abs(rng.standard_normal((10, 64))))
    assert (model.confidence(between, np.zeros(10, np.int64)) < model.confidence(own, np.zeros(10, np.int64))).all()


def test_one_class_keeps_most_of_its_photos_and_version_1_states_still_load(world):
    train, train_y, test, test_y, *_ = world
    model = calibrate(train[train_y == 0], np.zeros(40, np.int64), num_classes=1)
    assert len(model.unknowns) == 0 and 0.0 < model.threshold < 1.0
    assert (model.validation >= model.threshold).mean() >= 0.9
    old = {"version": 1, "bank": train.astype(np.float16), "labels": train_y, "slope": 20.0, "intercept": -15.0,
           "threshold": 0.5, "recall_target": 0.95, "validation": np.linspace(0.4, 1, 50, dtype=np.float32)}
    loaded = OpenSet.from_state(old)
    sims = np.array([max(float(test[0] @ train[j]) for j in np.flatnonzero(train_y == test_y[0]))])
    np.testing.assert_allclose(loaded.confidence(test[:1], test_y[:1]), 1 / (1 + np.exp(-(20 * sims - 15))),
                               atol=1e-2)


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
    # the default threshold gives up some known photos to refuse unknown landmarks (openset.py)
    assert np.mean(right) >= 0.7

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
    assert printed["false_tag_rate"] == 0.0 and printed["recall"] >= 0.7 and printed["gap"] >= 0.8
    assert printed["open_set"]["n_distractors"] == 7
    assert 0 <= printed["open_set"]["verified"] <= printed["open_set"]["n_landmarks"]  # kept by the second test
    assert (run / "test_pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = write_report(run, synth_data).read_text()
    assert "Photos of anything else" in html and f"{printed['gap']:.3f}" in html and "of 7 distractors tagged" in html
    assert "matched keypoints" in html


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
