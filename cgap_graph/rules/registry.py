"""The op-rule registry and its contract: how an op's output shape is computed without running
it, and how its channel dimensions relate to its inputs.

Every op the tracer meets is looked up here: functions by object (``torch.cat``), tensor methods
by name (``"view"``), modules by type (``nn.Conv2d``). An entry has up to three parts:

``shape(op) -> TSpec | tuple | value``
    Called while tracing. ``op.args``/``op.kwargs`` hold the call's arguments with tensors as
    traced tensors (``shp(x)`` gives a static shape, ``v(s)`` a symbolic size's value);
    ``op.module`` is the module instance for a module rule (else None); ``op.node`` is None.
    Return the output's ``TSpec(shape, dtype)`` (a tuple of them for several outputs). Raise any
    exception for a call the rule does not cover: the op then runs once on meta tensors instead.

``channels(an, op) -> TInfo | tuple | value``
    Called by the analysis, in graph order. ``op.args``/``op.kwargs`` hold analysis values
    (``TInfo``: one channel expression per dimension, ``SizeV`` for sizes); ``op.node`` is the
    ``fx.Node``; ``op.module`` as above. ``an`` is the analyser: ``an.unify(a, b)`` couples two
    channel spaces, ``an.pspace(key, dim, role)`` registers a parameter dimension as a producer or
    consumer, ``an.freeze(e, why)`` freezes, ``an.note(e, why)`` marks a group inexact, ``an.const``
    records a graph constant that must follow a width. Return the output's value. An exception
    freezes every group the op touches (strict mode: it is raised, see ``Analyzer``).

``forward(module, *args, **kwargs)``
    For a module type only: an explicit, numerically equivalent forward that the tracer runs
    instead of the module's own (``nn.MultiheadAttention``, whose fused forward hides its heads).

``traits``: facts other passes use: ``"linear"`` (a linear map of its weight arguments: the
Net2Wider split of a bilinear product may stop here), ``"data_movement"`` (moves values without
mixing them), ``"multi_output"`` (its users take disjoint pieces).

A worked example, teaching the engine a user's op (``examples/custom_op.py`` runs it)::

    import cgap_graph as cg
    from cgap_graph.rules import TInfo, TSpec, register_rule, shp

    def scaled_relu(x, alpha):            # the user's own elementwise op
        return torch.relu(x) * alpha

    register_rule(scaled_relu,
                  shape=lambda op: TSpec(shp(op.args[0]), op.args[0].dtype),
                  channels=lambda an, op: TInfo(op.args[0].exprs, op.args[0].keeps_zero, op.node.meta["shape"]))

An op with no entry is traced on meta tensors and freezes every group it touches; it is named
in the report, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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


class Call:
    """One op call as a rule sees it (see the module docstring)."""

    __slots__ = ("args", "kwargs", "module", "node")

    def __init__(self, args: tuple, kwargs: dict, module: nn.Module | None = None, node: Any = None) -> None:
        self.args = args
        self.kwargs = kwargs
        self.module = module
        self.node = node

    def bind(self, *names: str) -> dict[str, Any]:
        """Arguments by parameter name, positional or keyword: ``op.bind("input", "weight")``."""
        vals = dict(zip(names, self.args))
        vals.update({k: self.kwargs[k] for k in names if k in self.kwargs})
        return vals

    def __repr__(self) -> str:
        return f"Call({self.node or ''}, {len(self.args)} args, {sorted(self.kwargs)})"


@dataclass
class OpRule:
    shape: Callable[[Call], Any] | None = None
    channels: Callable[[Any, Call], Any] | None = None
    name: str = ""
    traits: set[str] = field(default_factory=set)


FUNCTIONS: dict[Any, OpRule] = {}
METHODS: dict[str, OpRule] = {}
MODULES: dict[type, OpRule] = {}
FORWARDS: dict[type, Callable[..., Any]] = {}
TRAITS = ("linear", "data_movement", "multi_output")


def _entry(t: Any) -> OpRule:
    t = _op_target(t)
    if isinstance(t, str):
        return METHODS.setdefault(t, OpRule(name=t))
    if isinstance(t, type) and issubclass(t, nn.Module):
        return MODULES.setdefault(t, OpRule(name=t.__name__))
    if not callable(t):
        raise TypeError(f"a rule target is a function, a tensor method name or a module type, not {t!r}")
    return FUNCTIONS.setdefault(t, OpRule(name=getattr(t, "__name__", str(t))))


def _op_target(t: Any) -> Any:
    """What the tracer records for a user's ``torch.library`` op: its default overload."""
    t = getattr(t, "_opoverload", t)  # a @torch.library.custom_op function
    if isinstance(t, torch._ops.OpOverloadPacket):
        t = t.default
    return t


def register(*targets: Any, shape: Callable | None = None, channels: Callable | None = None,
             forward: Callable | None = None, traits: Sequence[str] = ()) -> None:
    """Register a rule for functions (objects), tensor methods (str) or module types; see the
    module docstring for the contract. Registering again replaces the parts given."""
    unknown = set(traits) - set(TRAITS)
    if unknown:
        raise ValueError(f"unknown traits {sorted(unknown)}; known: {', '.join(TRAITS)}")
    for t in targets:
        if forward is not None:
            if not (isinstance(t, type) and issubclass(t, nn.Module)):
                raise TypeError("forward= is for module types")
            FORWARDS[t] = forward
            if shape is None and channels is None and not traits:
                continue
        rule = _entry(t)
        if shape is not None:
            rule.shape = shape
        if channels is not None:
            rule.channels = channels
        rule.traits.update(traits)


register_rule = register  # the public name (cgap_graph.register_rule)


def add_traits(*targets: Any, traits: Sequence[str]) -> None:
    """Add traits to ops (whether or not they have rules yet)."""
    register(*targets, traits=traits)


def has_trait(op: str, target: Any, trait: str) -> bool:
    rule = target_rule(op, target)
    return rule is not None and trait in rule.traits


def module_rule(mod: nn.Module) -> OpRule | None:
    """Rule for a module instance: exact type, or a subclass that keeps the base forward."""
    cls = type(mod)
    rule = MODULES.get(cls)
    if rule is not None:
        return rule if rule.shape is not None or rule.channels is not None else None
    for base in cls.__mro__[1:]:
        rule = MODULES.get(base)
        if rule is not None and cls.forward is base.forward and (rule.shape is not None or
                                                                 rule.channels is not None):
            return rule
    return None


def module_forward(mod: nn.Module) -> Callable[..., Any] | None:
    """The explicit forward registered for this module's type, if any."""
    return FORWARDS.get(type(mod))


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
