"""Shape ops: view/reshape/flatten/unflatten, squeeze/unsqueeze, permute/transpose, expand, repeat.

``view``/``reshape`` group input and output dimensions into runs of equal size, flatten each
run into a product of channel layouts and factor it into the output sizes: a conv output
flattened into a Linear becomes ``(G x H*W)``, ``view(B, T, h, d)`` refines a space into
``heads x head_dim``, channel shuffle's ``view-transpose-view`` becomes a transposed product.
Integer sizes that depend on a group's width (``view(-1, 16*5*5)``) are recorded as graph
constants and rewritten when the width changes.
"""

from __future__ import annotations

import torch

from cgap_graph.ir.values import TInfo
from cgap_graph.rules.registry import TSpec, add_traits, norm_dim, register
from cgap_graph.rules.reshape import _size_arg_paths, _sizes_from_args
from cgap_graph.rules.util import F1, is_tensor, same_shape, shp, v


# ---- shapes ---------------------------------------------------------------------------------
def _squeeze_dims(shape, dim):
    if dim is None:
        return [i for i, s in enumerate(shape) if s == 1]
    dims = v(dim)
    dims = dims if isinstance(dims, (list, tuple)) else [dims]
    return [d for d in (norm_dim(d, len(shape)) for d in dims) if shape[d] == 1]


