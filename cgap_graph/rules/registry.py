"""One registry of op rules. Each entry says, for one op, how to compute its output shape
without running it (``shape``) and how its channel dimensions relate to its inputs
(``channels``). An op with no entry is traced with meta tensors and freezes every channel
group it touches; it is named in the report, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


class TSpec:
    """Static description of a tensor produced by an op: shape and dtype."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape: Sequence[int], dtype: torch.dtype) -> None:
        self.shape = shape if type(shape) is tuple else tuple(int(s) for s in shape)
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"TSpec({self.shape}, {self.dtype})"


class NamedSpecs(tuple):
    """Specs of an op returning a named tuple (``torch.return_types.max`` ...)."""

    cls: Any = None

    def __new__(cls, specs, result_type):
        obj = super().__new__(cls, specs)
        obj.cls = result_type
        return obj


@dataclass
class OpRule:
    shape: Callable[..., Any] | None = None
    channels: Callable[..., Any] | None = None
    # For module rules: module attributes (besides parameters) that must stay consistent.
    name: str = ""


FUNCTIONS: dict[Any, OpRule] = {}
METHODS: dict[str, OpRule] = {}
MODULES: dict[type, OpRule] = {}


def register(*targets: Any, shape: Callable | None = None, channels: Callable | None = None) -> None:
    """Register a rule for functions (objects), tensor methods (str) or module types."""
    for t in targets:
        if isinstance(t, str):
            rule = METHODS.setdefault(t, OpRule(name=t))
        elif isinstance(t, type) and issubclass(t, nn.Module):
            rule = MODULES.setdefault(t, OpRule(name=t.__name__))
        else:
            rule = FUNCTIONS.setdefault(t, OpRule(name=getattr(t, "__name__", str(t))))
        if shape is not None:
            rule.shape = shape
        if channels is not None:
            rule.channels = channels


def module_rule(mod: nn.Module) -> OpRule | None:
    """Rule for a module instance: exact type, or a subclass that keeps the base forward."""
    cls = type(mod)
    rule = MODULES.get(cls)
    if rule is not None:
        return rule
    for base in cls.__mro__[1:]:
        rule = MODULES.get(base)
        if rule is not None and cls.forward is base.forward:
            return rule
    return None


def target_rule(op: str, target: Any) -> OpRule | None:
    if op == "call_method":
        return METHODS.get(target)
    if op == "call_function":
        return FUNCTIONS.get(target)
    return None


# ---- argument helpers shared by rules -------------------------------------------------------
def bind(args: tuple, kwargs: dict, names: Sequence[str], defaults: dict | None = None) -> list:
    """Positional-or-keyword binding for a rule: values for ``names`` in order."""
    out = []
    for i, n in enumerate(names):
        if i < len(args):
            out.append(args[i])
        elif n in kwargs:
            out.append(kwargs[n])
        elif defaults is not None and n in defaults:
            out.append(defaults[n])
        else:
            out.append(None)
    return out


def as_int_list(v: Any) -> list:
    if isinstance(v, (list, tuple, torch.Size)):
        return list(v)
    return [v]


def norm_dim(d: int, ndim: int) -> int:
    d = int(d)
    if d < 0:
        d += ndim
    if not 0 <= d < max(ndim, 1):
        raise IndexError(f"dimension {d} out of range for a {ndim}-d tensor")
    return d


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    n = max((len(s) for s in shapes), default=0)
    out = [1] * n
    for s in shapes:
        for i, v in enumerate(s):
            j = n - len(s) + i
            if out[j] == 1:
                out[j] = v
            elif v != 1 and v != out[j]:
                raise RuntimeError(f"shapes {[tuple(x) for x in shapes]} cannot be broadcast")
    return tuple(out)
