"""Randomly composed token-stream models for the property test (issue 16): norms across
channels (LayerNorm, RMSNorm, F.layer_norm, GroupNorm over channels-first tokens), attention
with or without a per-head relative-position bias table, split/concat, slices, token mixers
(pooling as in MetaFormer, a Linear over tokens as in MLP-Mixer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TOKENS = 8


class Mlp(nn.Module):
    def __init__(self, d: int, norm: str) -> None:
        super().__init__()
        self.kind = norm
        self.norm = {"ln": nn.LayerNorm(d), "rms": nn.RMSNorm(d), "fln": None}[norm]
        self.w = nn.Parameter(torch.rand(d) + 0.5)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        h = F.layer_norm(x, (x.shape[-1],), self.w) if self.norm is None else self.norm(x)
        return x + self.fc2(F.gelu(self.fc1(h)))


class Attention(nn.Module):
    def __init__(self, d: int, heads: int, bias_table: bool) -> None:
        super().__init__()
        self.heads = heads
        self.norm, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.table = nn.Parameter(torch.randn(1, heads, TOKENS, TOKENS)) if bias_table else None

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self.qkv(self.norm(x)).chunk(3, -1))
        s = q @ k.transpose(-2, -1) * 0.3
        if self.table is not None:
            s = s + self.table
        return x + self.proj((s.softmax(-1) @ v).transpose(1, 2).flatten(2))


class SplitConcat(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.k, self.d = d // 2, d  # sizes computed from x.shape trip a split rule (reported)
        self.fa = nn.Linear(self.k, self.k)

    def forward(self, x):
        a, b = x.split([self.k, self.d - self.k], -1)
        return torch.cat([F.relu(self.fa(a)), b], -1)


class SliceMix(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.k = d // 2
        self.f = nn.Linear(self.k, d)

    def forward(self, x):
        return x + self.f(x[..., : self.k])


class PoolMixer(nn.Module):
    """MetaFormer's pooling token mixer: x + (pool(norm x) - norm x), GroupNorm(1) over channels."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, d)

    def forward(self, x):
        h = self.norm(x.transpose(1, 2))
        return x + (F.avg_pool1d(h, 3, 1, 1, count_include_pad=False) - h).transpose(1, 2)


class TokenMlp(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm, self.tok = nn.LayerNorm(d), nn.Linear(TOKENS, TOKENS)

    def forward(self, x):
        return x + self.tok(self.norm(x).transpose(1, 2)).transpose(1, 2)


BLOCKS = ["mlp_ln", "mlp_rms", "mlp_fln", "attn", "attn_bias", "split_concat", "slice", "pool_mixer", "token_mlp"]



def block(kind: str, d: int, heads: int) -> nn.Module:
    if kind.startswith("mlp_"):
        return Mlp(d, kind[4:])
    if kind.startswith("attn"):
        return Attention(d, heads, kind == "attn_bias")
    return {"split_concat": SplitConcat, "slice": SliceMix, "pool_mixer": PoolMixer, "token_mlp": TokenMlp}[kind](d)


class Composed(nn.Module):
    def __init__(self, kinds: list[str], d: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(6, d)
        self.blocks = nn.Sequential(*[block(k, d, heads) for k in kinds])
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 3)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.embed(x))).mean(1))


INPUT_SHAPE = (1, TOKENS, 6)
