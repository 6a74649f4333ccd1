"""Channel analysis: run every op's channel rule over a traced graph.

For each node the analysis computes one channel expression per output dimension (see
``expr.py``), and it collects every place that must change when a group's width changes:

- ``Slot``: one dimension of a parameter or buffer (conv rows, linear columns, BN statistics),
  with a *role*: ``produce`` (copied when a unit is duplicated, zeroed when it is masked),
  ``consume`` (split between copies: the Net2Wider rule), or ``stat`` (running statistics);
- ``AttrSlot``: a module attribute (``in_channels``, ``num_features``, ``groups``...);
- ``ConstSlot``: a constant baked into the graph (``view(-1, 400)``, split sizes, pad amounts).

Ops without a rule, rules that do not cover a call, and model inputs/outputs freeze the groups
they touch, with a reason that names the op.
"""

from __future__ import annotations

import contextlib
import operator
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from cgap_graph.errors import TraceError
from cgap_graph.ir.expr import Expr, SpaceTable
from cgap_graph.ir.traced import Traced
from cgap_graph.ir.values import SizeV, TInfo
from cgap_graph.rules import registry
from cgap_graph.rules.registry import Call


@dataclass
class Slot:
    key: str  # qualified name of the parameter/buffer, e.g. "layer1.0.conv1.weight"
    dim: int
    expr: Expr
    role: str  # "produce" | "consume" | "stat"
    split: set = field(default_factory=set)  # spaces this produce slot splits (bilinear side)
    # (spaces, (stacked layout, index)): split only the positions of one slice of a stacked dim
    # (``k = qkv[1]`` of a fused qkv: k's rows split, q's and v's copied)
    split_where: list = field(default_factory=list)


@dataclass
class AttrSlot:
    module: str
    attr: str
    expr: Any  # Expr, or tuple of Expr for tuple-valued attributes (normalized_shape)
    scale: int = 1  # attribute = scale * width (e.g. in_channels of a grouped conv)


@dataclass
class ConstSlot:
    node: str  # node name
    path: tuple  # where in node.args/kwargs: ("args", 1), ("args", 1, 2), ("kwargs", "scale")
    expr: Any
    mode: str = "width"  # "width" | "infer" (-1) | "sdpa_scale" | "pin" | "chunk" | "sections" | "neg_width"
    extra: Any = None
    # layouts a run-time size argument was computed from (``C // heads``): when one of them changes,
    # the constant is rewritten too, even if its own layout did not change
    deps: tuple = ()


class RuleError(TraceError):
    """A channel rule raised (strict mode): a bug in the rule, not a property of the model."""


_STRICT = [os.environ.get("CGAP_STRICT", "") not in ("", "0")]


@contextlib.contextmanager
def strict_rules(on: bool = True):
    """Within the block, a channel rule that raises is an error instead of freezing its groups
    (the test suite runs this way, so a buggy rule cannot hide as fewer resizable groups).
    ``CGAP_STRICT=1`` turns it on for a whole process."""
    before = _STRICT[0]
    _STRICT[0] = on
    try:
        yield
    finally:
        _STRICT[0] = before


