"""Grad-CAM: which part of a photo made the model choose a landmark."""

from __future__ import annotations

import difflib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..config import DEFAULT_MAX_PIXELS
from ..photos.files import ErrorCallback, warn_skipped
from ..photos.images import load_image
from ..data.transforms import center_crop_box, normalize_uint8, resize_size
from ..errors import BadImageError, CheckpointError, LandmarkError
from ..fsutil import atomic_write_bytes
from ..models.base import LandmarkModel
from ..models.runtime import select_device
from .images import fit_text, image_bytes, load_font

if TYPE_CHECKING:
    from ..embeddings import LoadedModel

Heatmap = npt.NDArray[np.float32]

PANEL = 480  # the long side of each half of a figure; smaller photos (a 64 px training set) are upscaled to it
ALPHA = 0.45  # heat-map opacity: the landmark stays recognisable under the colours


@dataclass(frozen=True)
class ExplainResult:
    """One explained photo: the class explained, its probability and the files written."""

    path: Path
    label: str
    probability: float
    overlay_png: Path
    raw_npy: Path | None


def gradcam(model: LandmarkModel, image: torch.Tensor, class_index: int | None = None
            ) -> tuple[Heatmap, int, float]:
    """Grad-CAM of `class_index` (None: the top class) for one normalised (1, 3, H, W) image.

    Returns (cam HxW in [0, 1] at the input resolution, class index, its softmax probability).
    """
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise TypeError(f"gradcam expects one normalised image of shape (1, 3, H, W), got {tuple(image.shape)}")
    captured: dict[str, torch.Tensor] = {}

    def keep_output(_module, _inputs, output: torch.Tensor) -> None:
        captured["fmap"] = output

    was_training = model.training
    handle = model.body.register_forward_hook(keep_output)
    try:
        model.eval()
        # Grad-CAM needs gradients even if a caller sits in inference_mode; fp32 because
        # bf16 gradients of a single logit are too coarse for a clean map.
        with torch.inference_mode(False), torch.enable_grad():
            # requires_grad on the input makes the graph exist even for a frozen backbone.
            x = image.detach().to(dtype=torch.float32).clone().requires_grad_(True)
            logits = model(x).float()
            probs = logits.softmax(1)[0]
            index = int(probs.argmax()) if class_index is None else int(class_index)
            if not 0 <= index < probs.numel():
                raise LandmarkError(f"class index {index} is out of range for a model with {probs.numel()} classes")
            fmap = captured["fmap"]
            # autograd.grad instead of backward(): no .grad left behind on the model's parameters.
            (grads,) = torch.autograd.grad(logits[0, index], fmap)
    finally:
        handle.remove()
        model.train(was_training)
    weights = grads[0].float().mean(dim=(1, 2))
    cam = F.relu((weights[:, None, None] * fmap[0].detach().float()).sum(0))
    cam = F.interpolate(cam[None, None], size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.max())
    # All-negative evidence gives an empty map, not a division by zero.
    cam = cam / peak if peak > 0 else torch.zeros_like(cam)
    return cam.clamp(0, 1).cpu().numpy().astype(np.float32), index, float(probs[index].detach())


def resolve_class(label: str, class_ids: Sequence[str], class_names: Sequence[str]) -> int:
    """Class index for a display name or class id, case-insensitive; unknown names list valid ones."""
    wanted = label.strip().casefold()
    for names in (class_names, class_ids):
        for i, name in enumerate(names):
            if name.casefold() == wanted:
                return i
    folded = {name.casefold(): name for name in reversed(class_names)}
    close = [folded[n] for n in difflib.get_close_matches(wanted, list(folded), n=5, cutoff=0.5)]
    examples = close or list(class_names[:5])
    hint = "did you mean" if close else "e.g."
    raise LandmarkError(f"unknown class {label!r}; {hint}: {', '.join(repr(n) for n in examples)} "
                        f"({len(class_names)} classes; `landmark classify` shows the names the model uses)")


