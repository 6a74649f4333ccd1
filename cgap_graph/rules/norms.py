"""Normalisation layers.

BatchNorm and InstanceNorm act per channel: their affine parameters and running statistics
follow the channel, and removing or duplicating a channel is exact. LayerNorm, RMSNorm and the
per-group part of GroupNorm compute statistics *across* channels: the channels stay resizable,
but removal or duplication changes those statistics, so the groups carry a note saying so (a
uniform k-fold duplication keeps them exact). Removing whole GroupNorm groups is exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cgap_graph.ir.expr import product
from cgap_graph.ir.values import TInfo
from cgap_graph.rules.registry import Call, register
from cgap_graph.rules.util import same_shape, v


def _stats_note(an, e, what: str) -> None:
    an.note(e, f"{what} normalises across these channels: removing or duplicating one changes its "
               "statistics (a uniform k-fold duplication keeps them)")


# ---- per-channel norms ------------------------------------------------------------------------
def _bn_like_channels(an, node, mod, args, kwargs, cdim: int):
    x = args[0]
    key = node.target
    c = x.exprs[cdim]
    for name, role in (("weight", "produce"), ("bias", "produce")):
        if mod._parameters.get(name) is not None:
            an.unify(c, an.pspace(f"{key}.{name}", 0, role, like=c))
    for name in ("running_mean", "running_var"):
        if mod._buffers.get(name) is not None:
            an.unify(c, an.pspace(f"{key}.{name}", 0, "stat", like=c))
    an.attr(key, "num_features", c)
    affine = mod._parameters.get("weight") is not None and mod._parameters.get("bias") is not None
    return TInfo(x.exprs, affine, x.shape)


def _bn_channels(an, op):
    node, mod, args, kwargs = op.node, op.module, op.args, op.kwargs
    x = args[0]
    if x.ndim < 2:
        raise ValueError("BatchNorm needs a batched input")
    return _bn_like_channels(an, node, mod, args, kwargs, 1)


def _in_channels(an, op):
    node, mod, args, kwargs = op.node, op.module, op.args, op.kwargs
    x = args[0]
    nsp = {nn.InstanceNorm1d: 1, nn.InstanceNorm2d: 2, nn.InstanceNorm3d: 3}.get(type(mod), x.ndim - 2)
    return _bn_like_channels(an, node, mod, args, kwargs, x.ndim - nsp - 1)


register(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, shape=same_shape,
         channels=_bn_channels)
register(nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, shape=same_shape, channels=_in_channels)


# ---- cross-channel norms ------------------------------------------------------------------------
def _ln_channels(an, op):
    node, mod, args = op.node, op.module, op.args
    x = args[0]
    key = node.target
    k = len(mod.normalized_shape)
    dims = x.exprs[x.ndim - k:]
    for i, e in enumerate(dims):
        for name in ("weight", "bias"):
            if mod._parameters.get(name) is not None:
                an.unify(e, an.pspace(f"{key}.{name}", i, "produce"))
        _stats_note(an, e, f"{type(mod).__name__} '{key}'")
    an.attr(key, "normalized_shape", tuple(dims))
    return TInfo(x.exprs, mod._parameters.get("weight") is not None and
                 (isinstance(mod, nn.RMSNorm) or mod._parameters.get("bias") is not None), x.shape)


register(nn.LayerNorm, nn.RMSNorm, shape=same_shape, channels=_ln_channels)


def _gn_channels(an, op):
    node, mod, args = op.node, op.module, op.args
    x = args[0]
    key = node.target
    c = x.exprs[1]
    g = mod.num_groups
    G = an.cspace(f"{key}:groups", g)
    gi, j = an.t.factor(c, [g, mod.num_channels // g], an.where())
    an.unify(gi, G)
    for name in ("weight", "bias"):
        if mod._parameters.get(name) is not None:
            an.unify(c, an.pspace(f"{key}.{name}", 0, "produce"))
    _stats_note(an, j, f"GroupNorm '{key}'")
    an.attr(key, "num_groups", G)
    an.attr(key, "num_channels", product((G, j)))
    return TInfo(x.exprs, mod.affine, x.shape)


register(nn.GroupNorm, shape=same_shape, channels=_gn_channels)


def _lrn_channels(an, op):
    node, args = op.node, op.args
    x = args[0]
    _stats_note(an, x.exprs[1], f"LocalResponseNorm '{node.target}'")
    return TInfo(x.exprs, False, x.shape)


register(nn.LocalResponseNorm, shape=same_shape, channels=_lrn_channels)


# ---- functional forms ---------------------------------------------------------------------------------
def _f_per_channel_channels(an, op):
    """F.batch_norm and F.instance_norm: statistics and affine parameters follow the channel."""
    vals = op.bind("input", "running_mean", "running_var", "weight", "bias", "use_input_stats" if
                   op.node.target is F.instance_norm else "training")
    x = vals["input"]
    for name in ("running_mean", "running_var", "weight", "bias"):
        t = vals.get(name)
        if isinstance(t, TInfo):
            an.unify(x.exprs[1], t.exprs[0])
    if op.node.target is F.instance_norm:
        reduced = range(2, x.ndim) if v(vals.get("use_input_stats", True)) else ()
    else:  # batch statistics (training, or no running statistics: weight standardisation) span dims 0, 2, ...
        batch_stats = v(vals.get("training", False)) or not isinstance(vals.get("running_mean"), TInfo)
        reduced = [d for d in range(x.ndim) if d != 1] if batch_stats else ()
    for d in reduced:
        _stats_note(an, x.exprs[d], f"{an.where()} (statistics over dimension {d})")
    return TInfo(x.exprs, isinstance(vals.get("weight"), TInfo) and isinstance(vals.get("bias"), TInfo), x.shape)


def _f_ln_channels(an, op):
    node = op.node
    vals = op.bind("input", "normalized_shape", "weight", "bias")
    x = vals["input"]
    shape = v(vals["normalized_shape"])
    shape = list(shape) if isinstance(shape, (list, tuple)) else [shape]
    k = len(shape)
    dims = x.exprs[x.ndim - k:]
    raw = node.args[1] if len(node.args) > 1 else node.kwargs["normalized_shape"]
    base = ("args", 1) if len(node.args) > 1 else ("kwargs", "normalized_shape")
    for i, e in enumerate(dims):
        for name in ("weight", "bias"):
            t = vals.get(name)
            if isinstance(t, TInfo):
                an.unify(e, t.exprs[i])
        if an.spaces_in(e):
            if isinstance(raw, (list, tuple)):
                an.const((*base, i), e, "width")
            elif isinstance(raw, int):
                an.const(base, e, "width")
            else:
                an.freeze(e, f"{an.where()}: normalized_shape computed at run time")
        _stats_note(an, e, an.where())
    return TInfo(x.exprs, isinstance(vals.get("weight"), TInfo), x.shape)


def _f_rms_channels(an, op):
    node = op.node
    vals = op.bind("input", "normalized_shape", "weight")
    return _f_ln_channels(an, Call((vals["input"], vals["normalized_shape"], vals.get("weight")), {}, node=node))


def _f_gn_channels(an, op):
    node = op.node
    vals = op.bind("input", "num_groups", "weight", "bias")
    x = vals["input"]
    c = x.exprs[1]
    g = int(v(vals["num_groups"]))
    G = an.cspace(f"{node.name}:groups", g)
    gi, j = an.t.factor(c, [g, x.shape[1] // g], an.where())
    an.unify(gi, G)
    for name in ("weight", "bias"):
        t = vals.get(name)
        if isinstance(t, TInfo):
            an.unify(c, t.exprs[0])
    if an.spaces_in(G):
        raw = node.args[1] if len(node.args) > 1 else node.kwargs["num_groups"]
        if isinstance(raw, int):
            an.const(("args", 1) if len(node.args) > 1 else ("kwargs", "num_groups"), G, "width")
        else:
            an.freeze(G, f"{an.where()}: num_groups computed at run time")
    _stats_note(an, j, an.where())
    return TInfo(x.exprs, isinstance(vals.get("weight"), TInfo) and isinstance(vals.get("bias"), TInfo), x.shape)


def _f_normalize_channels(an, op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    dim = v(args[2]) if len(args) > 2 else v(kwargs.get("dim", 1))
    d = dim % x.ndim
    # a p-norm does not see channels that are zero, so removing masked ones keeps it (prune is
    # exact when they are zero here); a duplicated channel counts twice (growth is not)
    an.note(x.exprs[d], f"{an.where()} normalises across these channels (its norm changes)",
            prune=not x.keeps_zero)
    return TInfo(x.exprs, x.keeps_zero, x.shape)


register(F.batch_norm, shape=same_shape, channels=_f_per_channel_channels)
register(F.instance_norm, shape=same_shape, channels=_f_per_channel_channels)
register(F.layer_norm, shape=same_shape, channels=_f_ln_channels)
register(F.rms_norm, shape=same_shape, channels=_f_rms_channels)
register(F.group_norm, shape=same_shape, channels=_f_gn_channels)
register(F.normalize, shape=same_shape, channels=_f_normalize_channels)

__all__ = ["torch"]