def _squeeze_shape(op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    drop = set(_squeeze_dims(shp(x), dim))
    return TSpec([s for i, s in enumerate(shp(x)) if i not in drop], x.dtype)


def _unsqueeze_shape(op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    dim = v(args[1]) if len(args) > 1 else v(kwargs["dim"])
    s = list(shp(x))
    s.insert(norm_dim(dim, len(s) + 1), 1)
    return TSpec(s, x.dtype)


def _perm_from(args, kwargs, n):
    rest = args[1:]
    dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else (rest or kwargs.get("dims"))
    return [norm_dim(d, n) for d in v(dims)]


def _permute_shape(op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    p = _perm_from(args, kwargs, len(shp(x)))
    return TSpec([shp(x)[d] for d in p], x.dtype)


def _transpose_perm(args, kwargs, n):
    a = v(args[1]) if len(args) > 1 else v(kwargs.get("dim0"))
    b = v(args[2]) if len(args) > 2 else v(kwargs.get("dim1"))
    p = list(range(n))
    a, b = norm_dim(a, n), norm_dim(b, n)
    p[a], p[b] = p[b], p[a]
    return p


def _transpose_shape(op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    p = _transpose_perm(args, kwargs, len(shp(x)))
    return TSpec([shp(x)[d] for d in p], x.dtype)


def _t_perm(n):
    return [1, 0] if n == 2 else list(range(n))


def _t_shape(op):
    args = op.args
    x = args[0]
    return TSpec([shp(x)[d] for d in _t_perm(len(shp(x)))], x.dtype)


def _movedim_perm(args, kwargs, n):
    src = v(args[1]) if len(args) > 1 else v(kwargs["source"])
    dst = v(args[2]) if len(args) > 2 else v(kwargs["destination"])
    src = [norm_dim(d, n) for d in (src if isinstance(src, (list, tuple)) else [src])]
    dst = [norm_dim(d, n) for d in (dst if isinstance(dst, (list, tuple)) else [dst])]
    order = [None] * n
    for s, d in zip(src, dst):
        order[d] = s
    rest = iter(d for d in range(n) if d not in src)
    return [o if o is not None else next(rest) for o in order]


def _movedim_shape(op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    p = _movedim_perm(args, kwargs, len(shp(x)))
    return TSpec([shp(x)[d] for d in p], x.dtype)


def _expand_sizes(args, kwargs):
    return _sizes_from_args(args[1:], kwargs)


def _expand_out(shape, sizes):
    sizes = [int(s) for s in v(sizes)]
    lead = len(sizes) - len(shape)
    out = []
    for i, s in enumerate(sizes):
        if i < lead:
            out.append(s)
        else:
            cur = shape[i - lead]
            out.append(cur if s == -1 else s)
            if cur != 1 and s not in (-1, cur):
                raise RuntimeError(f"cannot expand size {cur} to {s}")
    return out


def _expand_shape(op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    return TSpec(_expand_out(shp(x), _expand_sizes(args, kwargs)), x.dtype)


def _repeat_shape(op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    reps = [int(r) for r in v(_sizes_from_args(args[1:], kwargs))]
    s = [1] * (len(reps) - len(shp(x))) + list(shp(x))
    return TSpec([a * b for a, b in zip(s, reps)], x.dtype)


# ---- channels -------------------------------------------------------------------------------
def _squeeze_channels(an, op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    drop = set(_squeeze_dims(x.shape, dim))
    for d in drop:
        if x.exprs[d][0] != "F":
            an.freeze(x.exprs[d], f"{an.where()}: a channel of width 1 is squeezed away")
    keep = [i for i in range(x.ndim) if i not in drop]
    return TInfo(tuple(x.exprs[i] for i in keep), x.keeps_zero, tuple(x.shape[i] for i in keep))


def _unsqueeze_channels(an, op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    dim = norm_dim(v(args[1]) if len(args) > 1 else v(kwargs["dim"]), x.ndim + 1)
    e, s = list(x.exprs), list(x.shape)
    e.insert(dim, F1)
    s.insert(dim, 1)
    return TInfo(tuple(e), x.keeps_zero, tuple(s))


def _permuted(x: TInfo, p) -> TInfo:
    return TInfo(tuple(x.exprs[d] for d in p), x.keeps_zero, tuple(x.shape[d] for d in p))


def _permute_channels(an, op):
    args, kwargs = op.args, op.kwargs
    return _permuted(args[0], _perm_from(args, kwargs, args[0].ndim))


def _transpose_channels(an, op):
    args, kwargs = op.args, op.kwargs
    return _permuted(args[0], _transpose_perm(args, kwargs, args[0].ndim))


def _t_channels(an, op):
    args = op.args
    return _permuted(args[0], _t_perm(args[0].ndim))


def _movedim_channels(an, op):
    args, kwargs = op.args, op.kwargs
    return _permuted(args[0], _movedim_perm(args, kwargs, args[0].ndim))


def _expand_channels(an, op):
    node, args = op.node, op.args
    x = args[0]
    out_shape = node.meta["shape"]
    lead = len(out_shape) - x.ndim
    exprs = []
    for i, s in enumerate(out_shape):
        if i < lead:
            exprs.append(("F", s))
            continue
        e = x.exprs[i - lead]
        if x.shape[i - lead] == s:
            exprs.append(e)
        else:
            if e[0] != "F":
                an.freeze(e, f"{an.where()}: a channel of width 1 is expanded")
            exprs.append(("F", s))
    paths, raw = _size_arg_paths(node)
    for k, (path, a) in enumerate(zip(paths, raw)):
        e = exprs[k]
        if k >= lead and an.spaces_in(e) and not (isinstance(a, int) and a == -1):
            an.const(path, e, "infer")
    return TInfo(tuple(exprs), x.keeps_zero, out_shape)


def _expand_as_channels(an, op):
    node, args = op.node, op.args
    x, other = args[0], args[1]
    out_shape = node.meta["shape"]
    lead = len(out_shape) - x.ndim
    exprs = []
    for i, s in enumerate(out_shape):
        oe = other.exprs[i]
        if i >= lead and x.shape[i - lead] == s:
            if s != 1:
                an.unify(x.exprs[i - lead], oe)
            exprs.append(oe if oe[0] != "F" else x.exprs[i - lead])
        else:
            if i >= lead and x.exprs[i - lead][0] != "F":
                an.freeze(x.exprs[i - lead], f"{an.where()}: a channel of width 1 is expanded")
            exprs.append(oe)
    return TInfo(tuple(exprs), x.keeps_zero, out_shape)


def _expand_as_shape(op):
    args = op.args
    return TSpec(shp(args[1]), args[0].dtype)


def _repeat_channels(an, op):
    node, args, kwargs = op.node, op.args, op.kwargs
    x = args[0]
    out_shape = node.meta["shape"]
    reps = [int(r) for r in v(_sizes_from_args(args[1:], kwargs))]
    lead = len(reps) - x.ndim
    exprs = []
    for i, r in enumerate(reps):
        if i < lead:
            exprs.append(("F", out_shape[i]))
        elif r == 1:
            exprs.append(x.exprs[i - lead])
        else:
            e = x.exprs[i - lead]
            if e[0] != "F":
                an.freeze(e, f"{an.where()}: channels are tiled")
            exprs.append(("F", out_shape[i]))
    return TInfo(tuple(exprs), x.keeps_zero, out_shape)


def _reorder_freeze_channels(an, op):
    """flip/roll: positions along the named dims move; freeze channel dims among them."""
    node, args, kwargs = op.node, op.args, op.kwargs
    x = args[0]
    dims = args[2] if node.target in ("roll", torch.roll) and len(args) > 2 else (
        args[1] if len(args) > 1 else kwargs.get("dims"))
    dims = list(range(x.ndim)) if dims is None else [norm_dim(d, x.ndim) for d in
                                                      (v(dims) if isinstance(v(dims), list) else [v(dims)])]
    for d in dims:
        if x.exprs[d][0] != "F":
            an.freeze(x.exprs[d], f"{an.where()}: reorders channels")
    return TInfo(x.exprs, x.keeps_zero, x.shape)


add_traits(torch.reshape, torch.flatten, torch.unflatten, torch.squeeze, torch.unsqueeze, torch.permute,
           torch.transpose, torch.swapaxes, torch.swapdims, torch.t, torch.movedim, torch.moveaxis,
           "view", "reshape", "transpose", "permute", "contiguous", "flatten", "unflatten", "squeeze", "unsqueeze",
           "to", "float", "half", "double", "bfloat16", "type_as", "clone", "detach", "movedim", "swapaxes", "t",
           "expand", "expand_as", traits=("data_movement",))
register(torch.squeeze, "squeeze", "squeeze_", shape=_squeeze_shape, channels=_squeeze_channels)
register(torch.unsqueeze, "unsqueeze", "unsqueeze_", shape=_unsqueeze_shape, channels=_unsqueeze_channels)
register(torch.permute, "permute", shape=_permute_shape, channels=_permute_channels)
register(torch.transpose, "transpose", "transpose_", torch.swapaxes, torch.swapdims, "swapaxes", "swapdims",
         shape=_transpose_shape, channels=_transpose_channels)
register(torch.t, "t", shape=_t_shape, channels=_t_channels)
register(torch.movedim, torch.moveaxis, "movedim", "moveaxis", shape=_movedim_shape, channels=_movedim_channels)
register("expand", torch.broadcast_to, "broadcast_to", shape=_expand_shape, channels=_expand_channels)
register("expand_as", shape=_expand_as_shape, channels=_expand_as_channels)
register("repeat", shape=_repeat_shape, channels=_repeat_channels)
register(torch.flip, "flip", torch.roll, "roll", shape=same_shape,
         channels=_reorder_freeze_channels)

__all__ = ["is_tensor"]
