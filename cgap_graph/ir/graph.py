"""The channel graph: a traced model, its channel groups, and everything a group touches.

``trace(model, (1, 3, 32, 32))`` returns a :class:`ChannelGraph`. Its ``groups`` are the units
of structural change: removing, duplicating or reordering channels of one group, applied to
every member (producer rows, consumer columns, norm parameters and statistics, module
attributes, graph constants), keeps the model valid. ``module``, the working ``fx.GraphModule``,
owns copies of the parameters (unless ``inplace``), so the traced model is never modified."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import torch
import torch.fx as fx
from torch import nn

from cgap_graph.errors import InputShapeError, TraceError
from cgap_graph.io.atomic import atomic_write_bytes
from cgap_graph.ir.analysis import Analyzer, describe_target, iter_tinfos
from cgap_graph.ir.copies import copy_module
from cgap_graph.ir.expr import Expr
from cgap_graph.ir.flops import count_flops
from cgap_graph.ir.gc_pause import gc_paused
from cgap_graph.ir.notes import kept_stats_exact, note_parts
from cgap_graph.ir.traced import Traced
from cgap_graph.ir.tracing import trace_module
from cgap_graph.rules.registry import TSpec


@dataclass
class Member:
    """One place a group's channels live: a parameter dimension, attribute or graph constant."""

    kind: str  # "param" | "attr" | "const"
    target: str  # parameter key, "module.attr", or "node:path"
    role: str  # "produce" | "consume" | "stat" | "attr" | "const"
    dim: int | None = None
    per_unit: int = 1  # positions per channel unit (e.g. H*W for a flattened conv output)

    def label(self) -> str:
        if self.kind == "param":
            mod, _, name = self.target.rpartition(".")
            mod = mod or name
            suffix = {"produce": ".out" if name == "weight" and self.dim == 0 else "",
                      "consume": ".in", "stat": ""}.get(self.role, "")
            if self.role == "produce" and name == "weight" and self.dim == 1:
                suffix = ".out"
            base = f"{mod}{suffix}" if name in ("weight", "bias", "running_mean", "running_var") \
                else f"{self.target}[{self.dim}]"
            return base + (f"x{self.per_unit}" if self.per_unit > 1 else "")
        return self.target


class Group:
    """A set of coupled channels that change together (one leaf of the space table)."""

    __slots__ = ("id", "space", "width", "frozen", "prune_notes", "grow_notes", "_cg")

    def __init__(self, gid: int, space: int, width: int, frozen: str | None, prune_notes: list[str],
                 grow_notes: list[str], cg: ChannelGraph | None = None) -> None:
        self.id = gid
        self.space = space
        self.width = width
        self.frozen = frozen
        self.prune_notes = prune_notes
        self.grow_notes = grow_notes
        self._cg = cg

    @property
    def members(self) -> list[Member]:
        """Every parameter dimension, attribute and graph constant that holds these channels."""
        return self._cg._members_of(self.space) if self._cg is not None else []

    def __repr__(self) -> str:
        return f"Group(id={self.id}, width={self.width}, {self.status()})"

    @property
    def resizable(self) -> bool:
        return self.frozen is None

    @property
    def prunable(self) -> bool:
        return self.frozen is None and self.width > 1

    @property
    def growable(self) -> bool:
        return self.frozen is None

    @property
    def kept_stats_exact(self) -> bool:
        """Removal changes only norm statistics: it is exact against kept-channel statistics."""
        return kept_stats_exact(self.prune_notes)

    def status(self) -> str:
        if self.frozen is not None:
            return f"frozen: {self.frozen}"
        parts = ["prunable" if self.prunable else "growable (width 1: not prunable)"]
        if self.prunable:
            parts.append("growable")
        return ", ".join(parts + note_parts(self.prune_notes, self.grow_notes))

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "width": self.width,
            "members": [m.label() for m in self.members],
            "prunable": self.prunable,
            "growable": self.growable,
            "frozen": self.frozen,
            "prune_exact": not self.prune_notes,
            "prune_exact_kept_stats": self.kept_stats_exact,
            "grow_exact": not self.grow_notes,
            "notes": list(dict.fromkeys(self.prune_notes + self.grow_notes)),
        }


