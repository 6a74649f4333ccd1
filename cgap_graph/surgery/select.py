"""``apply_selection``: the one surgery primitive (see the package docstring)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from cgap_graph.errors import SurgeryError
from cgap_graph.ir.analysis import Slot
from cgap_graph.ir.gc_pause import gc_paused
from cgap_graph.ir.graph import ChannelGraph, layouts
from cgap_graph.ir.values import SizeV, TInfo
from cgap_graph.surgery.constants import apply_const
from cgap_graph.surgery.initializers import make_initializer
from cgap_graph.surgery.tensors import get_tensor, put_tensor, restore_tensor
from cgap_graph.surgery.types import Initializer, SlotChange, SurgeryContext, SurgeryReport
from cgap_graph.surgery.validate import validate as validate_graph


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


@gc_paused
def apply_selection(cg: ChannelGraph, selections: Mapping[int, Sequence[int]],
                    init: str | Initializer = "preserve", *, validate: bool = True,
                    rng: torch.Generator | None = None, **options: Any) -> SurgeryReport:
    """Remove, duplicate or reorder channels of groups, in place on ``cg.module``.

    ``selections`` maps group id to a selection vector over the group's current channels.
    Returns what changed; raises :class:`SurgeryError` (and leaves the model as it was) if a
    group is frozen, an index is out of range, or the result does not validate.
    """
    initializer = make_initializer(init)
    gm = cg.module
    widths_before = {g.id: g.width for g in cg.groups}
    sel, counts = _selections(cg, selections)
    params_before = sum(p.numel() for p in gm.parameters())
    if not sel:
        return SurgeryReport(widths_before, dict(widths_before), params_before, params_before, [])
    ctx = SurgeryContext(cg, sel, counts, rng, dict(options))
    new_tensors, index_maps, new_masks = _new_tensors(cg, ctx, initializer)
    old_params = {key: get_tensor(gm, key) for key in new_tensors}
    undo: list[Callable[[], None]] = []
    try:
        _apply(cg, sel, new_tensors, undo)
        if validate:
            validate_graph(cg)
    except Exception as exc:
        for u in reversed(undo):
            u()
        _sync(cg)  # derived state follows the restored widths
        if isinstance(exc, SurgeryError):
            raise
        # a trace error of the resized model (a constant not rewritten) is a failed edit, too
        raise SurgeryError(f"the resized model does not validate: {str(exc).splitlines()[0]}") from exc
    return SurgeryReport(widths_before, {g.id: g.width for g in cg.groups}, params_before,
                         sum(p.numel() for p in gm.parameters()), sorted(new_tensors), index_maps, new_masks,
                         old_params, {key: get_tensor(gm, key) for key in new_tensors})


def _selections(cg: ChannelGraph, selections: Mapping[int, Sequence[int]]):
    """Selection vectors by space, and each old unit's multiplicity (identities dropped)."""
    sel: dict[int, np.ndarray] = {}
    counts: dict[int, np.ndarray] = {}
    for gid, idx in selections.items():
        arr = _check_selection(cg, gid, idx)
        g = cg.group(gid)
        if len(arr) == g.width and np.array_equal(arr, np.arange(g.width)):
            continue
        sel[g.space] = arr
        counts[g.space] = np.bincount(arr, minlength=g.width).astype(np.float64)
    return sel, counts


def _new_tensors(cg: ChannelGraph, ctx: SurgeryContext, initializer: Initializer):
    """Every touched parameter, index-selected and initialised (computed before anything changes)."""
    an, t, gm = cg.an, cg.an.t, cg.module
    touched = set(ctx.sel)
    by_key: dict[str, list[Slot]] = {}
    for slot in an.slots.values():
        by_key.setdefault(slot.key, []).append(slot)
    new_tensors: dict[str, torch.Tensor] = {}
    index_maps: dict[str, dict[int, np.ndarray]] = {}
    new_masks: dict[str, dict[int, np.ndarray]] = {}
    scratch: list[torch.Tensor] = []
    # a few dozen layouts serve hundreds of slots (a norm's four tensors, a conv's weight and
    # bias): each one's index map is worked out once per edit (shared: never written)
    hits: dict[int, bool] = {}
    maps: dict[tuple[int, int], tuple | None] = {}
    for key, slots in by_key.items():
        hit = [s for s in slots if _touches(t, s.expr, touched, hits)]
        if not hit:
            continue
        old = get_tensor(gm, key)
        index, new_mask, picked = {}, {}, {}
        for s in hit:
            size = old.shape[s.dim]
            got = maps.get((id(s.expr), size), _UNSEEN)
            if got is _UNSEEN:
                got = maps[id(s.expr), size] = _index_map(t.positions(s.expr, ctx.sel), size)
            if got is not None:
                index[s.dim], new_mask[s.dim], picked[s.dim] = got
        change = SlotChange(key, hit, old, _gather(old.detach(), index, scratch), index, new_mask, picked)
        new_tensors[key] = initializer(change, ctx).contiguous()
        index_maps[key], new_masks[key] = index, new_mask
    return new_tensors, index_maps, new_masks


