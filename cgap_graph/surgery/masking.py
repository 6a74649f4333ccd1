"""Masking: the *masked* twin of removing channels (oracle 1), and per-unit magnitudes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from cgap_graph.ir.graph import ChannelGraph
from cgap_graph.surgery.tensors import get_tensor


def unit_norms(cg: ChannelGraph, gid: int, roles: tuple[str, ...] = ("produce",)) -> np.ndarray:
    """Sum of |values| of each unit of a group over its members with the given roles."""
    t = cg.an.t
    g = cg.group(gid)
    gm = cg.module
    total = np.zeros(g.width)
    for slot in cg.slots_of(g.space):
        if slot.role not in roles:
            continue
        ids = t.unit_ids(slot.expr, g.space)
        w = get_tensor(gm, slot.key).detach()
        per_pos = w.abs().transpose(0, slot.dim).reshape(w.shape[slot.dim], -1).sum(1).double().cpu().numpy()
        mask = ids >= 0
        np.add.at(total, ids[mask], per_pos[mask])
    return total


def dropped_positions(cg: ChannelGraph, slots, dead: dict[int, np.ndarray]):
    """(slot, positions along its dimension that hold a dead unit) for every slot that has some."""
    t = cg.an.t
    for slot in slots:
        if not any(leaf in dead for leaf in t.leaves(slot.expr)):
            continue
        pos = np.flatnonzero(t.dropped(slot.expr, dead))
        if pos.size:
            yield slot, pos


@torch.no_grad()
def mask_channels(cg: ChannelGraph, masks: Mapping[int, Sequence[int]]) -> None:
    """Zero the given channels across their whole group (producer rows, biases, norm affine
    parameters): the *masked* twin of removing them."""
    dead = cg.dead_by_space({gid: chans for gid, chans in masks.items() if len(chans)})
    produce = [s for s in cg.an.slots.values() if s.role == "produce"]
    for slot, pos in dropped_positions(cg, produce, dead):
        w = get_tensor(cg.module, slot.key)
        w.index_fill_(slot.dim, torch.as_tensor(pos, device=w.device), 0.0)
