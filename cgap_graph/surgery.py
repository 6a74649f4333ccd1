"""The one surgery primitive: apply selection vectors to channel groups.

A selection vector over a group's current channels says what the group becomes: ``[0, 2, 3]``
removes channel 1, ``[0, 1, 2, 3, 1, 3]`` duplicates channels 1 and 3, a permutation reorders.
Every member of the group follows: each parameter/buffer dimension is ``index_select``-ed
through its index map (a channel of a flattened conv output is ``H*W`` consecutive features; a
concat slot adds its offset), module attributes and graph constants are recomputed from the
new widths, and shapes on the graph are updated in place, so the channel graph stays true
without re-analysis.

New copies are initialised by an *initialiser*. ``preserve`` (Net2WiderNet) copies producer
rows and statistics and splits consumer columns between the copies, so outputs are unchanged;
other initialisers (the paper's Eq. 5-10, random) live in ``passes/grow.py``.

The result is validated by tracing the new module again (shape rules only, no FLOPs); on any
failure every change is rolled back and :class:`SurgeryError` names the problem.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from cgap_graph.errors import CgapError, SurgeryError
from cgap_graph.ir.analysis import ConstSlot, Slot
from cgap_graph.ir.graph import ChannelGraph, layouts
from cgap_graph.ir.tracer import trace_module
from cgap_graph.ir.values import SizeV, TInfo


@dataclass
class SlotChange:
    """What happens to one parameter/buffer: handed to initialisers for new units."""

    key: str
    slots: list[Slot]
    old: torch.Tensor
    new: torch.Tensor
    index: dict[int, np.ndarray]  # dim -> source positions
    new_mask: dict[int, np.ndarray]  # dim -> True where the position is an added copy
    picked_mask: dict[int, np.ndarray]  # dim -> True where the position's unit was duplicated


Initializer = Callable[[SlotChange, "SurgeryContext"], torch.Tensor]


@dataclass
class SurgeryContext:
    cg: ChannelGraph
    sel: dict[int, np.ndarray]  # leaf rep -> selection vector
    counts: dict[int, np.ndarray]  # leaf rep -> multiplicity of each old unit in the selection
    rng: torch.Generator | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SurgeryReport:
    widths_before: dict[int, int]
    widths_after: dict[int, int]
    params_before: int
    params_after: int
    changed: list[str]
    # per changed parameter: dim -> source positions, and dim -> True where a position is a new copy
    index: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    new_mask: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    old_params: dict[str, torch.Tensor] = field(default_factory=dict)


# ---- initialisers ---------------------------------------------------------------------------------
def preserve_init(change: SlotChange, ctx: SurgeryContext) -> torch.Tensor:
    """Function-preserving split: copies stay copies; consumer columns (and the split side of a
    bilinear product) are divided by the number of copies of their unit."""
    t = ctx.cg.an.t
    out = change.new
    for slot in change.slots:
        if slot.role == "consume":
            split = None
        elif slot.role == "produce" and slot.split:
            split = slot.split
        else:
            continue
        f = t.scales(slot.expr, ctx.sel, ctx.counts, split)
        if np.all(f == 1.0):
            continue
        shape = [1] * out.dim()
        shape[slot.dim] = -1
        out = out * torch.as_tensor(f, dtype=out.dtype, device=out.device).view(shape)
    return out


INITIALIZERS: dict[str, Initializer] = {"preserve": preserve_init}


# ---- argument paths in fx nodes --------------------------------------------------------------------
def get_arg(node: fx.Node, path: tuple) -> Any:
    where, *rest = path
    cur: Any = node.args if where == "args" else node.kwargs
    for k in rest:
        if isinstance(cur, slice):
            cur = getattr(cur, k)
        elif isinstance(cur, dict):
            cur = cur.get(k)
        else:
            cur = cur[k]
    return cur


def _set_in(container: Any, path: list, value: Any) -> Any:
    k, *rest = path
    if isinstance(container, slice):
        parts = {"start": container.start, "stop": container.stop, "step": container.step}
        parts[k] = value if not rest else _set_in(parts[k], rest, value)
        return slice(parts["start"], parts["stop"], parts["step"])
    if isinstance(container, dict):
        c = dict(container)
        c[k] = value if not rest else _set_in(c[k], rest, value)
        return c
    c = list(container)
    c[k] = value if not rest else _set_in(c[k], rest, value)
    return tuple(c) if isinstance(container, tuple) else c


def set_arg(node: fx.Node, path: tuple, value: Any) -> None:
    where, *rest = path
    if where == "args":
        node.args = _set_in(node.args, rest, value)
    else:
        node.kwargs = _set_in(node.kwargs, rest, value)


# ---- the primitive ---------------------------------------------------------------------------------
def _owner(gm: nn.Module, key: str) -> tuple[nn.Module, str]:
    mod_path, _, name = key.rpartition(".")
    return (gm.get_submodule(mod_path) if mod_path else gm), name


def _get_tensor(gm: nn.Module, key: str) -> torch.Tensor:
    mod, name = _owner(gm, key)
    return getattr(mod, name)


def _put_tensor(gm: nn.Module, key: str, value: torch.Tensor) -> None:
    mod, name = _owner(gm, key)
    if name in mod._parameters:
        old = mod._parameters[name]
        mod._parameters[name] = nn.Parameter(value, requires_grad=old.requires_grad if old is not None else True)
    elif name in mod._buffers:
        mod._buffers[name] = value
    else:
        setattr(mod, name, value)


def _restore_tensor(gm: nn.Module, key: str, obj: torch.Tensor) -> None:
    mod, name = _owner(gm, key)
    if name in mod._parameters:
        mod._parameters[name] = obj
    elif name in mod._buffers:
        mod._buffers[name] = obj
    else:
        setattr(mod, name, obj)


def _check_selection(cg: ChannelGraph, gid: int, idx: Sequence[int]) -> np.ndarray:
    g = cg.group(gid)
    if g.frozen is not None:
        raise SurgeryError(f"group {gid} is frozen ({g.frozen}); it cannot be resized")
    arr = np.asarray(list(idx), dtype=np.int64)
    if arr.ndim != 1 or arr.size == 0:
        raise SurgeryError(f"group {gid}: the selection is empty; keep at least one channel")
    if arr.min() < 0 or arr.max() >= g.width:
        raise SurgeryError(f"group {gid}: channel indices must be in 0..{g.width - 1}, got "
                           f"{int(arr.min())}..{int(arr.max())}")
    return arr


def apply_selection(cg: ChannelGraph, selections: Mapping[int, Sequence[int]],
                    init: str | Initializer = "preserve", *, validate: bool = True,
                    rng: torch.Generator | None = None, **options: Any) -> SurgeryReport:
    """Remove, duplicate or reorder channels of groups, in place on ``cg.module``.

    ``selections`` maps group id to a selection vector over the group's current channels.
    Returns what changed; raises :class:`SurgeryError` (and leaves the model as it was) if a
    group is frozen, an index is out of range, or the result does not validate.
    """
    an, t = cg.an, cg.an.t
    if isinstance(init, str) and init not in INITIALIZERS:
        raise SurgeryError(f"unknown initialiser '{init}'; choose one of {', '.join(sorted(INITIALIZERS))}")
    gm = cg.module
    initializer = INITIALIZERS[init] if isinstance(init, str) else init
    sel: dict[int, np.ndarray] = {}
    counts: dict[int, np.ndarray] = {}
    widths_before = {g.id: g.width for g in cg.groups}
    for gid, idx in selections.items():
        arr = _check_selection(cg, gid, idx)
        g = cg.group(gid)
        if len(arr) == g.width and np.array_equal(arr, np.arange(g.width)):
            continue
        sel[g.space] = arr
        counts[g.space] = np.bincount(arr, minlength=g.width).astype(np.float64)
    params_before = sum(p.numel() for p in gm.parameters())
    if not sel:
        return SurgeryReport(widths_before, dict(widths_before), params_before, params_before, [])
    ctx = SurgeryContext(cg, sel, counts, rng, dict(options))
    touched = set(sel)

    # 1. new tensors (computed before anything changes)
    by_key: dict[str, list[Slot]] = {}
    for slot in an.slots.values():
        by_key.setdefault(slot.key, []).append(slot)
    new_tensors: dict[str, torch.Tensor] = {}
    index_maps: dict[str, dict[int, np.ndarray]] = {}
    new_masks: dict[str, dict[int, np.ndarray]] = {}
    for key, slots in by_key.items():
        hit = [s for s in slots if touched & set(t.leaves(s.expr))]
        if not hit:
            continue
        old = _get_tensor(gm, key)
        new = old.detach()
        index, new_mask, picked = {}, {}, {}
        for s in hit:
            idx = t.positions(s.expr, sel)
            if len(idx) == new.shape[s.dim] and np.array_equal(idx, np.arange(len(idx))):
                continue
            index[s.dim] = idx
            new = new.index_select(s.dim, torch.as_tensor(idx, device=new.device))
            seen = np.zeros(old.shape[s.dim], dtype=bool)
            first = np.zeros(len(idx), dtype=bool)
            for i, p in enumerate(idx):
                if not seen[p]:
                    seen[p] = True
                    first[i] = True
            new_mask[s.dim] = ~first
            mult = np.bincount(idx, minlength=old.shape[s.dim])
            picked[s.dim] = mult[idx] > 1
        change = SlotChange(key, hit, old, new, index, new_mask, picked)
        new_tensors[key] = initializer(change, ctx).contiguous()
        index_maps[key], new_masks[key] = index, new_mask

    # 2. apply, remembering how to undo
    old_params = {key: _get_tensor(gm, key) for key in new_tensors}
    undo: list[Callable[[], None]] = []
    try:
        for key, value in new_tensors.items():
            old = _get_tensor(gm, key)
            undo.append(lambda k=key, o=old: _restore_tensor(gm, k, o))
            _put_tensor(gm, key, value)
        old_widths = {rep: t.width(("S", rep)) for rep in sel}
        undo.append(lambda w=old_widths: [t.set_width(r, n) for r, n in w.items()])
        for rep, arr in sel.items():
            t.set_width(rep, len(arr))
        for a in an.attr_slots:
            parts = layouts(a.expr)
            tuple_valued = parts is a.expr  # e.g. normalized_shape: one width per dimension
            leaves = set()
            for e in parts:
                leaves |= set(t.leaves(e))
            if not touched & leaves:
                continue
            mod = gm.get_submodule(a.module)
            value = tuple(t.width(e) for e in parts) if tuple_valued else t.width(a.expr) * a.scale
            old_v = getattr(mod, a.attr)
            undo.append(lambda m=mod, n=a.attr, o=old_v: setattr(m, n, o))
            setattr(mod, a.attr, type(old_v)(value) if isinstance(old_v, (tuple, list)) else value)
        nodes = {n.name: n for n in cg.graph.nodes}
        for c in an.const_slots:
            _apply_const(c, nodes[c.node], t, touched, undo)
        _refresh_shapes(cg)
        cg.refresh_groups()
        gm.recompile()
        if validate:
            _validate(cg)
    except Exception as exc:
        for u in reversed(undo):
            u()
        _refresh_shapes(cg)  # derived state follows the restored widths
        cg.refresh_groups()
        gm.recompile()
        if isinstance(exc, CgapError):
            raise
        raise SurgeryError(f"the resized model does not validate: {str(exc).splitlines()[0]}") from exc
    return SurgeryReport(widths_before, {g.id: g.width for g in cg.groups}, params_before,
                         sum(p.numel() for p in gm.parameters()), sorted(new_tensors), index_maps, new_masks,
                         old_params)


def _apply_const(c: ConstSlot, node: fx.Node, t, touched: set, undo: list) -> None:
    exprs = layouts(c.expr)
    leaves = set()
    for e in exprs:
        leaves |= set(t.leaves(e))
    if not touched & leaves:
        return
    old_args, old_kwargs, old_target = node.args, node.kwargs, node.target

    def restore(n=node, a=old_args, k=old_kwargs, tg=old_target):
        n.args, n.kwargs, n.target = a, k, tg

    undo.append(restore)
    if c.mode == "width":
        set_arg(node, c.path, t.width(c.expr))
    elif c.mode == "neg_width":
        set_arg(node, c.path, -t.width(c.expr))
    elif c.mode == "infer":
        set_arg(node, c.path, -1)
    elif c.mode == "sdpa_scale":
        set_arg(node, c.path, c.extra)
    elif c.mode == "sections":
        set_arg(node, c.path, [t.width(e) for e in exprs])
    elif c.mode == "chunk":
        set_arg(node, c.path, [t.width(e) for e in exprs])
        if node.op == "call_method":
            node.target = "split"
        else:
            node.target = torch.split
    else:
        raise SurgeryError(f"unknown constant kind {c.mode}")


def _refresh_shapes(cg: ChannelGraph) -> None:
    t = cg.an.t
    for node, val in cg.an.vals.items():
        if isinstance(val, TInfo):
            node.meta["shape"] = tuple(t.width(e) for e in val.exprs)
        elif isinstance(val, tuple) and val and all(isinstance(v, TInfo) or v is None for v in val):
            node.meta["shape"] = tuple(tuple(t.width(e) for e in v.exprs) if isinstance(v, TInfo) else None
                                       for v in val)
        elif isinstance(val, SizeV) and node.op == "call_method" and node.target == "size" and len(val.exprs) == 1:
            node.meta["value"] = t.width(val.exprs[0])


def _validate(cg: ChannelGraph) -> None:
    """Trace the resized module (shape rules only) and compare every shape with the graph's."""
    gm = cg.module
    traced = trace_module(gm, cg.input_specs)
    expected = [n.meta.get("shape") for n in cg.graph.nodes if n.op == "output"]
    got = [n.meta.get("shape") for n in traced.graph.nodes if n.op == "output"]
    out_old = _output_shapes(cg.graph)
    out_new = _output_shapes(traced.graph)
    if out_old != out_new:
        raise SurgeryError(f"output shapes changed from {out_old} to {out_new}")
    del expected, got


