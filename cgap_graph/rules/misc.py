"""Sizes, attribute reads and tensor factories.

``x.size(d)`` yields a scalar that remembers which channel layout it measured: when Python
code needs it as a concrete number (``if C > 64``), the groups it measured freeze. A factory
whose size argument is such a scalar (``torch.zeros(B, C, H, W)``) produces channels of that
layout; a factory with literal sizes produces fixed dimensions.
"""

from __future__ import annotations

import builtins
import math

import torch

from cgap_graph.ir.values import SizeV, TInfo
from cgap_graph.rules.registry import TSpec, register
from cgap_graph.rules.util import F1, shp, v


def _size_channels(an, op):
    node, args, kwargs = op.node, op.args, op.kwargs
    x = args[0]
    d = args[1] if len(args) > 1 else kwargs.get("dim")
    if d is None:
        return SizeV(tuple(x.exprs), node.meta.get("value"))
    return SizeV((x.exprs[v(d) % x.ndim],), node.meta.get("value"))


register("size", channels=_size_channels)


def _getattr_channels(an, op):
    node = op.node
    return SizeV((), node.meta.get("value"))


register(builtins.getattr, channels=_getattr_channels)


# ---- factories ------------------------------------------------------------------------------------
_ZERO_FILL = {torch.zeros, "new_zeros", torch.zeros_like}


def _factory_sizes(args, kwargs, first=0):
    rest = args[first:]
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        return list(rest[0])
    if rest:
        return list(rest)
    return list(kwargs.get("size", ()))


def _dtype(kwargs, default=None):
    d = kwargs.get("dtype")
    return d if isinstance(d, torch.dtype) else (default or torch.get_default_dtype())


def _factory_shape_fn(first=0, fill_arg=False):
    def shape(op):
        args, kwargs = op.args, op.kwargs
        a = list(args)
        if fill_arg:  # full(size, fill_value)
            sizes = v(a[first])
            val = v(a[first + 1]) if len(a) > first + 1 else v(kwargs.get("fill_value"))
            dt = kwargs.get("dtype") or (torch.get_default_dtype() if isinstance(val, float) else
                                         (torch.bool if isinstance(val, bool) else torch.int64))
            return TSpec([int(s) for s in sizes], dt)
        sizes = [int(s) for s in v(_factory_sizes(a, kwargs, first))]
        default = a[0].dtype if first == 1 else None
        return TSpec(sizes, _dtype(kwargs, default))
    return shape


def _factory_channels_fn(first=0, fill_arg=False, zero=False):
    def channels(an, op):
        node, args, kwargs = op.node, op.args, op.kwargs
        if fill_arg:
            sizes = args[first]
        else:
            sizes = _factory_sizes(list(args), kwargs, first)
        sizes = list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]
        exprs = []
        for s, n in zip(sizes, node.meta["shape"]):
            if isinstance(s, SizeV) and len(s.exprs) == 1 and an.t.width(s.exprs[0]) == n:
                exprs.append(s.exprs[0])
            else:
                if isinstance(s, SizeV):
                    for e in s.exprs:
                        an.freeze(e, f"{an.where()}: a tensor size computed from this width")
                exprs.append(("F", n))
        return TInfo(tuple(exprs), zero, node.meta["shape"])
    return channels


for _f in (torch.zeros, torch.ones, torch.empty, torch.rand, torch.randn):
    register(_f, shape=_factory_shape_fn(), channels=_factory_channels_fn(zero=_f in _ZERO_FILL))
register(torch.full, shape=_factory_shape_fn(fill_arg=True), channels=_factory_channels_fn(fill_arg=True))
for _m in ("new_zeros", "new_ones", "new_empty"):
    register(_m, shape=_factory_shape_fn(first=1), channels=_factory_channels_fn(first=1, zero=_m in _ZERO_FILL))
register("new_full", shape=_factory_shape_fn(first=1, fill_arg=True),
         channels=_factory_channels_fn(first=1, fill_arg=True))


def _like_shape(op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    return TSpec(shp(x), _dtype(kwargs, x.dtype))


def _like_channels_fn(zero):
    def channels(an, op):
        args = op.args
        x = args[0]
        return TInfo(x.exprs, zero, x.shape)
    return channels


for _f in (torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like,
           torch.randn_like):
    register(_f, shape=_like_shape, channels=_like_channels_fn(_f in _ZERO_FILL))


def _arange_shape(op):
    args, kwargs = op.args, op.kwargs
    a = [v(x) for x in args]
    if len(a) == 1:
        start, end, step = 0, a[0], 1
    else:
        start, end = a[0], a[1]
        step = a[2] if len(a) > 2 else v(kwargs.get("step", 1))
    n = max(0, math.ceil((end - start) / step))
    dt = kwargs.get("dtype") or (torch.get_default_dtype() if any(isinstance(x, float) for x in a)
                                 else torch.int64)
    return TSpec([n], dt)


def _fixed_channels(an, op):
    node, args, kwargs = op.node, op.args, op.kwargs
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, SizeV):
            for e in a.exprs:
                an.freeze(e, f"{an.where()}: a tensor size computed from this width")
    return TInfo(tuple(("F", s) for s in node.meta["shape"]), False, node.meta["shape"])


register(torch.arange, shape=_arange_shape, channels=_fixed_channels)
register(torch.linspace, shape=lambda op: TSpec([int(v(op.args[2]) if len(op.args) > 2 else v(op.kwargs["steps"]))],
                                                  op.kwargs.get("dtype") or torch.get_default_dtype()),
         channels=_fixed_channels)

__all__ = ["F1"]
