"""Training runs: files written, learning far above chance, resume, bad photos, reproducibility."""

from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from landmark_search.config import TrainConfig
from landmark_search.errors import DataError, LandmarkError
from landmark_search.data.datasets import discover, stratified_split
from landmark_search.places.table import clean_name
from landmark_search.models.checkpoint import load_checkpoint, read_checkpoint
from landmark_search.training import fit


def test_display_names_are_cleaned():
    assert clean_name("09.Golden_Gate_Bridge") == "Golden Gate Bridge"
    assert clean_name("Eiffel_Tower") == "Eiffel Tower"


def test_validation_split_is_stratified_and_seeded(synth_data):
    layout = discover(synth_data)
    train, valid = stratified_split(layout.train, 0.2, seed=3)
    again, _ = stratified_split(layout.train, 0.2, seed=3)
    assert train == again
    assert sorted({label for _, label in valid}) == [0, 1, 2]
    assert len(valid) == math.ceil(len(layout.train) * 0.2)


def test_small_validation_split_falls_back_and_bad_fraction_is_a_clear_error(synth_data):
    samples = [(p, label) for label in range(7) for p in (f"{label}a", f"{label}b", f"{label}c")]
    train, valid = stratified_split(samples, 0.2, seed=0)  # 5 validation photos for 7 classes
    assert len(valid) == 5 and len(train) == 16 and not set(train) & set(valid)
    with pytest.raises(DataError, match="valid-split"):
        stratified_split(samples, 1.0, seed=0)


def test_recipe_resolves_the_family_defaults_once():
    from landmark_search.training import Recipe

    long = Recipe.resolve(TrainConfig(model="scratch", image_size=64, epochs=100))
    assert (long.family, long.scheduler, long.mix, long.progressive, long.time_limit) == ("scratch", "cosine", "both",
                                                                                          True, 780.0)
    assert long.batch_size == 32 and long.lr == 2e-3 and long.patience == 33  # cosine: no stop before a third
    short = Recipe.resolve(TrainConfig(model="scratch", image_size=64, epochs=10))
    assert short.mix == "none" and short.progressive  # auto: no mixing in short runs
    assert not Recipe.resolve(TrainConfig(model="scratch", image_size=48)).progressive  # too small to shrink
    assert Recipe.resolve(TrainConfig(model="scratch", time_limit=0)).time_limit is None
    residual = Recipe.resolve(TrainConfig(model="residual"))
    assert residual.epochs == 60 and residual.progressive_scales == (0.5, 0.75)
    head = Recipe.resolve(TrainConfig(model="efficientnet_lite0"))
    assert head.frozen and (head.scheduler, head.epochs, head.batch_size, head.mix) == ("none", 60, 64, "none")
    assert (head.head, head.optimizer, head.lr) == ("power", "lbfgs", 1.0)  # the exact logistic regression
    embed = Recipe.resolve(TrainConfig(model="efficientnet_lite0", head="embed"))
    assert (embed.optimizer, embed.scheduler, embed.lr) == ("adamw", "plateau", 3e-3)
    tuned = Recipe.resolve(TrainConfig(model="efficientnet_lite0", finetune=True))
    assert tuned.family == "finetune" and not tuned.frozen and tuned.optimizer == "adamw"
    with pytest.raises(LandmarkError, match="--optimizer lbfgs"):
        Recipe.resolve(TrainConfig(model="efficientnet_lite0", finetune=True, optimizer="lbfgs"))
    assert Recipe.resolve(TrainConfig(model="efficientnet_lite0", weights="none")).family == "scratch"


def test_batch_augmentation_resizes_progressively_and_stops_mixing_at_the_end():
    from landmark_search.training import Recipe, augment_batch, make_mixer

    recipe = Recipe.resolve(TrainConfig(model="scratch", image_size=64, epochs=100))
    mixer = make_mixer(recipe.mix, 3)
    x, y = torch.rand(8, 3, 64, 64), torch.arange(8) % 3
    early_x, early_t = augment_batch(x, y, 0.0, recipe, mixer)
    assert early_x.shape[-1] == 48 and early_t.shape == (8, 3)  # 3/4 size, soft targets
    assert torch.allclose(early_t.sum(1), torch.ones(8))
    assert augment_batch(x, y, 0.5, recipe, None)[0].shape[-1] == 56  # 7/8 size
    late_x, late_t = augment_batch(x, y, 0.9, recipe, mixer)  # the last 15 %: full size, clean labels
    assert late_x.shape[-1] == 64 and torch.equal(late_t, y)
    plain = replace(recipe, progressive=False)
    assert augment_batch(x, y, 0.0, plain, None)[0] is x


