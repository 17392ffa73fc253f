"""The one entry point that turns images into vectors (and class probabilities)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from .config import DEFAULT_MAX_PIXELS, INT8_RECIPE, EmbedConfig
from .photos.images import load_image
from .data.transforms import center_crop_box, normalize_uint8, resize_size
from .errors import BadImageError, CheckpointError, ModelNotFoundError
from .models.ref import ModelRef, resolve_model, untrusted_export_error
from .models import build_model, get_spec
from .models.checkpoint import check_archive_sizes, load_checkpoint
from .models.engine import Engine
from .models.openset import OpenSet
from .models.runtime import (autocast, cpu_has_fast_int8, default_workers, quiet_jit, select_device, select_precision,
                             use_channels_last)

if TYPE_CHECKING:
    from .predict import Decision

Embeddings = npt.NDArray[np.float32]
EXPORT_MARKER = "landmark-search-export"


# torchvision's ImageNet class names, copied into the package: importing torchvision costs ~2 s of
# every command's start-up (it pulls in torch._dynamo), and the list never changes.
IMAGENET_CATEGORIES = Path(__file__).with_name("resources") / "imagenet_categories.txt"


@functools.lru_cache(maxsize=1)
def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, in torchvision's order."""
    return IMAGENET_CATEGORIES.read_text(encoding="utf-8").splitlines()


