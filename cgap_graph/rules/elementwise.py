"""Element-wise ops: activations, dropout, arithmetic, comparisons, type conversions.

Channel rule: each output dimension carries the channels of the operands that are full-size
there (all of them unified: a residual ``add`` or an SE ``mul`` couples its operands); an
operand broadcast from size 1 couples nothing, and a channel space broadcast from width 1
freezes (it could not grow).
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

from cgap_graph.ir.values import SizeV, TInfo
from cgap_graph.rules.registry import TSpec, broadcast_shapes, register
from cgap_graph.rules.util import is_tensor, result_dtype, same_shape, shp, spec_like, v


# ---- unary ----------------------------------------------------------------------------------
def _unary_keep_zero(an, op):
    x = op.args[0]
    return TInfo(x.exprs, x.keeps_zero, x.shape)


def _unary_lose_zero(an, op):
    x = op.args[0]
    return TInfo(x.exprs, False, x.shape)


def _clamp_channels(an, op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    lo = args[1] if len(args) > 1 else kwargs.get("min")
    hi = args[2] if len(args) > 2 else kwargs.get("max")
    keeps = (lo is None or (not isinstance(lo, TInfo) and v(lo) <= 0)) and \
            (hi is None or (not isinstance(hi, TInfo) and v(hi) >= 0))
    return TInfo(x.exprs, x.keeps_zero and keeps, x.shape)


def _hardtanh_channels(an, op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    lo = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
    hi = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
    return TInfo(x.exprs, x.keeps_zero and v(lo) <= 0 <= v(hi), x.shape)


KEEP_ZERO_FUNCS = [
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.gelu, F.silu, F.hardswish, F.leaky_relu,
    F.leaky_relu_, F.elu, F.elu_, F.selu, F.celu, F.mish, torch.tanh, F.tanh, F.softsign,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, torch.dropout, torch.neg, torch.negative,
    torch.abs, torch.sqrt, torch.sin, torch.sign, torch.floor, torch.ceil, torch.round,
    torch.trunc, torch.erf, torch.square, torch.expm1, torch.log1p, torch.nan_to_num, F.softshrink,
    F.hardshrink, F.tanhshrink, torch.clone, torch.detach, operator.neg, operator.pos, operator.abs,
    torch.asinh, torch.atan, torch.sinh, torch.tan,
]
LOSE_ZERO_FUNCS = [
    torch.sigmoid, F.sigmoid, F.hardsigmoid, F.softplus, F.logsigmoid, torch.exp, torch.exp2,
    torch.log, torch.log2, torch.log10, torch.rsqrt, torch.reciprocal, torch.cos, torch.cosh,
    torch.logical_not, torch.bitwise_not, operator.invert, F.alpha_dropout, F.feature_alpha_dropout,
    torch.isnan, torch.isinf, torch.isfinite,
]
KEEP_ZERO_METHODS = [
    "relu", "relu_", "tanh", "tanh_", "neg", "neg_", "negative", "abs", "abs_", "sqrt", "sqrt_", "sin",
    "sign", "floor", "ceil", "round", "trunc", "erf", "square", "expm1", "log1p", "nan_to_num",
    "contiguous", "clone", "detach", "detach_", "requires_grad_", "float", "half", "double",
    "bfloat16", "to", "type", "type_as", "cpu", "cuda",
]
LOSE_ZERO_METHODS = [
    "sigmoid", "sigmoid_", "exp", "exp_", "log", "log_", "rsqrt", "reciprocal", "cos", "logical_not",
    "bitwise_not", "int", "long", "bool", "isnan", "isinf",
]

register(*KEEP_ZERO_FUNCS, *KEEP_ZERO_METHODS, shape=same_shape, channels=_unary_keep_zero)
register(*LOSE_ZERO_FUNCS, *LOSE_ZERO_METHODS, shape=same_shape, channels=_unary_lose_zero)
register(torch.clamp, torch.clip, "clamp", "clamp_", "clip", "clip_", shape=same_shape,
         channels=_clamp_channels)
register(F.hardtanh, F.hardtanh_, shape=same_shape, channels=_hardtanh_channels)


def _fill_channels(an, op):
    """``zero_``/``fill_`` (Swin-V2 zeroes the key part of its qkv bias): channels stay where they
    are; zero stays zero when the value is zero."""
    x = op.args[0]
    value = 0 if op.node.target == "zero_" else (op.args[1] if len(op.args) > 1 else op.kwargs.get("value"))
    return TInfo(x.exprs, not isinstance(value, TInfo) and v(value) == 0, x.shape)


register("zero_", "fill_", shape=same_shape, channels=_fill_channels)

_BOOL = {torch.isnan, torch.isinf, torch.isfinite, torch.logical_not, "isnan", "isinf", "logical_not"}
for _f in _BOOL:
    register(_f, shape=lambda op: spec_like(op.args[0], torch.bool))


def _conv_dtype(dtype):
    return lambda op: spec_like(op.args[0], dtype)


for _m, _d in [("float", torch.float32), ("half", torch.float16), ("double", torch.float64),
               ("bfloat16", torch.bfloat16), ("int", torch.int32), ("long", torch.int64),
               ("bool", torch.bool)]:
    register(_m, shape=_conv_dtype(_d))


def _to_shape(op):
    args, kwargs = op.args, op.kwargs
    x = args[0]
    dtype = kwargs.get("dtype")
    for a in args[1:]:
        if isinstance(a, torch.dtype):
            dtype = a
        elif is_tensor(a):
            dtype = a.dtype
    return spec_like(x, dtype)


register("to", "type", shape=_to_shape)
register("type_as", shape=lambda op: spec_like(op.args[0], op.args[1].dtype))

# Activation and dropout modules.
_KEEP_ZERO_MODULES = [nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.SELU,
                      nn.CELU, nn.Mish, nn.Tanh, nn.Softsign, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
                      nn.Dropout3d, nn.Identity, nn.Softshrink, nn.Hardshrink, nn.Tanhshrink]
_LOSE_ZERO_MODULES = [nn.Sigmoid, nn.Hardsigmoid, nn.Softplus, nn.LogSigmoid, nn.AlphaDropout,
                      nn.FeatureAlphaDropout]


def _mod_hardtanh(an, op):
    mod, args = op.module, op.args
    x = args[0]
    return TInfo(x.exprs, x.keeps_zero and mod.min_val <= 0 <= mod.max_val, x.shape)


for _c in _KEEP_ZERO_MODULES:
    register(_c, shape=same_shape, channels=_unary_keep_zero)
for _c in _LOSE_ZERO_MODULES:
    register(_c, shape=same_shape, channels=_unary_lose_zero)
register(nn.Hardtanh, shape=same_shape, channels=_mod_hardtanh)


def _prelu_channels(an, op):
    node, args = op.node, op.args
    x = args[0]
    key = f"{node.target}.weight"
    n = an.tensor(key).numel()
    if n > 1:
        cdim = 1 if x.ndim >= 2 else 0
        an.unify(x.exprs[cdim], an.pspace(key, 0))
        an.attr(node.target, "num_parameters", x.exprs[cdim])
    return TInfo(x.exprs, x.keeps_zero, x.shape)


register(nn.PReLU, shape=same_shape, channels=_prelu_channels)


# ---- binary and ternary ------------------------------------------------------------------------
def _bcast_shape(op):
    args = op.args
    tensors = [a for a in args if is_tensor(a)]
    shape = broadcast_shapes(*(shp(t) for t in tensors))
    return TSpec(shape, result_dtype(*args))


def _cmp_shape(op):
    args = op.args
    tensors = [a for a in args if is_tensor(a)]
    return TSpec(broadcast_shapes(*(shp(t) for t in tensors)), torch.bool)


def _scalar_fold(node, args):
    """Arithmetic on sizes: remember which layouts the result depends on."""
    exprs: list = []
    for a in args:
        if isinstance(a, SizeV):
            exprs.extend(a.exprs)
    return SizeV(tuple(exprs), node.meta.get("value"))


def pin_sizes(an, op) -> None:
    """A scalar computed from a channel width at run time (``(C // heads) ** -0.5``) that enters
    tensor arithmetic keeps its traced value: after a resize it would be recomputed from the new
    width and change the function. It becomes a graph constant pinned to today's value, written
    when any width it was computed from changes."""
    for i, a in enumerate(op.args):
        if not isinstance(a, SizeV) or not any(an.spaces_in(e) for e in a.exprs):
            continue
        if isinstance(a.value, (int, float)) and not isinstance(a.value, bool):
            an.const(("args", i), ("F", 1), "pin", extra=a.value, deps=a.exprs)
        else:
            for e in a.exprs:
                an.freeze(e, f"{an.where()}: a scalar computed from this width has no traced value to keep")


def bcast(an, node, operands, keeps_zero: bool) -> TInfo:
    """Broadcast channel rule (see module docstring)."""
    out_shape = node.meta["shape"]
    tis = [o for o in operands if isinstance(o, TInfo)]
    n = len(out_shape)
    exprs = []
    for j in range(n):
        size = out_shape[j]
        full = []
        for ti in tis:
            k = j - (n - len(ti.exprs))
            if k < 0:
                continue
            e = ti.exprs[k]
            if ti.shape[k] == size:
                if not (size == 1 and e[0] == "F"):
                    full.append(e)
            elif e[0] != "F":
                an.freeze(e, f"{an.where()}: a channel of width 1 is broadcast")
        cand = next((e for e in full if e[0] != "F"), None)
        if cand is None:
            exprs.append(("F", size))
            continue
        for e in full:
            if e is not cand:
                an.unify(cand, e)
        exprs.append(cand)
    return TInfo(tuple(exprs), keeps_zero, out_shape)


def _is_zero(a) -> bool:
    """Is this operand zero where masking zeroes channels? A tensor without channels (a scalar
    learned bias, a fixed table) is not masked, so it is not zero there."""
    if isinstance(a, TInfo):
        return a.keeps_zero and any(e[0] != "F" for e in a.exprs)
    try:
        return v(a) == 0
    except Exception:
        return False


def _bcast_rule(zero_when):
    """A channel rule for an element-wise op whose result is zero where masking zeroes channels when
    ``zero_when`` (``all`` for a sum: every operand zero; ``any`` for a product: one zero operand)."""
    def rule(an, op):
        ops = list(op.args)
        if not any(isinstance(a, TInfo) for a in ops):
            return _scalar_fold(op.node, ops)
        pin_sizes(an, op)
        return bcast(an, op.node, ops, zero_when(_is_zero(a) for a in ops if a is not None))
    return rule


_add_like = _bcast_rule(all)
_mul_like = _bcast_rule(any)


def _div_like(an, op):
    node, args = op.node, op.args
    ops = list(args[:2])
    if not any(isinstance(a, TInfo) for a in ops):
        return _scalar_fold(node, ops)
    pin_sizes(an, op)
    out = bcast(an, node, ops, _is_zero(ops[0]))
    den = ops[1]
    if isinstance(den, TInfo) and den.keeps_zero:
        for e in den.exprs:
            an.note(e, f"{an.where()} divides by channels that masking zeroes", grow=False)
    return out


def _pow_channels(an, op):
    node, args = op.node, op.args
    base, ex = args[0], args[1]
    if not any(isinstance(a, TInfo) for a in (base, ex)):
        return _scalar_fold(node, (base, ex))
    pin_sizes(an, op)
    keeps_zero = isinstance(base, TInfo) and base.keeps_zero and not isinstance(ex, TInfo) and v(ex) > 0
    return bcast(an, node, [base, ex], keeps_zero)


def _cmp_channels(an, op):
    node, args = op.node, op.args
    if not any(isinstance(a, TInfo) for a in args):
        return _scalar_fold(node, args)
    pin_sizes(an, op)
    return bcast(an, node, list(args), False)


def _where_channels(an, op):
    node, args, kwargs = op.node, op.args, op.kwargs
    cond, a, b = (list(args) + [kwargs.get("input"), kwargs.get("other")])[:3]
    return bcast(an, node, [cond, a, b], _is_zero(a) and _is_zero(b))


def _masked_fill_channels(an, op):
    node, args, kwargs = op.node, op.args, op.kwargs
    x, mask, value = args[0], args[1], args[2] if len(args) > 2 else kwargs.get("value")
    return bcast(an, node, [x, mask], x.keeps_zero and _is_zero(value))


def _ternary_channels(an, op):
    node, args = op.node, op.args
    ops = [a for a in args[:3]]
    return bcast(an, node, ops, all(_is_zero(a) for a in ops))


ADD_LIKE = [operator.add, operator.sub, torch.add, torch.sub, torch.subtract, torch.maximum,
            torch.minimum, torch.fmax, torch.fmin, "add", "add_", "sub", "sub_", "subtract", "maximum",
            "minimum", "fmax", "fmin", torch.atan2, torch.hypot]
MUL_LIKE = [operator.mul, torch.mul, torch.multiply, "mul", "mul_", "multiply", operator.and_,
            torch.logical_and, torch.bitwise_and, "logical_and", "bitwise_and"]
DIV_LIKE = [operator.truediv, operator.floordiv, operator.mod, torch.div, torch.divide, torch.true_divide,
            torch.floor_divide, torch.remainder, torch.fmod, "div", "div_", "divide", "true_divide",
            "floor_divide", "remainder", "fmod"]
CMP_LIKE = [operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge, torch.eq, torch.ne,
            torch.lt, torch.le, torch.gt, torch.ge, "eq", "ne", "lt", "le", "gt", "ge", operator.or_,
            operator.xor, torch.logical_or, torch.logical_xor, "logical_or", "logical_xor",
            torch.bitwise_or, torch.bitwise_xor]
register(*ADD_LIKE, shape=_bcast_shape, channels=_add_like)
register(*MUL_LIKE, shape=_bcast_shape, channels=_mul_like)
register(*DIV_LIKE, shape=_bcast_shape, channels=_div_like)
register(torch.pow, operator.pow, "pow", "pow_", shape=_bcast_shape, channels=_pow_channels)


def _inplace_shape(op):
    """``a.add_(b)`` writes into ``a``: the broadcast result must keep ``a``'s shape, as torch
    requires (a per-head mask broadcast into fewer heads fails here, at tracing or validation)."""
    out = _bcast_shape(op)
    own = shp(op.args[0])
    if tuple(out.shape) != tuple(own):
        raise RuntimeError(f"output with shape {list(own)} doesn't match the broadcast shape {list(out.shape)}")
    return TSpec(own, op.args[0].dtype)


register(*[m for m in (*ADD_LIKE, *MUL_LIKE, *DIV_LIKE, "pow_") if isinstance(m, str) and m.endswith("_")],
         shape=_inplace_shape)
register(*CMP_LIKE, shape=_cmp_shape, channels=_cmp_channels)
for _f in (operator.or_, operator.xor, torch.logical_or, torch.logical_xor, "logical_or", "logical_xor"):
    register(_f, shape=_cmp_shape)


def _where_shape(op):
    args, kwargs = op.args, op.kwargs
    ops = list(args) + [kwargs.get("input"), kwargs.get("other")]
    cond, a, b = ops[:3]
    shapes = [shp(t) for t in (cond, a, b) if is_tensor(t)]
    return TSpec(broadcast_shapes(*shapes), result_dtype(*[x for x in (a, b) if x is not None]))


def _method_where_channels(an, op):
    node, args, kwargs = op.node, op.args, op.kwargs
    x, cond, other = args[0], args[1], args[2] if len(args) > 2 else kwargs.get("other")
    return bcast(an, node, [cond, x, other], _is_zero(x) and _is_zero(other))


def _method_where_shape(op):
    args, kwargs = op.args, op.kwargs
    x, cond = args[0], args[1]
    other = args[2] if len(args) > 2 else kwargs.get("other")
    shapes = [shp(t) for t in (x, cond, other) if is_tensor(t)]
    return TSpec(broadcast_shapes(*shapes), result_dtype(x, other))


register(torch.where, shape=_where_shape, channels=_where_channels)
register("where", shape=_method_where_shape, channels=_method_where_channels)


def _masked_fill_shape(op):
    args = op.args
    return TSpec(broadcast_shapes(shp(args[0]), shp(args[1])), args[0].dtype)


register(torch.masked_fill, "masked_fill", "masked_fill_", shape=_masked_fill_shape,
         channels=_masked_fill_channels)
register(torch.lerp, torch.addcmul, torch.addcdiv, "lerp", "addcmul", "addcdiv", shape=_bcast_shape,
         channels=_ternary_channels)