def test_progress_is_the_larger_of_epochs_and_time_and_drives_the_cosine_schedule():
    from landmark_search.training import Progress, Recipe, warmup_cosine
    from landmark_search.training.schedule import Schedule

    progress = Progress(epochs=10, time_limit=100.0)
    progress.advance(30.0)
    assert progress.fraction == pytest.approx(0.3) and not progress.finished  # time ran ahead of epochs (0.1)
    progress.advance(80.0)
    assert progress.fraction == 1.0 and progress.finished
    assert Progress(epochs=4, epochs_done=1, seconds=1e6).fraction == 0.25  # no time budget: epochs alone
    assert warmup_cosine(0.0) == 0.1 and warmup_cosine(0.05) == pytest.approx(1.0)
    assert warmup_cosine(1.0) == pytest.approx(0.01)
    assert all(warmup_cosine(a) > warmup_cosine(b) for a, b in zip((0.1, 0.4, 0.7), (0.2, 0.5, 0.9)))

    recipe = Recipe.resolve(TrainConfig(model="scratch", epochs=4, time_limit=0))
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    progress = Progress(recipe.epochs, recipe.time_limit)
    schedule = Schedule(recipe, optimizer, progress)
    assert optimizer.param_groups[0]["lr"] == 0.1  # warm-up starts at 10 %
    lrs = []
    for _ in range(4):
        schedule.epoch_done(1.0, valid_loss=0.0)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([warmup_cosine(f) for f in (0.25, 0.5, 0.75, 1.0)]) and progress.finished
    assert schedule.state_dict() == {"base_lrs": [1.0], "epochs_done": 4, "seconds": 4.0}  # as last.pt stores it


@pytest.mark.parametrize("name, kind", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                        ("sgd", torch.optim.SGD)])
def test_optimizer_names_build_what_they_say(name, kind):
    from landmark_search.training import Recipe
    from landmark_search.training.schedule import build_optimizer

    recipe = Recipe.resolve(TrainConfig(model="scratch", optimizer=name))
    assert type(build_optimizer(recipe, [torch.zeros(1, requires_grad=True)], 5e-4)) is kind


def test_transfer_head_learns_and_writes_the_run(trained_run):
    for name in ("best.pt", "last.pt", "history.csv", "curves.png", "metrics.json", "config.json",
                 "test_confusion.png", "test_report.json"):
        assert (trained_run / name).is_file(), name
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9  # 3 classes: chance is 0.33
    _, meta = load_checkpoint(trained_run / "best.pt")
    assert meta["arch"] == "efficientnet_lite0" and meta["image_size"] == 96
    assert meta["mean"] == [0.5, 0.5, 0.5] and meta["metrics"]["test_accuracy"] == metrics["test_accuracy"]
    assert "train_state" not in read_checkpoint(trained_run / "best.pt")  # the optimiser state stays in last.pt
    rows = list(csv.DictReader((trained_run / "history.csv").open()))
    assert rows and {"epoch", "train_loss", "valid_loss", "valid_acc"} <= set(rows[0])


def _scratch(data, out, overwrite=False, **kw):
    cfg = dict(model="scratch", data=str(data), out=str(out), epochs=2, image_size=32, batch_size=16, quiet=True,
               workers=0, seed=1)
    cfg.update(kw)
    return fit(TrainConfig(**cfg), overwrite=overwrite)


