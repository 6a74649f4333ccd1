"""Pruning pass (Algorithm 3) and direct unit pruning, ending in a physically smaller model.

Algorithm 3: in every layer (weight tensor), the ``gamma_W`` fraction of weights with the lowest
score (Eq. 11/12) is zeroed; then every unit (filter, or neuron) whose weights are more than
``gamma_F`` (``gamma_N``) sparse is removed across its whole group. A unit's sparsity counts the
same weights its saliency does (a filter's rows in every producing layer, a neuron's fan-out
columns; see ``saliency.py``). ``prune_units`` removes the lowest-scoring fraction of each group
instead, for a target width.

Removing a unit whose filter weights are zero is not always free: its bias and BatchNorm shift
still produce a constant that the next layers read. Where the reader is a Linear layer or an
unpadded convolution that constant is folded exactly into the reader's bias (a bias is added if
there was none) before the unit goes; readers where a constant cannot be folded exactly (a
padded convolution sees it only inside the image) are reported. The result: the model after
``prune`` equals the model with the removed filters zeroed, up to the reported readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from cgap_graph.ir.gc_pause import gc_paused
from cgap_graph.ir.graph import ChannelGraph
from cgap_graph.passes.cgap.fold import fold_constants
from cgap_graph.passes.cgap.grow import check_rates
from cgap_graph.passes.cgap.saliency import Saliency, unit_weights, weight_slots
from cgap_graph.passes.cgap.widths import check_round_to, rounded_keep
from cgap_graph.surgery import SurgeryReport, apply_each, apply_selection, get_tensor, mask_channels
from cgap_graph.surgery.masking import dropped_positions


@dataclass
class PruneReport:
    surgery: SurgeryReport | None
    weights_zeroed: int = 0
    weights_total: int = 0
    removed: dict[int, list[int]] = field(default_factory=dict)
    folded: list[str] = field(default_factory=list)
    not_folded: list[str] = field(default_factory=list)
    inexact: list[str] = field(default_factory=list)  # groups whose removal changes cross-channel statistics
    # groups whose removal did not validate: their units stay in the model, zeroed (the masked model)
    skipped: dict[int, str] = field(default_factory=dict)


def layer_rate(key: str, rate: float, layer_rates: dict[str, float] | None) -> float:
    """The rate for a weight tensor: its layer's entry in ``layer_rates`` (module path), else ``rate``."""
    if layer_rates:
        mod = key.rpartition(".")[0]
        if mod in layer_rates:
            return float(layer_rates[mod])
    return rate


@torch.no_grad()
def zero_weights(cg: ChannelGraph, sal: Saliency, rate: float,
                 layer_rates: dict[str, float] | None = None) -> tuple[int, int]:
    """Zero the lowest-scoring fraction of weights in every weight tensor (Alg. 3, l. 1-5): ``rate``,
    or the layer's own rate from ``layer_rates`` (the paper follows per-layer rates for LeNet-5)."""
    gm = cg.module
    zeroed = total = 0
    for key in sorted({s.key for s in weight_slots(cg)}):
        w = get_tensor(gm, key)
        score = sal.weights[key].to(w.device)
        k = int(layer_rate(key, rate, layer_rates) * w.numel())
        total += w.numel()
        if k == 0:
            continue
        idx = torch.topk(score.flatten(), k, largest=False).indices
        w.view(-1)[idx] = 0.0
        zeroed += k
    return zeroed, total


def unit_sparsity(cg: ChannelGraph, gid: int) -> np.ndarray:
    """Fraction of zero weights of each unit, over the weights its saliency counts."""
    g = cg.group(gid)
    gm = cg.module
    zeros, counts = np.zeros(g.width), np.zeros(g.width)
    for s, ids in unit_weights(cg, gid):
        w = get_tensor(gm, s.key).detach()
        flat = w.transpose(0, s.dim).reshape(w.shape[s.dim], -1)
        z = (flat == 0).sum(1).double().cpu().numpy()
        n = np.full(len(z), flat.shape[1], dtype=np.float64)
        mask = ids >= 0
        np.add.at(zeros, ids[mask], z[mask])
        np.add.at(counts, ids[mask], n[mask])
    return np.divide(zeros, counts, out=np.zeros_like(zeros), where=counts > 0)