class ChannelGraph:
    """A traced model with its channel analysis (see module docstring)."""

    def __init__(self, traced: Traced, analyzer: Analyzer, *, inplace: bool = False) -> None:
        self.traced = traced
        self.inplace = inplace
        self.an = analyzer
        self.graph: fx.Graph = traced.graph
        self.input_specs: list[TSpec] = traced.input_specs
        self._gm: fx.GraphModule | None = None
        self._build_groups()

    # ---- groups -----------------------------------------------------------------------------
    def _build_groups(self) -> None:
        # Every channel space starts at a parameter dimension or a graph constant (zero padding),
        # so the slots (created in graph order) give every group, in a stable order.
        t = self.an.t
        order: dict[int, None] = {}
        find, refined = t.find, t._refined
        for slot in self.an.slots.values():
            e = slot.expr
            if e[0] == "S":
                r = find(e[1])
                if r not in refined:
                    order[r] = None
                    continue
            elif e[0] == "F":
                continue
            for leaf in t.leaves(e):
                order[leaf] = None
        for c in self.an.const_slots:
            for e in layouts(c.expr):
                for leaf in t.leaves(e):
                    order[leaf] = None
        self._members: dict[int, list[Member]] | None = None
        self._slot_index: dict[int, list] | None = None
        self.groups: list[Group] = []
        self._by_space: dict[int, Group] = {}
        frozen, pn, gn, widths = t.frozen, t.prune_notes, t.grow_notes, t._width
        groups, by_space = self.groups, self._by_space
        for i, leaf in enumerate(order):
            g = Group(i, leaf, widths[leaf], frozen.get(leaf), list(pn.get(leaf, ())), list(gn.get(leaf, ())), self)
            groups.append(g)
            by_space[leaf] = g

    def _members_of(self, space: int) -> list[Member]:
        if self._members is None:
            self._members = self._index_members()
        return self._members.get(space, [])

    def _index_members(self) -> dict[int, list[Member]]:
        t = self.an.t
        members: dict[int, list[Member]] = {}
        for slot in self.an.slots.values():
            leaves = list(t.leaves(slot.expr))
            total = t.width(slot.expr)
            for leaf in dict.fromkeys(leaves):
                per = total // t.width(("S", leaf)) if len(set(leaves)) == 1 else 1
                members.setdefault(leaf, []).append(Member("param", slot.key, slot.role, slot.dim, per))
        for a in self.an.attr_slots:
            for e in layouts(a.expr):
                for leaf in dict.fromkeys(t.leaves(e)):
                    members.setdefault(leaf, []).append(Member("attr", f"{a.module}.{a.attr}", "attr"))
        for c in self.an.const_slots:
            for e in layouts(c.expr):
                for leaf in dict.fromkeys(t.leaves(e)):
                    members.setdefault(leaf, []).append(
                        Member("const", f"{c.node}:{'.'.join(map(str, c.path[1:]))}", "const"))
        return members

    def slots_of(self, space: int) -> list:
        """The parameter slots a group's space appears in (an index: most slots hold one group)."""
        if self._slot_index is None:
            index: dict[int, list] = {}
            for slot in self.an.slots.values():
                for leaf in dict.fromkeys(self.an.t.leaves(slot.expr)):
                    index.setdefault(leaf, []).append(slot)
            self._slot_index = index
        return self._slot_index.get(self.an.t.find(space), [])

    def invalidate(self) -> None:
        """Slots were added (a bias to fold into): indexes over them are rebuilt on next use."""
        self._members = None
        self._slot_index = None

    def dead_by_space(self, units: dict[int, Any]) -> dict[int, np.ndarray]:
        """``{group id: units}`` as ``{space: index array}`` (what ``SpaceTable.dropped`` takes)."""
        return {self.group(gid).space: np.asarray(list(us), dtype=np.int64) for gid, us in units.items()}

    def group(self, gid: int) -> Group:
        if not 0 <= gid < len(self.groups):
            raise IndexError(f"no group {gid}: this model has groups 0..{len(self.groups) - 1}")
        return self.groups[gid]

    def group_of_space(self, space: int) -> Group:
        return self._by_space[self.an.t.find(space)]

    def resizable_groups(self) -> list[Group]:
        return [g for g in self.groups if g.resizable]

    def refresh_groups(self) -> None:
        """Recompute group widths after surgery (ids and membership are unchanged)."""
        for g in self.groups:
            g.width = self.an.t.width(("S", g.space))
        self._members = None

    @property
    def unknown_ops(self) -> list[tuple[str, str, str]]:
        return self.an.unknown

    opaque_modules = property(lambda self: self.traced.opaque)

    # ---- the working module ---------------------------------------------------------------------------
    @property
    def module(self) -> fx.GraphModule:
        """The working ``fx.GraphModule``: its own copy of every parameter (or ``inplace``)."""
        if self._gm is None:
            self._gm = self._materialize()
        return self._gm

    @gc_paused
    def _materialize(self) -> fx.GraphModule:
        root = self.traced.root
        memo: dict[int, Any] = {}
        attrs: dict[str, Any] = {}
        for node in self.graph.nodes:
            if node.op == "call_module" and node.target not in attrs:
                mod = root.get_submodule(node.target)
                attrs[node.target] = mod if self.inplace else copy_module(mod, memo)
        for node in self.graph.nodes:
            if node.op == "get_attr" and node.target not in attrs:
                t = self.traced.tensors[node.target]
                attrs[node.target] = t if self.inplace else copy.deepcopy(t, memo)
        gm = fx.GraphModule(attrs, self.graph, class_name=type(root).__name__ + "Graph")
        gm.train(root.training)
        return gm

    def adopt(self, gm: fx.GraphModule) -> None:
        """Use ``gm`` (whose graph is this graph) as the working module."""
        self._gm = gm

    # ---- cost -------------------------------------------------------------------------------------------
    def param_count(self) -> int:
        if self._gm is not None:
            return sum(p.numel() for p in self._gm.parameters())
        seen: set[int] = set()
        total = 0
        for node in self.graph.nodes:
            if node.op == "call_module":
                for p in self.traced.root.get_submodule(node.target).parameters():
                    if id(p) not in seen:
                        seen.add(id(p))
                        total += p.numel()
            elif node.op == "get_attr" and self.traced.attr_kind.get(node.target) == "param":
                p = self.traced.tensors[node.target]
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
        return total

    def flops(self) -> int:
        return count_flops(self)

    # ---- export -----------------------------------------------------------------------------------------
    def to_networkx(self) -> nx.MultiDiGraph:
        """Ops and groups as one graph: data-flow edges between ops, membership edges from groups."""
        g = nx.MultiDiGraph()
        t = self.an.t
        for node in self.graph.nodes:
            shape = node.meta.get("shape")
            g.add_node(node.name, kind="op", op=node.op, target=describe_target(node) if node.op.startswith("call")
                       else str(node.target), shape=str(shape))
        for node in self.graph.nodes:
            for src in node.all_input_nodes:
                carried = sorted({self.group_of_space(leaf).id for ti in iter_tinfos(self.an.vals.get(src))
                                  for e in ti.exprs for leaf in t.leaves(e)})
                g.add_edge(src.name, node.name, kind="data", groups=",".join(map(str, carried)))
        for grp in self.groups:
            gname = f"group{grp.id}"
            g.add_node(gname, kind="group", width=grp.width, status=grp.status(),
                       frozen=grp.frozen or "", prunable=grp.prunable, growable=grp.growable)
            for m in grp.members:
                mod = m.target.rpartition(".")[0] if m.kind == "param" else m.target.split(":")[0]
                target = _node_for_target(self.graph, mod) or mod
                if target not in g:
                    g.add_node(target, kind="tensor")
                g.add_edge(gname, target, kind="member", role=m.role, label=m.label())
        return g

    def write_graphml(self, path: str) -> None:
        import io

        buf = io.BytesIO()
        nx.write_graphml(self.to_networkx(), buf)
        atomic_write_bytes(path, buf.getvalue())

    def output_shapes(self) -> list:
        return output_shapes(self.graph)

    def summary(self) -> dict[str, Any]:
        return {
            "inputs": [list(s.shape) for s in self.input_specs],
            "params": self.param_count(),
            "flops": self.flops(),
            "groups": [g.summary() for g in self.groups],
            "unknown_ops": [{"node": n, "op": op, "reason": r} for n, op, r in self.unknown_ops],
            "opaque_modules": dict(self.opaque_modules),
        }

    def __repr__(self) -> str:
        n = len(self.groups)
        r = sum(1 for g in self.groups if g.resizable)
        return f"ChannelGraph({len(self.graph.nodes)} nodes, {n} groups, {r} resizable)"