@pytest.mark.slow
def test_scratch_cnn_learns_synthetic_landmarks(tmp_path):
    from landmark_search.data.synth import make_synthetic_dataset

    # 80 photos a class at 32 px: 115 train, 29 validation and 96 held-out test photos.
    # 10 epochs of batch 8 (the warm-up spends all of epoch 1 at a tenth of the rate) with a one-layer head
    # measured 0.73-0.87 test accuracy over seeds 1-4 (fused AdamW, fp32 on an AVX2-only CPU; 6 epochs at twice
    # the rate gave 0.53-0.73); the training loss fell to 0.51-0.65 of its first epoch's.
    # 96 test photos give the line a meaning: chance is 32 +- 4.6 right, and 58 is 5.6 standard deviations above.
    # time_limit=0: the schedule follows epochs only, so a loaded machine cannot shorten it.
    data = make_synthetic_dataset(tmp_path / "data", classes=3, per_class=80, image_size=64, seed=0,
                                  test_fraction=0.4).root
    result = _scratch(data, tmp_path / "run", epochs=10, batch_size=8, lr=1e-3, image_size=32, head="linear",
                      dropout=0.0, patience=20, time_limit=0)
    assert result.metrics["n_test"] == 96 and len(result.history) == 10
    assert result.metrics["test_accuracy"] >= 0.6, result.metrics  # 58+ of 96 right
    assert result.history[-1].train_loss < 0.9 * result.history[0].train_loss, result.history
    assert (tmp_path / "run" / "mean_std.json").is_file()  # scratch models use the data's own statistics


@pytest.fixture(scope="module")
def one_epoch(synth_data, tmp_path_factory):
    """One finished 1-epoch scratch run (seed 1) and its folder; tests that change a run work on a copy."""
    out = tmp_path_factory.mktemp("one-epoch") / "run"
    return _scratch(synth_data, out, epochs=1), out


def test_same_seed_same_metrics(synth_data, one_epoch, tmp_path):
    a = one_epoch[0]
    b = _scratch(synth_data, tmp_path / "b", epochs=1)  # one epoch already draws every seeded number
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    assert a.metrics["test_accuracy"] == b.metrics["test_accuracy"]


def test_resume_continues_from_last_epoch(one_epoch, tmp_path):
    run = shutil.copytree(one_epoch[1], tmp_path / "run")
    result = fit(TrainConfig(epochs=2, quiet=True), resume=run)
    assert [h.epoch for h in result.history] == [1, 2]


def test_corrupt_photo_in_dataset_is_skipped(synth_data, tmp_path, caplog):
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    bad = data / "train" / sorted(p.name for p in (data / "train").iterdir())[0] / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    result = _scratch(data, tmp_path / "run", epochs=1)
    assert result.history
    assert any(r.levelname == "WARNING" and "skipping" in r.getMessage() and "broken.jpg" in r.getMessage()
               for r in caplog.records)


def test_a_folder_holding_a_run_is_refused_and_overwrite_keeps_user_files(synth_data, one_epoch, tmp_path):
    from landmark_search.errors import LandmarkError

    out = shutil.copytree(one_epoch[1], tmp_path / "run")
    (out / "notes.txt").write_text("mine")
    config = (out / "config.json").read_bytes()
    with pytest.raises(LandmarkError, match=r"already holds a training run .*--resume .*--overwrite"):
        _scratch(synth_data, out, epochs=1, seed=2)
    assert (out / "config.json").read_bytes() == config  # refused before anything was written
    (out / "report.html").write_text("<html><head><meta name='generator' content='landmark-search'>old report")
    cfg = TrainConfig(model="scratch", data=str(synth_data), out=str(out), epochs=1, image_size=32, batch_size=16,
                      quiet=True, workers=0, seed=2)
    fit(cfg, overwrite=True)
    assert json.loads((out / "config.json").read_text())["seed"] == 2
    assert (out / "notes.txt").read_text() == "mine" and not (out / "report.html").exists()


def test_a_diverging_run_stops_with_one_clear_error_and_no_model(synth_data, tmp_path):
    from landmark_search.errors import LandmarkError

    with pytest.raises(LandmarkError, match=r"^training diverged at epoch 1 \(loss nan\); lower --lr$"):
        _scratch(synth_data, tmp_path / "run", lr=1e9)
    assert not (tmp_path / "run" / "best.pt").exists() and not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("option, match", [
    ({"image_size": 8}, "--image-size 8 is too small .* at least 32"), ({"lr": 0.0}, "--lr 0.0"),
    ({"head": "deep"}, "--head 'deep'"), ({"dropout": 1.0}, "--dropout 1.0"), ({"embedding_dim": 0}, "--embedding-dim 0"),
    ({"label_smoothing": 1.0}, "--label-smoothing"), ({"epochs": 0}, "--epochs 0"), ({"epochs": -3}, "--epochs -3"),
    ({"batch_size": 0}, "--batch-size 0"), ({"batch_size": -1}, "--batch-size -1"), ({"valid_split": -0.1}, "--valid-split"),
])
def test_bad_options_are_refused_before_the_run_folder_is_touched(synth_data, tmp_path, option, match):
    from landmark_search.errors import LandmarkError

    with pytest.raises(LandmarkError, match=match):
        _scratch(synth_data, tmp_path / "run", **option)
    assert not (tmp_path / "run").exists()


