"""Saliency pass: first-order Taylor importance of weights and of channel units (paper Sec. III-B).

Weight scores (Eq. 11/12): ``|dL/dw * w|`` per weight, averaged over the batches given.
Unit scores:

- a *filter* (a group written by at least one convolution) scores per Eq. 3, the sum of its
  weights' scores: ``sum over (in, kh, kw) |dL/dw * w|``;
- a *neuron* (a group written only by linear maps) scores per Eq. 4, the sum over its fan-out
  weights (the columns of every layer that reads it); a group with no reader falls back to its
  fan-in rows.

For a coupled group the unit score **sums over every member**: a residual-stream channel scores
the filters of every convolution that writes into the stream (and, as a neuron group, the
columns of every reader); a DenseNet channel is one filter however many later layers read it.
Without data, ``mode="magnitude"`` scores ``|w|`` the same way; ``mode="random"`` draws uniform
scores (for ablations).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from cgap_graph.errors import CgapError
from cgap_graph.ir.gc_pause import gc_paused
from cgap_graph.ir.graph import ChannelGraph
from cgap_graph.surgery import get_tensor

MODES = ("taylor", "magnitude", "random")


@dataclass
class Saliency:
    """Scores of one model state: per weight (same shapes as the parameters) and per unit."""

    mode: str
    weights: Mapping[str, torch.Tensor]
    units: dict[int, np.ndarray] = field(default_factory=dict)
    batches: int = 0

    def ranking(self, gid: int) -> np.ndarray:
        """Units of a group from most to least important."""
        return np.argsort(-self.units[gid], kind="stable")


class MagnitudeScores(Mapping):
    """``|w|`` per weight, made on first use: unit scores reduce ``|w|`` without it (one fused
    L1 norm per slot), so pruning by magnitude never allocates a copy of every weight."""

    def __init__(self, params: dict[str, torch.Tensor]) -> None:
        self.params, self._abs = params, {}

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._abs:
            self._abs[key] = self.params[key].detach().abs()  # abs() is a new tensor
        return self._abs[key]

    def __iter__(self):
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def per_position(self, key: str, dim: int) -> torch.Tensor:
        """Sum of ``|w|`` over every dim but ``dim``."""
        return abs_position_sums(self.params[key].detach(), dim)


def position_sums(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum of ``w`` over every dim but ``dim``, as (outer, n, inner) sums over contiguous runs."""
    n = w.shape[dim]
    w = w.reshape(math.prod(w.shape[:dim]), n, -1)
    return w.sum(2).sum(0)


SCRATCH_ELEMENTS = 1 << 18  # |w| is taken block by block through one buffer this size


def abs_position_sums(w: torch.Tensor, dim: int) -> torch.Tensor:
    """``position_sums(w.abs(), dim)`` without a copy of ``w``: fresh memory costs more than the
    arithmetic (page faults), so blocks of rows go through one reused buffer."""
    n = w.shape[dim]
    w3 = w.reshape(math.prod(w.shape[:dim]), n, -1)
    inner = w3.shape[2]
    if w3.shape[0] != 1 or w.numel() <= SCRATCH_ELEMENTS or inner > SCRATCH_ELEMENTS:
        return position_sums(w.abs(), dim)
    rows = SCRATCH_ELEMENTS // inner
    out = torch.empty(n, dtype=w.dtype, device=w.device)
    buf = torch.empty(rows * inner, dtype=w.dtype, device=w.device)
    for r in range(0, n, rows):
        chunk = w3[0, r:r + rows]
        b = buf[:chunk.numel()].view_as(chunk)
        torch.abs(chunk, out=b)
        torch.sum(b, 1, out=out[r:r + rows])
    return out


def weight_slots(cg: ChannelGraph):
    """Slots on weight tensors (2+ dims): conv/linear weights and weight-like parameters."""
    for slot in cg.an.slots.values():
        if _is_weight_slot(cg, slot):
            yield slot


def _is_weight_slot(cg: ChannelGraph, slot) -> bool:
    if cg.traced.attr_kind.get(slot.key, "param") != "param" or slot.role not in ("produce", "consume"):
        return False
    t = cg.traced.tensors.get(slot.key)
    return t is not None and t.dim() >= 2