class Analyzer:
    """Runs every node's channel rule in graph order (the pattern of ``torch.fx.Interpreter``:
    one ``visit`` dispatching on the opcode), collecting slots, attributes and constants."""

    def __init__(self, traced: Traced, strict: bool | None = None) -> None:
        self.strict = _STRICT[0] if strict is None else strict
        self.traced = traced
        self.t = SpaceTable()
        self.slots: dict[tuple[str, int], Slot] = {}
        self.attr_slots: list[AttrSlot] = []
        self.const_slots: list[ConstSlot] = []
        self.vals: dict[fx.Node, Any] = {}
        self.unknown: list[tuple[str, str, str]] = []  # (node name, op description, reason)
        self.canon: dict[str, Expr] = {}
        self.modules: dict[str, nn.Module] = {}
        self.notes: list[str] = []
        self.node: fx.Node | None = None

    # ---- helpers for rules ---------------------------------------------------------------
    def where(self, node: fx.Node | None = None) -> _Where:
        """Names the op for messages; formatted only if a message is actually written."""
        return _Where(node or self.node)

    def unify(self, a: Expr, b: Expr, why: str | None = None) -> None:
        self.t.unify(a, b, why or self.where())

    def freeze(self, e: Expr, why: str) -> None:
        self.t.freeze(e, why)

    def freeze_val(self, v: Any, why: str) -> None:
        for ti in iter_tinfos(v):
            for e in ti.exprs:
                self.t.freeze(e, why)

    def note(self, e: Expr, why: str, *, prune: bool = True, grow: bool = True) -> None:
        if self.t.has_space(e):
            self.t.note(e, why, prune=prune, grow=grow)

    def tensor(self, key: str):
        return self.traced.tensors[key]

    def pspace(self, key: str, dim: int, role: str = "produce", like: Expr | None = None) -> Expr:
        """The canonical layout of one dimension of a parameter/buffer, registering its slot.

        ``like``: the layout this dimension is about to be unified with; on first use it
        becomes the slot's layout directly (same result as a fresh space plus ``unify``,
        without the work)."""
        k = (key, dim)
        s = self.slots.get(k)
        if s is None:
            size = self.traced.tensors[key].shape[dim]
            if like is not None and self.t.width(like) == size:
                e = like  # any layout, a concat included; an F layout (model input) needs no space
            else:
                e = ("F", 1) if size == 1 else ("S", self.t.new(size, f"{key}[{dim}]"))
            s = Slot(key, dim, e, role)
            self.slots[k] = s
        elif s.role != role and "stat" not in (s.role, role):
            self.note(s.expr, f"{key} is used both as a producer and a consumer (shared weights)",
                      prune=False, grow=True)
        return s.expr

    def cspace(self, name: str, width: int) -> Expr:
        """A canonical space not tied to a tensor (e.g. the groups of a grouped conv)."""
        e = self.canon.get(name)
        if e is None:
            e = ("F", 1) if width == 1 else ("S", self.t.new(width, name))
            self.canon[name] = e
        return e

    def attr(self, module: str, attr: str, expr: Any, scale: int = 1) -> None:
        self.attr_slots.append(AttrSlot(module, attr, expr, scale))

    def const(self, path: tuple, expr: Any, mode: str = "width", extra: Any = None, deps: tuple = ()) -> None:
        self.const_slots.append(ConstSlot(self.node.name, path, expr, mode, extra, tuple(deps)))

    def spaces_in(self, e: Expr) -> bool:
        return self.t.has_space(e)

    def mark_split(self, node: Any, e: Expr, written: set[int] | None = None, where: tuple | None = None) -> bool:
        """Make the producer of ``node``'s values split (scale 1/n), instead of copy, the
        duplicated units of the spaces written in ``e``: the second operand of a bilinear
        contraction (q.k^T, x @ W). Walks back through pure data movement whose values feed only
        this use, and through one slice of a stacked dim (``qkv[1]``: only that slice's
        positions split); returns False if no linear producer is found (growth is then not exact)."""
        written = self.t.written_leaves(e) if written is None else written
        if not written:
            return True
        seen = 0
        unbound = False  # just stepped back over qkv[i]: the stacked tensor has one user per slice
        while isinstance(node, fx.Node) and seen < 64:
            seen += 1
            if _data_users(node) != 1 and node.op != "get_attr" and not registry.has_trait(
                    node.op, node.target, "multi_output") and not (unbound and _unbound_users(node)):
                return False
            unbound = False
            if node.op == "get_attr":
                if self.traced.attr_kind.get(node.target) not in ("param", "buffer") or _data_users(node) != 1:
                    return False
                slots = [slot for (key, _d), slot in self.slots.items()
                         if key == node.target and written & self.t.written_leaves(slot.expr)]
                _mark(slots, written, where)
                return bool(slots)
            if node.op == "call_module":
                mod = self.modules.get(node.target)
                if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                    _mark([s for s in (self.slots.get((f"{node.target}.{n}", 0)) for n in ("weight", "bias"))
                           if s is not None], written, where)
                    return True
                return False
            if node.op == "call_function" and registry.has_trait(node.op, node.target, "linear"):
                ok = True
                for a in node.args[1:3]:
                    if isinstance(a, fx.Node):
                        ok = self.mark_split(a, e, written, where) and ok
                return ok
            stacked = self._stacked_slice(node) if where is None else None
            if stacked is not None:
                where, node, unbound = stacked, node.args[0], True
                continue
            if _is_data_movement(node) or self._scaled_by_size(node):
                node = node.args[0]
                continue
            return False
        return False

    def _stacked_slice(self, node: fx.Node) -> tuple | None:
        """``(stacked layout, i)`` for ``x[i]`` taking one slice of a channel-space dim 0."""
        if not (node.op == "call_function" and node.target is operator.getitem and type(node.args[1]) is int):
            return None
        src = self.vals.get(node.args[0])
        if not isinstance(src, TInfo) or not src.exprs or src.exprs[0][0] != "S":
            return None
        return src.exprs[0], node.args[1]

    def _scaled_by_size(self, node: fx.Node) -> bool:
        """``q * (C // heads) ** -0.5``: a scalar factor commutes with the split."""
        return node.op == "call_function" and node.target in (operator.mul, operator.truediv) and \
            len(node.args) == 2 and isinstance(self.vals.get(node.args[1]), SizeV)

    # ---- driver ------------------------------------------------------------------------------
    def run(self) -> None:
        graph = self.traced.graph
        modules = self.traced.modules
        for n in graph.nodes:
            if n.op == "call_module":
                self.modules[n.target] = modules[n.target]
        for node in graph.nodes:
            self.node = node
            try:
                self.vals[node] = self.visit(node)
            except Exception as exc:  # a rule that does not cover this call: freeze, never guess
                if self.strict:
                    raise RuleError(f"the channel rule of {describe_target(node)} (node '{node.name}') raised "
                                    f"{type(exc).__name__}: {exc}") from exc
                self.vals[node] = self._opaque(node, f"channel rule failed: {type(exc).__name__}: {exc}")
        self.node = None
        for node, why, loc in self.traced.guards:
            v = self.vals.get(node)
            if isinstance(v, SizeV):
                for e in v.exprs:
                    self.freeze(e, f"forward() specialises on this width ({why} at {loc})")
        self.t.finalize()

    def visit(self, node: fx.Node) -> Any:
        op = node.op
        if op == "placeholder":
            return TInfo(tuple(("F", s) for s in node.meta["shape"]), False, node.meta["shape"])
        if op == "get_attr":
            kind = self.traced.attr_kind.get(node.target)
            shape = node.meta["shape"]
            if kind in ("param", "buffer"):
                return TInfo(tuple(self.pspace(node.target, d) for d in range(len(shape))), True, shape)
            return TInfo(tuple(("F", s) for s in shape), False, shape)
        if op == "output":
            out = self.map_args(node.args[0])
            self.freeze_val(out, "model output")
            return None
        args = self.map_args(node.args)
        kwargs = self.map_args(node.kwargs)
        if node.meta.get("meta_shape"):
            return self._opaque(node, "no rule for this op (or for this use of it)", args, kwargs)
        if op == "call_module":
            mod = self.modules[node.target]
            rule = registry.module_rule(mod)
            if rule is None or rule.channels is None:
                return self._opaque(node, f"no channel rule for module {type(mod).__name__}", args, kwargs)
            return rule.channels(self, Call(args, kwargs, mod, node))
        rule = registry.target_rule(op, node.target)
        if rule is None or rule.channels is None:
            return self._opaque(node, "no channel rule", args, kwargs)
        return rule.channels(self, Call(args, kwargs, None, node))

    def map_args(self, a: Any) -> Any:
        """The analysis value of every node inside an argument structure."""
        vals = self.vals
        if type(a) is fx.Node:
            return vals.get(a)
        return fx.node.map_aggregate(a, lambda x: vals.get(x) if type(x) is fx.Node else x)

    def _opaque(self, node: fx.Node, reason: str, args: Any = None, kwargs: Any = None) -> Any:
        if args is None:
            args, kwargs = self.map_args(node.args), self.map_args(node.kwargs)
        why = f"{self.where(node)}: {reason}"
        self.freeze_val((args, kwargs), why)
        self.unknown.append((node.name, describe_target(node), reason))
        return fixed_value(node.meta.get("shape"), node.meta.get("value"))


