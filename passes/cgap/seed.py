"""Seed pass: shrink every prunable group of a reference model to a width multiplier.

The paper starts CGaP from seeds one eighth as wide as VGG-19. ``seed(cg, 0.125)`` keeps
``max(1, round(0.125 * width))`` units of every prunable group (the largest by weight magnitude,
or the first ones) and returns the reference widths, keyed by a name that survives saving and
re-tracing, to serve as the capacity limit (tau_capa) of later growth. ``reinit=True`` draws
fresh parameters, for a seed trained from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from cgap_graph.errors import CgapError, check_number
from cgap_graph.ir.gc_pause import gc_paused
from cgap_graph.ir.graph import ChannelGraph, Group
from cgap_graph.passes.cgap.widths import check_round_to, rounded_keep
from cgap_graph.surgery import SurgeryReport, apply_each, unit_norms


def group_key(g: Group) -> str:
    """A stable name for a group: its first producing parameter dimension (e.g. 'conv1.weight[0]')."""
    for m in g.members:
        if m.kind == "param" and m.role == "produce":
            return f"{m.target}[{m.dim}]"
    for m in g.members:
        if m.kind == "param":
            return f"{m.target}[{m.dim}]"
    return f"group{g.id}"


def capacity_by_id(cg: ChannelGraph, capacity: dict[str, int] | None) -> dict[int, int]:
    """Capacity limits keyed by name (as saved) -> by this graph's group ids."""
    if not capacity:
        return {}
    return {g.id: capacity[group_key(g)] for g in cg.groups if group_key(g) in capacity}


@dataclass
class SeedReport:
    surgery: SurgeryReport
    reference_widths: dict[str, int]
    skipped: dict[int, str] = field(default_factory=dict)  # groups whose edit did not validate: kept whole


@gc_paused
def seed(cg: ChannelGraph, width: float, *, select: str = "magnitude", reinit: bool = False,
         generator_seed: int = 0, round_to: int = 1) -> SeedReport:
    check_number("width", width, 0.0, 1.0, lo_open=True, meaning="a fraction of the reference widths; the "
                 "paper's seeds use 0.125")
    if select not in ("magnitude", "first"):
        raise CgapError(f"select must be 'magnitude' or 'first', got '{select}'")
    reference = {group_key(g): g.width for g in cg.groups if g.resizable}
    selections = {}
    for g in cg.groups:
        if not g.prunable:
            continue
        k = rounded_keep(g.width, max(1, int(round(width * g.width))), check_round_to(round_to))
        if k >= g.width:
            continue
        if select == "first":
            keep = list(range(k))
        else:
            keep = sorted(int(u) for u in np.argsort(-unit_norms(cg, g.id), kind="stable")[:k])
        selections[g.id] = keep
    report, skipped = apply_each(cg, selections)
    if reinit:
        torch.manual_seed(generator_seed)
        for mod in cg.module.modules():
            if hasattr(mod, "reset_parameters") and mod is not cg.module:
                mod.reset_parameters()
    return SeedReport(report, reference, skipped)