def weight_scores(cg: ChannelGraph, data: Iterable | None = None, *, mode: str = "taylor", batches: int = 10,
                  loss_fn: Callable = F.cross_entropy, train_mode: bool = False,
                  generator: torch.Generator | None = None,
                  reduce_grads: Callable[[list[torch.Tensor]], None] | None = None) -> Saliency:
    """Per-weight scores over ``batches`` batches of ``data`` (an iterable of (x, y)).

    ``reduce_grads(grads)`` runs on each batch's gradients before they are scored: data-parallel
    training averages them across processes there, so each score is that of the global batch."""
    if mode not in MODES:
        raise CgapError(f"unknown saliency mode '{mode}'; choose one of {', '.join(MODES)}")
    gm = cg.module
    keys = sorted({s.key for s in weight_slots(cg)})
    params = {k: get_tensor(gm, k) for k in keys}
    if mode == "magnitude":
        return Saliency(mode, MagnitudeScores(params))
    if mode == "random":
        g = generator or torch.Generator().manual_seed(0)
        return Saliency(mode, {k: torch.rand(p.shape, generator=g) for k, p in params.items()})
    if data is None:
        raise CgapError("Taylor saliency needs data: give a dataset (--data) or use --select magnitude")
    if batches < 1:
        raise CgapError(f"--batches must be >= 1, got {batches}")
    was_training = gm.training
    saved = {n: b.clone() for n, b in gm.named_buffers()} if train_mode else None
    gm.train(train_mode)
    acc = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in params.items()}
    requires = {k: p.requires_grad for k, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)
    device = next(iter(params.values())).device if params else torch.device("cpu")
    n = 0
    try:
        for x, y in data:
            if n >= batches:
                break
            for p in params.values():
                p.grad = None
            out = gm(x.to(device))
            loss = loss_fn(out if isinstance(out, torch.Tensor) else out[0], y.to(device))
            if not torch.isfinite(loss):
                raise CgapError("the loss is not finite on the saliency data; check the model and the dataset")
            loss.backward()
            if reduce_grads is not None:
                for p in params.values():
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                reduce_grads([p.grad for p in params.values()])
            for k, p in params.items():
                if p.grad is not None:
                    acc[k] += (p.grad.detach() * p.detach()).abs().double()
            n += 1
    finally:
        for k, p in params.items():
            p.grad = None
            p.requires_grad_(requires[k])
        gm.train(was_training)
        if saved is not None:
            with torch.no_grad():
                for name, b in gm.named_buffers():
                    b.copy_(saved[name])
    if n == 0:
        raise CgapError("the saliency data yielded no batches")
    return Saliency(mode, {k: (v / n).float() for k, v in acc.items()}, batches=n)


def unit_weights(cg: ChannelGraph, gid: int, slots: list | None = None) -> list:
    """The weights a unit's score (and sparsity) counts, as (slot, unit id per position):
    producer rows for a filter group, readers' fan-out columns for a neuron group."""
    t = cg.an.t
    space = cg.group(gid).space
    producers, readers = [], []
    allowed = None if slots is None else {id(s) for s in slots}
    for s in cg.slots_of(space):
        if not _is_weight_slot(cg, s) or (allowed is not None and id(s) not in allowed):
            continue
        ids = t.unit_ids(s.expr, space)
        if (ids < 0).all():
            continue
        (producers if s.role == "produce" and not s.split else readers).append((s, ids))
    is_filter = any(cg.traced.tensors[s.key].dim() > 2 for s, _ in producers)
    return producers if is_filter or not readers else readers


def unit_scores(cg: ChannelGraph, sal: Saliency) -> Saliency:
    """Fill ``sal.units`` for every resizable group (see module docstring for the rule)."""
    slots = list(weight_slots(cg))
    for g in cg.groups:
        if not g.resizable:
            continue
        use = unit_weights(cg, g.id, slots)
        score = np.zeros(g.width)
        for s, ids in use:
            if isinstance(sal.weights, MagnitudeScores):
                per_pos = sal.weights.per_position(s.key, s.dim)
            else:
                per_pos = position_sums(sal.weights[s.key], s.dim)
            per_pos = per_pos.double().cpu().numpy()
            mask = ids >= 0
            np.add.at(score, ids[mask], per_pos[mask])
        sal.units[g.id] = score
    return sal


@gc_paused
def saliency(cg: ChannelGraph, data: Iterable | None = None, *, mode: str = "taylor", batches: int = 10,
             loss_fn: Callable = F.cross_entropy, train_mode: bool = False,
             generator: torch.Generator | None = None) -> Saliency:
    """Weight and unit scores in one call."""
    return unit_scores(cg, weight_scores(cg, data, mode=mode, batches=batches, loss_fn=loss_fn,
                                         train_mode=train_mode, generator=generator))