_UNSEEN = object()


def _touches(t, expr, touched: set, hits: dict[int, bool]) -> bool:
    got = hits.get(id(expr))
    if got is None:
        got = hits[id(expr)] = bool(touched & set(t.leaves(expr)))
    return got


def _index_map(idx: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(source positions, which outputs are new copies, which outputs have copies) for one
    layout, or None where the selection leaves it as it is."""
    if len(idx) == size and np.array_equal(idx, np.arange(len(idx))):
        return None
    if len(idx) <= 1 or bool((idx[1:] > idx[:-1]).all()):  # a removal: no copies
        new_mask = np.zeros(len(idx), dtype=bool)
    else:
        first = np.zeros(len(idx), dtype=bool)
        first[np.unique(idx, return_index=True)[1]] = True
        new_mask = ~first
    picked = np.bincount(idx, minlength=size)[idx] > 1
    # a copy: it may be the caller's selection vector itself. Not flagged read-only although it is
    # shared: torch warns on every read-only array it wraps (the optimizer carry-over wraps these)
    return idx.copy(), new_mask, picked


def _gather(w: torch.Tensor, index: dict[int, np.ndarray], scratch: list[torch.Tensor]) -> torch.Tensor:
    """``w`` index-selected along every dimension in ``index`` (chained ``index_select`` is
    faster on CPU than one advanced-indexing gather). The steps before the last write into one
    reused buffer (``scratch[0]``, grown as needed): fresh memory costs more than the copy."""
    dims = sorted(index)
    for i, d in enumerate(dims):
        idx = torch.as_tensor(index[d], device=w.device)
        if i == len(dims) - 1:
            return w.index_select(d, idx)
        shape = list(w.shape)
        shape[d] = len(idx)
        n = math.prod(shape)
        if not scratch or scratch[0].numel() < n or scratch[0].dtype != w.dtype or scratch[0].device != w.device:
            scratch[:] = [torch.empty(max(n, scratch[0].numel() if scratch else 0), dtype=w.dtype, device=w.device)]
        w = torch.index_select(w, d, idx, out=scratch[0][:n].view(shape))
    return w


def _apply(cg: ChannelGraph, sel: dict[int, np.ndarray], new_tensors: dict[str, torch.Tensor], undo: list) -> None:
    """Tensors, widths, module attributes and graph constants, each change with its undo."""
    an, t, gm = cg.an, cg.an.t, cg.module
    touched = set(sel)
    for key, value in new_tensors.items():
        old = get_tensor(gm, key)
        undo.append(lambda k=key, o=old: restore_tensor(gm, k, o))
        put_tensor(gm, key, value)
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
    before = len(undo)
    for c in an.const_slots:
        apply_const(c, nodes[c.node], t, touched, undo)
    _sync(cg, recompile=len(undo) > before)


def _sync(cg: ChannelGraph, recompile: bool = True) -> None:
    """Shapes on the graph, group widths and the module's code follow the widths. The code
    changes only where a graph constant was rewritten (``apply_const``): without one, the
    generated code is the same and regenerating it (a third of a small model's edit) is skipped."""
    refresh_shapes(cg)
    cg.refresh_groups()
    if recompile:
        cg.module.recompile()


def refresh_shapes(cg: ChannelGraph) -> None:
    """Every node's ``meta['shape']`` (and size values) from the channel analysis's widths."""
    t = cg.an.t
    for node, val in cg.an.vals.items():
        if isinstance(val, TInfo):
            node.meta["shape"] = tuple(t.width(e) for e in val.exprs)
        elif isinstance(val, tuple) and val and all(isinstance(v, TInfo) or v is None for v in val):
            node.meta["shape"] = tuple(tuple(t.width(e) for e in v.exprs) if isinstance(v, TInfo) else None
                                       for v in val)
        elif isinstance(val, SizeV) and node.op == "call_method" and node.target == "size" and len(val.exprs) == 1:
            node.meta["value"] = t.width(val.exprs[0])