def _output_shapes(graph: fx.Graph) -> list:
    out = next(n for n in graph.nodes if n.op == "output")
    shapes: list = []

    def walk(a):
        if isinstance(a, fx.Node):
            shapes.append(a.meta.get("shape"))
        elif isinstance(a, (tuple, list)):
            for x in a:
                walk(x)
        elif isinstance(a, dict):
            for x in a.values():
                walk(x)
    walk(out.args[0])
    return shapes


# ---- masking ------------------------------------------------------------------------------------------
def unit_norms(cg: ChannelGraph, gid: int, roles: tuple[str, ...] = ("produce",)) -> np.ndarray:
    """Sum of |values| of each unit of a group over its members with the given roles."""
    an, t = cg.an, cg.an.t
    g = cg.group(gid)
    gm = cg.module
    total = np.zeros(g.width)
    for slot in an.slots.values():
        if slot.role not in roles:
            continue
        ids = t.unit_ids(slot.expr, g.space)
        if (ids < 0).all():
            continue
        w = _get_tensor(gm, slot.key).detach()
        per_pos = w.abs().transpose(0, slot.dim).reshape(w.shape[slot.dim], -1).sum(1).double().cpu().numpy()
        mask = ids >= 0
        np.add.at(total, ids[mask], per_pos[mask])
    return total


@torch.no_grad()
def mask_channels(cg: ChannelGraph, masks: Mapping[int, Sequence[int]]) -> None:
    """Zero the given channels across their whole group (producer rows, biases, norm affine
    parameters): the *masked* twin of removing them."""
    an, t = cg.an, cg.an.t
    gm = cg.module
    for gid, chans in masks.items():
        g = cg.group(gid)
        chans = np.asarray(list(chans), dtype=np.int64)
        if chans.size == 0:
            continue
        for slot in an.slots.values():
            if slot.role != "produce":
                continue
            ids = t.unit_ids(slot.expr, g.space)
            pos = np.nonzero(np.isin(ids, chans))[0]
            if pos.size == 0:
                continue
            w = _get_tensor(gm, slot.key)
            w.index_fill_(slot.dim, torch.as_tensor(pos, device=w.device), 0.0)
