"""Engines (models/engine.py): the body exported once to ONNX, reused by its key, refused by another, eager without it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from landmark_search.config import EmbedConfig
from landmark_search.data.synth import render_scene
from landmark_search.embeddings import embed_paths, embed_routes, load_model, wrap_model
from landmark_search.models import LandmarkModel
from landmark_search.models.checkpoint import make_meta
from landmark_search.models.engine import artefact_path, engine_key, read_key

pytest.importorskip("onnxruntime")
CPU = torch.device("cpu")
SIZE = 64


@pytest.fixture(autouse=True)
def _engine_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDMARK_ENGINE_CACHE", str(tmp_path / "engines"))
    monkeypatch.delenv("LANDMARK_BACKEND", raising=False)


def _tiny(seed: int):
    """A LoadedModel whose body has a depthwise convolution (the kind engines are for)."""
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU6(),
                         nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),
                         nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU6())
    for m in body.modules():  # non-trivial batch-norm statistics, so folding them is exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    model = LandmarkModel(body, 32, 3, embedding_dim=16).eval()
    meta = make_meta(model, arch="tiny-dw", classes=["a", "b", "c"], display_names=["a", "b", "c"], image_size=SIZE,
                     mean=(0.5,) * 3, std=(0.25,) * 3, head="embed", dropout=0.0)
    return wrap_model(model, meta)


def _images(n: int, size: int = SIZE) -> torch.Tensor:
    rng = np.random.default_rng(7)
    return torch.from_numpy(np.stack([np.asarray(render_scene(i % 6, rng, size=size)[0]) for i in range(n)])
                            ).permute(0, 3, 1, 2).contiguous()


def _vectors(model, images, routes=()) -> tuple[torch.Tensor, torch.Tensor]:
    model.prepare(CPU, None, routes=routes)
    with torch.inference_mode():
        emb, probs, _ = model.infer(images, CPU, None)
    return emb, probs


def test_fp32_engine_matches_eager_and_its_export_is_reused():
    images = _images(6)
    eager, eager_probs = _vectors(_tiny(0), images)
    first = _tiny(0)
    emb, probs = _vectors(first, images, ("ort-fp32",))
    assert first.route == "ort-fp32"
    assert (emb - eager).abs().max() < 1e-4 and (probs - eager_probs).abs().max() < 1e-4
    path = first.engine.path
    before = path.stat()
    second = _tiny(0)  # a new process would see the same: the same body gives the same key
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "onnx", None)  # a cached artefact is checked and run without importing onnx (~0.7 s)
        emb2, _ = _vectors(second, images, ("ort-fp32",))
    after = second.engine.path.stat()
    assert second.engine.path == path and (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert torch.equal(emb2, emb)


def test_an_artefact_whose_key_does_not_match_is_rebuilt_not_run():
    images = _images(4)
    other = _tiny(1)
    other_emb, _ = _vectors(other, images, ("ort-fp32",))
    mine = _tiny(0)
    key = engine_key(mine.module.body, SIZE, "fp32")
    # Another model's export placed where this model's belongs (a stale or copied cache).
    target = artefact_path(key)
    target.write_bytes(other.engine.path.read_bytes())
    emb, _ = _vectors(mine, images, ("ort-fp32",))
    eager, _ = _vectors(_tiny(0), images)
    assert mine.route == "ort-fp32" and mine.engine.path == target
    assert (emb - eager).abs().max() < 1e-4
    assert (other_emb - eager).abs().max() > 0.1  # the foreign file would have given other vectors
    assert read_key(target.read_bytes()) == key
    target.write_bytes(target.read_bytes()[:1000])  # a truncated file (a full disk, a copy cut short)
    again = _tiny(0)
    emb3, _ = _vectors(again, images, ("ort-fp32",))
    assert again.route == "ort-fp32" and read_key(target.read_bytes()) == key and torch.equal(emb3, emb)


def test_an_int8_key_holds_the_normalisation_its_calibration_used():
    body, other = _tiny(0).module.body, ((0.4, 0.4, 0.4), (0.3, 0.3, 0.3))
    assert engine_key(body, SIZE, "fp32") == engine_key(body, SIZE, "fp32", *other)  # fp32 does not depend on it
    assert engine_key(body, SIZE, "int8", (0.5,) * 3, (0.25,) * 3) != engine_key(body, SIZE, "int8", *other)


def test_the_int8_engine_keeps_the_stem_float_and_quantizes_the_rest():
    import onnx

    model, images = _tiny(0), _images(6)
    eager, _ = _vectors(model, images)
    emb, _ = _vectors(model, images, routes=("ort-int8",))
    assert model.engine is not None and model.engine.route == "ort-int8"
    graph = onnx.load(str(model.engine.path)).graph
    made_by = {out: node.op_type for node in graph.node for out in node.output}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    weight_from = [made_by.get(node.input[1], "initializer") for node in convs]
    assert weight_from[0] == "initializer" and made_by.get(convs[0].input[0]) != "DequantizeLinear"  # float stem
    assert weight_from[1:] == ["DequantizeLinear"] * (len(convs) - 1)  # int8 weights everywhere else
    assert torch.nn.functional.cosine_similarity(emb, eager).min() > 0.9


def test_without_onnxruntime_the_same_vectors_come_from_eager_torch(monkeypatch):
    images = _images(4)
    eager, _ = _vectors(_tiny(0), images)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` meets when it is not installed
    model = _tiny(0)
    emb, _ = _vectors(model, images, ("ort-fp32",))
    assert model.engine is None and model.route == ""
    assert torch.equal(emb, eager)


def test_auto_runs_one_route_for_a_model_whatever_the_job_size():
    """The route changes the vectors, so one photo alone (a query, an upload) goes the way the whole
    library did, with or without a cached export."""
    model = _tiny(1)  # no export of this body is cached yet
    cfg = EmbedConfig(progress=False)
    routes = embed_routes(cfg, model, CPU, False)
    assert routes and routes[0].startswith("ort")
    images = _images(3)
    alone, _ = _vectors(model, images[:1], routes)
    together, _ = _vectors(_tiny(1), images, routes)
    assert model.route == routes[0]
    assert torch.allclose(alone[0], together[0], atol=1e-5)
    assert embed_routes(EmbedConfig(backend="torch"), model, CPU, False) == ()


def test_default_model_embeds_the_same_through_its_fp32_engine(tmp_path):
    """iter_embeddings end to end on generated JPEGs: the built-in model's ONNX Runtime route gives eager's vectors."""
    paths = []
    for i, img in enumerate(_images(4, 256).permute(0, 2, 3, 1).numpy()):
        paths.append(tmp_path / f"p{i}.jpg")
        Image.fromarray(img).save(paths[-1], quality=92)
    model = load_model("efficientnet_lite0")
    eager = embed_paths(paths, model, EmbedConfig(progress=False, precision="fp32", backend="torch"))
    assert model.route == ""
    fast = embed_paths(paths, model, EmbedConfig(progress=False, precision="fp32", backend="onnxruntime"))
    assert model.route == "ort-fp32"
    assert np.abs(fast.embeddings - eager.embeddings).max() < 1e-3
    assert np.abs(fast.probs - eager.probs).max() < 1e-3
