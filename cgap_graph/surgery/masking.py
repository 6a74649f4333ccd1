"""Masking: the *masked* twin of removing channels (oracle 1), and per-unit magnitudes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from cgap_graph.ir.graph import ChannelGraph
from cgap_graph.surgery.tensors import get_tensor


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
        w = get_tensor(gm, slot.key).detach()
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
            w = get_tensor(gm, slot.key)
            w.index_fill_(slot.dim, torch.as_tensor(pos, device=w.device), 0.0)
