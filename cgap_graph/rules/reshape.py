"""Reshapes: view/reshape, flatten/unflatten. A channel dimension merged with others becomes a row-
major product of spaces; size arguments are graph constants that follow the widths."""

from __future__ import annotations

import math

import torch
import torch.fx as fx
from torch import nn

from cgap_graph.ir.expr import product
from cgap_graph.ir.values import SizeV, TInfo
from cgap_graph.rules.registry import TSpec, norm_dim, register
from cgap_graph.rules.util import F1, shp, v


def _infer(in_shape, sizes):
    sizes = [int(s) for s in v(sizes)]
    total = math.prod(in_shape)
    if sizes.count(-1) > 1:
        raise RuntimeError("only one dimension can be inferred")
    if -1 in sizes:
        known = math.prod(s for s in sizes if s != -1)
        if known == 0 or total % known:
            raise RuntimeError(f"shape {sizes} is invalid for input of size {total}")
        sizes[sizes.index(-1)] = total // known
    if math.prod(sizes) != total:
        raise RuntimeError(f"shape {sizes} is invalid for input of size {total}")
    return sizes


def _sizes_from_args(rest, kwargs):
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        return list(rest[0])
    if rest:
        return list(rest)
    for k in ("shape", "size"):
        if k in kwargs:
            return list(kwargs[k])
    return []