class _Where:
    """Lazy "op (node 'name')" text: most unifications never need their reason spelled out."""

    __slots__ = ("node",)

    def __init__(self, node: fx.Node) -> None:
        self.node = node

    def __str__(self) -> str:
        return f"{describe_target(self.node)} (node '{self.node.name}')"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def fixed_value(shape: Any, value: Any = None) -> Any:
    """A value whose dimensions are all fixed (output of an opaque op)."""
    if shape is None:
        return value
    if isinstance(shape, tuple) and shape and (shape[0] is None or isinstance(shape[0], tuple)):
        return tuple(fixed_value(s) for s in shape)
    return TInfo(tuple(("F", s) for s in shape), False, tuple(shape))


def iter_tinfos(v: Any) -> list[TInfo]:
    """Every tensor value inside a nested argument (tuples, lists, dicts, slices)."""
    found: list[TInfo] = []
    fx.node.map_aggregate(v, lambda x: found.append(x) if isinstance(x, TInfo) else None)
    return found


def describe_target(node: fx.Node) -> str:
    t = node.target
    if node.op == "call_module":
        return f"module '{t}'"
    if node.op == "call_method":
        return f"Tensor.{t}"
    if node.op == "call_function":
        if isinstance(t, torch._ops.OpOverload):
            return f"torch.ops.{t}"
        mod = getattr(t, "__module__", None) or ""
        name = getattr(t, "__name__", str(t))
        if mod in ("_operator", "operator"):
            return f"operator.{name}"
        if mod.startswith("torch.nn.functional"):
            return f"F.{name}"
        if mod.startswith("torch"):
            return f"torch.{name}"
        return f"{mod}.{name}" if mod else name
    return f"{node.op} {t}"


