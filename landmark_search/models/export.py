"""Export a checkpoint as a self-contained predictor: TorchScript (default) or torch.export (pt2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..embeddings import EXPORT_MARKER
from ..errors import CheckpointError, LandmarkError
from ..fsutil import atomic_write_bytes
from .checkpoint import load_checkpoint
from .runtime import quiet_jit
from ..data.transforms import normalize, resize_size


class _Net(nn.Module):
    """body (traced) -> pool -> head -> classifier, returning (embedding, logits)."""

    def __init__(self, body: nn.Module, head: nn.Module, classifier: nn.Module):
        super().__init__()
        self.body = body
        self.head = head
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        feats = F.adaptive_avg_pool2d(self.body(x), 1).flatten(1)
        emb = self.head(feats)
        return F.normalize(emb, dim=1), self.classifier(emb)


class Predictor(nn.Module):
    """Takes image tensors (uint8 0-255 or float 0-1; CHW or BCHW, any size): resize, center crop,
    normalise, then returns class probabilities. `embed` returns L2-normalised embeddings."""

    def __init__(self, net: nn.Module, image_size: int, mean: List[float], std: List[float],
                 class_ids: List[str], class_names: List[str], meta_json: str):
        super().__init__()
        self.net = net
        self.image_size = image_size
        self.resize_to = resize_size(image_size)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.class_ids: List[str] = class_ids
        self.class_names: List[str] = class_names
        self.meta_json: str = meta_json

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        else:
            x = x.float()
        h, w = x.shape[2], x.shape[3]
        if h != self.image_size or w != self.image_size:
            scale = float(self.resize_to) / float(min(h, w))
            nh, nw = max(self.image_size, int(round(h * scale))), max(self.image_size, int(round(w * scale)))
            x = F.interpolate(x, size=[nh, nw], mode="bilinear", align_corners=False, antialias=True)
            top = (nh - self.image_size) // 2
            left = (nw - self.image_size) // 2
            x = x[:, :, top:top + self.image_size, left:left + self.image_size]
        return normalize(x, self.mean, self.std, 1.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _, logits = self.net(self.preprocess(images))
        return logits.softmax(1)

    @torch.jit.export
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        emb, _ = self.net(self.preprocess(images))
        return emb

    @torch.jit.export
    def embed_and_probs(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        emb, logits = self.net(self.preprocess(images))
        return emb, logits.softmax(1)


def build_predictor(checkpoint: str | Path, *, trace_body: bool = True) -> Predictor:
    """Eager Predictor for a checkpoint; the body is traced so that any architecture scripts."""
    model, meta = load_checkpoint(checkpoint)
    size = meta["image_size"]
    body = model.body.eval()
    if trace_body:
        # Tracing records the conv graph once; convolutions stay size-generic, and the
        # EfficientNet code (namedtuple block args) never has to be scripted.
        with quiet_jit():
            body = torch.jit.trace(body, torch.zeros(1, 3, size, size), check_trace=False)
    net = _Net(body, model.head.eval(), model.classifier.eval()).eval()
    exported_meta = {"format": EXPORT_MARKER, "version": 1, **{k: meta[k] for k in (
        "arch", "classes", "display_names", "image_size", "mean", "std", "embedding_dim")}}
    return Predictor(net, size, list(meta["mean"]), list(meta["std"]), list(meta["classes"]),
                     list(meta["display_names"]), json.dumps(exported_meta)).eval()


def export_model(checkpoint: str | Path, out: str | Path, fmt: str = "torchscript") -> Path:
    """Write the predictor for `checkpoint` to `out` (atomically)."""
    import io

    out = Path(out)
    if out.exists() and out.is_dir():
        raise LandmarkError(f"{out} is a folder; give a file name such as model.pt")
    if out.parent.exists() and not out.parent.is_dir():
        raise LandmarkError(f"--out {out}: {out.parent} is a file, not a folder; pick another --out")
    if not out.parent.is_dir():  # a typo in the folder must not become a new folder tree
        raise LandmarkError(f"--out {out}: the folder {out.parent} does not exist; create it first or pick another")
    if fmt == "torchscript":
        predictor = build_predictor(checkpoint)
        buf = io.BytesIO()  # serialised in memory, so a bad path fails as a plain OSError, atomically
        with quiet_jit():
            torch.jit.save(torch.jit.script(predictor), buf)
        atomic_write_bytes(out, buf.getvalue())
        return out
    if fmt == "pt2":
        predictor = build_predictor(checkpoint, trace_body=False)
        size = predictor.image_size
        batch = torch.export.Dim("batch", min=1, max=1024)
        try:
            program = torch.export.export(predictor, (torch.zeros(2, 3, size, size, dtype=torch.uint8),),
                                          dynamic_shapes=({0: batch},))
        except Exception as exc:
            raise CheckpointError(f"torch.export could not capture {checkpoint} ({str(exc).splitlines()[0][:200]}); "
                                  "use --format torchscript") from None

        buf = io.BytesIO()
        torch.export.save(program, buf, extra_files={"meta.json": predictor.meta_json})
        atomic_write_bytes(out, buf.getvalue())
        return out
    raise LandmarkError(f"unknown export format {fmt!r}; use torchscript or pt2")
