"""The honest reference for removing channels that a norm normalises across.

Zeroing a channel that a LayerNorm, RMSNorm, GroupNorm (or F.normalize, LocalResponseNorm)
normalises across still counts it in the statistics; removing it does not. So "masked ==
shrunk" for such groups is checked against a masked model whose normalisations see only the
kept channels: every norm node, module or functional, is run on the kept positions of its
normalised dimensions (with its affine parameters cut to match) and the result is put back,
removed positions reading zero. Which positions are kept comes from the channel analysis of the
norm's input, so channels-last layouts (``permute(0, 2, 3, 1)`` -> LayerNorm -> permute back, as
in ConvNeXt) and flattened token streams are handled with no special case.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from cgap_graph.ir.graph import ChannelGraph
from cgap_graph.ir.values import TInfo

_FUNCS = {F.layer_norm: "layer_norm", F.rms_norm: "rms_norm", F.group_norm: "group_norm",
          F.normalize: "normalize", F.local_response_norm: "lrn"}
_SIGS = {f: inspect.signature(f) for f in _FUNCS}


def _index(x: torch.Tensor, dims: Sequence[int], keeps: Sequence[torch.Tensor]) -> torch.Tensor:
    for d, k in zip(dims, keeps):
        x = x.index_select(d, k)
    return x


def _scatter(y: torch.Tensor, shape, dims: Sequence[int], keeps: Sequence[torch.Tensor]) -> torch.Tensor:
    """``y`` (the kept positions) put back into zeros of ``shape``."""
    out = y
    for d, k in reversed(list(zip(dims, keeps))):
        full = list(out.shape)
        full[d] = shape[d]
        z = out.new_zeros(full)
        out = z.index_copy(d, k, out)
    return out


class KeptStatsInterpreter(fx.Interpreter):
    """Runs a (masked) channel graph with norm statistics over kept channels only; see module
    docstring. ``dropped`` maps channel spaces (``Group.space``) to their removed units."""

    def __init__(self, cg: ChannelGraph, dropped: Mapping[int, Sequence[int]]) -> None:
        super().__init__(cg.module)
        self.cg = cg
        t = cg.an.t
        self.dropped = {t.find(s): np.asarray(list(d), dtype=np.int64) for s, d in dropped.items() if len(d)}
        self._node: fx.Node | None = None

    # ---- which positions are kept ---------------------------------------------------------
    def _keep(self, e, size: int) -> np.ndarray:
        keep = np.ones(size, dtype=bool)
        t = self.cg.an.t
        for space, drop in self.dropped.items():
            ids = t.unit_ids(e, space)
            keep &= ~np.isin(ids, drop) | (ids < 0)
        return keep

    def _keeps(self, x: torch.Tensor, dims: Sequence[int]) -> list[np.ndarray] | None:
        """Kept-position masks of ``dims`` of the node's first input, or None when all are kept."""
        src = self._node.args[0] if self._node.args else next(iter(self._node.kwargs.values()))
        info = self.cg.an.vals.get(src) if isinstance(src, fx.Node) else None
        if not isinstance(info, TInfo) or not self.dropped:
            return None
        keeps = [self._keep(info.exprs[d], x.shape[d]) for d in dims]
        return None if all(k.all() for k in keeps) else keeps

    def _on_kept(self, x, dims, keeps, fn):
        """``fn`` on the kept positions of ``x`` along ``dims``; removed positions read zero."""
        ks = [torch.as_tensor(np.flatnonzero(k), device=x.device) for k in keeps]
        return _scatter(fn(_index(x, dims, ks), ks), x.shape, dims, ks)

    # ---- the norms ------------------------------------------------------------------------
    def _layer_norm(self, x, shape, weight, bias, eps, rms: bool):
        k = len(shape)
        dims = list(range(x.dim() - k, x.dim()))
        keeps = self._keeps(x, dims)
        if keeps is None:
            return None

        def fn(xk, ks):
            w = _index(weight, range(k), ks) if weight is not None else None
            new = tuple(int(len(i)) for i in ks)
            if rms:
                return F.rms_norm(xk, new, w, eps)
            b = _index(bias, range(k), ks) if bias is not None else None
            return F.layer_norm(xk, new, w, b, eps)
        return self._on_kept(x, dims, keeps, fn)

    def _group_norm(self, x, groups: int, weight, bias, eps):
        keeps = self._keeps(x, [1])
        if keeps is None:
            return None
        per = keeps[0].reshape(groups, -1).sum(1)
        live = per[per > 0]
        if len(set(live.tolist())) > 1:
            raise ValueError(f"GroupNorm keeps unequal channels per group ({sorted(set(live.tolist()))}): "
                             "no shrunk model has this layout")

        def fn(xk, ks):
            w = weight.index_select(0, ks[0]) if weight is not None else None
            b = bias.index_select(0, ks[0]) if bias is not None else None
            return F.group_norm(xk, int(len(live)), w, b, eps)
        return self._on_kept(x, [1], keeps, fn)

    def _by_dim(self, x, dim: int, fn):
        keeps = self._keeps(x, [dim % x.dim()])
        return None if keeps is None else self._on_kept(x, [dim % x.dim()], keeps, lambda xk, ks: fn(xk))

    def _module(self, mod: nn.Module, x: torch.Tensor):
        if isinstance(mod, nn.LayerNorm):
            return self._layer_norm(x, mod.normalized_shape, mod.weight, mod.bias, mod.eps, False)
        if isinstance(mod, nn.RMSNorm):
            return self._layer_norm(x, mod.normalized_shape, mod.weight, None, mod.eps, True)
        if isinstance(mod, nn.GroupNorm):
            return self._group_norm(x, mod.num_groups, mod.weight if mod.affine else None,
                                    mod.bias if mod.affine else None, mod.eps)
        if isinstance(mod, nn.LocalResponseNorm):
            return self._by_dim(x, 1, mod)
        return None

    def _function(self, target, args, kwargs):
        kind = _FUNCS[target]
        b = _SIGS[target].bind(*args, **kwargs)
        b.apply_defaults()
        a = b.arguments
        x = a["input"]
        if kind in ("layer_norm", "rms_norm"):
            shape = a["normalized_shape"]
            shape = tuple(shape) if isinstance(shape, (list, tuple, torch.Size)) else (int(shape),)
            return self._layer_norm(x, shape, a.get("weight"), a.get("bias"), a["eps"], kind == "rms_norm")
        if kind == "group_norm":
            return self._group_norm(x, int(a["num_groups"]), a["weight"], a["bias"], a["eps"])
        if kind == "normalize":
            return self._by_dim(x, a["dim"], lambda xk: F.normalize(xk, a["p"], a["dim"], a["eps"]))
        return self._by_dim(x, 1, lambda xk: F.local_response_norm(xk, a["size"], a["alpha"], a["beta"], a["k"]))

    # ---- fx hooks -------------------------------------------------------------------------
    def run_node(self, n):
        self._node = n
        return super().run_node(n)

    def call_module(self, target, args, kwargs):
        if args and isinstance(args[0], torch.Tensor):
            y = self._module(self.fetch_attr(target), args[0])
            if y is not None:
                return y
        return super().call_module(target, args, kwargs)

    def call_function(self, target, args, kwargs):
        if target in _FUNCS:
            y = self._function(target, args, kwargs)
            if y is not None:
                return y
        return super().call_function(target, args, kwargs)


@torch.no_grad()
def kept_stats_reference(cg: ChannelGraph, dropped: Mapping[int, Sequence[int]],
                         inputs: Sequence[torch.Tensor]):
    """Outputs of the masked graph ``cg`` with norm statistics over kept channels, removing the
    units ``dropped[gid]`` of each group (ids as in ``cg.groups``)."""
    by_space = {cg.group(gid).space: units for gid, units in dropped.items()}
    was = cg.module.training
    cg.module.eval()
    try:
        return KeptStatsInterpreter(cg, by_space).run(*inputs)
    finally:
        cg.module.train(was)
