"""Indexing: ``x[...]`` (slices, integers, None, Ellipsis), narrow and select. A slice of a channel
dimension cuts its space into pieces; bounds are graph constants that follow the widths."""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from cgap_graph.ir.expr import concat
from cgap_graph.ir.values import SizeV, TInfo
from cgap_graph.rules.registry import TSpec, norm_dim, register
from cgap_graph.rules.util import F1, is_tensor, shp, v


# ---- indexing ---------------------------------------------------------------------------------
def _index_items(idx, ndim):
    items = list(idx) if isinstance(idx, tuple) else [idx]
    used = sum(1 for i in items if i is not None and i is not Ellipsis)
    out = []
    for pos, i in enumerate(items):
        if i is Ellipsis:
            out.extend((None, slice(None)) for _ in range(ndim - used))
        else:
            out.append((pos, i))
    return out


def _slice_bounds(sl, n):
    return slice(v(sl.start), v(sl.stop), v(sl.step)).indices(n)


def _gather_index(idx, ndim):
    """(position, index tensor) when ``idx`` is one integer tensor after full slices
    (``table[index]``, ``table[:, index]``: a relative-position bias gathered from its table), else None."""
    items = list(idx) if isinstance(idx, tuple) else [idx]
    tensors = [k for k, i in enumerate(items) if is_tensor(i) or isinstance(i, TInfo)]
    if len(tensors) != 1:
        return None
    p = tensors[0]
    full = slice(None)
    if p >= ndim or any(not (isinstance(i, slice) and i == full) for i in items[:p]) or \
            any(not (isinstance(i, slice) and i == full) for i in items[p + 1:]):
        return None
    return p, items[p]


def _bound_ok(an, b) -> bool:
    """A slice bound the surgery can rewrite: a literal, or a size computed at run time."""
    return b is None or isinstance(b, int) or isinstance(b, fx.Node) and isinstance(an.vals.get(b), SizeV)


def _bound_deps(an, b) -> tuple:
    val = an.vals.get(b) if isinstance(b, fx.Node) else None
    return val.exprs if isinstance(val, SizeV) else ()


def _getitem_shape(op):
    args = op.args
    x, idx = args[0], args[1]
    if not is_tensor(x):
        raise TypeError("not a tensor")  # tuple indexing is recorded by the tracer as plain Python
    gather = _gather_index(idx, len(shp(x)))
    if gather is not None:
        p, index = gather
        if index.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8) or \
                index.dtype == torch.uint8:
            raise TypeError("boolean or float index")  # meta fallback
        s = shp(x)
        return TSpec((*s[:p], *shp(index), *s[p + 1:]), x.dtype)
    s = shp(x)
    out, d = [], 0
    for _pos, i in _index_items(idx, len(s)):
        if i is None:
            out.append(1)
        elif isinstance(i, slice):
            start, stop, step = _slice_bounds(i, s[d])
            out.append(len(range(start, stop, step)))
            d += 1
        elif isinstance(v(i), int) and not isinstance(v(i), bool):
            d += 1
        else:
            raise TypeError("advanced indexing")  # meta fallback; the analysis freezes it
    out.extend(s[d:])
    return TSpec(out, x.dtype)


