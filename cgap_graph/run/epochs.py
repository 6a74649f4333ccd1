"""One epoch of training and one evaluation pass, shared by the CGaP loop and Small-World runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cgap_graph.errors import CgapError


class TrainingDiverged(CgapError):
    """The loss became NaN or infinite."""


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    samples: int


def train_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, device: torch.device,
                loss_fn: Callable = F.cross_entropy, progress: Callable[[int], None] | None = None,
                epoch: int = 0, after_step: Callable[[nn.Module], None] | None = None) -> EpochResult:
    """One epoch of SGD. ``after_step(model)`` runs after every optimizer step (e.g. to keep
    fixed connectivity masks applied)."""
    model.train()
    total_loss, correct, n = 0.0, 0, 0
    for i, (x, y) in enumerate(loader):
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        loss = loss_fn(out, y)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss.item()} at epoch {epoch}, batch {i + 1}")
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(model)
        total_loss += loss.item() * len(y)
        correct += (out.argmax(1) == y).sum().item()
        n += len(y)
        if progress is not None:
            progress(len(y))
    return EpochResult(total_loss / max(1, n), correct / max(1, n), n)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, loss_fn: Callable = F.cross_entropy
             ) -> EpochResult:
    was = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = model(x)
        total_loss += loss_fn(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
        n += len(y)
    model.train(was)
    return EpochResult(total_loss / max(1, n), correct / max(1, n), n)