def colorize(image: npt.NDArray[np.uint8], cam: Heatmap, alpha: float = ALPHA) -> npt.NDArray[np.uint8]:
    """Blend a jet-coloured heat map over an HxWx3 uint8 image."""
    from matplotlib import colormaps

    heat = colormaps["jet"](np.clip(cam, 0, 1))[..., :3] * 255.0
    blended = (1 - alpha) * image.astype(np.float32) + alpha * heat
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def explain_figure(photo: Image.Image, box: tuple[float, float, float, float], cam: Heatmap,
                   title: str) -> Image.Image:
    """The whole photo and the heat map over it, side by side, PANEL pixels on the long side each.

    Left: the photo with the square the model looks at (`box`, its center crop) framed. Right: the
    heat map over that square, the rest of the photo dimmed: the model never saw it.
    """
    scale = PANEL / max(photo.size)
    w, h = max(1, round(photo.width * scale)), max(1, round(photo.height * scale))
    base = photo.resize((w, h), Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
    x0, y0 = max(0, round(box[0] * scale)), max(0, round(box[1] * scale))
    x1, y1 = min(w, max(x0 + 1, round(box[2] * scale))), min(h, max(y0 + 1, round(box[3] * scale)))
    framed = base.copy()
    ImageDraw.Draw(framed).rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 140, 0), width=3)
    heat = base.point(lambda v: v * 2 // 5)
    region = np.asarray(base.crop((x0, y0, x1, y1)))
    cam_img = Image.fromarray(np.clip(cam * 255 + 0.5, 0, 255).astype(np.uint8)).resize((x1 - x0, y1 - y0),
                                                                                       Image.Resampling.BILINEAR)
    heat.paste(Image.fromarray(colorize(region, np.asarray(cam_img, dtype=np.float32) / 255)), (x0, y0))

    font, small = load_font(16), load_font(13)
    gap, bar, foot = 10, 32, 24
    canvas = Image.new("RGB", (2 * w + 3 * gap, bar + h + foot), (20, 20, 20))
    canvas.paste(framed, (gap, bar))
    canvas.paste(heat, (2 * gap + w, bar))
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, bar // 2), fit_text(draw, title, font, canvas.width - 2 * gap), fill=(255, 255, 255), font=font,
              anchor="lm")
    for left, text in ((gap, "the photo (framed: what the model sees)"),
                       (2 * gap + w, "where the evidence for the label is")):
        draw.text((left, bar + h + foot // 2), fit_text(draw, text, small, w), fill=(200, 200, 200), font=small,
                  anchor="lm")
    return canvas


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def explain_image(loaded: "LoadedModel", path: Path, class_index: int | None = None,
                  device: torch.device | None = None) -> tuple[npt.NDArray[np.uint8], Heatmap, int, float]:
    """Decode and crop one photo as evaluation does; (crop HxWx3, cam, class index, probability)."""
    img = load_image(path, min_side=resize_size(loaded.image_size))
    return _explain_decoded(loaded, img, class_index, device)


def _explain_decoded(loaded: "LoadedModel", img: Image.Image, class_index: int | None,
                     device: torch.device | None) -> tuple[npt.NDArray[np.uint8], Heatmap, int, float]:
    from ..embeddings import prepare_uint8

    crop = prepare_uint8(img, loaded.image_size)
    x = normalize_uint8(crop[None], loaded.mean, loaded.std)
    if device is not None:
        x = x.to(device)
    cam, index, prob = gradcam(loaded.module, x, class_index)
    return crop.permute(1, 2, 0).numpy(), cam, index, prob


def _explained(loaded: "LoadedModel", path: Path, class_index: int | None, device: torch.device | None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, Heatmap, str, float]:
    """(figure, cam, label, probability) of one photo; BadImageError when it cannot be read."""
    # Decoded once, large enough for both the model's crop and a readable figure.
    img = load_image(path, min_side=max(resize_size(loaded.image_size), PANEL), max_pixels=max_pixels)
    _, cam, index, _ = _explain_decoded(loaded, img, class_index, device)
    label = loaded.class_names[index]
    prob = _decided_score(loaded, path, index)
    figure = explain_figure(img, center_crop_box(img.width, img.height, loaded.image_size), cam,
                            f"{path.name}: {label}  p={prob:.3f}")
    return figure, cam, label, prob


def _decided_score(loaded: "LoadedModel", path: Path, index: int) -> float:
    """The probability `tag`, `classify` and the report give this photo for that class (predict.decide through
    the one inference path), not the Grad-CAM pass's softmax: that decodes the photo larger for the figure."""
    from ..config import EmbedConfig
    from ..embeddings import embed_paths

    out = embed_paths([path], loaded, EmbedConfig(progress=False, workers=0))
    if out.failed:
        raise BadImageError(out.failed[0][1])
    preds = out.decide(0, loaded, top_k=len(loaded.class_ids)).predictions
    return next(p.score for p in preds if p.id == loaded.class_ids[index])


def explain_png(loaded: "LoadedModel", path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """The Grad-CAM figure of a photo's top class as PNG bytes (the web app's photo page)."""
    loaded.module = loaded.module.eval()
    return image_bytes(_explained(loaded, Path(path), None, None, max_pixels)[0], "PNG")


def load_explainable(model_spec: "str | Path | LoadedModel | None") -> "LoadedModel":
    """A checkpoint or built-in model; exports are refused because Grad-CAM needs the eager model."""
    from ..embeddings import LoadedModel, load_model

    loaded = model_spec if isinstance(model_spec, LoadedModel) else load_model(model_spec)
    if loaded.kind == "export" or not isinstance(loaded.module, LandmarkModel):
        raise CheckpointError(f"{loaded.name}: an export (TorchScript) has no gradients to explain; "
                              "pass the checkpoint it was exported from (RUN/best.pt) to --model")
    return loaded


def _unique_stem(path: Path, taken: set[str]) -> str:
    # Two IMG_0001.jpg from different folders must not overwrite each other's overlay.
    stem, n = path.stem, 2
    while stem.casefold() in taken:
        stem, n = f"{path.stem}-{n}", n + 1
    taken.add(stem.casefold())
    return stem


def explain_photos(paths: Sequence[Path], model_spec: "str | Path | LoadedModel | None",
                   class_label: str | None, out_dir: Path, save_raw: bool = False, *,
                   device: str = "auto", on_error: ErrorCallback | None = None) -> list[ExplainResult]:
    """Write `<stem>.gradcam.png` (and `.npy` with save_raw) in out_dir for each photo.

    Unreadable photos are skipped and passed to `on_error(path, reason)` (default: a warning naming them).
    """
    loaded = load_explainable(model_spec)
    class_index = None if class_label is None else resolve_class(class_label, loaded.class_ids, loaded.class_names)
    report = on_error or warn_skipped
    dev = select_device(device)
    loaded.module = loaded.module.to(dev).eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    results: list[ExplainResult] = []
    for path in map(Path, paths):
        try:
            figure, cam, label, prob = _explained(loaded, path, class_index, dev)
        except BadImageError as exc:
            report(path, str(exc))
            continue
        stem = _unique_stem(path, taken)
        png = out_dir / f"{stem}.gradcam.png"
        atomic_write_bytes(png, image_bytes(figure, "PNG"))
        npy = None
        if save_raw:
            npy = out_dir / f"{stem}.gradcam.npy"
            atomic_write_bytes(npy, _npy_bytes(cam))
        results.append(ExplainResult(path, label, prob, png, npy))
    return results
