"""The constants that removed units feed their readers, read off the graph instead of a probe.

Once a unit's filters are zeroed (Alg. 3, l. 7), the producer's output at that channel is its
bias at every position, whatever the input. Per-channel ops carry that constant on: activations,
dropout (eval), BatchNorm with running statistics, pooling that never mixes in padding, adds and
products of two such values, concats along the channels, a token index. Where a reader's input at the
removed channels is reached only through such ops, its value is computed exactly from a few
numbers, with no forward pass; a LayerNorm over the channels makes it input dependent (not
constant). Views that only move size-1 dims, permutes and means over other dims keep the
channels, and so does attention (``dead_attention.py``). Anything else (a reshape that moves channels, an unknown op) is
*unknown*, and the caller runs the probe forward for it, as before.
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from cgap_graph.ir.graph import ChannelGraph
from cgap_graph.passes.cgap.dead_attention import attention_merge, linear_value, rows_zero
from cgap_graph.rules.elementwise import KEEP_ZERO_FUNCS, KEEP_ZERO_METHODS, LOSE_ZERO_FUNCS, LOSE_ZERO_METHODS

NOT_CONSTANT = "not constant"  # the value at the removed channels depends on the input

_UNARY_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
                  nn.LeakyReLU, nn.ELU, nn.Hardtanh, nn.Mish, nn.Softplus, nn.SELU, nn.CELU)
_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
# per element and deterministic: the element-wise rules' functions and methods, without the
# stochastic ones (dropout in the graph keeps the training flag it was traced with)
_STOCHASTIC = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, torch.dropout, F.alpha_dropout,
               F.feature_alpha_dropout}
_UNARY_FUNCS = {*KEEP_ZERO_FUNCS, *LOSE_ZERO_FUNCS, F.hardtanh, torch.clamp, torch.clip} - _STOCHASTIC
_UNARY_METHODS = {*KEEP_ZERO_METHODS, *LOSE_ZERO_METHODS}
_BINARY_FUNCS = {operator.add: torch.add, operator.iadd: torch.add, torch.add: torch.add,
                 operator.mul: torch.mul, operator.imul: torch.mul, torch.mul: torch.mul}
_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                 nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_POOL_FUNCS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
               F.adaptive_avg_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d}
_RESHAPE_FUNCS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "contiguous"}
_AVG_POOL_FUNCS = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d}
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
PRODUCERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # layers whose bias a constant folds into


def _no_value(got) -> bool:
    """None (unknown) or NOT_CONSTANT: nothing to compute with, passed on as it is."""
    return got is None or got is NOT_CONSTANT


def _no_padding(pad) -> bool:
    return all(p == 0 for p in (pad if isinstance(pad, (tuple, list)) else (pad,)))


class DeadConstants:
    """Values at given channels of graph nodes, where the graph proves them constant."""

    def __init__(self, cg: ChannelGraph, zeroed: dict[str, np.ndarray] | None = None) -> None:
        self.gm = cg.module
        self.zeroed = zeroed or {}  # weight -> rows known zero (what zero_filters just zeroed)
        self.calls: dict[str, list[fx.Node]] = {}
        for n in cg.graph.nodes:
            if n.op == "call_module":
                self.calls.setdefault(n.target, []).append(n)
        self.memo: dict[tuple[str, bytes], object] = {}

    def reader_input(self, mod_path: str, pos: np.ndarray):
        """A stand-in for the input of reader ``mod_path`` (a tensor whose channel dim holds the
        constants at ``pos``, size 1 elsewhere), ``NOT_CONSTANT``, or None (unknown: probe)."""
        nodes = self.calls.get(mod_path, [])
        if not self.reads_from_call(mod_path) or len(nodes) != 1 or not nodes[0].args or not isinstance(
                nodes[0].args[0], fx.Node):
            return None
        mod = self.gm.get_submodule(mod_path)
        src = nodes[0].args[0]
        shape = src.meta.get("shape")
        if not isinstance(shape, tuple) or not shape or not all(isinstance(k, int) for k in shape):
            return None
        cdim = len(shape) - 1 if isinstance(mod, nn.Linear) else 1
        got = self.value(src, pos)
        if _no_value(got):
            return got
        vals, at = got
        if at != cdim:
            return None
        x = torch.zeros([1] * cdim + [shape[cdim]] + [1] * (len(shape) - cdim - 1), dtype=vals.dtype,
                        device=vals.device)
        x.view(-1)[torch.as_tensor(pos, device=vals.device)] = vals
        return x

    def reads_from_call(self, mod_path: str) -> bool:
        """Whether reader ``mod_path`` is a Linear/Conv the graph calls (a probe would see its input)."""
        return mod_path in self.calls and isinstance(self.gm.get_submodule(mod_path), PRODUCERS)

    def value(self, node, pos: np.ndarray):
        """(values at ``pos`` along the channel dim, that dim) of ``node``'s output, ``NOT_CONSTANT``,
        or None."""
        if not isinstance(node, fx.Node):
            return None
        key = (node.name, pos.tobytes())
        if key not in self.memo:
            self.memo[key] = self._value(node, pos)
        return self.memo[key]

    def _value(self, node: fx.Node, pos: np.ndarray):
        shape = node.meta.get("shape")
        if not isinstance(shape, tuple) or not shape or not all(isinstance(k, int) for k in shape):
            return None  # not one tensor of known shape (a tuple of outputs, a size)
        if node.op == "call_module":
            return self._module(node, self.gm.get_submodule(node.target), pos, len(shape))
        if node.op == "call_function" and node.args:
            fn, x = node.target, node.args[0]
            if fn in _UNARY_FUNCS or fn in _POOL_FUNCS:
                if any(isinstance(a, fx.Node) for a in (*node.args[1:], *node.kwargs.values())):
                    return None
                if fn in _POOL_FUNCS:
                    return self.value(x, pos)
                got = self.value(x, pos)
                return self._apply(got, lambda v: fn(v, *node.args[1:], **node.kwargs))
            if fn in _BINARY_FUNCS and len(node.args) == 2 and not node.kwargs:
                return self._binary(node, _BINARY_FUNCS[fn], pos, len(shape))
            if fn in _RESHAPE_FUNCS:
                return self._reshape(node, pos)
            if fn is torch.cat:
                return self._cat(node, pos)
            if fn in _AVG_POOL_FUNCS:
                arg = lambda i, k, d: node.args[i] if len(node.args) > i else node.kwargs.get(k, d)  # noqa: E731
                return self._avg_pool(x, pos, arg(3, "padding", 0), arg(5, "count_include_pad", True),
                                      arg(6, "divisor_override", None))
            if fn is torch.mean:
                return self._mean(node, pos)
            if fn is torch.permute or fn is torch.transpose:
                return self._permute(node, pos)
            if fn is F.layer_norm:
                return self._layer_norm(self._attr(node.args[2] if len(node.args) > 2 else node.kwargs.get("weight")),
                                        node.args[1] if len(node.args) > 1 else node.kwargs.get("normalized_shape"),
                                        pos)
            if fn is operator.getitem:
                return self._getitem(node, pos, len(shape))
            if fn is F.linear:
                return linear_value(self, node, pos, len(shape))
        if node.op == "call_method" and node.args:
            if node.target in _UNARY_METHODS and len(node.args) == 1 and not node.kwargs:
                return self._apply(self.value(node.args[0], pos), lambda v: getattr(v, node.target)())
            if node.target in _RESHAPE_METHODS:
                return self._reshape(node, pos)
            if node.target == "mean":
                return self._mean(node, pos)
            if node.target in ("permute", "transpose"):
                return self._permute(node, pos)
        return None

    def _cat(self, node: fx.Node, pos: np.ndarray):
        """A concat along the channels: each position is a channel of one of the pieces."""
        pieces = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        ndim = len(node.meta["shape"])
        if not isinstance(pieces, (list, tuple)) or not isinstance(dim, int) or not all(
                isinstance(t, fx.Node) and isinstance(t.meta.get("shape"), tuple) for t in pieces):
            return None
        dim %= ndim
        vals, off = None, 0
        for t in pieces:
            size = t.meta["shape"][dim]
            sel = (pos >= off) & (pos < off + size)
            if sel.any():
                got = self.value(t, pos[sel] - off)
                if _no_value(got):
                    return got
                if got[1] != dim:
                    return None
                if vals is None:
                    vals = torch.empty(len(pos), dtype=got[0].dtype, device=got[0].device)
                vals[torch.as_tensor(np.flatnonzero(sel), device=vals.device)] = got[0]
            off += size
        return (vals, dim) if vals is not None else None

    def _attr(self, node):
        """The tensor a get_attr node names (None for anything else)."""
        if not isinstance(node, fx.Node) or node.op != "get_attr":
            return None
        obj = self.gm
        for part in node.target.split("."):
            obj = getattr(obj, part, None)
        return obj if isinstance(obj, torch.Tensor) else None

    @staticmethod
    def _layer_norm(weight, normalized_shape, pos: np.ndarray):
        """Normalised over the channels: the other channels' input-dependent mean and spread reach
        the removed ones. (A weight that is zero there would make them its bias: left to the probe.)"""
        if normalized_shape is None or len(tuple(normalized_shape)) != 1:
            return None
        if weight is None or weight.detach()[torch.as_tensor(pos)].abs().max() != 0:
            return NOT_CONSTANT
        return None

    def _reshape(self, node: fx.Node, pos: np.ndarray):
        """A view that only adds or drops size-1 dims (the channels keep their order), or flattens
        the channels with the dims after them."""
        src, out = node.args[0], node.meta.get("shape")
        sh = src.meta.get("shape") if isinstance(src, fx.Node) else None
        if not isinstance(sh, tuple) or not all(isinstance(k, int) for k in sh):
            return None
        merged = attention_merge(self, node, pos)
        if merged is not None:
            return merged
        n = len(out)
        if len(sh) > n and sh[:n - 1] == out[:n - 1] and math.prod(sh[n - 1:]) == out[-1] and math.prod(sh[n:]) > 1:
            # (..., C, H, W) -> (..., C*H*W), as before a classifier: position p is channel p // (H*W)
            inner = math.prod(sh[n:])
            src_pos = np.unique(pos // inner)
            got = self.value(src, src_pos)
            if _no_value(got):
                return got
            if got[1] != n - 1:
                return None
            return got[0][torch.as_tensor(np.searchsorted(src_pos, pos // inner))], n - 1
        got = self.value(src, pos)
        if _no_value(got):
            return got
        if sh[got[1]] == 1 or [k for k in sh if k != 1] != [k for k in out if k != 1]:
            return None
        rank = sum(1 for k in sh[:got[1]] if k != 1)
        big = [i for i, k in enumerate(out) if k != 1]
        return got[0], big[rank]

    def _mean(self, node: fx.Node, pos: np.ndarray):
        """A mean over dims other than the channels' (squeeze-excitation's pooling)."""
        src = node.args[0]
        sh = src.meta.get("shape") if isinstance(src, fx.Node) else None
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        if not isinstance(sh, tuple) or dims is None or "dtype" in node.kwargs:
            return None
        dims = {d % len(sh) for d in (dims if isinstance(dims, (tuple, list)) else (dims,))}
        got = self.value(src, pos)
        if _no_value(got):
            return got
        if got[1] in dims:
            return None
        return got[0], got[1] if keep else got[1] - sum(1 for d in dims if d < got[1])

    def _permute(self, node: fx.Node, pos: np.ndarray):
        """The channel dim moves; its values do not."""
        src = node.args[0]
        sh = src.meta.get("shape") if isinstance(src, fx.Node) else None
        got = self.value(src, pos)
        if _no_value(got) or not isinstance(sh, tuple):
            return got
        rest = node.args[1:]
        if not all(isinstance(d, int) for d in (rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list))
                                                 else rest)):
            return None
        n = len(sh)
        if node.target in ("transpose", torch.transpose):
            a, b = (d % n for d in rest)
            return got[0], {a: b, b: a}.get(got[1], got[1])
        order = [d % n for d in (rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest)]
        return got[0], order.index(got[1])

    def _module(self, node: fx.Node, mod: nn.Module, pos: np.ndarray, ndim: int):
        if isinstance(mod, PRODUCERS):
            w = mod.weight
            if w.shape[0] <= int(pos.max()):
                return None
            if not rows_zero(w.detach(), self.zeroed.get(f"{node.target}.weight"), pos):
                return None  # the rows are not all zero: the output depends on the input
            cdim = ndim - 1 if isinstance(mod, nn.Linear) else 1
            b = mod.bias
            return (b.detach()[torch.as_tensor(pos)].clone() if b is not None
                    else torch.zeros(len(pos), dtype=w.dtype, device=w.device)), cdim
        if not node.args:
            return None
        x = node.args[0]
        if isinstance(mod, (*_IDENTITY_MODULES, *_POOL_MODULES)):
            return self.value(x, pos)
        if isinstance(mod, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
            return self._avg_pool(x, pos, mod.padding, mod.count_include_pad, getattr(mod, "divisor_override", None))
        if isinstance(mod, _UNARY_MODULES):
            return self._apply(self.value(x, pos), mod)
        if isinstance(mod, _NORMS) and mod.running_mean is not None:
            got = self.value(x, pos)
            if _no_value(got):
                return got
            if got[1] != 1:  # BatchNorm's channels are dim 1
                return None
            i = torch.as_tensor(pos)
            v = (got[0] - mod.running_mean[i]) / torch.sqrt(mod.running_var[i] + mod.eps)
            if mod.weight is not None:
                v = v * mod.weight.detach()[i] + mod.bias.detach()[i]
            return v, 1
        if isinstance(mod, nn.LayerNorm):
            return self._layer_norm(mod.weight, mod.normalized_shape, pos)
        if isinstance(mod, nn.Flatten):
            return self._reshape(node, pos)
        return None

    def _avg_pool(self, x, pos: np.ndarray, pad, include_pad, divisor):
        """Averages of a constant are that constant, except where padding counts: the windows at
        the border mix in zeros, so a non-zero constant varies over positions there."""
        got = self.value(x, pos)
        if _no_value(got) or _no_padding(pad) and divisor is None:
            return got
        sh = x.meta.get("shape")
        if divisor is not None or not include_pad or not isinstance(sh, tuple) or any(k < 2 for k in sh[2:]):
            return None if divisor is not None or include_pad else got
        return got if got[0].abs().max() == 0 else NOT_CONSTANT

    @staticmethod
    def _apply(got, fn):
        if _no_value(got):
            return got
        return fn(got[0].clone()), got[1]

    def _binary(self, node: fx.Node, op, pos: np.ndarray, ndim: int):
        """``a + b`` or ``a * b``: constant where both are (or one is a Python number), and only
        where neither operand broadcasts along the channel dim."""
        parts = []
        for a in node.args:
            if isinstance(a, (int, float)) and not isinstance(a, bool):
                parts.append(a)
                continue
            got = self.value(a, pos)
            if _no_value(got):
                return None
            sa = a.meta.get("shape")
            if len(sa) != ndim or sa[got[1]] != node.meta["shape"][got[1]]:
                return None
            parts.append(got)
        dims = {p[1] for p in parts if isinstance(p, tuple)}
        if len(dims) != 1:
            return None
        vals = [p[0] if isinstance(p, tuple) else p for p in parts]
        return op(vals[0], vals[1]), dims.pop()

    def _getitem(self, node: fx.Node, pos: np.ndarray, ndim: int):
        """``x[:, 0]`` and the like on channels-last values: the channel dim is left whole."""
        src, idx = node.args[0], node.args[1]
        sh = src.meta.get("shape") if isinstance(src, fx.Node) else None
        idx = idx if isinstance(idx, tuple) else (idx,)
        if all(i is None or i == slice(None) for i in idx):  # s[:, :, None, None]: size-1 dims added
            return self._reshape(node, pos)
        if not isinstance(sh, tuple) or len(idx) >= len(sh) or not all(
                isinstance(i, int) or isinstance(i, slice) and all(
                    not isinstance(v, fx.Node) for v in (i.start, i.stop, i.step)) for i in idx):
            return None
        got = self.value(src, pos)
        if _no_value(got):
            return got
        return (got[0], ndim - 1) if got[1] == len(sh) - 1 else None
