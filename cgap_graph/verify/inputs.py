"""Inputs for the oracles: random tensors of the traced shapes, and models whose outputs respond
to a channel mix-up (fresh norm layers are identities, so they hide one)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cgap_graph.ir.graph import ChannelGraph


def random_inputs(cg: ChannelGraph, batch: int | None = None, seed: int = 0,
                  spatial: int | None = None) -> list[torch.Tensor]:
    """Random inputs of the traced shapes (``batch`` replaces dim 0 when given; ``spatial``
    caps the last two dims of floating inputs with at least 4 dims, for a cheap probe)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for spec in cg.input_specs:
        shape = tuple(spec.shape if batch is None else (batch, *spec.shape[1:]))
        if spatial is not None and len(shape) >= 4 and spec.dtype.is_floating_point:
            shape = (*shape[:-2], *(min(d, spatial) for d in shape[-2:]))
        if spec.dtype.is_floating_point:
            out.append(torch.randn(shape, generator=g, dtype=spec.dtype))
        else:
            out.append(torch.randint(0, 8, shape, generator=g, dtype=spec.dtype))
    return out


def randomize_norm_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial statistics and affine parameters, so that a check
    in eval mode is not blind to channel mix-ups (fresh BN layers are identities)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase):
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)) and getattr(m, "weight", None) is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def output_tensor(y: Any) -> torch.Tensor:
    """A model output (tensor, or tuple/list/dict of tensors) as one flat tensor to compare."""
    if isinstance(y, torch.Tensor):
        return y
    if isinstance(y, (tuple, list)):
        return torch.cat([output_tensor(t).flatten() for t in y])
    if isinstance(y, dict):
        return torch.cat([output_tensor(t).flatten() for t in y.values()])
    raise TypeError(type(y))

