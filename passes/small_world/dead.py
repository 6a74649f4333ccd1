"""Remove units that fixed masks left dead, and keep the masks in step with the smaller model.

A unit is dead when it has no inputs (every weight row that writes it is zero: it outputs a
constant, its bias through the activation) or no outputs (every weight column that reads it is
zero: nothing downstream sees it). Both are removed with ``passes.prune.remove_units``, which folds
the constant of an input-dead unit into its readers' biases, so the outputs do not change. Units
whose constant cannot be folded exactly (a nonzero bias read by a padded or grouped convolution)
are kept. Removing units can kill others (a neuron whose only readers went), so this repeats until
nothing is dead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cgap_graph.ir.graph import ChannelGraph
from cgap_graph.passes.cgap.prune import remove_units
from cgap_graph.passes.cgap.saliency import weight_slots
from cgap_graph.passes.cgap.seed import group_key
from cgap_graph.surgery import SurgeryReport, get_tensor, unit_norms


@dataclass
class DeadReport:
    removed: dict[str, int] = field(default_factory=dict)  # group name -> units removed
    kept_unfoldable: dict[str, int] = field(default_factory=dict)  # dead, but their constant can't be folded
    rounds: int = 0
    notes: list[str] = field(default_factory=list)


def _weight_norms(cg: ChannelGraph, gid: int, role: str) -> tuple[np.ndarray, int]:
    """Per unit: sum of |w| over the weight slots of ``role``, and how many slots there are."""
    t = cg.an.t
    g = cg.group(gid)
    total = np.zeros(g.width)
    slots = 0
    for s in weight_slots(cg):
        if s.role != role:
            continue
        ids = t.unit_ids(s.expr, g.space)
        if (ids < 0).all():
            continue
        slots += 1
        w = get_tensor(cg.module, s.key).detach()
        per_pos = w.abs().transpose(0, s.dim).reshape(w.shape[s.dim], -1).sum(1).double().cpu().numpy()
        keep = ids >= 0
        np.add.at(total, ids[keep], per_pos[keep])
    return total, slots


def _unfoldable_readers(cg: ChannelGraph, gid: int) -> np.ndarray:
    """Per unit: read (nonzero column) by a padded or grouped convolution, where a constant input
    cannot be folded into a bias exactly."""
    t = cg.an.t
    g = cg.group(gid)
    bad = np.zeros(g.width, dtype=bool)
    for s in weight_slots(cg):
        if s.role != "consume":
            continue
        mod = cg.module.get_submodule(s.key.rpartition(".")[0])
        if not isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            continue
        padded = mod.groups != 1 or (isinstance(mod.padding, str) and mod.padding != "valid") or \
            any(p != 0 for p in (mod.padding if isinstance(mod.padding, tuple) else ()))
        if not padded:
            continue
        ids = t.unit_ids(s.expr, g.space)
        w = get_tensor(cg.module, s.key).detach()
        nz = (w.abs().transpose(0, s.dim).reshape(w.shape[s.dim], -1).sum(1) > 0).cpu().numpy()
        keep = (ids >= 0) & nz
        bad[ids[keep]] = True
    return bad


def find_dead_units(cg: ChannelGraph) -> tuple[dict[int, list[int]], dict[int, int]]:
    """Dead units of every prunable group (each keeps at least one unit), and the dead ones kept
    because their constant output cannot be folded."""
    dead: dict[int, list[int]] = {}
    unfoldable: dict[int, int] = {}
    for g in cg.groups:
        if not g.prunable or g.prune_notes:
            continue
        w_in, n_in = _weight_norms(cg, g.id, "produce")
        w_out, n_out = _weight_norms(cg, g.id, "consume")
        no_input = (w_in == 0) if n_in else np.zeros(g.width, dtype=bool)
        no_output = (w_out == 0) if n_out else np.zeros(g.width, dtype=bool)
        constant = no_input & ~no_output & (unit_norms(cg, g.id, roles=("produce",)) > 0)
        blocked = constant & _unfoldable_readers(cg, g.id)
        units = np.nonzero((no_input | no_output) & ~blocked)[0].tolist()
        if blocked.any():
            unfoldable[g.id] = int(blocked.sum())
        if len(units) >= g.width:
            units = units[1:]
        if units:
            dead[g.id] = units
    return dead, unfoldable


def follow_surgery(masks: Mapping[str, torch.Tensor], surgery: SurgeryReport | None) -> dict[str, torch.Tensor]:
    """Masks sliced like the weights they belong to (rows and columns of removed units go)."""
    out = dict(masks)
    if surgery is None:
        return out
    for name, mask in masks.items():
        index = surgery.index.get(f"{name}.weight", {})
        for dim in (0, 1):
            if dim in index:
                mask = mask.index_select(dim, torch.as_tensor(index[dim], dtype=torch.int64))
        out[name] = mask
    return out


def remove_dead_units(cg: ChannelGraph, masks: Mapping[str, torch.Tensor], *, max_rounds: int = 100
                      ) -> tuple[dict[str, torch.Tensor], DeadReport]:
    """Remove dead units in place on ``cg.module`` until none is left; returns the masks of the
    smaller model. The masks must already be applied (dropped weights zero)."""
    report = DeadReport()
    masks = dict(masks)
    names = {g.id: group_key(g).removesuffix(".weight[0]") for g in cg.groups}
    for _ in range(max_rounds):
        dead, unfoldable = find_dead_units(cg)
        report.kept_unfoldable = {names[k]: v for k, v in unfoldable.items()}
        if not dead:
            break
        report.rounds += 1
        rep = remove_units(cg, dead)
        report.notes += rep.not_folded + rep.inexact
        masks = follow_surgery(masks, rep.surgery)
        for gid, units in dead.items():
            report.removed[names[gid]] = report.removed.get(names[gid], 0) + len(units)
    return masks, report
