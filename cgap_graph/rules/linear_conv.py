"""Producers and consumers: convolutions, Linear, Embedding, and contractions (matmul, einsum).

A convolution consumes the channels of its input (weight columns) and produces a new space
(weight rows, bias). A grouped convolution splits both sides into ``groups x per-group``
products: the groups are one channel space (pruning a whole group lowers ``groups``), the
per-group channels another; for a depthwise convolution the per-group input is a fixed 1, so
input and output channels are one group. A contraction between two activations (``q @ k^T``)
couples the contracted dimensions; its second operand's producer is marked to be split (not
copied) when a unit is duplicated, which keeps ``preserve`` growth exact for attention.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from cgap_graph.ir.expr import product
from cgap_graph.ir.values import TInfo
from cgap_graph.rules.registry import TSpec, add_traits, register
from cgap_graph.rules.util import F1, shp, v


# ---- shapes -----------------------------------------------------------------------------------
def _tuple(x, n):
    if type(x) is tuple:
        return x
    x = v(x)
    return tuple(x) if isinstance(x, (list, tuple)) else (x,) * n


def conv_out_shape(in_shape, out_channels, kernel, stride, padding, dilation, transposed=False,
                   output_padding=0):
    nsp = len(kernel)
    batched = len(in_shape) == nsp + 2
    spatial = in_shape[-nsp:]
    lead = in_shape[:1] if batched else ()
    if isinstance(padding, str):
        if padding == "same":
            return (*lead, out_channels, *spatial)
        padding = 0
    stride, dilation = _tuple(stride, nsp), _tuple(dilation, nsp)
    padding, output_padding = _tuple(padding, nsp), _tuple(output_padding, nsp)
    out = []
    for i in range(nsp):
        L, k, s, p, d = spatial[i], kernel[i], stride[i], padding[i], dilation[i]
        if transposed:
            o = (L - 1) * s - 2 * p + d * (k - 1) + output_padding[i] + 1
        else:
            o = (L + 2 * p - d * (k - 1) - 1) // s + 1
        if o <= 0:
            raise RuntimeError(f"input of spatial size {tuple(spatial)} is too small for the kernel")
        out.append(o)
    return (*lead, out_channels, *out)


def _conv_mod_shape(op):
    mod, args = op.module, op.args
    x = args[0]
    s = shp(x)
    nsp = len(mod.kernel_size)
    if len(s) not in (nsp + 1, nsp + 2):
        raise RuntimeError(f"expected a {nsp + 2}-d input, got shape {s}")
    if s[len(s) - nsp - 1] != mod.in_channels:
        raise RuntimeError(f"expected {mod.in_channels} input channels, got {s[len(s) - nsp - 1]}")
    out = conv_out_shape(s, mod.out_channels, mod.kernel_size, mod.stride, mod.padding, mod.dilation,
                         mod.transposed, mod.output_padding)
    return TSpec(out, x.dtype)


def _linear_mod_shape(op):
    mod, args = op.module, op.args
    x = args[0]
    s = shp(x)
    if not s or s[-1] != mod.in_features:
        raise RuntimeError(f"expected {mod.in_features} input features, got shape {s}")
    return TSpec((*s[:-1], mod.out_features), x.dtype)


def _embedding_mod_shape(op):
    mod, args = op.module, op.args
    x = args[0]
    if x.dtype.is_floating_point:
        raise RuntimeError("Embedding expects integer indices (use --input-dtype long)")
    return TSpec((*shp(x), mod.embedding_dim), mod._parameters["weight"].dtype)


# ---- channel rules ------------------------------------------------------------------------------
def note_nonzero_input(an, x: TInfo, c) -> None:
    """Masked channels that reach a layer as a non-zero constant (``s * relu(x) ** 2 + b``, a
    sigmoid) make the masked model differ from the shrunk one unless the constant is folded into
    the layer's bias, which the prune pass does where that is exact: say so, never stay silent."""
    if not x.keeps_zero and an.spaces_in(c):
        an.note(c, f"{an.where()} reads these channels where masking leaves a non-zero constant (the prune pass "
                   "folds it into the bias of a Linear or unpadded conv)", grow=False)


