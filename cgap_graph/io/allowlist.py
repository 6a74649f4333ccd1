"""What a cgap-graph model file may name: an explicit table, never an attribute walk.

Loading a file builds an ``fx.GraphModule``, and tracing or running it calls every graph target,
so a target the file can choose freely is code the file runs. Here every name a file may hold
is written out below; a name is looked up in these tables, and anything else (``builtins.exec``,
``torch.load``, ``os.system``, a method such as ``register_hook``) is refused before anything is
built. The tables hold pure tensor maths only: nothing that reads or writes files, imports,
compiles, or calls a function it is given. ``getattr`` is allowed only with one of a few tensor
attribute names (``x.shape``), and every name that reaches generated code (node, attribute,
module and keyword names) must be a plain identifier, since ``torch.fx`` pastes them into the
Python source of ``forward``.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_TORCH = """
abs add addcdiv addcmul addmm all amax amin any arange argmax argmin argsort asinh atan atan2 avg_pool1d baddbmm
bitwise_and bitwise_not bitwise_or bitwise_xor bmm broadcast_to cat ceil channel_shuffle chunk clamp clip clone
concat concatenate constant_pad_nd conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d cos cosh
count_nonzero cumprod cumsum detach diag diagonal div divide dropout einsum empty empty_like eq erf exp exp2 expm1
flatten flip floor floor_divide fmax fmin fmod full full_like gather ge gt hardshrink hypot index_select isfinite
isinf isnan kron layer_norm le lerp linspace log log10 log1p log2 log_softmax logical_and logical_not logical_or
logical_xor logsumexp lt masked_fill matmul max max_pool1d max_pool2d max_pool3d maximum mean median min minimum mm
moveaxis movedim mul multiply nan_to_num nanmean nansum narrow native_channel_shuffle ne neg negative norm ones
ones_like outer permute pixel_shuffle pixel_unshuffle pow prod rand rand_like randn randn_like reciprocal relu relu_
remainder repeat_interleave reshape roll round rsqrt select sigmoid sign sin sinh softmax sort split split_with_sizes
sqrt square squeeze stack std sub subtract sum swapaxes swapdims t tan tanh tensor_split tile topk transpose tril
triu true_divide trunc unbind unflatten unsqueeze var where zeros zeros_like adaptive_avg_pool1d
"""
_FUNCTIONAL = """
adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d
adaptive_max_pool3d alpha_dropout avg_pool1d avg_pool2d avg_pool3d batch_norm celu conv1d conv2d conv3d
conv_transpose1d conv_transpose2d conv_transpose3d dropout dropout1d dropout2d dropout3d elu elu_ embedding
feature_alpha_dropout fold gelu glu group_norm hardshrink hardsigmoid hardswish hardtanh hardtanh_ instance_norm
interpolate layer_norm leaky_relu leaky_relu_ linear local_response_norm log_softmax logsigmoid max_pool1d max_pool2d
max_pool3d mish normalize pad pixel_shuffle pixel_unshuffle prelu relu relu6 relu_ rms_norm scaled_dot_product_attention
selu sigmoid silu softmax softmin softplus softshrink softsign tanh tanhshrink unfold upsample upsample_bilinear
upsample_nearest
"""
_OPERATOR = """
abs add and_ contains eq floordiv ge getitem gt iadd imul invert isub itruediv le lshift lt matmul mod mul ne neg
not_ or_ pos pow rshift setitem sub truediv xor
"""
_MATH = "ceil floor sqrt log log2 exp pow prod isqrt trunc"
# Aliases under which older files (or fx itself) name the same functions.
_ALIASES = {
    "torch.functional.einsum": torch.functional.einsum, "torch.functional.norm": torch.functional.norm,
    "torch.functional.split": torch.functional.split,
}
_METHODS = """
abs abs_ absolute add add_ addcdiv addcmul addmm all amax amin any argmax argmin argsort baddbmm bfloat16
bitwise_and bitwise_not bitwise_or bitwise_xor bmm bool broadcast_to byte ceil char chunk clamp clamp_ clamp_max
clamp_min clip clip_ clone contiguous cos cosh count_nonzero cpu cuda cummax cummin cumprod cumsum detach detach_
diag diagonal div div_ divide double eq erf exp exp_ expand expand_as expm1 flatten flip float floor floor_divide
fmax fmin fmod gather ge gt half index_select int isinf isnan le lerp log log10 log1p log2 log_ log_softmax
logical_and logical_not logical_or logical_xor logsumexp long lt masked_fill masked_fill_ matmul max maximum mean
median min minimum mm moveaxis movedim mul mul_ multiply nan_to_num nanmean nansum narrow ne neg neg_ negative
new_empty new_full new_ones new_zeros norm numel permute pow pow_ prod reciprocal relu relu_ remainder repeat
repeat_interleave requires_grad_ reshape reshape_as roll round rsqrt select short sigmoid sigmoid_ sign sin size
softmax sort split split_with_sizes sqrt sqrt_ square squeeze squeeze_ std sub sub_ subtract sum swapaxes swapdims
t tanh tanh_ tensor_split tile to topk transpose transpose_ tril triu true_divide trunc type type_as unbind unflatten
unfold unsqueeze unsqueeze_ var view view_as where
"""
# Tensor attributes a graph may read with getattr(x, name).
TENSOR_ATTRIBUTES = frozenset({"shape", "dtype", "device", "ndim", "T", "mT", "is_cuda", "layout", "real", "imag",
                               "requires_grad", "data"})
_MODULES = """
AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d AdaptiveMaxPool1d AdaptiveMaxPool2d AdaptiveMaxPool3d
AlphaDropout AvgPool1d AvgPool2d AvgPool3d BatchNorm1d BatchNorm2d BatchNorm3d CELU ChannelShuffle Conv1d Conv2d
Conv3d ConvTranspose1d ConvTranspose2d ConvTranspose3d Dropout Dropout1d Dropout2d Dropout3d ELU Embedding
FeatureAlphaDropout Flatten GELU GLU GroupNorm GRU Hardshrink Hardsigmoid Hardswish Hardtanh Identity
InstanceNorm1d InstanceNorm2d InstanceNorm3d LayerNorm LeakyReLU Linear LocalResponseNorm LogSigmoid LogSoftmax
LSTM MaxPool1d MaxPool2d MaxPool3d Mish PixelShuffle PixelUnshuffle PReLU ReLU ReLU6 RMSNorm RNN SELU SiLU Sigmoid
Softmax Softmin Softplus Softshrink Softsign SyncBatchNorm Tanh Tanhshrink Unflatten Upsample UpsamplingBilinear2d
UpsamplingNearest2d ZeroPad1d ZeroPad2d ZeroPad3d ConstantPad1d ConstantPad2d ConstantPad3d ReflectionPad1d
ReflectionPad2d ReflectionPad3d ReplicationPad1d ReplicationPad2d ReplicationPad3d
"""
OPS = frozenset({"placeholder", "get_attr", "call_function", "call_method", "call_module", "output"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DOTTED = re.compile(r"[A-Za-z_0-9][A-Za-z0-9_]*(\.[A-Za-z_0-9][A-Za-z0-9_]*)*\Z")


def _table() -> dict[str, Callable]:
    out: dict[str, Callable] = {}
    for ns, prefix, words in ((torch, "torch", _TORCH), (F, "torch.nn.functional", _FUNCTIONAL),
                              (operator, "operator", _OPERATOR), (math, "math", _MATH)):
        for w in words.split():
            if hasattr(ns, w):  # a name missing from this torch version is simply not allowed
                out[f"{prefix}.{w}"] = getattr(ns, w)
    for w in _OPERATOR.split():
        out[f"_operator.{w}"] = getattr(operator, w)
    out.update(_ALIASES)
    out["builtins.getattr"] = getattr
    return out


FUNCTIONS: dict[str, Callable] = _table()
# One name per object for saving (the first in the table: torch.nn.functional.relu, not an alias).
_NAME_OF: dict[int, str] = {}
for _name, _obj in FUNCTIONS.items():
    _NAME_OF.setdefault(id(_obj), _name)
METHODS = frozenset(_METHODS.split())
MODULE_CLASSES: dict[str, type] = {f"torch.nn.{w}": getattr(nn, w) for w in _MODULES.split() if hasattr(nn, w)}
MODULE_CLASSES["torch.nn.modules.linear.NonDynamicallyQuantizableLinear"] = \
    nn.modules.linear.NonDynamicallyQuantizableLinear  # nn.MultiheadAttention's out_proj
for _cls in list(MODULE_CLASSES.values()):  # files name classes by their defining module
    MODULE_CLASSES[f"{_cls.__module__}.{_cls.__qualname__}"] = _cls


class Forbidden(ValueError):
    """A file names something outside the tables."""


def function_name(fn: Any) -> str | None:
    """The table's name for ``fn``, or None if a file may not hold it."""
    name = _NAME_OF.get(id(fn))
    return name if name is not None and FUNCTIONS[name] is fn else None


