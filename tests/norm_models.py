"""Test models whose channels a norm normalises across, written from the patterns (issue 16):
a ConvNeXt-style block (channels-first LayerNorm as permute + F.layer_norm, and a channels-last
nn.LayerNorm between permutes), a ViT-like residual stream, GroupNorm and RMSNorm blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelsFirstLN(nn.Module):
    """LayerNorm over the channels of an NCHW tensor: permute, F.layer_norm, permute back."""

    def __init__(self, c: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c))
        self.shape, self.eps = (c,), eps

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pw1, self.pw2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.pw2(F.gelu(self.pw1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    def __init__(self, c: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem, self.stem_norm = nn.Conv2d(3, c, 4, stride=4), ChannelsFirstLN(c)
        self.blocks = nn.Sequential(ConvNeXtBlock(c), ConvNeXtBlock(c))
        self.down_norm, self.down = ChannelsFirstLN(c), nn.Conv2d(c, 2 * c, 2, stride=2)
        self.block3 = ConvNeXtBlock(2 * c)
        self.head_norm, self.head = nn.LayerNorm(2 * c), nn.Linear(2 * c, classes)

    def forward(self, x):
        x = self.blocks(self.stem_norm(self.stem(x)))
        x = self.block3(self.down(self.down_norm(x)))
        return self.head(self.head_norm(x.mean((2, 3))))


class ViTBlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self.qkv(self.n1(x)).chunk(3, -1))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        x = x + self.proj(a)
        return x + self.fc2(F.gelu(self.fc1(self.n2(x))))


class ViTLike(nn.Module):
    def __init__(self, d: int = 32, heads: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, d, 8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, 17, d) * 0.5)
        self.blocks = nn.Sequential(ViTBlock(d, heads), ViTBlock(d, heads))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


class GroupNormNet(nn.Module):
    """nn.GroupNorm and F.group_norm on conv features, with a residual."""

    def __init__(self, c: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.c1, self.g1 = nn.Conv2d(3, c, 3, padding=1), nn.GroupNorm(4, c)
        self.c2 = nn.Conv2d(c, c, 3, padding=1)
        self.w2, self.b2 = nn.Parameter(torch.rand(c) + 0.5), nn.Parameter(torch.randn(c) * 0.1)
        self.c3, self.g3 = nn.Conv2d(c, 2 * c, 3, padding=1), nn.GroupNorm(2, 2 * c, affine=False)
        self.head = nn.Linear(2 * c, classes)

    def forward(self, x):
        x = F.relu(self.g1(self.c1(x)))
        x = x + F.relu(F.group_norm(self.c2(x), 4, self.w2, self.b2))
        x = F.relu(self.g3(self.c3(x)))
        return self.head(x.mean((2, 3)))


class RMSNormNet(nn.Module):
    """A token stream with nn.RMSNorm and F.rms_norm (pre-norm MLP blocks, residual)."""

    def __init__(self, d: int = 24, classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(12, d)
        self.n1, self.f1, self.f2 = nn.RMSNorm(d, eps=1e-6), nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.w2 = nn.Parameter(torch.rand(d) + 0.5)
        self.f3, self.f4 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.f2(F.silu(self.f1(self.n1(x))))
        x = x + self.f4(F.silu(self.f3(F.rms_norm(x, (x.shape[-1],), self.w2, 1e-6))))
        return self.head(x.mean(1))


MODELS = {
    "convnext_like": (ConvNeXtLike, (1, 3, 32, 32)),
    "vit_like": (ViTLike, (1, 3, 32, 32)),
    "groupnorm": (GroupNormNet, (1, 3, 16, 16)),
    "rmsnorm": (RMSNormNet, (1, 8, 12)),
}