def output_shapes(graph: fx.Graph) -> list:
    """Shapes of the graph's outputs, in order (nested outputs flattened)."""
    out = next(n for n in graph.nodes if n.op == "output")
    return [n.meta.get("shape") for n in flat_nodes(out.args[0])]


def flat_nodes(a: Any) -> list[fx.Node]:
    """The nodes inside a nested argument, in order."""
    found: list[fx.Node] = []
    fx.node.map_arg(a, found.append)
    return found


def layouts(e: Any) -> tuple:
    """A slot's layout(s): one expression, or a tuple of them (split pieces, normalized_shape)."""
    return e if isinstance(e, tuple) and e and isinstance(e[0], tuple) else (e,)


def _node_for_target(graph: fx.Graph, target: str) -> str | None:
    return next((n.name for n in graph.nodes if n.op in ("call_module", "get_attr") and n.target == target), None)


# ---- entry point ----------------------------------------------------------------------------------------
def _specs(input_shape, example_inputs, input_dtype) -> list[TSpec]:
    if example_inputs is not None:
        if isinstance(example_inputs, torch.Tensor):
            example_inputs = (example_inputs,)
        return [TSpec(x.shape, x.dtype) for x in example_inputs]
    if input_shape is None:
        raise InputShapeError("no input shape: pass input_shape=(1, 3, 32, 32) (or --input-shape 1,3,32,32)")
    shapes = [input_shape] if input_shape and isinstance(input_shape[0], int) else list(input_shape)
    dtypes = input_dtype if isinstance(input_dtype, (list, tuple)) else [input_dtype] * len(shapes)
    out = []
    for s, d in zip(shapes, dtypes):
        s = tuple(int(k) for k in s)
        if not s or any(k <= 0 for k in s):
            raise InputShapeError(f"input shape {s} is invalid: every size must be a positive integer")
        out.append(TSpec(s, d))
    return out


@gc_paused
def trace(model: nn.Module, input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None, *,
          example_inputs: Any = None, input_dtype: torch.dtype | Sequence[torch.dtype] = torch.float32,
          leaf_modules: Sequence[Any] = (), inplace: bool = False) -> ChannelGraph:
    """Trace ``model`` on inputs of ``input_shape`` and find its channel groups.

    No FLOPs are run: shapes are computed by the op rules. ``leaf_modules`` (types or qualified
    names) are kept opaque; their channels freeze. ``.module`` copies every weight (``model`` is
    never changed) unless ``inplace=True``: then passes change ``model``'s own layers, as
    Torch-Pruning does, and save that copy. Raises :class:`TraceError` or :class:`InputShapeError`
    with a one-line message when the model cannot be traced.
    """
    if not isinstance(model, nn.Module):
        raise TraceError(f"expected a torch.nn.Module, got {type(model).__name__}")
    specs = _specs(input_shape, example_inputs, input_dtype)
    traced = trace_module(model, specs, leaf_modules)
    an = Analyzer(traced)
    an.run()
    return ChannelGraph(traced, an, inplace=inplace)


__all__ = ["ChannelGraph", "Group", "Member", "trace", "Expr"]
