"""The one model shape every architecture shares: body -> pool -> head -> classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PowerNorm(nn.Module):
    """Square root of the (non-negative) pooled features, then unit length times `scale`.

    Power normalisation (Perronnin et al. 2010) keeps the few large channels that all outdoor photos share
    from dominating a linear layer; the fixed scale gives the layer logits of a usable range at init.
    """

    def __init__(self, scale: float = 10.0):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float().clamp_min(0).sqrt(), dim=1) * self.scale


class LandmarkModel(nn.Module):
    """A classifier whose penultimate layer is the retrieval embedding.

    `body` maps images to a feature map (the Grad-CAM target), global average pooling
    gives backbone features, `head` maps them to the embedding, `classifier` to logits.
    """

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int, *, head: str = "embed",
                 embedding_dim: int = 256, dropout: float = 0.3):
        super().__init__()
        self.body = body
        self.feature_dim = feature_dim
        if head == "embed":
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, embedding_dim),
                                      nn.BatchNorm1d(embedding_dim), nn.ReLU(inplace=True))
            self.embedding_dim = embedding_dim
        elif head == "power":  # a linear classifier on power-normalised features (training/recipe.py)
            self.head = nn.Sequential(PowerNorm(), nn.Dropout(dropout))
            self.embedding_dim = feature_dim
        elif head == "linear":
            self.head = nn.Dropout(dropout)
            self.embedding_dim = feature_dim
        else:
            raise ValueError(f"unknown head {head!r}; use 'embed', 'power' or 'linear'")
        self.classifier = nn.Linear(self.embedding_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (B, feature_dim)."""
        return F.adaptive_avg_pool2d(self.body(x), 1).flatten(1)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits from pooled features, or the (unnormalised) embedding when pre_logits."""
        emb = self.head(feats)
        return emb if pre_logits else self.classifier(emb)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.forward_head(self.features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised penultimate features."""
        return F.normalize(self.forward_head(self.features(x), pre_logits=True).float(), dim=1)

    def embed_features_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embedding, L2-normalised pooled backbone features (the open-set score's space) and logits."""
        return self.from_features(self.features(x))

    def from_features(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """embed_features_logits from pooled features already computed (by this body or its compiled engine)."""
        emb = self.forward_head(feats, pre_logits=True)
        return F.normalize(emb.float(), dim=1), F.normalize(feats.float(), dim=1), self.classifier(emb)

    def embed_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both at once, so tagging and indexing need one forward pass."""
        emb = self.forward_head(self.features(x), pre_logits=True)
        return F.normalize(emb.float(), dim=1), self.classifier(emb)
