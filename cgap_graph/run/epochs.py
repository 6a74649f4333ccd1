"""One epoch of training and one evaluation pass, shared by the CGaP loop and Small-World runs.

The metric (``tasks.Metric``, accuracy by default) is kept as sums, so a data-parallel run
adds up the ranks' sums (``state``) and finishes them into the same number."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cgap_graph.errors import CgapError
from cgap_graph.run.tasks import Metric

ACCURACY = Metric("accuracy")


class TrainingDiverged(CgapError):
    """The loss became NaN or infinite."""


@dataclass
class EpochResult:
    loss: float
    accuracy: float  # the run's metric (accuracy unless --metric says otherwise)
    samples: int
    state: list[float] = field(default_factory=list)  # the metric's sums


def _first(out):
    return out if isinstance(out, torch.Tensor) else out[0]


def train_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, device: torch.device,
                loss_fn: Callable = F.cross_entropy, progress: Callable[..., None] | None = None,
                epoch: int = 0, after_step: Callable[[nn.Module], None] | None = None,
                metric: Metric = ACCURACY) -> EpochResult:
    """One epoch of SGD. ``after_step(model)`` runs after every optimizer step (e.g. to keep
    fixed connectivity masks applied); ``progress(samples, loss, metric)`` after every batch."""
    model.train()
    total_loss, n = 0.0, 0
    state = metric.zeros()
    for i, (x, y) in enumerate(loader):
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        out = _first(model(x))
        loss = loss_fn(out, y)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss.item()} at epoch {epoch}, batch {i + 1}")
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(model)
        total_loss += loss.item() * len(y)
        state = metric.update(state, out.detach(), y)
        n += len(y)
        if progress is not None:
            progress(len(y), total_loss / n, metric.value(state))
    return EpochResult(total_loss / max(1, n), metric.value(state), n, state)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, loss_fn: Callable = F.cross_entropy,
             metric: Metric = ACCURACY) -> EpochResult:
    was = model.training
    model.eval()
    total_loss, n = 0.0, 0
    state = metric.zeros()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = _first(model(x))
        total_loss += loss_fn(out, y, reduction="sum").item()
        state = metric.update(state, out, y)
        n += len(y)
    model.train(was)
    return EpochResult(total_loss / max(1, n), metric.value(state), n, state)
