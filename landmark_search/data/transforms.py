"""Transform presets built from a model's image size and normalisation statistics."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageFilter

from ..config import IMAGENET_MEAN, IMAGENET_STD


def resize_size(image_size: int) -> int:
    """The shorter side before the center crop: 256 for 224, in the same ratio for other sizes."""
    return int(round(image_size * 256 / 224))


def center_crop_box(width: int, height: int, image_size: int) -> tuple[float, float, float, float]:
    """The source box that Resize(resize_size) -> CenterCrop(image_size) keeps, in source pixels.

    Resizing only that box straight to image_size x image_size (PIL `resize(..., box=)`) gives the
    same pixels as resizing the whole photo and cropping (within 1 grey level at 224; a rare pixel
    differs by 2 at other sizes: rounding), at about half the cost: the discarded margins are never interpolated. The sizes and offsets follow torchvision.
    """
    short_target = resize_size(image_size)
    if width <= height:
        new_w, new_h = short_target, int(short_target * height / width)
    else:
        new_w, new_h = int(short_target * width / height), short_target
    top, left = int(round((new_h - image_size) / 2.0)), int(round((new_w - image_size) / 2.0))
    sx, sy = width / new_w, height / new_h
    return left * sx, top * sy, (left + image_size) * sx, (top + image_size) * sy


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, scale: float = 1.0 / 255.0) -> torch.Tensor:
    """(x * scale - mean) / std on a float copy, as one multiply and one subtract (TorchScript-able).

    scale 1/255 for uint8 pixels, 1 for floats in [0, 1]; mean and std broadcast as (1, 3, 1, 1).
    """
    return x.float().mul(scale / std).sub_(mean / std)


def normalize_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 NCHW pixels normalised with per-channel mean and std given in [0, 1] units."""
    if images.device.type == "cpu":
        # In numpy, on one thread: torch's two-thread elementwise region stalls whenever another
        # process holds a core (a batch of 32 at 224 px: 11-26 ms vs 2-3 ms in numpy, loaded or not).
        m, s = np.asarray(mean, np.float32).reshape(1, 3, 1, 1), np.asarray(std, np.float32).reshape(1, 3, 1, 1)
        out = images.numpy().astype(np.float32)  # keeps the memory layout (channels_last stays so)
        out *= np.float32(1.0 / 255.0) / s
        out -= m / s
        return torch.from_numpy(out)
    m = torch.tensor(tuple(mean), dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(tuple(std), dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return normalize(images, m, s)


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std in [0, 1] units."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


class RandomBlur:
    """Gaussian blur with a random sigma in PIL (torchvision's blur on PIL images costs ~30 ms each)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0), p: float = 0.5):
        self.sigma = sigma
        self.p = p

    def __call__(self, img):
        if random.random() >= self.p or not isinstance(img, Image.Image):
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


def _transforms():
    """torchvision's v2 transforms, imported when a preset is built: inference never needs them, and the
    import costs ~2 s (it pulls in torch._dynamo)."""
    from torchvision.transforms import v2

    return v2


def _to_float() -> list:
    T = _transforms()
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True)]


class TrainPreset:
    """The original project's augmentation: crop, affine, colour jitter, flip, blur, normalise."""

    def __init__(self, image_size: int, norm: Normalization, crop_scale: tuple[float, float] = (0.6, 1.0)):
        # A crop scale of 0.8-1 is common; 0.6-1 measured better on small real sets (more
        # variety in framing), so it is the default while 0.8 stays one argument away.
        T = _transforms()
        self.transform = T.Compose([
            T.Resize(resize_size(image_size), antialias=True),
            T.RandomResizedCrop(image_size, scale=crop_scale, antialias=True),
            T.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=5),
            T.ColorJitter(0.2, 0.2, 0.2, 0.1),
            T.RandomHorizontalFlip(),
            RandomBlur((0.1, 2.0), p=0.5),
            *_to_float(),
            T.Normalize(norm.mean, norm.std),
        ])

    def __call__(self, img):
        return self.transform(img)


class EvalPreset:
    """Resize the shorter side, center crop, normalise."""

    def __init__(self, image_size: int, norm: Normalization):
        T = _transforms()
        self.transform = T.Compose([
            T.Resize(resize_size(image_size), antialias=True),
            T.CenterCrop(image_size),
            *_to_float(),
            T.Normalize(norm.mean, norm.std),
        ])

    def __call__(self, img):
        return self.transform(img)
