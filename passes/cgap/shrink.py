"""Shrink pass: physically remove channels that are masked (zero in every producer).

Pruning zeroes units first (the *masked* model: same shapes, easy to fine-tune and to undo);
shrinking turns that into a smaller model. For a group whose channels reach consumers only
through zero-preserving ops the two give the same outputs (oracle 1); groups with notes (a
LayerNorm across the channels, a non-zero activation at zero) change slightly and are skipped
unless ``exact_only=False``.
"""

from __future__ import annotations

import numpy as np

from cgap_graph.ir.graph import ChannelGraph
from cgap_graph.surgery import SurgeryReport, apply_selection, unit_norms


def dead_units(cg: ChannelGraph, gid: int, atol: float = 0.0) -> np.ndarray:
    """Units of group ``gid`` whose producer parameters are all (near) zero."""
    return np.nonzero(unit_norms(cg, gid, roles=("produce",)) <= atol)[0]


def shrink(cg: ChannelGraph, *, atol: float = 0.0, exact_only: bool = True) -> SurgeryReport:
    """Remove every dead unit of every resizable group in one surgery step.

    A group never goes below one channel: if all its units are dead, the first is kept (the
    layer then outputs a constant, as the masked model does)."""
    selections: dict[int, list[int]] = {}
    for g in cg.groups:
        if not g.resizable or (exact_only and g.prune_notes):
            continue
        dead = set(dead_units(cg, g.id, atol).tolist())
        if not dead:
            continue
        keep = [i for i in range(g.width) if i not in dead] or [0]
        selections[g.id] = keep
    return apply_selection(cg, selections)
