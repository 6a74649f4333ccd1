"""Reductions (sum, mean, max, norm ...), softmax and cumulative ops.

Reducing over spatial or token dimensions (global average pooling) leaves channels alone.
Reducing over a channel dimension keeps the channels resizable but makes removal or
duplication inexact (a mean divides by the width; a sum counts a duplicate twice), which the
group records as a note; cumulative sums over channels freeze them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cgap_graph.ir.values import TInfo
from cgap_graph.rules.elementwise import _add_like, _bcast_shape
from cgap_graph.rules.registry import NamedSpecs, TSpec, norm_dim, register
from cgap_graph.rules.util import is_tensor, same_shape, shp, v

# function -> (name of its dim argument, position of dim, position of keepdim)
_REDUCE = {
    "sum": (1, 2), "mean": (1, 2), "nansum": (1, 2), "nanmean": (1, 2), "amax": (1, 2), "amin": (1, 2),
    "prod": (1, 2), "logsumexp": (1, 2), "std": (1, None), "var": (1, None), "any": (1, 2), "all": (1, 2),
    "count_nonzero": (1, None), "norm": (2, 3), "max": (1, 2), "min": (1, 2), "argmax": (1, 2),
    "argmin": (1, 2), "median": (1, 2),
}
_ZERO_KEEPING = {"sum", "mean", "nansum", "nanmean", "amax", "amin", "prod", "std", "var", "norm", "max", "min",
                 "count_nonzero", "median"}
_SUM_LIKE = {"sum", "nansum"}


def _parse(name, args, kwargs):
    dpos, kpos = _REDUCE[name]
    dim = args[dpos] if len(args) > dpos and not isinstance(args[dpos], (bool, str)) else kwargs.get("dim")
    if name == "norm" and dim is None and len(args) > 1 and isinstance(v(args[1]), (list, tuple)):
        dim = None
    keep = args[kpos] if kpos is not None and len(args) > kpos else kwargs.get("keepdim", False)
    return v(dim), bool(v(keep))


def _reduced_dims(dim, ndim):
    if dim is None or dim == []:
        return list(range(ndim))
    dims = dim if isinstance(dim, (list, tuple)) else [dim]
    return sorted({norm_dim(d, ndim) for d in dims})


def _reduce_shape_fn(name):
    def shape(op):
        args, kwargs = op.args, op.kwargs
        x = args[0]
        if name in ("max", "min") and len(args) > 1 and is_tensor(args[1]):
            return _bcast_shape(op)  # torch.max(a, b): element-wise
        dim, keep = _parse(name, args, kwargs)
        s = shp(x)
        dims = _reduced_dims(dim, len(s))
        if keep:
            out = [1 if i in dims else k for i, k in enumerate(s)]
        else:
            out = [k for i, k in enumerate(s) if i not in dims]
        dtype = torch.int64 if name in ("argmax", "argmin", "count_nonzero") else (
            torch.bool if name in ("any", "all") else x.dtype)
        spec = TSpec(out, dtype)
        if name in ("max", "min", "median") and dim is not None:
            return NamedSpecs((spec, TSpec(out, torch.int64)), getattr(torch.return_types, name))
        return spec
    return shape


def _reduce_channels_fn(name):
    def channels(an, op):
        node, args, kwargs = op.node, op.args, op.kwargs
        x = args[0]
        if name in ("max", "min") and len(args) > 1 and isinstance(args[1], TInfo):
            return _add_like(an, op)
        dim, keep = _parse(name, args, kwargs)
        dims = _reduced_dims(dim, x.ndim)
        for d in dims:
            e = x.exprs[d]
            if an.spaces_in(e):
                exact_prune = name in _SUM_LIKE and x.keeps_zero
                an.note(e, f"{an.where()} reduces over these channels", prune=not exact_prune, grow=True)
        if keep:
            exprs = tuple(("F", 1) if i in dims else e for i, e in enumerate(x.exprs))
        else:
            exprs = tuple(e for i, e in enumerate(x.exprs) if i not in dims)
        shape = node.meta["shape"]
        keeps_zero = x.keeps_zero and name in _ZERO_KEEPING
        if isinstance(shape, tuple) and shape and isinstance(shape[0], tuple):
            return (TInfo(exprs, keeps_zero, shape[0]), TInfo(exprs, False, shape[1]))
        return TInfo(exprs, keeps_zero, shape)
    return channels


for _name in _REDUCE:
    _targets = [_name]
    if hasattr(torch, _name):
        _targets.append(getattr(torch, _name))
    register(*_targets, shape=_reduce_shape_fn(_name), channels=_reduce_channels_fn(_name))


# ---- softmax-like: same shape, normalised along a dim --------------------------------------------
def _softmax_dim(args, kwargs):
    return v(args[1]) if len(args) > 1 else v(kwargs.get("dim"))


def _softmax_shape(op):
    args = op.args
    return TSpec(shp(args[0]), args[0].dtype)


def _softmax_channels(an, op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    dim = _softmax_dim(args, kwargs)
    d = norm_dim(dim if dim is not None else -1, x.ndim)
    an.note(x.exprs[d], f"{an.where()} normalises across these channels")
    return TInfo(x.exprs, False, x.shape)


register(F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, "softmax", "log_softmax",
         shape=_softmax_shape, channels=_softmax_channels)


def _mod_softmax_channels(an, op):
    mod, args = op.module, op.args
    x = args[0]
    d = norm_dim(mod.dim if mod.dim is not None else -1, x.ndim)
    an.note(x.exprs[d], f"{an.where()} normalises across these channels")
    return TInfo(x.exprs, False, x.shape)


register(nn.Softmax, nn.LogSoftmax, shape=same_shape,
         channels=_mod_softmax_channels)


def _cum_channels(an, op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    d = norm_dim(v(args[1]) if len(args) > 1 else v(kwargs["dim"]), x.ndim)
    if x.exprs[d][0] != "F":
        an.freeze(x.exprs[d], f"{an.where()}: accumulates along channels")
    return TInfo(x.exprs, False, x.shape)


register(torch.cumsum, torch.cumprod, "cumsum", "cumprod", shape=_softmax_shape, channels=_cum_channels)