def _view_shape(op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    return TSpec(_infer(shp(x), _sizes_from_args(args[1:], kwargs)), x.dtype)


def _flatten_out(shape, start, end):
    n = len(shape)
    if n == 0:
        return [1]
    start, end = norm_dim(start, n), norm_dim(end, n)
    return list(shape[:start]) + [math.prod(shape[start:end + 1])] + list(shape[end + 1:])


def _flatten_shape(op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    start = v(args[1]) if len(args) > 1 else kwargs.get("start_dim", 0)
    end = v(args[2]) if len(args) > 2 else kwargs.get("end_dim", -1)
    return TSpec(_flatten_out(shp(x), start, end), x.dtype)


def _mod_flatten_shape(op):
    mod, args = op.module, op.args
    return TSpec(_flatten_out(shp(args[0]), mod.start_dim, mod.end_dim), args[0].dtype)


def _unflatten_out(shape, dim, sizes):
    dim = norm_dim(dim, len(shape))
    sizes = _infer((shape[dim],), sizes)
    return list(shape[:dim]) + sizes + list(shape[dim + 1:])


def _unflatten_shape(op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    dim = v(args[1]) if len(args) > 1 else kwargs["dim"]
    sizes = args[2] if len(args) > 2 else kwargs["sizes"]
    return TSpec(_unflatten_out(shp(x), dim, sizes), x.dtype)


def _mod_unflatten_shape(op):
    mod, args = op.module, op.args
    return TSpec(_unflatten_out(shp(args[0]), mod.dim, mod.unflattened_size), args[0].dtype)


def reshape_exprs(an, x: TInfo, out_shape) -> list:
    """Channel layouts of ``x`` reshaped to ``out_shape`` (see module docstring)."""
    ins, ine = x.shape, x.exprs
    why = an.where()
    if 0 in ins or 0 in out_shape:
        an.freeze_val(x, f"{why}: empty tensor")
        return [("F", s) for s in out_shape]
    out: list = []
    i = j = 0
    ni, no = len(ins), len(out_shape)
    while i < ni or j < no:
        if j < no and out_shape[j] == 1 and (i >= ni or ins[i] != 1):
            out.append(F1)
            j += 1
            continue
        if i < ni and ins[i] == 1 and (j >= no or out_shape[j] != 1):
            if ine[i][0] != "F":
                an.freeze(ine[i], f"{why}: a channel of width 1 is squeezed away")
            i += 1
            continue
        gi, go = [i], [j]
        pi, po = ins[i], out_shape[j]
        i += 1
        j += 1
        while pi != po:
            if pi < po:
                gi.append(i)
                pi *= ins[i]
                i += 1
            else:
                go.append(j)
                po *= out_shape[j]
                j += 1
        flat = product(ine[k] for k in gi)
        out.extend(an.t.factor(flat, [out_shape[k] for k in go], why))
    return out


def _has_fixed_factor(an, e) -> bool:
    e = an.t.norm(e)
    if e[0] == "F":
        return e[1] != 1
    if e[0] == "S":
        return False
    return any(_has_fixed_factor(an, p) for p in e[1])


def size_arg_slots(an, node: fx.Node, exprs, paths, raw) -> None:
    """Record graph constants for size arguments whose dimension carries channels.

    Literal sizes are rewritten to the new width. A size computed at run time (``C // g``) may be
    wrong after surgery, so it becomes a literal too, or -1 where the dimension also holds a
    fixed factor that may depend on the batch (at most one -1 per call; a second such
    dimension freezes its channels)."""
    mixed_dynamic = 0
    has_infer = any(isinstance(a, int) and a == -1 for a in raw)
    for e, path, a in zip(exprs, paths, raw):
        if not an.spaces_in(e):
            continue
        if isinstance(a, int):
            if a != -1:
                an.const(path, e, "width")
        elif isinstance(a, fx.Node):
            src = an.vals.get(a)
            deps = src.exprs if isinstance(src, SizeV) else ()  # C // heads follows C, not only head_dim
            if not _has_fixed_factor(an, e):
                an.const(path, e, "width", deps=deps)
            elif not has_infer and mixed_dynamic == 0:
                an.const(path, e, "infer", deps=deps)
                mixed_dynamic += 1
            else:
                an.freeze(e, f"{an.where()}: a run-time size argument covers both channels and a "
                             "fixed dimension")


def _size_arg_paths(node: fx.Node, first: int = 1):
    args = node.args
    if len(args) == first + 1 and isinstance(args[first], (list, tuple)):
        return [("args", first, k) for k in range(len(args[first]))], list(args[first])
    if len(args) > first:
        return [("args", first + k) for k in range(len(args) - first)], list(args[first:])
    for key in ("shape", "size"):
        if key in node.kwargs:
            return [("kwargs", key, k) for k in range(len(node.kwargs[key]))], list(node.kwargs[key])
    return [], []


def _view_channels(an, op):
    node, args = op.node, op.args
    x = args[0]
    out_shape = node.meta["shape"]
    exprs = reshape_exprs(an, x, out_shape)
    paths, raw = _size_arg_paths(node)
    if len(paths) == len(exprs):
        size_arg_slots(an, node, exprs, paths, raw)
    return TInfo(tuple(exprs), x.keeps_zero, out_shape)


def _reshape_only_channels(an, op):
    node, args = op.node, op.args
    x = args[0]
    out_shape = node.meta["shape"]
    return TInfo(tuple(reshape_exprs(an, x, out_shape)), x.keeps_zero, out_shape)


def _mod_reshape_channels(an, op):
    return _reshape_only_channels(an, op)


def _unflatten_channels(an, op):
    node, args = op.node, op.args
    x = args[0]
    out_shape = node.meta["shape"]
    exprs = reshape_exprs(an, x, out_shape)
    dim = norm_dim(v(node.args[1]) if len(node.args) > 1 else node.kwargs["dim"], x.ndim)
    if len(node.args) > 2 and isinstance(node.args[2], (list, tuple)):
        k = len(node.args[2])
        size_arg_slots(an, node, exprs[dim:dim + k], [("args", 2, i) for i in range(k)], list(node.args[2]))
    return TInfo(tuple(exprs), x.keeps_zero, out_shape)


def _mod_unflatten_channels(an, op):
    node, mod, args = op.node, op.module, op.args
    x = args[0]
    out_shape = node.meta["shape"]
    exprs = reshape_exprs(an, x, out_shape)
    dim = norm_dim(mod.dim, x.ndim)
    k = len(mod.unflattened_size)
    an.attr(node.target, "unflattened_size", tuple(exprs[dim:dim + k]))
    return TInfo(tuple(exprs), x.keeps_zero, out_shape)


register("view", "reshape", torch.reshape, shape=_view_shape, channels=_view_channels)
register("view_as", "reshape_as", shape=lambda op: TSpec(shp(op.args[1]), op.args[0].dtype),
         channels=_reshape_only_channels)
register(torch.flatten, "flatten", shape=_flatten_shape, channels=_reshape_only_channels)
register(nn.Flatten, shape=_mod_flatten_shape, channels=_mod_reshape_channels)
register(torch.unflatten, "unflatten", shape=_unflatten_shape, channels=_unflatten_channels)
register(nn.Unflatten, shape=_mod_unflatten_shape, channels=_mod_unflatten_channels)

__all__ = ["reshape_exprs", "size_arg_slots"]
