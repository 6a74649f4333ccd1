"""Initialisers for the new copies a selection vector creates: one registry, by name.

An initialiser is ``init(change, ctx) -> tensor``: it receives one parameter's
:class:`SlotChange` (old and index-selected new tensor, which positions are new copies or
duplicated originals) and returns the tensor to store. A registry entry is a *factory*
``factory(**params) -> initialiser``, so parametrised ones (the paper's, with sigma and mu) live
beside fixed ones. ``preserve`` (Net2WiderNet) is here; the CGaP pass registers ``paper`` and
``random`` (``passes/cgap/grow.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from cgap_graph.errors import SurgeryError
from cgap_graph.surgery.types import Initializer, SlotChange, SurgeryContext

INITIALIZERS: dict[str, Callable[..., Initializer]] = {}


def register_initializer(name: str, factory: Callable[..., Initializer]) -> None:
    """Make ``name`` usable wherever an initialiser is named (``apply_selection(init=name)``)."""
    INITIALIZERS[name] = factory


def make_initializer(init: str | Initializer, **params: Any) -> Initializer:
    """An initialiser from a name (with its parameters) or the function itself."""
    if callable(init):
        return init
    if init not in INITIALIZERS:
        raise SurgeryError(f"unknown initialiser '{init}'; choose one of {', '.join(sorted(INITIALIZERS))}")
    return INITIALIZERS[init](**params)


def preserve_init(change: SlotChange, ctx: SurgeryContext) -> torch.Tensor:
    """Function-preserving split: copies stay copies; consumer columns (and the split side of a
    bilinear product) are divided by the number of copies of their unit."""
    t = ctx.cg.an.t
    out = change.new
    fresh = bool(change.index)  # a gathered copy: scaling it in place changes nothing else
    for slot in change.slots:
        if slot.role == "consume":
            f = t.scales(slot.expr, ctx.sel, ctx.counts, None)
        elif slot.role == "produce" and (slot.split or slot.split_where):
            f = t.scales(slot.expr, ctx.sel, ctx.counts, slot.split) if slot.split else 1.0
            for leaves, (stacked, index) in slot.split_where:  # one slice of a stacked dim (k of qkv)
                part = t.unit_ids(slot.expr, t.find(stacked[1]))[t.positions(slot.expr, ctx.sel)]
                f = f * np.where(part == index, t.scales(slot.expr, ctx.sel, ctx.counts, leaves), 1.0)
        else:
            continue
        if np.all(f == 1.0):
            continue
        shape = [1] * out.dim()
        shape[slot.dim] = -1
        factor = torch.as_tensor(f, dtype=out.dtype, device=out.device).view(shape)
        out = out.mul_(factor) if fresh else out * factor
        fresh = True
    return out


register_initializer("preserve", lambda **_: preserve_init)
