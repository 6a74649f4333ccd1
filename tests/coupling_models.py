"""Small models, one per coupling pattern the channel rules must resolve (issue #2's list).

Each entry: name -> (factory, input shape, input dtype). ``test_coupling.py`` runs the oracles
(masked == shrunk, preserve growth, perturbation agreement) on every group of every model.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cgap_graph import zoo


class Conv1dNet(nn.Module):
    """Conv1d producers/consumers, BatchNorm1d, adaptive 1-d pooling, flatten into Linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(4, 12, 3, padding=1)
        self.bn = nn.BatchNorm1d(12)
        self.c2 = nn.Conv1d(12, 10, 3, stride=2)
        self.pool = nn.AdaptiveAvgPool1d(3)
        self.fc = nn.Linear(30, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.c1(x)))
        x = self.pool(F.gelu(self.c2(x)))
        return self.fc(torch.flatten(x, 1))


class TransposedConvNet(nn.Module):
    """ConvTranspose2d (weight laid out [in, out]) between ordinary convolutions."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.dec = nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.out = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.out(F.relu(self.bn(self.dec(F.silu(self.enc(x))))))


class EmbeddingNet(nn.Module):
    """Embedding as a producer of token channels, a Linear over tokens, LayerNorm, mean pooling."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.fc = nn.Linear(16, 24)
        self.norm = nn.LayerNorm(24)
        self.head = nn.Linear(24, 3)

    def forward(self, tokens):
        h = F.relu(self.fc(self.emb(tokens)))
        return self.head(self.norm(h).mean(1))


class NormNet(nn.Module):
    """GroupNorm (groups of channels), InstanceNorm (affine, per channel), channels-last LayerNorm."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.c2 = nn.Conv2d(16, 12, 3, padding=1)
        self.inorm = nn.InstanceNorm2d(12, affine=True)
        self.c3 = nn.Conv2d(12, 10, 1)
        self.ln = nn.LayerNorm(10)
        self.fc = nn.Linear(10, 4)

    def forward(self, x):
        x = F.relu(self.gn(self.c1(x)))
        x = F.relu(self.inorm(self.c2(x)))
        x = self.c3(x).permute(0, 2, 3, 1)
        x = self.ln(x).mean((1, 2))
        return self.fc(x)


class ActivationsNet(nn.Module):
    """Activations, dropout, max/avg/adaptive pooling between convolutions."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 6, 3, padding=1)
        self.act = nn.Hardswish()
        self.drop = nn.Dropout2d(0.2)
        self.fc = nn.Linear(6 * 4, 3)

    def forward(self, x):
        x = F.max_pool2d(F.leaky_relu(self.c1(x), 0.1), 2)
        x = self.drop(F.avg_pool2d(F.elu(self.c2(x)), 2, ceil_mode=True))
        x = F.adaptive_max_pool2d(self.act(self.c3(x)), (2, 2))
        return self.fc(x.reshape(x.size(0), -1))


class PadShortcutResNet(nn.Module):
    """Option-A ResNet shortcut: the identity is subsampled and zero-padded on the channel dim."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(3, 8, 3, padding=1)
        self.c1 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        x = F.relu(self.c0(x))
        out = self.c2(F.relu(self.bn1(self.c1(x))))
        sc = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 4, 4), "constant", 0)
        out = F.relu(out + sc)
        return self.fc(out.mean((2, 3)))


class SplitConcatNet(nn.Module):
    """chunk, split with sizes, channel slicing, and concatenation of the pieces."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 12, 3, padding=1)
        self.a = nn.Conv2d(6, 5, 3, padding=1)
        self.b = nn.Conv2d(6, 7, 1)
        self.c2 = nn.Conv2d(12, 10, 3, padding=1)
        self.d = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        x = F.relu(self.c1(x))
        p, q = x.chunk(2, dim=1)
        y = torch.cat([self.a(p), self.b(q)], 1)
        y = F.relu(self.c2(y))
        u, w = torch.split(y, [6, 4], dim=1)
        z = torch.cat([u[:, :3], u[:, 3:], self.d(w)], dim=1)
        return self.fc(z.mean((2, 3)))


class GroupedConvNet(nn.Module):
    """Grouped (ResNeXt-style) and depthwise convolutions with a residual connection."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.g1 = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 32, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(32, 16, 1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = F.relu(self.bn(self.g1(x)))
        y = self.pw(F.relu(self.dw(y)))
        return self.fc((x + y).mean((2, 3)))


class ShuffleV2Net(nn.Module):
    """ShuffleNetV2 units: channel split (chunk), a branch, concat, channel shuffle
    (view-transpose-view); the next unit splits the shuffled channels again."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, 2 * c, 3, padding=1)
        self.b1 = nn.Sequential(nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU(),
                                nn.Conv2d(c, c, 3, padding=1, groups=c), nn.BatchNorm2d(c), nn.Conv2d(c, c, 1))
        self.b2 = nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, groups=c),
                                nn.Conv2d(c, c, 1))
        self.fc = nn.Linear(2 * c, 3)

    @staticmethod
    def shuffle(x, g: int = 2):
        b, c, h, w = x.size()
        return x.view(b, g, c // g, h, w).transpose(1, 2).contiguous().view(b, c, h, w)

    def forward(self, x):
        x = F.relu(self.stem(x))
        for branch in (self.b1, self.b2):
            a, b = x.chunk(2, dim=1)
            x = self.shuffle(torch.cat([a, F.relu(branch(b))], 1))
        return self.fc(x.mean((2, 3)))


class ShuffleNet(nn.Module):
    """ShuffleNet(v1)-style unit: grouped 1x1 conv, channel shuffle, grouped 1x1 conv. The second
    grouped conv sees shuffled channels, so no pruning keeps its groups even: its groups freeze."""

    def __init__(self, groups: int = 3):
        super().__init__()
        self.g = groups
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.gconv1 = nn.Conv2d(12, 24, 1, groups=groups)
        self.bn1 = nn.BatchNorm2d(24)
        self.dw = nn.Conv2d(24, 24, 3, padding=1, groups=24)
        self.bn2 = nn.BatchNorm2d(24)
        self.gconv2 = nn.Conv2d(24, 12, 1, groups=groups)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = F.relu(self.bn1(self.gconv1(x)))
        b, c, h, w = y.size()
        y = y.view(b, self.g, c // self.g, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
        y = self.gconv2(self.bn2(self.dw(y)))
        return self.fc(F.relu(x + y).mean((2, 3)))


class HandAttention(nn.Module):
    """Hand-written multi-head attention: heads x head_dim through view/transpose, q @ k^T."""

    def __init__(self, dim: int = 24, heads: int = 3):
        super().__init__()
        self.h = heads
        self.d = dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(self.d)

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.h, self.d).transpose(1, 2)
        k = self.k(x).view(b, t, self.h, self.d).transpose(1, 2)
        v = self.v(x).view(b, t, self.h, self.d).transpose(1, 2)
        att = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, self.h * self.d)
        return self.o(y)


class HandAttentionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 24)
        self.attn = HandAttention(24, 3)
        self.mlp = nn.Linear(24, 10)
        self.head = nn.Linear(10, 2)

    def forward(self, x):
        h = self.embed(x)
        h = h + self.attn(h)
        return self.head(F.gelu(self.mlp(h)).mean(1))


class FusedQKVAttentionNet(nn.Module):
    """A fused qkv projection cut with chunk(3) and scaled_dot_product_attention (default scale)."""

    def __init__(self, dim: int = 16, heads: int = 2):
        super().__init__()
        self.h = heads
        self.embed = nn.Linear(5, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 2)

    def forward(self, x):
        x = self.embed(x)
        b, t, c = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q = q.view(b, t, self.h, -1).transpose(1, 2)
        k = k.view(b, t, self.h, -1).transpose(1, 2)
        v = v.view(b, t, self.h, -1).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.transpose(1, 2).reshape(b, t, -1)
        return self.head((x + self.proj(y)).mean(1))


class MHANet(nn.Module):
    """nn.MultiheadAttention in the (seq, batch, dim) layout, returning averaged weights too."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.mha = nn.MultiheadAttention(16, 4)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.embed(x).transpose(0, 1)
        a, w = self.mha(h, h, h)
        return self.head((h + a).mean(0)), w.sum()


class LayerScaleNet(nn.Module):
    """An unwrapped nn.Parameter applied per channel (layer scale) on a residual branch."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.conv = nn.Conv2d(12, 12, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(12, 1, 1) + 0.5)
        self.beta = nn.Parameter(torch.randn(12) * 0.1)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = x + self.gamma * self.conv(x)
        return self.fc(x.mean((2, 3)) + self.beta)


class ConvNeXtBlockNet(nn.Module):
    """Permute of the channel dim: depthwise conv, channels-last LayerNorm and MLP, permute back."""

    def __init__(self, dim: int = 12):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 3, padding=1)
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim) + 0.5)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.stem(x)
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y)))) * self.gamma
        x = x + y.permute(0, 3, 1, 2)
        return self.head(x.mean((2, 3)))


class ReturnFeaturesNet(nn.Module):
    """Python control flow on a non-tensor argument with a default (traces with the default)."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x, return_features=False):
        f = F.relu(self.c(x)).mean((2, 3))
        if return_features:
            return f
        return self.fc(f)


MODELS = {
    "conv1d": (Conv1dNet, (1, 4, 16), torch.float32),
    "conv_transpose": (TransposedConvNet, (1, 3, 16, 16), torch.float32),
    "embedding": (EmbeddingNet, (1, 7), torch.int64),
    "norms": (NormNet, (1, 3, 8, 8), torch.float32),
    "activations_pooling": (ActivationsNet, (1, 3, 16, 16), torch.float32),
    "pad_shortcut": (PadShortcutResNet, (1, 3, 8, 8), torch.float32),
    "split_concat": (SplitConcatNet, (1, 3, 8, 8), torch.float32),
    "grouped_depthwise": (GroupedConvNet, (1, 3, 8, 8), torch.float32),
    "channel_shuffle": (ShuffleV2Net, (1, 3, 8, 8), torch.float32),
    "shuffle_grouped_v1": (ShuffleNet, (1, 3, 8, 8), torch.float32),
    "hand_attention": (HandAttentionNet, (1, 5, 6), torch.float32),
    "fused_qkv_sdpa": (FusedQKVAttentionNet, (1, 5, 5), torch.float32),
    "multihead_attention": (MHANet, (1, 5, 6), torch.float32),
    "layer_scale": (LayerScaleNet, (1, 3, 8, 8), torch.float32),
    "permute_channels_last": (ConvNeXtBlockNet, (1, 3, 8, 8), torch.float32),
    "return_features_default": (ReturnFeaturesNet, (1, 3, 8, 8), torch.float32),
}


def zoo_and_coupling_cases():
    """pytest params over every zoo model and every model above: ``(kind, name)``."""
    for name in zoo.names():
        yield pytest.param(("zoo", name), id=f"zoo-{name}")
    for name in MODELS:
        yield pytest.param(("coupling", name), id=name)