def passthrough_keeps_zero(an, x: TInfo, passthrough, has_bias: bool) -> bool:
    """Whether channels that a layer carries through untouched (a Linear over tokens maps
    ``(.., C, T) -> (.., C, T')``: C passes through) stay zero when masked: only if they arrive
    zero and no bias is added to them (the bias lands on every position, masked ones too)."""
    spaced = [e for e in passthrough if an.spaces_in(e)]
    if not spaced:
        return True
    if has_bias:
        for e in spaced:
            an.note(e, f"{an.where()} adds its bias to these channels, which pass through it: a removed "
                       "channel carries that bias on (position-dependent, not folded)", grow=False)
    return x.keeps_zero and not has_bias


def _freeze_spatial(an, x: TInfo, start: int) -> None:
    for d in range(start, x.ndim):
        if x.exprs[d][0] != "F":
            an.freeze(x.exprs[d], f"{an.where()}: channels are convolved over as a spatial dimension")


def conv_channels(an, node, x: TInfo, key: str, wkey: str, bkey: str | None, groups: int,
                  in_ch: int, out_ch: int, nsp: int, transposed: bool, module: bool,
                  wval: TInfo | None = None) -> TInfo:
    cdim = x.ndim - nsp - 1
    xc = x.exprs[cdim]
    _freeze_spatial(an, x, cdim + 1)
    note_nonzero_input(an, x, xc)

    def pspace(dim, role, like=None):
        if module:
            return an.pspace(wkey, dim, role, like)
        return wval.exprs[dim]

    if groups == 1:
        if transposed:
            an.unify(xc, pspace(0, "consume", xc))
            out_c = pspace(1, "produce")
        else:
            an.unify(xc, pspace(1, "consume", xc))
            out_c = pspace(0, "produce")
    else:
        G = an.cspace(f"{key}:groups", groups)
        gin, jin = an.t.factor(xc, [groups, in_ch // groups], an.where())
        an.unify(gin, G)
        if transposed:
            an.unify(xc, pspace(0, "consume"))
            out_c = product((G, pspace(1, "produce")))
        else:
            an.unify(jin, pspace(1, "consume"))
            w0 = pspace(0, "produce")
            an.unify(w0, product((G, an.cspace(f"{key}:per-group", out_ch // groups))))
            out_c = w0
        if module:
            an.attr(key, "groups", G)
    if not module and wval is not None:
        # functional conv: the weight tensor's input-side dimension is consumed (split on growth)
        an.mark_split(node.args[1], pspace(0 if transposed else 1, "consume"))
    if bkey is not None:
        an.unify(out_c, an.pspace(bkey, 0, "produce", out_c) if module else bkey)
    if module:
        an.attr(key, "in_channels", xc)
        an.attr(key, "out_channels", out_c)
    out_shape = node.meta["shape"]
    exprs = list(x.exprs[:cdim]) + [out_c] + [("F", s) for s in out_shape[cdim + 1:]]
    return TInfo(tuple(exprs), passthrough_keeps_zero(an, x, x.exprs[:cdim], bkey is not None), out_shape)


def _conv_mod_channels(an, op):
    node, mod, args = op.node, op.module, op.args
    key = node.target
    return conv_channels(an, node, args[0], key, f"{key}.weight",
                         f"{key}.bias" if mod._parameters.get("bias") is not None else None,
                         mod.groups, mod.in_channels, mod.out_channels, len(mod.kernel_size),
                         mod.transposed, module=True)


def _linear_mod_channels(an, op):
    node, mod, args = op.node, op.module, op.args
    x = args[0]
    key = node.target
    note_nonzero_input(an, x, x.exprs[-1])
    an.unify(x.exprs[-1], an.pspace(f"{key}.weight", 1, "consume", x.exprs[-1]))
    out_c = an.pspace(f"{key}.weight", 0, "produce")
    if mod._parameters.get("bias") is not None:
        an.unify(out_c, an.pspace(f"{key}.bias", 0, "produce", out_c))
    an.attr(key, "in_features", x.exprs[-1])
    an.attr(key, "out_features", out_c)
    keeps_zero = passthrough_keeps_zero(an, x, x.exprs[:-1], mod._parameters.get("bias") is not None)
    return TInfo((*x.exprs[:-1], out_c), keeps_zero, node.meta["shape"])


def _embedding_mod_channels(an, op):
    node, args = op.node, op.args
    x = args[0]
    out_c = an.pspace(f"{node.target}.weight", 1, "produce")
    an.attr(node.target, "embedding_dim", out_c)
    return TInfo((*x.exprs, out_c), True, node.meta["shape"])


for _c in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
    register(_c, shape=_conv_mod_shape, channels=_conv_mod_channels)
register(nn.Linear, shape=_linear_mod_shape, channels=_linear_mod_channels)
register(nn.Embedding, shape=_embedding_mod_shape, channels=_embedding_mod_channels)


# ---- functional forms ---------------------------------------------------------------------------
def _f_linear_shape(op):
    args, kwargs = op.args, op.kwargs
    x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
    if shp(x)[-1] != shp(w)[-1]:
        raise RuntimeError(f"linear: input features {shp(x)[-1]} != weight columns {shp(w)[-1]}")
    return TSpec((*shp(x)[:-1], *shp(w)[:-1]), x.dtype)


def _f_linear_channels(an, op):
    node, args, kwargs = op.node, op.args, op.kwargs
    x = args[0]
    w = args[1] if len(args) > 1 else kwargs["weight"]
    b = args[2] if len(args) > 2 else kwargs.get("bias")
    note_nonzero_input(an, x, x.exprs[-1])
    an.unify(x.exprs[-1], w.exprs[-1])
    wnode = node.args[1] if len(node.args) > 1 else node.kwargs["weight"]
    if an.spaces_in(w.exprs[-1]) and not an.mark_split(wnode, w.exprs[-1]):
        an.note(w.exprs[-1], f"{an.where()}: the weight's input side cannot be split on growth",
                prune=False)
    out_c = w.exprs[0] if w.ndim == 2 else F1
    if isinstance(b, TInfo):
        an.unify(out_c, b.exprs[0])
    keeps_zero = w.keeps_zero and passthrough_keeps_zero(an, x, x.exprs[:-1], b is not None)
    return TInfo((*x.exprs[:-1], *((out_c,) if w.ndim == 2 else ())), keeps_zero, node.meta["shape"])


def _f_conv_args(op):
    vals = op.bind("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    return (vals["input"], vals["weight"], vals.get("bias"), vals.get("stride", 1), vals.get("padding", 0),
            vals.get("dilation", 1), vals.get("groups", 1))


def _f_conv_shape(op):
    x, w, b, stride, padding, dilation, groups = _f_conv_args(op)
    k = shp(w)[2:]
    return TSpec(conv_out_shape(shp(x), shp(w)[0], k, stride, padding, dilation), x.dtype)


def _f_conv_channels(an, op):
    node = op.node
    x, w, b, stride, padding, dilation, groups = _f_conv_args(op)
    groups = int(v(groups))
    nsp = w.ndim - 2
    for e in w.exprs[2:]:  # a computed weight (weight standardisation) keeps its kernel size
        if e[0] != "F":
            an.freeze(e, f"{an.where()}: a kernel dimension of the weight")
    out = conv_channels(an, node, x, node.name, "", None, groups, w.shape[1] * groups, w.shape[0], nsp,
                        False, module=False, wval=w)
    if isinstance(b, TInfo):
        an.unify(out.exprs[x.ndim - nsp - 1], b.exprs[0])
    if groups > 1:
        path = ("args", 6) if len(node.args) > 6 else ("kwargs", "groups")
        an.const(path, an.canon[f"{node.name}:groups"], "width")
    return out


def _f_embedding_shape(op):
    args, kwargs = op.args, op.kwargs
    x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
    return TSpec((*shp(x), shp(w)[1]), w.dtype)


def _f_embedding_channels(an, op):
    node, args, kwargs = op.node, op.args, op.kwargs
    x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
    return TInfo((*x.exprs, w.exprs[1]), w.keeps_zero, node.meta["shape"])


register(F.linear, shape=_f_linear_shape, channels=_f_linear_channels)
register(F.conv1d, F.conv2d, F.conv3d, shape=_f_conv_shape, channels=_f_conv_channels)
register(F.embedding, shape=_f_embedding_shape, channels=_f_embedding_channels)
add_traits(F.linear, F.conv1d, F.conv2d, F.conv3d, traits=("linear",))

__all__ = ["conv_out_shape"]