def test_cached_channel_stats_are_reused_only_for_the_same_data(synth_data, tmp_path):
    from landmark_search.config import RunPaths
    from landmark_search.data.synth import make_synthetic_dataset
    from landmark_search.training.run_dir import cached_channel_stats

    other = make_synthetic_dataset(tmp_path / "other", classes=2, per_class=6, image_size=32, seed=9).root
    paths = RunPaths(tmp_path / "run")

    def stats(root):
        return cached_channel_stats(paths, discover(root).train, 32, 0, root)

    norm = stats(synth_data)
    cache = json.loads(paths.stats.read_text())
    paths.stats.write_text(json.dumps({**cache, "mean": [0.0, 0.0, 0.0]}))  # same data: the cache is used
    assert stats(synth_data).mean == (0.0, 0.0, 0.0)
    other_norm = stats(other)  # other data: recomputed
    assert other_norm.mean != (0.0, 0.0, 0.0) and other_norm.mean != norm.mean
    assert json.loads(paths.stats.read_text())["data"] == str(other)


def test_missing_data_folder_says_it_does_not_exist(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        fit(TrainConfig(model="scratch", data=str(tmp_path / "nope"), out=str(tmp_path / "run"), quiet=True))
    assert not (tmp_path / "run").exists()


def test_overwrite_never_touches_a_users_files_that_share_our_names(synth_data, tmp_path):
    from landmark_search.errors import LandmarkError

    out = tmp_path / "project"
    out.mkdir()
    (out / "config.json").write_text('{"my": "project settings"}')
    (out / "report.html").write_text("<html>my own report</html>")
    for overwrite in (False, True):
        with pytest.raises(LandmarkError, match=r"holds config.json, report.html that landmark-search did not write"):
            _scratch(synth_data, out, overwrite=overwrite)
    assert (out / "config.json").read_text() == '{"my": "project settings"}'
    assert (out / "report.html").read_text() == "<html>my own report</html>"


def _new_landmark(root):
    """NEW: the fourth synthetic landmark alone (the fixture's set has three), 12 photos to train on and 4 to
    test, plus a group-NN folder nobody named."""
    from landmark_search.data.synth import make_synthetic_dataset

    make_synthetic_dataset(root / "all", classes=4, per_class=16, image_size=64, seed=1)
    name = sorted(p.name for p in (root / "all" / "train").iterdir())[3]
    for split in ("train", "test"):
        shutil.move(root / "all" / split / name, root / "new" / split / name)
    shutil.move(root / "all" / "train" / sorted(p.name for p in (root / "all" / "train").iterdir())[0],
                root / "new" / "train" / "group-03")
    return root / "new", name


def test_extend_learns_a_new_landmark_and_keeps_the_old_ones_from_photos_or_cached_features(trained_run, synth_data,
                                                                                            tmp_path):
    """The extended model knows the old three by the same indices plus the new one; the old test photos get the
    accuracy they had. With the old data folder gone it trains on the old run's features.pt and says so."""
    from conftest import invoke, one_line_error

    from landmark_search.embeddings import load_model
    from landmark_search.models.checkpoint import save_checkpoint
    from landmark_search.training import evaluate

    new, name = _new_landmark(tmp_path)
    old_model, old_meta = load_checkpoint(trained_run / "best.pt")
    before = json.loads((trained_run / "metrics.json").read_text())["test_accuracy"]  # on the same test photos
    # The old run folder again, its checkpoint pointing at a data folder that is gone.
    payload = read_checkpoint(trained_run / "best.pt")
    saved = payload["meta"]
    gone = tmp_path / "old"
    gone.mkdir()
    save_checkpoint(gone / "best.pt", old_model,
                    {**saved, "train_config": {**saved["train_config"], "data": str(tmp_path / "moved")}},
                    extra={"openset": payload["openset"]})
    (gone / "features.pt").write_bytes((trained_run / "features.pt").read_bytes())
    for old, said in ((trained_run, f"from their photos in {synth_data}"),
                      (gone, f"cached features {gone / 'features.pt'} (its photos are gone)")):
        out = tmp_path / f"run-{old.name}"
        result = invoke("train", "--extend", old / "best.pt", "--data", new, "--out", out, "--epochs", 8, "-q",
                        "--no-report", "--workers", 0, ok=True)
        assert said in result.output and "1 new landmark" in result.output, result.output
        assert "skipping 1 unnamed group folder (group-03)" in result.output
        model, meta = load_checkpoint(out / "best.pt")
        assert meta["classes"] == [*old_meta["classes"], name] and "openset" in meta
        assert set(meta["places"]) == set(old_meta["places"])  # NEW has no places.csv or GPS
        # the geometric check knows every landmark: the old ones from their photos or, gone, the old references
        assert set(load_model(out / "best.pt").openset.references.labels.tolist()) == {0, 1, 2, 3}
        # `landmark evaluate` on the old dataset: its folders are matched to the model's classes by name
        report = invoke("evaluate", out / "best.pt", "--data", synth_data, "--out", out, "--json", "-q", ok=True)
        after = json.loads(report.output)["accuracy"]
        assert after >= before - 0.03, (old, after, before)  # at most one old test photo of 36 lost
        new_test = [(p, 3) for p, _ in discover(new, min_classes=1).test]
        assert (np.asarray(evaluate(model, new_test, meta, device="cpu", workers=0).y_pred) == 3).mean() >= 0.75
    # a model whose body was trained has no frozen features to share
    shutil.rmtree(new / "train" / "group-03")
    scratch = tmp_path / "scratch.pt"
    save_checkpoint(scratch, old_model, {**saved, "train_config": {**saved["train_config"], "weights": "none"}})
    one_line_error(invoke("train", "--extend", scratch, "--data", new, "--out", tmp_path / "x"), "frozen", str(scratch))


def test_extend_adds_a_folder_named_as_an_old_landmark_to_it_not_a_second_class(trained_run, tmp_path):
    """A group named as the old model shows a landmark ("Azure Tower" for the folder `Azure_Tower`, any case)
    joins that landmark; a folder named otherwise is a new class."""
    from landmark_search.training.extend import prepare_extension

    old = read_checkpoint(trained_run / "best.pt")["meta"]["classes"]
    renamed = next(c for c in old if clean_name(c) != c)  # a class whose folder name has an underscore
    for split in ("train", "test"):
        for folder in (clean_name(renamed).upper(), "Brand New Place"):
            (tmp_path / "new" / split / folder).mkdir(parents=True)
            Image.new("RGB", (64, 48), (40, 90, 160)).save(tmp_path / "new" / split / folder / "a.jpg")
    cfg, ext = prepare_extension(trained_run / "best.pt", TrainConfig(data=str(tmp_path / "new"),
                                                                      out=str(tmp_path / "run")))
    assert ext.layout.classes == (*old, "Brand New Place")
    assert ext.joined == ((clean_name(renamed).upper(), renamed),) and ext.record()["new_classes"] == 1
    by_folder = {p.parent.name: label for p, label in ext.layout.train_split if p.is_relative_to(tmp_path)}
    assert by_folder == {clean_name(renamed).upper(): old.index(renamed), "Brand New Place": len(old)}


def test_lbfgs_head_is_the_regularised_logistic_regression_scikit_learn_fits():
    """The power head's full-batch fit solves scikit-learn's LogisticRegression(C) on the power-normalised
    features: the same class probabilities, so the probe the recipe is measured against is what it trains."""
    from sklearn.linear_model import LogisticRegression
    from torch import nn

    from landmark_search.models.base import PowerNorm
    from landmark_search.training.loop import full_batch_head_epoch
    from landmark_search.training.recipe import PROBE_C

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    feats = torch.rand(60, 16, generator=gen) + torch.nn.functional.one_hot(labels, 16)[:, :16] * 0.5
    head = nn.Sequential(nn.Sequential(PowerNorm(), nn.Dropout(0.3)), nn.Linear(16, 3))
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=200, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)
    for _ in range(3):
        full_batch_head_epoch(head, feats, labels, opt, nn.CrossEntropyLoss(), PROBE_C, torch.device("cpu"))
    unit = torch.nn.functional.normalize(feats.sqrt(), dim=1).numpy()
    ref = LogisticRegression(C=PROBE_C, tol=1e-10, max_iter=10000).fit(unit, labels.numpy())
    with torch.inference_mode():
        ours = head(feats).softmax(1).numpy()
    assert np.abs(ours - ref.predict_proba(unit)).max() < 2e-3
