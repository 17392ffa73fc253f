"""Export: TorchScript and torch.export predictors match the checkpoint."""

from __future__ import annotations

import warnings

import torch

from landmark_search.embeddings import load_model, prepare_uint8
from landmark_search.models.export import export_model
from landmark_search.photos.images import load_image
from landmark_search.models.checkpoint import load_checkpoint


def _inputs(run, synth_data):
    _, meta = load_checkpoint(run / "best.pt")
    photos = sorted((synth_data / "test").rglob("*.jpg"))[:6]
    batch = torch.stack([prepare_uint8(load_image(p), meta["image_size"]) for p in photos])
    return meta, batch


def _checkpoint_probs(run, batch, meta):
    model, _ = load_checkpoint(run / "best.pt")
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model((batch.float() / 255 - mean) / std).softmax(1)


def test_torchscript_predictor_matches_checkpoint(trained_run, synth_data, tmp_path):
    out = export_model(trained_run / "best.pt", tmp_path / "model.pt")
    meta, batch = _inputs(trained_run, synth_data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        predictor = torch.jit.load(str(out))  # plain torch, no landmark_search needed
    with torch.inference_mode():
        probs = predictor(batch)
        emb = predictor.embed(batch)
    assert torch.allclose(probs, _checkpoint_probs(trained_run, batch, meta), atol=1e-4)
    assert list(predictor.class_names) == meta["display_names"]
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(batch)), atol=1e-4)
    # Any input size: the predictor resizes and crops itself.
    big = torch.nn.functional.interpolate(batch.float(), scale_factor=3).to(torch.uint8)
    assert predictor(big).argmax(1).tolist() == probs.argmax(1).tolist()


def test_export_loads_as_a_model_for_classify(trained_run, tmp_path):
    out = export_model(trained_run / "best.pt", tmp_path / "model.pt")
    loaded = load_model(out, trust_export=True)
    assert loaded.kind == "export" and loaded.class_ids == load_model(trained_run / "best.pt").class_ids


def test_pt2_export_matches_checkpoint(trained_run, synth_data, tmp_path):
    out = export_model(trained_run / "best.pt", tmp_path / "model.pt2", fmt="pt2")
    meta, batch = _inputs(trained_run, synth_data)
    program = torch.export.load(str(out))
    probs = program.module()(batch)
    assert torch.allclose(probs, _checkpoint_probs(trained_run, batch, meta), atol=1e-4)
