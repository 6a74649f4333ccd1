"""The CGaP hook: Algorithm 1's structural steps at the end of each epoch of any training loop.

Call ``on_epoch_end`` after each epoch; on the schedule of the config it grows (Algorithm 2)
while under the capacity limit, prunes (Algorithm 3) once the training accuracy exceeds tau_accu,
and hands back the resized model with an optimizer whose state followed its channels::

    cgap = CGaP(model, (1, 1, 28, 28), TrainConfig(epochs=30), saliency_data=train_loader)
    optimizer = cgap.make_optimizer()
    for epoch in range(1, 31):
        train_one_epoch(cgap.model, optimizer, train_loader)      # your code
        model, optimizer, events = cgap.on_epoch_end(epoch, train_accuracy, optimizer)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cgap_graph.errors import CgapError
from cgap_graph.ir.graph import ChannelGraph, trace
from cgap_graph.passes.cgap.budget import budget_prune, measure, parse_budget
from cgap_graph.passes.cgap.grow import grow
from cgap_graph.passes.cgap.optim import carry_optimizer
from cgap_graph.passes.cgap.prune import prune
from cgap_graph.passes.cgap.saliency import unit_scores, weight_scores, weight_slots
from cgap_graph.passes.cgap.seed import capacity_by_id, group_key
from cgap_graph.run.config import TrainConfig


@dataclass(frozen=True)
class Event:
    """One structural event of an epoch: ``kind`` is grow, prune or growth_stopped."""

    kind: str
    count: int = 0

    @property
    def structural(self) -> bool:
        """A step that ran a saliency pass and changed (or tried to change) the model."""
        return self.kind in ("grow", "prune")

    def __str__(self) -> str:
        if self.kind == "grow":
            return f"grew {self.count} groups"
        if self.kind == "prune":
            return f"pruned {self.count} units"
        return "growth stopped: capacity reached"


class CGaP:
    """Algorithm 1 as an epoch-end hook (see module docstring)."""

    def __init__(self, model: nn.Module | ChannelGraph, input_shape: tuple[int, ...] | None = None,
                 config: TrainConfig | None = None, *, saliency_data: Iterable | None = None,
                 reference_widths: dict[str, int] | None = None, loss_fn: Callable = F.cross_entropy,
                 input_dtype: torch.dtype = torch.float32) -> None:
        self.config = (config or TrainConfig()).validate()
        self.cg = model if isinstance(model, ChannelGraph) else trace(model, input_shape, input_dtype=input_dtype)
        self.saliency_data = saliency_data
        self.loss_fn = loss_fn
        if reference_widths is None:  # no reference: the starting widths x capacity
            reference_widths = {group_key(g): g.width for g in self.cg.groups if g.resizable}
        self.reference_widths = dict(reference_widths)
        self.growth_done = self.config.f_growth <= 0
        self.pruning_started = False
        self.history: list[dict[str, Any]] = []
        # data-parallel runs: saliency gradients are averaged across ranks and rank 0's scores
        # used by all, so every rank grows and prunes the same units (see distributed.py)
        self.dist: Any = None
        self.finetune_from: int | None = None  # first epoch after the last pruning step (restart_lr)
        self.masks: dict[str, torch.Tensor] = {}  # keep_zeros: weight name -> nonzero mask after the last prune

    @property
    def model(self) -> torch.fx.GraphModule:
        return self.cg.module

    def make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "adam":
            return torch.optim.Adam(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.SGD(self.model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

    def capacity(self) -> dict[int, int]:
        cap = {k: max(1, int(math.floor(w * self.config.capacity))) for k, w in self.reference_widths.items()}
        return capacity_by_id(self.cg, cap)

    def _saliency(self, epoch: int, mode: str | None = None):
        c = self.config
        mode = mode or c.saliency
        if mode == "taylor" and self.saliency_data is None:
            raise CgapError("Taylor saliency needs saliency_data (a loader of training batches) or "
                            "config.saliency = 'magnitude'")
        gen = getattr(self.saliency_data, "generator", None)
        if isinstance(gen, torch.Generator):  # the batches depend on the epoch only: resumable
            gen.manual_seed(c.seed * 1000 + epoch)
        sal = weight_scores(self.cg, self.saliency_data, mode=mode, batches=c.saliency_batches,
                            loss_fn=self.loss_fn, train_mode=self.model.training,
                            generator=torch.Generator().manual_seed(c.seed * 1000 + epoch),
                            reduce_grads=self.dist.mean_ if self.dist is not None and mode == "taylor" else None)
        if self.dist is not None:
            self.dist.broadcast_(list(sal.weights.values()))
        return unit_scores(self.cg, sal)

    def on_epoch_end(self, epoch: int, train_accuracy: float, optimizer: torch.optim.Optimizer
                     ) -> tuple[torch.fx.GraphModule, torch.optim.Optimizer, list[Event]]:
        """Grow and/or prune as the schedule says; returns (model, optimizer, events)."""
        c = self.config
        events: list[Event] = []
        if c.grows_at(epoch) and not self.growth_done and not self.pruning_started:
            rep = grow(self.cg, self._saliency(epoch, c.growth_saliency), c.beta, init=c.init, sigma=c.sigma, mu=c.mu,
                       capacity=self.capacity(), seed=c.seed * 1000 + epoch, round_to=c.round_to)
            if rep.picked:
                optimizer = carry_optimizer(optimizer, self.model, rep.surgery)
                events.append(Event("grow", len(rep.picked)))
            else:
                self.growth_done = True
                events.append(Event("growth_stopped"))
        done = c.prune_target is not None and self.cg.param_count() <= c.prune_target
        if c.prunes_at(epoch, train_accuracy) and not done:
            self.pruning_started = True
            reports = self._budget_step(epoch) if c.budget else [self._alg3_step(epoch)]
            for rep in reports:
                if rep.surgery is not None and rep.surgery.changed:
                    optimizer = carry_optimizer(optimizer, self.model, rep.surgery)
            events.append(Event("prune", sum(len(v) for rep in reports for v in rep.removed.values())))
            if c.keep_zeros and c.zero_survivors:
                self._record_masks()
        if self.pruning_started and self.finetune_from is None and (
                epoch >= round(c.prune_end * c.epochs) or done
                or (c.prune_target is not None and self.cg.param_count() <= c.prune_target)):
            self.finetune_from = epoch + 1  # pruning is over: fine-tuning from the next epoch
        self.history.append({"epoch": epoch, "events": [str(e) for e in events]})
        return self.model, optimizer, events

    def _alg3_step(self, epoch: int):
        c = self.config
        return prune(self.cg, self._saliency(epoch), c.gamma_w,
                     c.gamma_f if c.gamma_f is not None or not c.gamma_w_layers else None,
                     layer_rates=c.gamma_w_layers or None, target_params=c.prune_target,
                     zero_survivors=c.zero_survivors, round_to=c.round_to)

    def _budget_step(self, epoch: int):
        """Towards the budget in equal shares of the remaining gap, reaching it at the last pruning
        epoch (``prune_end``)."""
        c = self.config
        budget = parse_budget(c.budget)
        current = measure(self.cg, budget)
        if current <= budget.limit:
            return []
        left = sum(1 for e in range(epoch, c.epochs + 1) if c.prunes_at(e, 1.0))
        step = copy.copy(budget)
        step.limit = current - (current - budget.limit) / max(1, left)
        return budget_prune(self.cg, self._saliency(epoch), step, round_to=c.round_to).prune

    def _record_masks(self) -> None:
        params = dict(self.model.named_parameters())
        self.masks = {k: params[k].detach() != 0 for k in sorted({s.key for s in weight_slots(self.cg)})
                      if k in params}

    @torch.no_grad()
    def apply_masks(self) -> None:
        """keep_zeros: set the weights zeroed by the last pruning step back to zero (after each step)."""
        params = dict(self.model.named_parameters()) if self.masks else {}
        for k, m in self.masks.items():
            p = params.get(k)
            if p is not None and p.shape == m.shape:
                p.mul_(m.to(p.device))

    def state(self) -> dict[str, Any]:
        return {"growth_done": self.growth_done, "pruning_started": self.pruning_started,
                "finetune_from": self.finetune_from, "reference_widths": self.reference_widths,
                "history": self.history, "masks": {k: m.cpu() for k, m in self.masks.items()}}

    def load_state(self, st: dict[str, Any]) -> None:
        self.growth_done = st["growth_done"]
        self.pruning_started = st["pruning_started"]
        self.reference_widths = dict(st["reference_widths"])
        self.history = list(st["history"])
        self.finetune_from = st.get("finetune_from")
        self.masks = dict(st.get("masks", {}))
