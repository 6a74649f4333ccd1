"""Coupling models for the long tail of real architectures (issue 16), each written from the
pattern it stands for (windowed attention, patch merging, relative-position bias, ghost modules,
weight standardisation, MetaFormer token mixers), not copied from a library.

``build(name)`` returns the model with He-initialised weights and random norm statistics, so
its output responds to its input and a channel mix-up cannot hide (see ``verify/inputs.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WindowAttention(nn.Module):
    """Swin-style attention on (B, H, W, C) windows: every size is read from the input at run
    time (``C = x.shape[-1]``), the head dim is ``C // heads`` and the scale ``(C // heads) ** -0.5``;
    a fused qkv is reshaped to (B_, N, 3, heads, hd), permuted and unbound by ``qkv[0]``."""

    def __init__(self, dim: int, heads: int, window: int, bias_table: bool = False, cosine: bool = False):
        super().__init__()
        self.heads, self.window = heads, window
        self.logit_scale = nn.Parameter(torch.rand(heads, 1, 1) + 1.0) if cosine else None
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.table = None
        if bias_table:
            n = window * window
            self.table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.5)
            coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
            rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
            self.register_buffer("index", (rel[..., 0] * (2 * window - 1) + rel[..., 1]).reshape(n * n))

    def forward(self, x):
        B, H, W, C = x.shape
        w = self.window
        x = x.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, C)
        qkv_bias = self.qkv.bias
        if self.logit_scale is not None:  # Swin-V2: no key bias, cut at a size read at run time
            qkv_bias = qkv_bias.clone()
            length = qkv_bias.numel() // 3
            qkv_bias[length:2 * length].zero_()
        qkv = F.linear(x, self.qkv.weight, qkv_bias)
        qkv = qkv.reshape(x.size(0), x.size(1), 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.logit_scale is not None:  # cosine attention with a learned scale per head
            attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
            attn = attn * torch.clamp(self.logit_scale, max=4.6).exp()
        else:
            q = q * (C // self.heads) ** -0.5
            attn = q.matmul(k.transpose(-2, -1))
        if self.table is not None:
            n = w * w
            bias = self.table[self.index].view(n, n, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
            attn = attn + bias
        attn = F.softmax(attn, dim=-1)
        x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), C)
        x = self.proj(x)
        return x.view(B, H // w, W // w, w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)


class WindowAttentionNet(nn.Module):
    """Patch embedding, a residual stream in channels-last layout, windowed attention, an MLP."""

    def __init__(self, dim: int = 16, heads: int = 2, bias_table: bool = False, cosine: bool = False):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 2, stride=2)
        self.attn = WindowAttention(dim, heads, 2, bias_table, cosine)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 4)

    def forward(self, x):
        x = self.embed(x).permute(0, 2, 3, 1)
        x = x + self.attn(x)
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.head(x.mean((1, 2)))


class RelPosBiasNet(WindowAttentionNet):
    """Windowed attention with a per-head relative-position bias table added to the scores."""

    def __init__(self):
        super().__init__(bias_table=True)


class CosineWindowNet(WindowAttentionNet):
    """Swin-V2's attention: the key part of the qkv bias zeroed through a slice whose bounds are
    read at run time (``qkv_bias[n // 3:2 * n // 3].zero_()``), cosine attention, a scale per head."""

    def __init__(self):
        super().__init__(bias_table=True, cosine=True)


class HeadMaskNet(nn.Module):
    """Attention with a fixed per-head mask added in place to the scores (``attn.add_(mask)``),
    held as a buffer (it follows the heads) or as a plain tensor attribute (its size is fixed,
    so the heads must freeze)."""

    def __init__(self, dim: int = 12, heads: int = 3, tokens: int = 6, buffer: bool = True):
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(4, dim)
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 2)
        mask = torch.randn(heads, tokens, tokens)
        if buffer:
            self.register_buffer("mask", mask)
        else:
            self.mask = mask

    def forward(self, x):
        x = self.embed(x)
        B, N, C = x.shape
        q, k, v = (f(x).view(B, N, self.heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        attn = (q @ k.transpose(-2, -1)) * 0.5
        attn.add_(self.mask)
        y = (attn.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C)
        return self.head((x + self.proj(y)).mean(1))


class FixedMaskNet(HeadMaskNet):
    def __init__(self):
        super().__init__(buffer=False)


class PatchMergingNet(nn.Module):
    """Swin patch merging: four strided slices of (B, H, W, C) along H and W, concatenated on C."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 1)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.head = nn.Linear(2 * dim, 3)

    def forward(self, x):
        x = F.relu(self.embed(x)).permute(0, 2, 3, 1)
        x0 = x[..., 0::2, 0::2, :]
        x1 = x[..., 1::2, 0::2, :]
        x2 = x[..., 0::2, 1::2, :]
        x3 = x[..., 1::2, 1::2, :]
        x = self.reduction(torch.cat([x0, x1, x2, x3], -1))
        return self.head(x.mean((1, 2)))


class GhostModule(nn.Module):
    """A primary conv, a cheap depthwise conv on its output, concatenated and cut back to a fixed
    width ``out[:, :oup]`` (GhostNet's pattern)."""

    def __init__(self, inp: int, oup: int, ratio: int = 2):
        super().__init__()
        self.oup = oup
        init = -(-oup // ratio)
        self.primary = nn.Sequential(nn.Conv2d(inp, init, 1, bias=False), nn.BatchNorm2d(init), nn.ReLU())
        self.cheap = nn.Sequential(nn.Conv2d(init, init * (ratio - 1), 3, padding=1, groups=init, bias=False),
                                   nn.BatchNorm2d(init * (ratio - 1)), nn.ReLU())

    def forward(self, x):
        x1 = self.primary(x)
        x2 = self.cheap(x1)
        out = torch.cat([x1, x2], dim=1)
        return out[:, :self.oup, :, :]


class GhostNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.g1 = GhostModule(8, 12)
        self.g2 = GhostModule(12, 7)  # an odd width: the slice cuts into the cheap half
        self.head = nn.Linear(7, 3)

    def forward(self, x):
        x = F.relu(self.stem(x))
        return self.head(self.g2(self.g1(x)).mean((2, 3)))


class StdConv2d(nn.Conv2d):
    """A weight-standardised convolution: the weight is normalised per output channel with
    ``F.batch_norm`` over a (1, C_out, -1) view, then convolved."""

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         training=True, momentum=0.0, eps=1e-5).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class WSConvNet(nn.Module):
    """Normaliser-free residual blocks of weight-standardised convolutions."""

    def __init__(self):
        super().__init__()
        self.stem = StdConv2d(3, 8, 3, padding=1)
        self.conv1 = StdConv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)  # a plain conv reads conv1: that group stays exact
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = x + self.conv2(F.relu(self.conv1(x)))
        return self.head(x.mean((2, 3)))


class PoolMixer(nn.Module):
    """PoolFormer's token mixer: ``pool(x) - x``."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)

    def forward(self, x):
        return self.pool(x) - x


class ChannelMixer(nn.Module):
    """A mixer with a fixed-size parameter that mixes across channels: a learned (C, C) matrix
    applied with einsum, plus a per-channel scale."""

    def __init__(self, dim: int):
        super().__init__()
        self.mix = nn.Parameter(torch.randn(dim, dim) / dim ** 0.5)
        self.scale = nn.Parameter(torch.rand(dim, 1, 1) + 0.5)

    def forward(self, x):
        return torch.einsum("bchw,dc->bdhw", x, self.mix) * self.scale


class StarReLU(nn.Module):
    """MetaFormer's activation ``s * relu(x) ** 2 + b`` with scalar learned ``s`` and ``b``: a
    zero channel comes out as ``b``, not zero."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1) * 0.8)
        self.bias = nn.Parameter(torch.ones(1) * 0.3)

    def forward(self, x):
        return self.scale * F.relu(x) ** 2 + self.bias


class MetaFormerNet(nn.Module):
    """MetaFormer blocks with mixed token mixers: GroupNorm(1) (a LayerNorm over C, H, W), a
    pooling mixer in one block and a channel-mixing one in the next, layer scale, conv MLPs."""

    def __init__(self, dim: int = 12):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 3, padding=1)
        self.norms = nn.ModuleList([nn.GroupNorm(1, dim) for _ in range(4)])
        self.mixers = nn.ModuleList([PoolMixer(), ChannelMixer(dim)])
        self.mlps = nn.ModuleList([nn.Sequential(nn.Conv2d(dim, 2 * dim, 1), StarReLU(), nn.Conv2d(2 * dim, dim, 1))
                                   for _ in range(2)])
        self.ls = nn.ParameterList([nn.Parameter(torch.rand(dim, 1, 1) + 0.5) for _ in range(4)])
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.stem(x)
        for i in range(2):
            x = x + self.ls[2 * i] * self.mixers[i](self.norms[2 * i](x))
            x = x + self.ls[2 * i + 1] * self.mlps[i](self.norms[2 * i + 1](x))
        return self.head(x.mean((2, 3)))


class RuntimeSplitNet(nn.Module):
    """Split sizes computed from the tensor at run time, ``x.split([k, x.shape[-1] - k])`` (a
    partial-channel mixer in the FasterNet / MetaFormer style)."""

    def __init__(self):
        super().__init__()
        self.embed, self.k = nn.Linear(6, 16), 6
        self.mix = nn.Linear(self.k, self.k)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        x = self.embed(x)
        a, b = x.split([self.k, x.shape[-1] - self.k], -1)
        return self.head(torch.cat([F.relu(self.mix(a)), b], -1).mean(1))


MODELS = {
    "window_attention": (WindowAttentionNet, (1, 3, 8, 8)),
    "rel_pos_bias": (RelPosBiasNet, (1, 3, 8, 8)),
    "cosine_window": (CosineWindowNet, (1, 3, 8, 8)),
    "head_mask": (HeadMaskNet, (1, 6, 4)),
    "fixed_mask": (FixedMaskNet, (1, 6, 4)),
    "patch_merging": (PatchMergingNet, (1, 3, 8, 8)),
    "ghost": (GhostNet, (1, 3, 8, 8)),
    "weight_standardised": (WSConvNet, (1, 3, 8, 8)),
    "metaformer": (MetaFormerNet, (1, 3, 8, 8)),
    "runtime_split": (RuntimeSplitNet, (1, 5, 6)),
}


@torch.no_grad()
def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple]:
    """The model (He-initialised, random norm statistics and affine parameters, eval mode) and
    its input shape."""
    factory, shape = MODELS[name]
    torch.manual_seed(seed)
    model = factory()
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, generator=g)
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval(), shape
