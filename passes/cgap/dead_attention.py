"""Removed units' constants through attention, for ``dead_constants.py``.

``nn.MultiheadAttention`` and hand-written attention trace to ``F.linear`` with weights split from
one packed parameter, a view into heads, ``scaled_dot_product_attention`` and a merge of the
heads. A value channel whose projection rows are zero is its bias at every token; attention
averages it over tokens with weights that sum to one, so the merged output carries the same
constant into the output projection: no probe forward is needed (a ViT's probe runs at full
resolution, where the position embedding fixes the size).
"""

from __future__ import annotations

import operator

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F

_SPLITS = {torch.split, torch.Tensor.split}
_VIEWS = {"view", "reshape"}


def static_value(dc, node) -> tuple | None:
    """(value, rows known zero or None) of a node computed from parameters alone: a ``get_attr``,
    its ``split`` along dim 0 and an item of that; None for anything else."""
    if not isinstance(node, fx.Node):
        return None
    if node.op == "get_attr":
        t = dc._attr(node)
        return None if t is None else (t.detach(), dc.zeroed.get(node.target))
    if node.op != "call_function":
        return None
    if node.target is operator.getitem and isinstance(node.args[1], int):
        got = static_value(dc, node.args[0])
        if got is None or not isinstance(got[0], tuple):
            return None
        i = node.args[1]
        return got[0][i], (got[1][i] if got[1] is not None else None)
    if node.target in _SPLITS and len(node.args) == 2 and set(node.kwargs) <= {"dim"}:
        got, sizes = static_value(dc, node.args[0]), node.args[1]
        if got is None or not isinstance(got[0], torch.Tensor) or node.kwargs.get("dim", 0) != 0 or not (
                isinstance(sizes, (list, tuple)) and all(isinstance(k, int) for k in sizes)):
            return None
        parts = torch.split(got[0], list(sizes), 0)
        rows = None if got[1] is None else tuple(np.split(got[1], np.cumsum(sizes)[:-1]))
        return parts, rows
    return None


def rows_zero(weight: torch.Tensor, known: np.ndarray | None, pos: np.ndarray) -> bool:
    """Whether ``weight``'s rows at ``pos`` are zero: known (zeroed just now) or read."""
    if known is not None and known[pos].all():
        return True
    return bool(weight[torch.as_tensor(pos, device=weight.device)].abs().max() == 0)


def linear_value(dc, node: fx.Node, pos: np.ndarray, ndim: int):
    """``F.linear(x, w, b)`` with ``w``'s rows at ``pos`` zero: ``b`` there, whatever ``x``."""
    w = static_value(dc, node.args[1] if len(node.args) > 1 else node.kwargs.get("weight"))
    if w is None or not isinstance(w[0], torch.Tensor) or w[0].dim() != 2 or w[0].shape[0] <= int(pos.max()):
        return None
    weight, rows = w
    if not rows_zero(weight, rows, pos):
        return None
    idx = torch.as_tensor(pos, device=weight.device)
    b = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    if b is None:
        return torch.zeros(len(pos), dtype=weight.dtype, device=weight.device), ndim - 1
    got = static_value(dc, b)
    if got is None or not isinstance(got[0], torch.Tensor) or got[0].dim() != 1:
        return None
    return got[0][idx].clone(), ndim - 1


def _heads_transpose(node) -> bool:
    """``x.transpose(1, 2)`` of a 4-d tensor: (B, T, h, d) <-> (B, h, T, d)."""
    return (isinstance(node, fx.Node) and len(node.args) == 3 and not node.kwargs
            and (node.op == "call_method" and node.target == "transpose"
                 or node.op == "call_function" and node.target is torch.transpose)
            and {node.args[1] % 4, node.args[2] % 4} == {1, 2} and len(node.meta.get("shape") or ()) == 4)


def attention_merge(dc, node: fx.Node, pos: np.ndarray):
    """The merge of heads after attention, ``sdpa(q, k, v).transpose(1, 2).reshape(B, T, C)``, where
    ``v`` is ``lin.view(B, T, h, d).transpose(1, 2)``: channel p of the output is the token average
    of channel p of ``lin``, so ``lin``'s constant passes. None where the pattern does not hold."""
    src, out = node.args[0], node.meta.get("shape")
    if not _heads_transpose(src) or not isinstance(out, tuple) or len(out) != 3:
        return None
    att = src.args[0]
    if not (isinstance(att, fx.Node) and att.op == "call_function"
            and att.target is F.scaled_dot_product_attention):
        return None
    dropout = att.args[4] if len(att.args) > 4 else att.kwargs.get("dropout_p", 0.0)
    v = att.args[2] if len(att.args) > 2 else att.kwargs.get("value")
    if dropout != 0 or not _heads_transpose(v) or v.meta.get("shape") != att.meta.get("shape"):
        return None
    split = v.args[0]
    if not (isinstance(split, fx.Node) and split.op == "call_method" and split.target in _VIEWS and split.args):
        return None
    lin = split.args[0]
    lin_shape = lin.meta.get("shape") if isinstance(lin, fx.Node) else None
    heads = split.meta.get("shape")
    if (not isinstance(lin_shape, tuple) or lin_shape != out or heads != src.meta.get("shape")
            or heads[:2] != out[:2] or heads[2] * heads[3] != out[2]):
        return None
    got = dc.value(lin, pos)
    if got is None or isinstance(got, str):
        return got
    return got if got[1] == 2 else None
