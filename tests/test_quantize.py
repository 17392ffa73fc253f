"""int8 inference: the quantized body stays close to fp32, is deterministic, and says where it can't run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landmark_search.data.synth import render_scene
from landmark_search.embeddings import load_model
from landmark_search.errors import CheckpointError
from landmark_search.models.quantize import int8_supported

pytestmark = pytest.mark.skipif(not int8_supported(), reason="int8 kernels need an x86-64 torch build")


def _photos(n: int, size: int) -> torch.Tensor:
    rng = np.random.default_rng(123)  # not the calibration seed
    imgs = [np.asarray(render_scene(i % 6, rng, size=size)[0]) for i in range(n)]
    noisy = [np.clip(a + rng.normal(0, 8, a.shape), 0, 255).astype(np.uint8) for a in imgs]
    return torch.from_numpy(np.stack(noisy)).permute(0, 3, 1, 2).contiguous()


def _checkpoint(tmp_path, arch: str = "residual", size: int = 32):
    from landmark_search.models import build_model
    from landmark_search.models.checkpoint import make_meta, save_checkpoint

    torch.manual_seed(0)
    model = build_model(arch, 3, pretrained=False)
    path = tmp_path / f"{arch}.pt"
    save_checkpoint(path, model, make_meta(model, arch=arch, classes=["a", "b", "c"], display_names=["a", "b", "c"],
                                           image_size=size, mean=(0.5,) * 3, std=(0.25,) * 3, head="embed",
                                           dropout=0.3))
    return path


def test_int8_body_tracks_fp32_and_is_deterministic(tmp_path):
    ckpt = _checkpoint(tmp_path)
    cpu = torch.device("cpu")
    fp32 = load_model(ckpt)
    fp32.prepare(cpu, None)
    images = _photos(6, fp32.image_size)
    emb32, probs32, _ = fp32.infer(images, cpu, None)
    runs = []
    for _ in range(2):
        q = load_model(ckpt)
        q.prepare(cpu, None, int8=True)
        assert q.int8 and type(q.module.body).__name__ == "GraphModule"
        assert any(".quantized." in type(m).__module__ for m in q.module.body.modules())
        runs.append(q.infer(images, cpu, None))
    emb8, probs8, _ = runs[0]
    assert torch.equal(emb8, runs[1][0])  # fixed calibration: same model, same vectors
    cos = (emb8 * emb32).sum(1)
    assert cos.min() > 0.98, cos
    assert (probs8 - probs32).abs().max() < 0.05


def test_int8_refuses_a_torchscript_export(trained_run, tmp_path):
    from landmark_search.models.export import export_model

    out = tmp_path / "m.pt"
    export_model(trained_run / "best.pt", out)
    model = load_model(out, trust_export=True)
    with pytest.raises(CheckpointError, match="int8"):
        model.prepare(torch.device("cpu"), None, int8=True)


def test_auto_precision_quantizes_only_large_jobs_with_plain_convolutions(trained_run, monkeypatch, tmp_path):
    import landmark_search.embeddings as emb
    from landmark_search.config import EmbedConfig
    from landmark_search.models.quantize import AUTO_INT8_MIN_PHOTOS

    monkeypatch.setattr(emb, "cpu_has_fast_int8", lambda: True)
    monkeypatch.delenv("LANDMARK_NO_INT8", raising=False)
    auto = EmbedConfig(device="cpu")
    scratch = load_model(_checkpoint(tmp_path, "scratch"))
    assert emb.embed_precision(auto, scratch, AUTO_INT8_MIN_PHOTOS)[2] is True
    assert emb.embed_precision(auto, scratch, AUTO_INT8_MIN_PHOTOS - 1)[2] is False  # quantizing would not pay
    assert emb.embed_precision(EmbedConfig(device="cpu", precision="bf16"), scratch, 10 ** 6)[2] is False
    # depthwise convolutions (EfficientNet-Lite0) measured slower and less accurate in int8: float
    assert emb.embed_precision(auto, load_model(trained_run / "best.pt"), 10 ** 6)[2] is False
    monkeypatch.setenv("LANDMARK_NO_INT8", "1")
    assert emb.embed_precision(auto, scratch, 10 ** 6)[2] is False