def _getitem_channels(an, op):
    node, args = op.node, op.args
    container, idx = args[0], args[1]
    if isinstance(container, (tuple, list)):
        return container[v(idx)] if not isinstance(idx, slice) else container[idx]
    if isinstance(container, SizeV) or not isinstance(container, TInfo):
        return SizeV(getattr(container, "exprs", ()), None)
    x = container
    gather = _gather_index(idx, x.ndim)
    if gather is not None:  # values gathered by index along one dim: that dim freezes, the others pass
        p, index = gather
        if x.exprs[p][0] != "F":
            an.freeze(x.exprs[p], f"{an.where()}: positions are gathered by an index tensor")
        for e in index.exprs:
            if e[0] != "F":
                an.freeze(e, f"{an.where()}: the index tensor carries channels")
        exprs = (*x.exprs[:p], *(("F", s) for s in index.shape), *x.exprs[p + 1:])
        return TInfo(exprs, x.keeps_zero, node.meta["shape"])
    raw_idx = node.args[1]
    tuple_form = isinstance(raw_idx, tuple)
    raw_items = _index_items(raw_idx, x.ndim)
    val_items = _index_items(idx, x.ndim)
    out_e, out_s, d = [], [], 0
    for (pos, raw), (_p, val) in zip(raw_items, val_items):
        if raw is None and pos is not None:
            out_e.append(F1)
            out_s.append(1)
            continue
        if isinstance(val, slice) or (raw is None and pos is None):
            sl = val if isinstance(val, slice) else slice(None)
            rsl = raw if isinstance(raw, slice) else slice(None)
            e, n = x.exprs[d], x.shape[d]
            start, stop, step = _slice_bounds(sl, n)
            length = len(range(start, stop, step))
            if (start, stop, step) == (0, n, 1):
                if an.spaces_in(e) and isinstance(rsl.stop, int) and rsl.stop >= n:
                    # ``out[:, :oup]`` that keeps every channel today: the bound follows the width
                    an.const((*(("args", 1, pos) if tuple_form else ("args", 1)), "stop"), e, "width")
                out_e.append(e)
            elif not an.spaces_in(e):
                out_e.append(("F", length))
            elif step != 1 or length == 0 or isinstance(rsl.step, fx.Node) or \
                    not all(_bound_ok(an, b) for b in (rsl.start, rsl.stop)):
                an.freeze(e, f"{an.where()}: channels are sliced with a step or run-time bounds")
                out_e.append(("F", length))
            else:
                sizes = [k for k in (start, stop - start, n - stop) if k > 0]
                pieces = an.t.split(e, sizes, an.where())
                it = iter(pieces)
                pre = next(it) if start > 0 else ("F", 0)
                mid = next(it)
                post = next(it) if n - stop > 0 else ("F", 0)
                base = ("args", 1, pos) if tuple_form else ("args", 1)
                if rsl.start is not None:  # a literal, or a run-time size (qkv_bias[n // 3:]): rewritten
                    deps = _bound_deps(an, rsl.start)
                    if v(sl.start) >= 0:
                        an.const((*base, "start"), pre, "width", deps=deps)
                    else:
                        an.const((*base, "start"), concat((mid, post)), "neg_width", deps=deps)
                if rsl.stop is not None:
                    deps = _bound_deps(an, rsl.stop)
                    if v(sl.stop) >= 0:
                        an.const((*base, "stop"), concat((pre, mid)), "width", deps=deps)
                    else:
                        an.const((*base, "stop"), post, "neg_width", deps=deps)
                out_e.append(mid)
            out_s.append(length)
            d += 1
        else:  # an integer index selects one position
            if x.exprs[d][0] != "F":
                an.freeze(x.exprs[d], f"{an.where()}: a single channel is selected by index")
            d += 1
    out_e.extend(x.exprs[d:])
    out_s.extend(x.shape[d:])
    return TInfo(tuple(out_e), x.keeps_zero, node.meta["shape"])


register(operator.getitem, shape=_getitem_shape, channels=_getitem_channels)


def _narrow_shape(op):
    args = op.args
    x, dim, _start, length = args[0], v(args[1]), v(args[2]), v(args[3])
    s = list(shp(x))
    s[norm_dim(dim, len(s))] = int(length)
    return TSpec(s, x.dtype)


def _narrow_channels(an, op):
    node, args = op.node, op.args
    x = args[0]
    d = norm_dim(v(args[1]), x.ndim)
    if x.exprs[d][0] != "F" and (v(args[2]), v(args[3])) != (0, x.shape[d]):
        an.freeze(x.exprs[d], f"{an.where()}: narrows a channel dimension")
        e = list(x.exprs)
        e[d] = ("F", node.meta["shape"][d])
        return TInfo(tuple(e), x.keeps_zero, node.meta["shape"])
    e = list(x.exprs)
    if x.exprs[d][0] == "F":
        e[d] = ("F", node.meta["shape"][d])
    return TInfo(tuple(e), x.keeps_zero, node.meta["shape"])


def _select_shape(op):
    args = op.args
    x, dim = args[0], v(args[1])
    s = list(shp(x))
    del s[norm_dim(dim, len(s))]
    return TSpec(s, x.dtype)


def _indexed_dim(an, op, why: str):
    """The input and the dimension an op indexes by value: channels picked that way freeze."""
    x = op.args[0]
    d = norm_dim(v(op.args[1]), x.ndim)
    if x.exprs[d][0] != "F":
        an.freeze(x.exprs[d], f"{an.where()}: {why}")
    return x, d


def _select_channels(an, op):
    node = op.node
    x, d = _indexed_dim(an, op, "a single channel is selected by index")
    return TInfo(tuple(e for i, e in enumerate(x.exprs) if i != d), x.keeps_zero, node.meta["shape"])


register(torch.narrow, "narrow", shape=_narrow_shape, channels=_narrow_channels)
register(torch.select, "select", shape=_select_shape, channels=_select_channels)


def _index_select_channels(an, op):
    node = op.node
    x, d = _indexed_dim(an, op, "gathers channels by index")
    e = list(x.exprs)
    e[d] = ("F", node.meta["shape"][d])
    return TInfo(tuple(e), x.keeps_zero, node.meta["shape"])


def _index_select_shape(op):
    args = op.args
    x, dim, index = args[0], v(args[1]), args[2]
    s = list(shp(x))
    s[norm_dim(dim, len(s))] = shp(index)[0] if shp(index) else 1
    return TSpec(s, x.dtype)


register(torch.index_select, "index_select", shape=_index_select_shape, channels=_index_select_channels)