@gc_paused
def prune(cg: ChannelGraph, sal: Saliency, weight_rate: float = 0.5, unit_rate: float | None = 0.5, *,
          fold: bool = True, shrink: bool = True, layer_rates: dict[str, float] | None = None,
          target_params: int | None = None, zero_survivors: bool = True, round_to: int = 1) -> PruneReport:
    """Algorithm 3 (see module docstring), in place on ``cg.module``. With ``layer_rates`` and
    ``unit_rate=None``, each unit's threshold is the rate of the layers its sparsity counts
    (gamma_F = gamma_W per layer, as in the paper). With ``target_params``, the units over their
    threshold go sparsest first and no further than the model needs to fit that budget. With
    ``zero_survivors=False`` the zeroed weights only choose the units to remove: the units that
    stay get their weights back. ``round_to``: each group keeps a multiple of that many units
    (the sparsest candidates go first)."""
    check_rates(weight_rate=weight_rate, **({"unit_rate": unit_rate} if unit_rate is not None else {}))
    round_to = check_round_to(round_to)
    saved = None if zero_survivors else {k: get_tensor(cg.module, k).detach().clone()
                                         for k in {s.key for s in weight_slots(cg)}}
    zeroed, total = zero_weights(cg, sal, weight_rate, layer_rates)
    dead = sparse_units(cg, unit_rate, weight_rate, layer_rates, with_sparsity=True)
    if target_params is not None:
        dead = _within_budget(cg, dead, target_params)
    else:
        dead = {gid: [u for u, _ in items] for gid, items in dead.items()}
    if round_to > 1:
        dead = _rounded(cg, dead, round_to)
    if saved is not None:
        with torch.no_grad():
            for k, w in saved.items():
                get_tensor(cg.module, k).copy_(w)
    report = remove_units(cg, dead, fold=fold, shrink=shrink)
    report.weights_zeroed, report.weights_total = zeroed, total
    return report


def sparse_units(cg: ChannelGraph, unit_rate: float | None, weight_rate: float | None = None,
                 layer_rates: dict[str, float] | None = None, with_sparsity: bool = False) -> dict:
    """Units more sparse than their threshold, per prunable group (Alg. 3, l. 6-8); each group
    keeps at least one unit. The threshold is ``unit_rate``, or (``None``) the mean weight rate of
    the layers the unit's sparsity counts."""
    dead: dict[int, list[int]] = {}
    for g in cg.groups:
        if not g.prunable:
            continue
        sp = unit_sparsity(cg, g.id)
        if unit_rate is None:
            rates = [layer_rate(s.key, weight_rate, layer_rates) for s, _ in unit_weights(cg, g.id)]
            threshold = float(np.mean(rates)) if rates else weight_rate
        else:
            threshold = unit_rate
        if threshold <= 0:  # a layer rate of 0: its units are left alone
            continue
        units = [int(u) for u in np.nonzero(sp > threshold)[0]]
        if len(units) >= g.width:  # keep the least sparse unit
            units.remove(int(np.argmin(sp)))
        if units:
            dead[g.id] = [(u, float(sp[u])) for u in units] if with_sparsity else units
    return dead


def _rounded(cg: ChannelGraph, dead: dict[int, list[int]], n: int) -> dict[int, list[int]]:
    """Fewer (or more) removals so every group keeps a multiple of ``n`` units: the sparsest
    units go first."""
    out = {}
    for g in cg.groups:
        if not g.prunable:
            continue
        units = dead.get(g.id, [])
        keep = rounded_keep(g.width, g.width - len(units), n)
        k = g.width - keep
        if k <= 0:
            continue
        sp = unit_sparsity(cg, g.id)
        order = sorted(range(g.width), key=lambda u: (u not in units, -sp[u]))
        out[g.id] = sorted(order[:k])
    return out


def unit_params(cg: ChannelGraph, gid: int) -> float:
    """Parameters one unit of a group holds across all its members (rows, columns, norms ...)."""
    t = cg.an.t
    g = cg.group(gid)
    total = 0.0
    for s in cg.an.slots.values():
        ids = t.unit_ids(s.expr, g.space)
        per_unit = int((ids >= 0).sum()) / max(1, g.width)
        if per_unit == 0 or cg.traced.attr_kind.get(s.key, "param") != "param":
            continue
        w = get_tensor(cg.module, s.key)
        total += per_unit * (w.numel() / w.shape[s.dim])
    return total