@dataclass
class LoadedModel:
    """A model ready for inference, whatever it was loaded from, with its identity and labels."""

    name: str  # built-in name, or the file name of a checkpoint / export
    kind: str  # "builtin" | "checkpoint" | "export"
    model_id: str  # what an index records: builtin name, or sha256 of the file
    sha256: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_ids: list[str]
    class_names: list[str]
    embedding_dim: int
    module: nn.Module
    arch: str = ""
    meta: dict = field(default_factory=dict)
    int8: bool = False
    openset: OpenSet | None = None  # says "not one of these landmarks"; None: built-in, or trained before it existed
    features: bool = False  # also return the pooled backbone features (the open-set score needs them)
    engine: Engine | None = None  # the body compiled by another runtime (models/engine.py); None: eager torch
    _engines: dict = field(default_factory=dict, repr=False)  # routes -> Engine | None, each tried once

    @property
    def uncalibrated(self) -> bool:
        """A landmark model that cannot say "none of these" (trained before calibration, or an export)."""
        return self.kind != "builtin" and self.openset is None

    def prepare(self, device: torch.device, dtype: torch.dtype | None, int8: bool = False,
                routes: tuple[str, ...] = ()) -> None:
        """Move to the device once; channels_last where it pays; int8 body when asked (CPU); the body's
        forward in the first engine of `routes` that loads (models/engine.py), else eager torch."""
        self.engine = None
        if self.int8:
            return
        self.module = self.module.to(device).eval()
        if int8:
            self.quantize()
            return
        if routes and device.type == "cpu" and self.kind != "export":
            if routes not in self._engines:
                from .models.engine import select_engine

                self._engines[routes] = select_engine(self.module.body, self.image_size, self.mean, self.std, routes)
            self.engine = self._engines[routes]
        if self.engine is None and self.kind != "export" and use_channels_last(device, dtype):
            self.module = self.module.to(memory_format=torch.channels_last)

    @property
    def route(self) -> str:
        """How the forward runs, for progress bars and reports: int8, bf16, fp32 or an engine's route."""
        return "int8" if self.int8 else self.engine.route if self.engine else ""

    def quantize(self) -> None:
        """Swap the body for its int8 version (calibrated on fixed rendered scenes); once per model."""
        if self.int8:
            return
        if self.kind == "export":
            raise CheckpointError(f"{self.name}: --precision int8 works from a checkpoint or built-in model, "
                                  "not a TorchScript export; pass RUN/best.pt")
        from .models.quantize import int8_model

        self.module = int8_model(self.module, self.image_size, self.mean, self.std)
        self.int8 = True

    def infer(self, images: torch.Tensor, device: torch.device, dtype: torch.dtype | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(L2-normalised embeddings, class probabilities, normalised backbone features or None) for uint8
        images already at image_size."""
        images = images.to(device)
        if self.kind == "export":
            emb, probs = self.module.embed_and_probs(images)
            return emb.float(), probs.float(), None
        if self.engine is not None:  # the body in its runtime; head and classifier (fp32, tiny) in torch
            emb, feats, logits = self.module.from_features(self.engine(normalize_uint8(images, self.mean, self.std)))
            return emb, logits.float().softmax(1), feats if self.features else None
        if use_channels_last(device, dtype):
            images = images.contiguous(memory_format=torch.channels_last)
        x = normalize_uint8(images, self.mean, self.std)
        with autocast(device, dtype):
            if self.features:
                emb, feats, logits = self.module.embed_features_logits(x)
                return emb.float(), logits.float().softmax(1), feats.float()
            emb, logits = self.module.embed_and_logits(x)
        return emb.float(), logits.float().softmax(1), None


def _builtin(ref: ModelRef) -> LoadedModel:
    spec = get_spec(ref.name)
    if not spec.pretrained:
        raise ModelNotFoundError(f"{ref.name} has no pretrained weights; train it first "
                                 f"(`landmark train --model {ref.name} --data DIR`) and pass RUN/best.pt")
    model = build_model(ref.name)
    categories = imagenet_categories()
    return LoadedModel(name=ref.name, kind="builtin", model_id=ref.model_id, sha256=ref.sha256,
                       image_size=spec.image_size, mean=tuple(spec.mean), std=tuple(spec.std), class_ids=categories,
                       class_names=categories, embedding_dim=model.embedding_dim, module=model.eval(), arch=ref.name)


def _from_meta(ref: ModelRef, module: nn.Module, meta: dict) -> LoadedModel:
    """A checkpoint's or export's model with what its meta says about feeding and naming it."""
    try:
        openset = OpenSet.from_state(meta["openset"]) if meta.get("openset") else None
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{ref.path or ref.name}: its open-set calibration is damaged ({exc}); use the "
                              "run's best.pt as `landmark train` wrote it, or train again") from None
    if isinstance(meta.get("places"), dict):
        # One name per class, its display name, in its place too (a checkpoint may name them apart).
        places = meta["places"]
        meta = {**meta, "places": {c: {**places[c], "name": name} for c, name in
                                   zip(meta["classes"], meta["display_names"]) if isinstance(places.get(c), dict)}}
    return LoadedModel(name=ref.name, kind=ref.kind, model_id=ref.model_id, sha256=ref.sha256,
                       image_size=meta["image_size"], mean=tuple(meta["mean"]), std=tuple(meta["std"]),
                       class_ids=list(meta["classes"]), class_names=list(meta["display_names"]),
                       embedding_dim=meta["embedding_dim"], module=module, arch=meta.get("arch", ""), meta=meta,
                       openset=openset, features=openset is not None)


def _export(ref: ModelRef, trusted: bool) -> LoadedModel:
    # TorchScript can run code while it loads (file operations in a scripted __setstate__), and
    # nothing can make that safe: only a file the user vouched for is handed to torch.jit.load.
    if not trusted:
        raise untrusted_export_error(ref.path)
    check_archive_sizes(ref.path)
    try:
        with quiet_jit():
            module = torch.jit.load(str(ref.path), map_location="cpu")
        meta = json.loads(module.meta_json)
    except Exception as exc:
        raise CheckpointError(f"{ref.path}: not a readable landmark-search export "
                              f"({str(exc).splitlines()[0][:160]})") from None
    if meta.get("format") != EXPORT_MARKER:
        raise CheckpointError(f"{ref.path}: a TorchScript file, but not one made by `landmark export`")
    return _from_meta(ref, module, meta)


def wrap_model(module: nn.Module, meta: dict, name: str = "checkpoint") -> LoadedModel:
    """A model already in memory, with its checkpoint meta, as a LoadedModel (no file, no identity)."""
    return _from_meta(ModelRef(name, "checkpoint", name, None, ""), module, meta)


def load_model(spec: str | Path | ModelRef | None = None, *, trust_export: bool = False) -> LoadedModel:
    """A built-in name, a checkpoint (best.pt or its run folder), or an export; None is the offline default.

    Checkpoints load with torch.load(weights_only=True). A TorchScript export can run code when it
    loads, so it loads only with `trust_export` (or a ModelRef resolved with it).
    """
    ref = spec if isinstance(spec, ModelRef) else resolve_model(spec, trust_export=trust_export)
    if ref.kind == "builtin":
        return _builtin(ref)
    if ref.kind == "export":
        return _export(ref, trusted=trust_export or ref.trusted)
    model, meta = load_checkpoint(ref.path)
    return _from_meta(ref, model, meta)


def prepare_uint8(img: Image.Image, image_size: int) -> torch.Tensor:
    """Resize the shorter side and center crop (as EvalPreset does), as a uint8 CHW tensor."""
    box = center_crop_box(img.width, img.height, image_size)
    crop = img.resize((image_size, image_size), Image.BILINEAR, box=box)
    return torch.from_numpy(np.array(crop, dtype=np.uint8)).permute(2, 0, 1)


class _PhotoDecoder:
    """Decodes one photo to a uint8 crop; failures come back as reasons, not exceptions."""

    def __init__(self, paths: Sequence[Path], image_size: int, max_pixels: int):
        self.paths = list(paths)
        self.image_size = image_size
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            img = load_image(self.paths[index], min_side=resize_size(self.image_size), max_pixels=self.max_pixels)
            return index, prepare_uint8(img, self.image_size), None
        except BadImageError as exc:
            return index, None, str(exc)
        except Exception as exc:  # one bad photo never stops a batch
            return index, None, f"{self.paths[index]}: {type(exc).__name__}: {exc}"


def _collate(items: list[tuple[int, torch.Tensor | None, str | None]]
             ) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    good = [(i, t) for i, t, _ in items if t is not None]
    bad = [(i, reason) for i, t, reason in items if t is None]
    return [i for i, _ in good], (torch.stack([t for _, t in good]) if good else None), bad


def _decoded_items(decoder: _PhotoDecoder, threads: int, ahead: int
                   ) -> Iterator[tuple[int, torch.Tensor | None, str | None]]:
    """decoder[0], decoder[1], ... in order; with threads, up to `ahead` of them decoded in advance."""
    if threads <= 0:
        yield from map(decoder.__getitem__, range(len(decoder)))
        return
    pool = ThreadPoolExecutor(threads, thread_name_prefix="landmark-decode")
    try:
        upcoming = iter(range(len(decoder)))
        pending = deque(pool.submit(decoder.__getitem__, i) for i in islice(upcoming, ahead))
        while pending:
            item = pending.popleft().result()
            nxt = next(upcoming, None)
            if nxt is not None:
                pending.append(pool.submit(decoder.__getitem__, nxt))
            yield item
    finally:  # an early stop (an error, Ctrl-C) drops what is queued instead of decoding it
        pool.shutdown(wait=True, cancel_futures=True)


def _decoded_batches(decoder: _PhotoDecoder, batch_size: int, threads: int
                     ) -> Iterator[tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]]:
    """(indices, uint8 batch, failures) in order, decoded by `threads` threads ahead of the model.

    Threads, not DataLoader processes: Pillow releases the GIL while it decodes and resizes, and so
    does torch while the model runs, so decoding overlaps the model with no worker start-up, no IPC
    and no second process competing for the cores (2 cores, 12 MP JPEGs, int8 ResNet34: 60 vs 29
    img/s with 2 DataLoader workers; small photos: 199 vs 202 img/s decoding inline). At most two
    batches are decoded ahead, so memory stays flat however many photos there are.
    """
    with contextlib.closing(_decoded_items(decoder, threads, 2 * batch_size)) as items:
        while batch := list(islice(items, batch_size)):
            yield _collate(batch)


@dataclass(frozen=True)
class Embedded:
    """Embeddings and class probabilities of the photos that decoded (a batch, or all of them)."""

    paths: list[Path]
    embeddings: Embeddings
    probs: npt.NDArray[np.float32]
    failed: list[tuple[Path, str]]
    features: npt.NDArray[np.float32] | None = None  # pooled backbone features, when the model was asked for them
    inliers: npt.NDArray[np.int64] | None = None  # geometric check per photo (models/verify.py); -1: not checked

    def decide(self, i: int, model: LoadedModel, **options: Any) -> "Decision":
        """predict.decide for photo i with all the evidence gathered for it (options: top_k, min_score, recall)."""
        from .predict import decide

        return decide(self.probs[i], None if self.features is None else self.features[i], model,
                      inliers=None if self.inliers is None else int(self.inliers[i]), **options)


def embed_routes(cfg: EmbedConfig, model: LoadedModel, device: torch.device, int8: bool) -> tuple[str, ...]:
    """The engine routes to try for the body (models/engine.py), best first; () runs eager torch.

    `auto` uses another runtime only for depthwise-convolution bodies (EfficientNet, MobileNet), where
    eager torch is far from the CPU's limit, and then for every job, one photo or thousands: the route
    changes the vectors (ORT int8 vs eager: cosine ~0.95 on a small trained model), so one model has one
    route in training's calibration, tag, index, similar and the web, and the same photo gets the same
    vector from each. The first job pays the one-off export; later ones load it from the cache. A backend
    named in cfg.backend or LANDMARK_BACKEND is always tried; LANDMARK_BACKEND=torch turns the engines off.
    A trained landmark model keeps float numerics under `auto`: its open-set threshold and geometric-check
    window are calibrated on float features, and int8's noise cost it 6 of 97 right tags on india12
    (DEVELOPERS.md, "Open set").
    """
    from .models.engine import has_depthwise, requested_backend, routes_for

    backend = requested_backend(cfg.backend)
    if device.type != "cpu" or int8 or model.kind == "export":
        return ()
    routes = routes_for(backend, cfg.precision)
    if backend != "auto" or not routes:
        return routes
    if model.kind == "checkpoint":
        routes = tuple(r for r in routes if not r.endswith("int8"))
    return routes if has_depthwise(model.module.body) else ()


def embed_precision(cfg: EmbedConfig, model: LoadedModel, count: int) -> tuple[torch.device, torch.dtype | None, bool]:
    """(device, autocast dtype, int8) for embedding `count` photos with `model`.

    `--precision int8` quantizes the body (CPU only). `auto` does so by itself for large CPU jobs on
    VNNI/AMX CPUs with a model whose convolutions int8 speeds up (see models/quantize.py) and that has no
    open-set calibration (calibrated on float features: embed_routes); otherwise
    bf16 where the CPU has it, else fp32. LANDMARK_NO_INT8=1 turns the automatic choice off.
    """
    from .models.quantize import AUTO_INT8_MIN_PHOTOS, int8_pays, int8_supported, require_cpu

    device = select_device(cfg.device)
    if cfg.precision == "int8":
        require_cpu(device)
        return device, None, True
    if (cfg.precision == "auto" and cfg.auto_int8 and device.type == "cpu" and count >= AUTO_INT8_MIN_PHOTOS
            and model.kind != "export" and model.openset is None and os.environ.get("LANDMARK_NO_INT8") != "1"
            and cpu_has_fast_int8() and int8_supported() and int8_pays(model.module.body)):
        return device, None, True
    return device, select_precision(cfg.precision, device), False


def prepare_for(model: LoadedModel, cfg: EmbedConfig, count: int) -> tuple[torch.device, torch.dtype | None]:
    """Ready `model` to embed `count` photos under `cfg` (device, numerics, engine); (device, autocast dtype)."""
    device, dtype, int8 = embed_precision(cfg, model, count)
    model.prepare(device, dtype, int8, embed_routes(cfg, model, device, int8))
    return device, dtype


def vector_route(model: LoadedModel) -> str:
    """What makes a prepared model's vectors, as an index records it (model.json "vectors"): an engine route,
    with its recipe for int8 ("ort-int8+float-stem"), "torch-int8", or "torch" for eager float. Vectors of one
    model from two routes differ (cosine 0.92-0.99), so an index keeps one route for all its photos."""
    if model.int8:
        return "torch-int8"
    if model.engine is None:
        return "torch"
    return f"{model.engine.route}+{INT8_RECIPE}" if model.engine.route.endswith("int8") else model.engine.route


def iter_embeddings(paths: Sequence[Path], model: LoadedModel, cfg: EmbedConfig = EmbedConfig()
                    ) -> Iterator[Embedded]:
    """Stream batches of (embeddings, probs); memory stays flat however many photos there are."""
    paths = [Path(p) for p in paths]
    device, dtype = prepare_for(model, cfg, len(paths))
    if model.int8:  # quantized by this call or an earlier one: the body is int8, the rest fp32
        dtype = None
    if not paths:
        return
    threads = default_workers() if cfg.workers < 0 else cfg.workers
    threads = min(threads, len(paths))
    batches = _decoded_batches(_PhotoDecoder(paths, model.image_size, cfg.max_pixels), cfg.batch_size, threads)
    with torch.inference_mode(), tqdm(total=len(paths), unit="img", disable=None if cfg.progress else True,
                                          desc=f"embedding ({model.route or ('bf16' if dtype else 'fp32')})") as bar:
        for indices, tensor, bad in batches:
            failed = [(paths[i], reason) for i, reason in bad]
            feats = None
            if tensor is None:
                emb = np.zeros((0, model.embedding_dim), np.float32)
                probs = np.zeros((0, len(model.class_ids)), np.float32)
            else:
                e, p, f = model.infer(tensor, device, dtype)
                emb, probs = e.cpu().numpy().astype(np.float32), p.cpu().numpy().astype(np.float32)
                feats = None if f is None else f.cpu().numpy().astype(np.float32)
            done = [paths[i] for i in indices]
            inliers = (geometric_check(done, probs, feats, model.openset, cfg.max_pixels) if feats is not None
                       else None)
            bar.update(len(indices) + len(bad))
            yield Embedded(done, emb, probs, failed, feats, inliers)


def geometric_check(paths: Sequence[Path], probs: npt.NDArray[np.float32], feats: npt.NDArray[np.float32],
                    openset: OpenSet | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> npt.NDArray[np.int64] | None:
    """models/verify.py's inliers for photos whose most probable class the open set is not quite sure of."""
    if openset is None or openset.references is None or not len(paths):
        return None
    from .models.verify import check, photo_local_features

    top = np.argmax(probs, 1)
    lower, upper = openset.check_window()
    return check(paths, top, openset.prepare(feats), openset.confidence(feats, top), lower, upper,
                 openset.references, local=functools.partial(photo_local_features, max_pixels=max_pixels))


def embed_paths(paths: Sequence[Path], model: LoadedModel, cfg: EmbedConfig = EmbedConfig()) -> Embedded:
    """Collect iter_embeddings into arrays (for queries and small sets)."""
    out_paths, embs, probs, feats, inliers, failed = [], [], [], [], [], []
    for batch in iter_embeddings(paths, model, cfg):
        out_paths += batch.paths
        embs.append(batch.embeddings)
        probs.append(batch.probs)
        if batch.features is not None:
            feats.append(batch.features)
        if batch.inliers is not None:
            inliers.append(batch.inliers)
        failed += batch.failed
    dim, n_cls = model.embedding_dim, len(model.class_ids)
    return Embedded(out_paths, np.concatenate(embs) if embs else np.zeros((0, dim), np.float32),
                    np.concatenate(probs) if probs else np.zeros((0, n_cls), np.float32), failed,
                    np.concatenate(feats) if feats else None, np.concatenate(inliers) if inliers else None)
