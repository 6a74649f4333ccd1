"""Oracles 1 and 2 of the design notes.

- :func:`masked_vs_shrunk`: zeroing channels across a group and removing them give the same
  outputs (for groups normalised by LayerNorm/GroupNorm, the masked reference computes those
  statistics over the kept channels only, which is what removal means).
- :func:`preserve_growth_diff`: duplicating channels with the ``preserve`` initialiser leaves
  outputs unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from cgap_graph.ir.graph import ChannelGraph, trace
from cgap_graph.surgery import apply_selection, mask_channels
from cgap_graph.verify.inputs import output_tensor, random_inputs


class _MaskedStatsInterpreter(fx.Interpreter):
    """Runs a masked model with LayerNorm/GroupNorm statistics taken over kept channels only."""

    def __init__(self, cg: ChannelGraph, dropped: Mapping[int, np.ndarray]) -> None:
        super().__init__(cg.module)
        self.cg = cg
        self.dropped = dropped

    def _keep_mask(self, e, size) -> np.ndarray:
        keep = np.ones(size, dtype=bool)
        for space, drop in self.dropped.items():
            ids = self.cg.an.t.unit_ids(e, space)
            keep &= ~np.isin(ids, drop) | (ids < 0)
        return keep

    def call_module(self, target, args, kwargs):
        mod = self.fetch_attr(target)
        node = self._node
        x = args[0]
        if isinstance(mod, nn.LayerNorm) and len(mod.normalized_shape) == 1:
            e = self.cg.an.vals[node.args[0]].exprs[-1]
            keep = torch.as_tensor(self._keep_mask(e, x.shape[-1]))
            xk = x[..., keep]
            mean = xk.mean(-1, keepdim=True)
            var = xk.var(-1, unbiased=False, keepdim=True)
            y = (x - mean) / torch.sqrt(var + mod.eps)
            if mod.weight is not None:
                y = y * mod.weight
            if mod.bias is not None:
                y = y + mod.bias
            return y
        if isinstance(mod, nn.GroupNorm):
            e = self.cg.an.vals[node.args[0]].exprs[1]
            keep = torch.as_tensor(self._keep_mask(e, x.shape[1]))
            n, c = x.shape[:2]
            g = mod.num_groups
            xs = x.reshape(n, g, c // g, -1)
            km = keep.reshape(g, c // g)
            y = torch.empty_like(xs)
            for i in range(g):
                xi = xs[:, i]
                sel = xi[:, km[i]]
                mean = sel.mean((1, 2), keepdim=True)
                var = sel.var((1, 2), unbiased=False, keepdim=True)
                y[:, i] = (xi - mean) / torch.sqrt(var + mod.eps)
            y = y.reshape(x.shape)
            if mod.affine:
                shape = [1, c] + [1] * (x.dim() - 2)
                y = y * mod.weight.view(shape) + mod.bias.view(shape)
            return y
        return super().call_module(target, args, kwargs)

    def run_node(self, n):
        self._node = n
        return super().run_node(n)


@torch.no_grad()
def masked_vs_shrunk(model: nn.Module, input_shape: Sequence[int], gid: int, drop: Sequence[int],
                     inputs: Sequence[torch.Tensor] | None = None, **trace_kw: Any) -> float:
    """Max |masked - shrunk| over the outputs, removing channels ``drop`` of group ``gid``."""
    masked = trace(model, input_shape, **trace_kw)
    shrunk = trace(model, input_shape, **trace_kw)
    inputs = list(inputs) if inputs is not None else random_inputs(masked)
    g = masked.group(gid)
    drop = np.asarray(sorted(set(int(i) for i in drop)), dtype=np.int64)
    mask_channels(masked, {gid: drop})
    masked.module.eval()
    ref = _MaskedStatsInterpreter(masked, {g.space: drop}).run(*inputs) if g.prune_notes \
        else masked.module(*inputs)
    keep = [i for i in range(g.width) if i not in set(drop.tolist())]
    apply_selection(shrunk, {gid: keep})
    shrunk.module.eval()
    out = shrunk.module(*inputs)
    return float((output_tensor(ref) - output_tensor(out)).abs().max())


@torch.no_grad()
def preserve_growth_diff(model: nn.Module, input_shape: Sequence[int], selections: Mapping[int, Sequence[int]],
                         inputs: Sequence[torch.Tensor] | None = None, **trace_kw: Any) -> float:
    """Max |grown - original| with the ``preserve`` initialiser."""
    cg = trace(model, input_shape, **trace_kw)
    inputs = list(inputs) if inputs is not None else random_inputs(cg)
    ref = output_tensor(model(*inputs))
    apply_selection(cg, selections, "preserve")
    cg.module.eval()
    return float((output_tensor(cg.module(*inputs)) - ref).abs().max())