def function(name: Any) -> Callable:
    if not isinstance(name, str) or name not in FUNCTIONS:
        raise Forbidden(f"call target '{name}' is not in cgap-graph's table of tensor functions")
    return FUNCTIONS[name]


def method(name: Any) -> str:
    if not isinstance(name, str) or name not in METHODS:
        raise Forbidden(f"tensor method '{name}' is not in cgap-graph's table of tensor methods")
    return name


def module_class(name: Any) -> type:
    if not isinstance(name, str) or name not in MODULE_CLASSES:
        raise Forbidden(f"module type '{name}' is not one of the torch.nn layers a cgap-graph file may hold")
    return MODULE_CLASSES[name]


def identifier(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _IDENT.match(name) or name.startswith("__"):
        raise Forbidden(f"{what} '{name}' is not a plain identifier")
    return name


def dotted(name: Any, what: str) -> str:
    """A module path or state-dict key (``layer1.0.conv1.weight``): identifiers joined by dots."""
    if not isinstance(name, str) or not _DOTTED.match(name) or any(p.startswith("__") for p in name.split(".")):
        raise Forbidden(f"{what} '{name}' is not a dotted name of identifiers")
    return name


def check_getattr(args: tuple) -> None:
    if len(args) != 2 or args[1] not in TENSOR_ATTRIBUTES:
        raise Forbidden(f"getattr of '{args[1] if len(args) > 1 else '?'}' is not allowed (only tensor attributes "
                        f"such as {', '.join(sorted(TENSOR_ATTRIBUTES)[:4])})")


__all__ = ["FUNCTIONS", "Forbidden", "METHODS", "MODULE_CLASSES", "OPS", "TENSOR_ATTRIBUTES", "check_getattr",
           "dotted", "function", "function_name", "identifier", "method", "module_class"]
