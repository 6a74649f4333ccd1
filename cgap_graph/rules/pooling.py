"""Pooling, resampling and channel<->space shuffles.

Pooling and interpolation keep every channel and recompute the spatial sizes (fixed
dimensions). Pixel shuffles move an ``r*r`` factor between channels and space, and channel
shuffle permutes channels as ``(g, C/g) -> (C/g, g)``: both become products over the channel
space, so the per-group channels stay prunable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cgap_graph.ir.expr import product
from cgap_graph.ir.values import TInfo
from cgap_graph.rules.registry import TSpec, register
from cgap_graph.rules.util import same_shape, shp, v


def _tuple(x, n):
    x = v(x)
    return tuple(x) if isinstance(x, (list, tuple)) else (x,) * n


def pool_len(L, k, s, p, d, ceil):
    num = L + 2 * p - d * (k - 1) - 1
    if ceil:
        o = -(-num // s) + 1
        if (o - 1) * s >= L + p:
            o -= 1
    else:
        o = num // s + 1
    if o <= 0:
        raise RuntimeError(f"input of size {L} is too small for pooling with kernel {k}")
    return o


def _pool_out(in_shape, nsp, kernel, stride, padding, dilation, ceil):
    kernel = _tuple(kernel, nsp)
    stride = _tuple(stride if stride not in (None, [], ()) else kernel, nsp)
    padding, dilation = _tuple(padding, nsp), _tuple(dilation, nsp)
    spatial = [pool_len(L, k, s, p, d, ceil) for L, k, s, p, d in
               zip(in_shape[-nsp:], kernel, stride, padding, dilation)]
    return (*in_shape[:-nsp], *spatial)


def _adaptive_out(in_shape, nsp, output_size):
    out = _tuple(output_size, nsp)
    return (*in_shape[:-nsp], *(L if o is None else o for L, o in zip(in_shape[-nsp:], out)))


def _nsp_of(mod) -> int:
    name = type(mod).__name__
    for k in (1, 2, 3):
        if name.endswith(f"{k}d"):
            return k
    return 2


def _mod_pool_shape(op):
    mod, args = op.module, op.args
    x = args[0]
    nsp = _nsp_of(mod)
    if isinstance(mod, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                        nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
        out = _adaptive_out(shp(x), nsp, mod.output_size)
    else:
        out = _pool_out(shp(x), nsp, mod.kernel_size, mod.stride, mod.padding, getattr(mod, "dilation", 1),
                        mod.ceil_mode)
    spec = TSpec(out, x.dtype)
    if getattr(mod, "return_indices", False):
        return (spec, TSpec(out, torch.int64))
    return spec


def pooled(an, node, x: TInfo, nsp: int, out_shape) -> TInfo:
    for d in range(x.ndim - nsp, x.ndim):
        if x.exprs[d][0] != "F":
            an.freeze(x.exprs[d], f"{an.where()}: channels are pooled as a spatial dimension")
    exprs = (*x.exprs[:x.ndim - nsp], *(("F", s) for s in out_shape[x.ndim - nsp:]))
    return TInfo(exprs, x.keeps_zero, tuple(out_shape))


def _mod_pool_channels(an, op):
    node, mod, args = op.node, op.module, op.args
    x = args[0]
    shape = node.meta["shape"]
    if getattr(mod, "return_indices", False):
        out = pooled(an, node, x, _nsp_of(mod), shape[0])
        return (out, TInfo(out.exprs, False, out.shape))
    return pooled(an, node, x, _nsp_of(mod), shape)


for _c in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
           nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
           nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d):
    register(_c, shape=_mod_pool_shape, channels=_mod_pool_channels)


def _f_pool(nsp, adaptive=False, avg=False):
    names = ["input", "output_size"] if adaptive else (
        ["input", "kernel_size", "stride", "padding", "ceil_mode"] if avg else
        ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"])

    def shape(op):
        a = op.bind(*names)
        x = a["input"]
        if adaptive:
            out = _adaptive_out(shp(x), nsp, a["output_size"])
        else:
            out = _pool_out(shp(x), nsp, a["kernel_size"], a.get("stride"), a.get("padding", 0),
                            a.get("dilation", 1), bool(v(a.get("ceil_mode", False))))
        spec = TSpec(out, x.dtype)
        if v(a.get("return_indices", False)):
            return (spec, TSpec(out, torch.int64))
        return spec

    def channels(an, op):
        node = op.node
        a = op.bind(*names)
        shape_ = node.meta["shape"]
        if v(a.get("return_indices", False)):
            out = pooled(an, node, a["input"], nsp, shape_[0])
            return (out, TInfo(out.exprs, False, out.shape))
        return pooled(an, node, a["input"], nsp, shape_)

    return shape, channels


for _k in (1, 2, 3):
    _s, _c = _f_pool(_k)
    register(getattr(F, f"max_pool{_k}d"), getattr(torch, f"max_pool{_k}d"), shape=_s, channels=_c)
    _s, _c = _f_pool(_k, avg=True)
    register(getattr(F, f"avg_pool{_k}d"), shape=_s, channels=_c)
    _s, _c = _f_pool(_k, adaptive=True)
    register(getattr(F, f"adaptive_avg_pool{_k}d"), getattr(F, f"adaptive_max_pool{_k}d"), shape=_s, channels=_c)


# ---- resampling ----------------------------------------------------------------------------------
def _interp_out(in_shape, size, scale):
    nsp = len(in_shape) - 2
    if size is not None:
        out = _tuple(size, nsp)
    else:
        sc = _tuple(scale, nsp)
        out = tuple(int(math.floor(L * float(s))) for L, s in zip(in_shape[2:], sc))
    return (*in_shape[:2], *out)


def _f_interp_shape(op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    size = v(args[1]) if len(args) > 1 else v(kwargs.get("size"))
    scale = v(args[2]) if len(args) > 2 else v(kwargs.get("scale_factor"))
    return TSpec(_interp_out(shp(x), size, scale), x.dtype)


def _f_interp_channels(an, op):
    node, args = op.node, op.args
    x = args[0]
    return pooled(an, node, x, x.ndim - 2, node.meta["shape"])


def _mod_upsample_shape(op):
    mod, args = op.module, op.args
    x = args[0]
    return TSpec(_interp_out(shp(x), mod.size, mod.scale_factor), x.dtype)


def _mod_upsample_channels(an, op):
    node, args = op.node, op.args
    x = args[0]
    return pooled(an, node, x, x.ndim - 2, node.meta["shape"])


register(F.interpolate, F.upsample, shape=_f_interp_shape, channels=_f_interp_channels)
register(nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, shape=_mod_upsample_shape,
         channels=_mod_upsample_channels)


# ---- pixel shuffle / channel shuffle ----------------------------------------------------------------
def _pixel_shuffle_shape_r(x, r, inverse):
    s = list(shp(x))
    if inverse:
        s[-3] *= r * r
        s[-2] //= r
        s[-1] //= r
    else:
        if s[-3] % (r * r):
            raise RuntimeError(f"pixel_shuffle: {s[-3]} channels are not divisible by {r * r}")
        s[-3] //= r * r
        s[-2] *= r
        s[-1] *= r
    return TSpec(s, x.dtype)


def pixel_shuffled(an, node, x: TInfo, r: int, inverse: bool) -> TInfo:
    out_shape = node.meta["shape"]
    c = x.exprs[-3]
    for d in (-2, -1):
        if x.exprs[d][0] != "F":
            an.freeze(x.exprs[d], f"{an.where()}: channels are shuffled into space")
    if inverse:
        out_c = product((c, ("F", r * r)))
    else:
        out_c, rr = an.t.factor(c, [out_shape[-3], r * r], an.where())
        an.unify(rr, ("F", r * r))
    exprs = (*x.exprs[:-3], out_c, ("F", out_shape[-2]), ("F", out_shape[-1]))
    return TInfo(exprs, x.keeps_zero, out_shape)


register(nn.PixelShuffle, shape=lambda op: _pixel_shuffle_shape_r(op.args[0], op.module.upscale_factor, False),
         channels=lambda an, op: pixel_shuffled(an, op.node, op.args[0], op.module.upscale_factor, False))
register(nn.PixelUnshuffle, shape=lambda op: _pixel_shuffle_shape_r(op.args[0], op.module.downscale_factor, True),
         channels=lambda an, op: pixel_shuffled(an, op.node, op.args[0], op.module.downscale_factor, True))
register(F.pixel_shuffle, torch.pixel_shuffle,
         shape=lambda op: _pixel_shuffle_shape_r(op.args[0], v(op.args[1]), False),
         channels=lambda an, op: pixel_shuffled(an, op.node, op.args[0], v(op.args[1]), False))
register(F.pixel_unshuffle, torch.pixel_unshuffle,
         shape=lambda op: _pixel_shuffle_shape_r(op.args[0], v(op.args[1]), True),
         channels=lambda an, op: pixel_shuffled(an, op.node, op.args[0], v(op.args[1]), True))


def channel_shuffled(an, node, x: TInfo, g: int) -> tuple[TInfo, object]:
    c = x.exprs[1]
    G, J = an.t.factor(c, [g, x.shape[1] // g], an.where())
    exprs = (x.exprs[0], product((J, G)), *x.exprs[2:])
    return TInfo(exprs, x.keeps_zero, node.meta["shape"]), G


def _mod_channel_shuffle(an, op):
    node, mod, args = op.node, op.module, op.args
    out, G = channel_shuffled(an, node, args[0], mod.groups)
    an.attr(node.target, "groups", G)
    return out


def _f_channel_shuffle(an, op):
    node, args, kwargs = op.node, op.args, op.kwargs
    g = int(v(args[1] if len(args) > 1 else kwargs["groups"]))
    out, G = channel_shuffled(an, node, args[0], g)
    if an.spaces_in(G):
        if isinstance(node.args[1] if len(node.args) > 1 else None, int):
            an.const(("args", 1), G, "width")
        else:
            an.freeze(G, f"{an.where()}: shuffle groups computed at run time")
    return out


register(nn.ChannelShuffle, shape=same_shape, channels=_mod_channel_shuffle)
register(F.channel_shuffle, torch.channel_shuffle, torch.native_channel_shuffle,
         shape=same_shape, channels=_f_channel_shuffle)
