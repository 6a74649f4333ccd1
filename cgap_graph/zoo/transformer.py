"""A small vision transformer encoder (Dosovitskiy et al. 2021) for 32x32 inputs: a patch
embedding convolution, a learned position embedding, pre-norm encoder layers built on
``nn.MultiheadAttention`` and a GELU MLP, mean pooling and a linear head."""

from __future__ import annotations

import torch
from torch import nn

from cgap_graph.zoo.common import scaled


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class VisionTransformer(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 10, dim: int = 64, depth: int = 4, heads: int = 4,
                 patch: int = 4, image: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        head_dim = scaled(dim // heads, width)
        d = head_dim * heads
        self.patch = nn.Conv2d(in_channels, d, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2, d) * 0.02)
        self.layers = nn.Sequential(*[EncoderLayer(d, heads, scaled(2 * dim, width)) for _ in range(depth)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, num_classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        x = self.layers(x)
        return self.head(self.norm(x).mean(1))


def vit(width: float = 1.0, num_classes: int = 10) -> VisionTransformer:
    return VisionTransformer(width, num_classes)
