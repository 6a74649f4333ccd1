"""Concatenation, splitting, indexing and padding along channel dimensions.

``cat`` makes the output channels a concatenation of its inputs' layouts (DenseNet's growing
stream is ``[g0 | g1 | g2 ...]``); ``split``/``chunk``/slices cut a layout into pieces, refining
the spaces they cut; ``F.pad`` on a channel dimension (option-A ResNet shortcuts) adds zero
channels as groups of their own. Split sizes, slice bounds and pad amounts that depend on a
width become graph constants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cgap_graph.ir.expr import concat
from cgap_graph.ir.values import TInfo
from cgap_graph.rules.registry import TSpec, add_traits, norm_dim, register
from cgap_graph.rules.util import F1, shp, v


# ---- cat / stack ---------------------------------------------------------------------------
def _cat_inputs(args, kwargs):
    tensors = args[0] if args else kwargs["tensors"]
    dim = v(args[1]) if len(args) > 1 else v(kwargs.get("dim", kwargs.get("axis", 0)))
    return list(tensors), dim


def _cat_shape(op):
    args, kwargs = op.args, op.kwargs
    tensors, dim = _cat_inputs(args, kwargs)
    ts = [t for t in tensors if not (len(shp(t)) == 1 and shp(t)[0] == 0)]
    out = list(shp(ts[0]))
    d = norm_dim(dim, len(out))
    for t in ts[1:]:
        s = shp(t)
        if len(s) != len(out) or any(a != b for i, (a, b) in enumerate(zip(s, out)) if i != d):
            raise RuntimeError(f"cat: sizes {[shp(x) for x in ts]} do not match outside dimension {d}")
    out[d] = sum(shp(t)[d] for t in ts)
    dtype = ts[0].dtype
    for t in ts[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return TSpec(out, dtype)


def _unify_dim(an, exprs):
    cand = next((e for e in exprs if e[0] != "F"), None)
    if cand is None:
        return exprs[0]
    for e in exprs:
        if e is not cand:
            an.unify(cand, e)
    return cand


def _cat_channels(an, op):
    node, args, kwargs = op.node, op.args, op.kwargs
    tensors, dim = _cat_inputs(args, kwargs)
    xs = [t for t in tensors if isinstance(t, TInfo) and not (t.ndim == 1 and t.shape[0] == 0)]
    n = xs[0].ndim
    d = norm_dim(dim, n)
    exprs = []
    for j in range(n):
        if j == d:
            exprs.append(concat(x.exprs[d] for x in xs))
        elif xs[0].shape[j] == 1:
            exprs.append(F1)
        else:
            exprs.append(_unify_dim(an, [x.exprs[j] for x in xs]))
    return TInfo(tuple(exprs), all(x.keeps_zero for x in xs), node.meta["shape"])


def _stack_shape(op):
    args, kwargs = op.args, op.kwargs
    tensors, dim = _cat_inputs(args, kwargs)
    s = list(shp(tensors[0]))
    d = norm_dim(dim, len(s) + 1)
    s.insert(d, len(tensors))
    return TSpec(s, tensors[0].dtype)


def _stack_channels(an, op):
    node, args, kwargs = op.node, op.args, op.kwargs
    tensors, dim = _cat_inputs(args, kwargs)
    xs = [t for t in tensors if isinstance(t, TInfo)]
    n = xs[0].ndim
    d = norm_dim(dim, n + 1)
    exprs = [_unify_dim(an, [x.exprs[j] for x in xs]) if xs[0].shape[j] != 1 else F1 for j in range(n)]
    exprs.insert(d, ("F", len(tensors)))
    return TInfo(tuple(exprs), all(x.keeps_zero for x in xs), node.meta["shape"])


register(torch.cat, torch.concat, torch.concatenate, shape=_cat_shape, channels=_cat_channels)
register(torch.stack, shape=_stack_shape, channels=_stack_channels)


# ---- split / chunk / unbind -------------------------------------------------------------------
def _split_sizes(n, size_or_sections):
    s = v(size_or_sections)
    if isinstance(s, (list, tuple)):
        if sum(s) != n:
            raise RuntimeError(f"split sizes {s} do not sum to {n}")
        return [int(k) for k in s]
    s = int(s)
    return [min(s, n - i) for i in range(0, n, s)] if n else [0]


def _chunk_sizes(n, chunks):
    each = -(-n // int(chunks))
    return [min(each, n - i) for i in range(0, n, each)] if n else [0]


def _split_args(node_or_args, kwargs):
    args = node_or_args
    x = args[0]
    size = args[1] if len(args) > 1 else kwargs.get("split_size_or_sections", kwargs.get("split_size"))
    dim = v(args[2]) if len(args) > 2 else v(kwargs.get("dim", 0))
    return x, size, dim


def _piece_specs(x, dim: int, sizes) -> tuple[TSpec, ...]:
    """Specs of ``x`` cut along ``dim`` into pieces of the given sizes."""
    d = norm_dim(dim, len(shp(x)))
    out = []
    for k in sizes:
        s = list(shp(x))
        s[d] = k
        out.append(TSpec(s, x.dtype))
    return tuple(out)


def _split_shape(op):
    x, size, dim = _split_args(op.args, op.kwargs)
    return _piece_specs(x, dim, _split_sizes(shp(x)[norm_dim(dim, len(shp(x)))], size))


def _chunk_args(args, kwargs):
    x = args[0]
    chunks = args[1] if len(args) > 1 else kwargs["chunks"]
    dim = v(args[2]) if len(args) > 2 else v(kwargs.get("dim", 0))
    return x, chunks, dim


def _chunk_shape(op):
    x, chunks, dim = _chunk_args(op.args, op.kwargs)
    return _piece_specs(x, dim, _chunk_sizes(shp(x)[norm_dim(dim, len(shp(x)))], v(chunks)))


def _pieces(an, x: TInfo, d: int, sizes):
    e = x.exprs[d]
    if len(sizes) == 1:
        return [e]
    if not an.spaces_in(e):
        return [("F", k) for k in sizes]
    return an.t.split(e, sizes, an.where())


def _outputs(x: TInfo, d: int, pieces, sizes):
    out = []
    for p, k in zip(pieces, sizes):
        exprs = list(x.exprs)
        exprs[d] = p
        shape = list(x.shape)
        shape[d] = k
        out.append(TInfo(tuple(exprs), x.keeps_zero, tuple(shape)))
    return tuple(out)


def _split_channels(an, op):
    node, args, kwargs = op.node, op.args, op.kwargs
    x, size, dim = _split_args(args, kwargs)
    d = norm_dim(dim, x.ndim)
    sizes = _split_sizes(x.shape[d], size)
    raw = node.args[1] if len(node.args) > 1 else node.kwargs.get("split_size_or_sections",
                                                                  node.kwargs.get("split_size"))
    path = ("args", 1) if len(node.args) > 1 else (
        "kwargs", "split_size_or_sections" if "split_size_or_sections" in node.kwargs else "split_size")
    if an.spaces_in(x.exprs[d]) and len(sizes) > 1:
        if isinstance(raw, (list, tuple)) and all(isinstance(k, int) for k in raw):
            pieces = _pieces(an, x, d, sizes)
            for i, p in enumerate(pieces):
                an.const((*path, i), p, "width")
        elif isinstance(raw, (int, list, tuple)):
            # an int section size, or sizes computed at run time (``[k, x.shape[-1] - k]``): the
            # whole argument is rewritten to the pieces' new widths, on purpose
            pieces = _pieces(an, x, d, sizes)
            an.const(path, tuple(pieces), "sections")
        else:
            an.freeze(x.exprs[d], f"{an.where()}: split sizes computed at run time")
            pieces = [("F", k) for k in sizes]
    else:
        pieces = _pieces(an, x, d, sizes)
    return _outputs(x, d, pieces, sizes)


def _chunk_channels(an, op):
    node, args, kwargs = op.node, op.args, op.kwargs
    x, chunks, dim = _chunk_args(args, kwargs)
    d = norm_dim(dim, x.ndim)
    sizes = _chunk_sizes(x.shape[d], v(chunks))
    pieces = _pieces(an, x, d, sizes)
    if an.spaces_in(x.exprs[d]) and len(sizes) > 1:
        if isinstance(node.args[1] if len(node.args) > 1 else None, int):
            an.const(("args", 1), tuple(pieces), "chunk")
        else:
            an.freeze(x.exprs[d], f"{an.where()}: chunk count computed at run time")
    return _outputs(x, d, pieces, sizes)


def _unbind_shape(op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    dim = v(args[1]) if len(args) > 1 else v(kwargs.get("dim", 0))
    d = norm_dim(dim, len(shp(x)))
    s = [k for i, k in enumerate(shp(x)) if i != d]
    return tuple(TSpec(s, x.dtype) for _ in range(shp(x)[d]))


def _unbind_channels(an, op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    dim = v(args[1]) if len(args) > 1 else v(kwargs.get("dim", 0))
    d = norm_dim(dim, x.ndim)
    if x.exprs[d][0] != "F":
        an.freeze(x.exprs[d], f"{an.where()}: channels are unbound one by one")
    exprs = tuple(e for i, e in enumerate(x.exprs) if i != d)
    shape = tuple(k for i, k in enumerate(x.shape) if i != d)
    return tuple(TInfo(exprs, x.keeps_zero, shape) for _ in range(x.shape[d]))


register(torch.split, "split", shape=_split_shape, channels=_split_channels)
register("split_with_sizes", torch.split_with_sizes, shape=_split_shape, channels=_split_channels)
register(torch.chunk, "chunk", shape=_chunk_shape, channels=_chunk_channels)
register(torch.unbind, "unbind", shape=_unbind_shape, channels=_unbind_channels)
add_traits(torch.split, torch.chunk, torch.split_with_sizes, "split", "chunk", traits=("data_movement",))
add_traits(torch.split, torch.chunk, torch.unbind, "split", "chunk", "unbind", traits=("multi_output",))


# ---- padding ------------------------------------------------------------------------------------
def _pad_args(args, kwargs):
    x = args[0]
    pad = args[1] if len(args) > 1 else kwargs["pad"]
    mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
    value = args[3] if len(args) > 3 else kwargs.get("value", None)
    return x, pad, mode, value


def _pad_shape(op):
    args, kwargs = op.args, op.kwargs
    x, pad, mode, value = _pad_args(args, kwargs)
    pad = [int(p) for p in v(pad)]
    s = list(shp(x))
    for k in range(len(pad) // 2):
        d = len(s) - 1 - k
        s[d] += pad[2 * k] + pad[2 * k + 1]
    return TSpec(s, x.dtype)


def _pad_channels(an, op):
    node, args, kwargs = op.node, op.args, op.kwargs
    x, pad, mode, value = _pad_args(args, kwargs)
    raw = node.args[1] if len(node.args) > 1 else node.kwargs["pad"]
    base = ("args", 1) if len(node.args) > 1 else ("kwargs", "pad")
    pad = [int(p) for p in v(pad)]
    exprs = list(x.exprs)
    zero = mode == "constant" and (value is None or v(value) == 0)
    for k in range(len(pad) // 2):
        d = x.ndim - 1 - k
        lo, hi = pad[2 * k], pad[2 * k + 1]
        e = exprs[d]
        if lo == 0 and hi == 0:
            continue
        if not an.spaces_in(e):
            exprs[d] = ("F", node.meta["shape"][d])
            continue
        static = isinstance(raw[2 * k], int) and isinstance(raw[2 * k + 1], int)
        if not (zero and lo >= 0 and hi >= 0 and static):
            an.freeze(e, f"{an.where()}: pads channels with non-zero or run-time amounts")
            exprs[d] = ("F", node.meta["shape"][d])
            continue
        parts = []
        if lo:
            z = ("S", an.t.new(lo, f"{node.name}:zero-pad-before"))
            an.const((*base, 2 * k), z, "width")
            parts.append(z)
        parts.append(e)
        if hi:
            z = ("S", an.t.new(hi, f"{node.name}:zero-pad-after"))
            an.const((*base, 2 * k + 1), z, "width")
            parts.append(z)
        exprs[d] = concat(parts)
    return TInfo(tuple(exprs), x.keeps_zero and zero, node.meta["shape"])


register(F.pad, torch.constant_pad_nd, shape=_pad_shape, channels=_pad_channels)
