"""Growth pass (Algorithm 2): duplicate the most important units of every growable group.

In each group the ``round(beta * width)`` units with the highest saliency (a local ranking within
the group) are duplicated (with ``beta > 1`` every unit gets at least one copy and the most salient
ones several); the copies are appended after the existing channels, so existing
channel indices never move. All groups grow in one surgery step, which is the same as growing
layer by layer from input to output because each group's copies are initialised from the
weights before growth. A residual stream grows all its producers and readers together.

Initialisers for the picked units and their copies:

- ``paper`` (Eq. 5-10): the picked filter and its newborn copy both become
  ``sigma * W + U(-mu, mu)`` (producer rows), and so do the projected and mapped reader columns;
  biases and normalisation statistics are copied (they follow their channel);
- ``preserve``: Net2WiderNet split, outputs unchanged;
- ``random``: copies get fresh weights drawn like PyTorch's default initialisation (normalisation
  layers start at weight 1, bias 0, statistics 0/1), the originals are untouched.

A capacity limit (the paper's tau_capa) maps group ids to maximum widths: a group whose growth
would exceed it does not grow (``capacity_mode="stop"``, the paper) or grows up to it ("clip").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cgap_graph.errors import CgapError, check_number
from cgap_graph.ir.gc_pause import gc_paused
from cgap_graph.ir.graph import ChannelGraph
from cgap_graph.passes.cgap.saliency import Saliency
from cgap_graph.passes.cgap.widths import check_round_to, rounded_growth
from cgap_graph.surgery import (
    SlotChange,
    SurgeryContext,
    SurgeryReport,
    apply_each,
    make_initializer,
    register_initializer,
)

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


@dataclass
class GrowthReport:
    surgery: SurgeryReport
    picked: dict[int, list[int]] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)


MAX_BETA = 10.0  # beyond this a step multiplies widths by more than 11: a typo, not a growth ratio


def check_rates(**rates: float) -> None:
    for name, v in rates.items():
        check_number(name, v, 0.0, 1.0, lo_open=True, hi_open=True, meaning="a fraction")


def check_growth(beta: float, sigma: float, mu: float) -> None:
    """Growth settings in range: beta > 1 is allowed and gives units several copies."""
    check_number("beta", beta, 0.0, lo_open=True, meaning="the growth ratio: round(beta x width) new units per group")
    check_number("beta", beta, hi=MAX_BETA, meaning="above 1 a unit gets several copies; more multiplies widths "
                 "beyond any use")
    check_number("sigma", sigma, 0.0, lo_open=True, meaning="the scaling factor of Eq. 5-10, paper: 0.5")
    check_number("mu", mu, 0.0, meaning="the noise range U(-mu, mu), paper: 0.1")


def paper_init(sigma: float = 0.5, mu: float = 0.1):
    """Eq. 5-10: picked and newborn weights (rows and reader columns) -> sigma * W + U(-mu, mu)."""

    def init(change: SlotChange, ctx: SurgeryContext) -> torch.Tensor:
        out = change.new
        if out.dim() < 2 or not change.picked_mask:
            return out  # biases, norm parameters and statistics follow their channel unchanged
        out = out.clone()
        g = ctx.rng
        for slot in change.slots:
            mask = change.picked_mask.get(slot.dim)
            if mask is None or slot.role not in ("produce", "consume") or not mask.any():
                continue
            idx = torch.as_tensor(np.nonzero(mask)[0], device=out.device)
            part = out.index_select(slot.dim, idx)
            noise = (torch.rand(part.shape, generator=g, dtype=part.dtype) * 2 - 1) * mu
            out.index_copy_(slot.dim, idx, sigma * part + noise.to(part.device))
        return out

    return init


def random_init(change: SlotChange, ctx: SurgeryContext) -> torch.Tensor:
    """New copies get fresh values like a freshly constructed layer; originals stay."""
    out = change.new
    if not change.new_mask:
        return out
    out = out.clone()
    g = ctx.rng
    mod_path, _, name = change.key.rpartition(".")
    try:
        mod = ctx.cg.module.get_submodule(mod_path) if mod_path else None
    except AttributeError:
        mod = None
    for dim, mask in change.new_mask.items():
        if not mask.any():
            continue
        idx = torch.as_tensor(np.nonzero(mask)[0], device=out.device)
        part = out.index_select(dim, idx)
        if isinstance(mod, _NORMS):
            fill = torch.ones_like(part) if name in ("weight", "running_var") else torch.zeros_like(part)
        elif out.dim() >= 2:
            fan_in = max(1, out[0].numel())
            bound = 1.0 / np.sqrt(fan_in)
            fill = (torch.rand(part.shape, generator=g, dtype=part.dtype) * 2 - 1) * bound
        elif name == "bias" and mod is not None and getattr(mod, "weight", None) is not None:
            bound = 1.0 / np.sqrt(max(1, mod.weight[0].numel()))
            fill = (torch.rand(part.shape, generator=g, dtype=part.dtype) * 2 - 1) * bound
        else:
            continue  # other per-channel parameters (layer scale ...) keep their copied value
        out.index_copy_(dim, idx, fill.to(out.device))
    return out


register_initializer("paper", lambda sigma=0.5, mu=0.1, **_: paper_init(sigma, mu))
register_initializer("random", lambda **_: random_init)


def plan(cg: ChannelGraph, sal: Saliency, beta: float, capacity: Mapping[int, int] | None = None,
         capacity_mode: str = "stop", exact_only: bool = False, round_to: int = 1
         ) -> tuple[dict[int, list[int]], dict[int, str]]:
    """Which units of which groups to duplicate (see module docstring)."""
    picked: dict[int, list[int]] = {}
    skipped: dict[int, str] = {}
    for g in cg.groups:
        if not g.growable:
            continue
        if exact_only and g.grow_notes:
            skipped[g.id] = f"growth would not preserve outputs ({g.grow_notes[0]})"
            continue
        n_new = rounded_growth(g.width, int(round(beta * g.width)), round_to)
        if n_new == 0:
            skipped[g.id] = f"round({beta} x {g.width}) = 0"
            continue
        cap = (capacity or {}).get(g.id)
        if cap is not None and g.width + n_new > cap:
            if capacity_mode == "stop" or g.width >= cap:
                skipped[g.id] = f"capacity {cap} reached (width {g.width} + {n_new})"
                continue
            n_new = cap - g.width if round_to <= 1 else (cap // round_to * round_to) - g.width
            if n_new <= 0:
                skipped[g.id] = f"capacity {cap} reached in multiples of {round_to}"
                continue
        scores = sal.units.get(g.id)
        if scores is None:
            skipped[g.id] = "no saliency"
            continue
        order = np.argsort(-scores, kind="stable")
        # beta > 1: more new units than units, so the ranking repeats (the best get the extra copies)
        picked[g.id] = sorted(int(u) for u in np.resize(order, n_new))
    return picked, skipped


@gc_paused
def grow(cg: ChannelGraph, sal: Saliency, beta: float = 0.6, *, init: str = "paper", sigma: float = 0.5,
         mu: float = 0.1, capacity: Mapping[int, int] | None = None, capacity_mode: str = "stop",
         seed: int = 0, inexact: str | None = None, round_to: int = 1) -> GrowthReport:
    """Algorithm 2 on every growable group, in place on ``cg.module``.

    With ``init="preserve"`` the outputs must not change, so groups whose duplication cannot be
    exact (channels normalised together by a LayerNorm ...) are skipped and reported, unless
    ``inexact="grow"``."""
    check_growth(beta, sigma, mu)
    if inexact not in (None, "skip", "grow"):
        raise CgapError(f"inexact must be 'skip' or 'grow', got '{inexact}'")
    exact_only = (inexact or ("skip" if init == "preserve" else "grow")) == "skip"
    picked, skipped = plan(cg, sal, beta, capacity, capacity_mode, exact_only, check_round_to(round_to))
    selections = {gid: list(range(cg.group(gid).width)) + units for gid, units in picked.items()}
    rng = torch.Generator().manual_seed(seed)
    report, failed = apply_each(cg, selections, make_initializer(init, sigma=sigma, mu=mu), rng=rng)
    for gid, why in failed.items():  # a group that cannot be edited does not stop the others
        picked.pop(gid, None)
        skipped[gid] = why
    return GrowthReport(report, picked, skipped)