def _mark(slots: list, written: set, where: tuple | None) -> None:
    for slot in slots:
        if where is None:
            slot.split |= written
        else:
            slot.split_where.append((set(written), where))


def _unbound_users(node: fx.Node) -> bool:
    """Every reader takes one integer slice (``q, k, v = qkv[0], qkv[1], qkv[2]``)."""
    return all(u.op == "call_function" and u.target is operator.getitem and type(u.args[1]) is int
               for u in node.users if not (u.op == "call_method" and u.target == "size"))


def _data_users(node: fx.Node) -> int:
    """Users that read values (not just the shape, like ``x.size(1)``)."""
    return sum(1 for u in node.users
               if not (u.op == "call_method" and u.target == "size") and u.target is not getattr)


def _is_data_movement(node: fx.Node) -> bool:
    if node.op == "call_method":
        return registry.has_trait(node.op, node.target, "data_movement")
    if node.op == "call_function":
        if node.target is operator.getitem:
            # slices keep distinct channel ids; an integer index (qkv[1]) would not
            idx = node.args[1]
            items = idx if isinstance(idx, tuple) else (idx,)
            return all(isinstance(i, slice) or i is None or i is Ellipsis for i in items) or \
                isinstance(node.args[0], fx.Node) and isinstance(node.args[0].meta.get("shape"), tuple) and \
                bool(node.args[0].meta["shape"]) and isinstance(node.args[0].meta["shape"][0], tuple)
        if registry.has_trait(node.op, node.target, "data_movement"):
            return True
        if node.target in (operator.mul, operator.truediv) and len(node.args) == 2 and \
                isinstance(node.args[1], (int, float)):
            return True
    if node.op == "call_module":
        return False
    return False