def _within_budget(cg: ChannelGraph, candidates: dict, target: int) -> dict[int, list[int]]:
    """Take candidate units sparsest first while the model is above ``target`` parameters."""
    params = cg.param_count()
    order = sorted(((sp, gid, u) for gid, items in candidates.items() for u, sp in items), reverse=True)
    cost = {gid: unit_params(cg, gid) for gid in candidates}
    chosen: dict[int, list[int]] = {}
    for _sp, gid, u in order:
        if params <= target:
            break
        chosen.setdefault(gid, []).append(u)
        params -= cost[gid]
    return {gid: sorted(us) for gid, us in chosen.items()}


def prune_units(cg: ChannelGraph, sal: Saliency, rate: float, *, fold: bool = True, round_to: int = 1
                ) -> PruneReport:
    """Remove the ``rate`` fraction of lowest-scoring units of every prunable group (keeping a
    multiple of ``round_to`` units, see ``widths.py``)."""
    check_rates(unit_rate=rate)
    round_to = check_round_to(round_to)
    dead = {}
    for g in cg.groups:
        if not g.prunable or g.id not in sal.units:
            continue
        k = g.width - rounded_keep(g.width, g.width - min(int(round(rate * g.width)), g.width - 1), round_to)
        if k > 0:
            dead[g.id] = sorted(int(u) for u in np.argsort(sal.units[g.id], kind="stable")[:k])
    return remove_units(cg, dead, fold=fold)


@gc_paused
def remove_units(cg: ChannelGraph, dead: dict[int, list[int]], *, fold: bool = True, shrink: bool = True
                 ) -> PruneReport:
    """Zero the units' filters, fold their constant outputs into readers, zero them across their
    groups (the masked model, ``shrink=False``), or remove them (the shrunk model, equal to the
    masked one; the zeroing is skipped there, as the rows go). A group whose removal does not
    validate is skipped and named in ``report.skipped`` (its units stay, zeroed and masked); it
    never costs the other groups their pruning."""
    report = PruneReport(None, removed=dead)
    for gid in dead:
        notes = cg.group(gid).prune_notes
        if notes:
            report.inexact.append(f"group {gid}: {notes[0]}")
    if not dead:
        report.surgery = apply_selection(cg, {})
        return report
    # Shrinking removes the units' filters and channels, so they are zeroed only where they stay:
    # in the groups whose removal does not validate, and before a probe forward that reads them.
    zeroed = zero_filters(cg, dead, write=not shrink)
    if fold:
        fold_constants(cg, dead, report, zeroed, before_probe=lambda: zero_filters(cg, dead))
    if not shrink:
        mask_channels(cg, dead)
        return report
    keep = {gid: _complement(cg.group(gid).width, units) for gid, units in dead.items()}
    report.surgery, report.skipped = apply_each(cg, keep)
    left = {gid: dead[gid] for gid in report.skipped}
    if left:  # zeroed and masked, so the model is the masked one there
        zero_filters(cg, left)
        mask_channels(cg, left)
    for gid in report.skipped:
        report.removed.pop(gid, None)
    return report


def _complement(width: int, units) -> np.ndarray:
    keep = np.ones(width, dtype=bool)
    keep[np.asarray(list(units), dtype=np.int64)] = False
    return np.flatnonzero(keep)


@torch.no_grad()
def zero_filters(cg: ChannelGraph, dead: dict[int, list[int]], *, write: bool = True) -> dict[str, np.ndarray]:
    """Alg. 3, l. 7: zero the removed units' filters (producer weights), biases and norms untouched.

    Returns, per weight, which output rows (dim 0) are zero for the removed units, so that
    constant folding need not read the rows back to prove it; ``write=False`` only returns them
    (a shrink drops the rows anyway)."""
    producers = [s for s in weight_slots(cg) if s.role == "produce"]
    zeroed: dict[str, np.ndarray] = {}
    for s, pos in dropped_positions(cg, producers, cg.dead_by_space(dead)):
        w = get_tensor(cg.module, s.key)
        if write:
            w.index_fill_(s.dim, torch.as_tensor(pos, device=w.device), 0.0)
        if s.dim == 0:
            rows = zeroed.setdefault(s.key, np.zeros(w.shape[0], dtype=bool))
            rows[pos] = True
    return zeroed
