"""Small helpers shared by the op rules (shape side and channel side)."""

from __future__ import annotations

from typing import Any

import torch

from cgap_graph.ir.symbolic import SymShape, SymTensor, SymValue
from cgap_graph.ir.values import SizeV
from cgap_graph.rules.registry import Call, TSpec

F1 = ("F", 1)


# ---- shape side ---------------------------------------------------------------------------------
def is_tensor(x: Any) -> bool:
    return type(x) is SymTensor or isinstance(x, (torch.Tensor, TSpec))


def shp(x: Any) -> tuple:
    """Static shape of a traced tensor (or of a real tensor / spec)."""
    return x._shape if type(x) is SymTensor else tuple(x.shape)


def v(x: Any) -> Any:
    """Concrete value of a symbolic scalar (recursively in lists/tuples)."""
    t = type(x)
    if t is SymValue or t is SizeV:
        return x.value
    if t is list or t is tuple or t is SymShape or isinstance(x, (torch.Size, list)):  # fx's immutable_list
        return [v(a) for a in x]
    return x


def dims_arg(x: Any) -> list[int] | None:
    """A dims argument given as an int, a list, or varargs already collected."""
    if x is None:
        return None
    x = v(x)
    if isinstance(x, (list, tuple)):
        return [int(d) for d in x]
    return [int(x)]


def result_dtype(*xs: Any) -> torch.dtype:
    """Type promotion between tensors and Python scalars, as torch does it."""
    tensor_dtype = None
    scalar_kind = None
    for x in xs:
        if is_tensor(x):
            d = x.dtype
            tensor_dtype = d if tensor_dtype is None else torch.promote_types(tensor_dtype, d)
        else:
            x = v(x)
            if isinstance(x, bool):
                scalar_kind = scalar_kind or "bool"
            elif isinstance(x, int):
                scalar_kind = "int" if scalar_kind in (None, "bool") else scalar_kind
            elif isinstance(x, float):
                scalar_kind = "float"
    if tensor_dtype is None:
        return torch.get_default_dtype()
    if scalar_kind == "float" and not (tensor_dtype.is_floating_point or tensor_dtype.is_complex):
        return torch.get_default_dtype()
    if scalar_kind == "int" and tensor_dtype == torch.bool:
        return torch.int64
    return tensor_dtype


def spec_like(x: Any, dtype: torch.dtype | None = None) -> TSpec:
    return TSpec(shp(x), dtype or x.dtype)


def same_shape(op: Call) -> TSpec:
    """Shape rule of an op whose output is shaped like its first input."""
    x = op.args[0]
    return TSpec(shp(x), x.dtype)


# ---- channel side -------------------------------------------------------------------------------
def fixed_exprs(shape: tuple) -> tuple:
    return tuple(("F", s) for s in shape)
