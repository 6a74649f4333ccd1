"""The task a run trains for: its loss and its metric, built in or the user's own (``module:fn``).

The loss drives training and the Taylor saliency; the metric is what the logs report and what
the tau_accu gate compares (higher is better). A metric is kept as a vector of sums (correct
and seen samples; a confusion matrix for mIoU ...), so it adds up across batches and across the
processes of a data-parallel run exactly, and is turned into one number at the end.

Built-in losses: ``cross-entropy`` (classification, N x K scores vs N labels),
``pixel-cross-entropy`` (segmentation: N x C x H x W logits vs N x H x W labels), ``mse``
(regression: output and target of the same shape). Built-in metrics: ``accuracy`` (top-1; per
pixel for segmentation), ``miou`` (mean intersection over union over the classes that occur),
``neg-mse`` and ``r2`` for regression. ``module:fn`` is imported from the working directory
(as ``--arch`` is): a loss ``fn(output, target) -> scalar tensor``, a metric
``fn(output, target) -> float`` averaged over samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cgap_graph.errors import CgapError
from cgap_graph.io.model_io import import_object

LOSSES = ("cross-entropy", "pixel-cross-entropy", "mse")
METRICS = ("accuracy", "miou", "neg-mse", "r2")
DEFAULT_METRIC = {"cross-entropy": "accuracy", "pixel-cross-entropy": "miou", "mse": "neg-mse"}
BOUNDED = ("accuracy", "miou")  # metrics in [0, 1]: tau_accu must be there too


class TaskError(CgapError):
    """A loss or metric that cannot be used, or data that does not fit the model's output."""


def import_callable(spec: str, what: str) -> Callable:
    """``module:fn`` imported from the working directory (the rules of ``--arch``)."""
    return import_object(spec, what, TaskError)


def _mse(out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean squared error per sample (summed over a sample's elements, averaged over samples)."""
    per = (out - y.to(out.dtype)).pow(2).flatten(1).sum(1) if out.dim() > 1 else (out - y.to(out.dtype)).pow(2)
    return per.sum() if reduction == "sum" else per.mean()


def make_loss(name: str) -> Callable:
    """``loss(output, target, reduction="mean"|"sum")``."""
    if name in ("cross-entropy", "pixel-cross-entropy"):
        return F.cross_entropy  # K-dimensional targets (N x H x W) are per-pixel cross-entropy
    if name == "mse":
        return _mse
    if ":" not in name:
        raise TaskError(f"--loss must be {', '.join(LOSSES)} or module:function, got '{name}'")
    fn = import_callable(name, "--loss")

    def user_loss(out, y, reduction: str = "mean"):
        value = fn(out, y)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise TaskError(f"--loss {name} must return a scalar tensor, got {type(value).__name__}")
        return value.reshape(()) * (len(y) if reduction == "sum" else 1)
    return user_loss


@dataclass
class Metric:
    """A metric as sums over samples (``update``), finished by ``value``."""

    name: str
    classes: int | None = None  # miou: number of classes (the model's output channels)
    user: Callable | None = None

    def zeros(self, classes: int | None = None) -> list[float]:
        if self.name == "miou":
            k = classes or self.classes or 0
            return [0.0] * (k * k)
        return [0.0] * (4 if self.name == "r2" else 2)

    @torch.no_grad()
    def update(self, state: list[float], out: torch.Tensor, y: torch.Tensor) -> list[float]:
        """The sums after one more batch (a new list: may change length once mIoU knows its classes)."""
        if self.user is not None:
            return [state[0] + float(self.user(out, y)) * len(y), state[1] + len(y)]
        if self.name == "accuracy":
            pred = out.argmax(1)
            return [state[0] + (pred == y).sum().item() / (y[0].numel() if y.dim() else 1), state[1] + len(y)]
        if self.name == "miou":
            k = out.shape[1]
            if len(state) != k * k:
                state = [0.0] * (k * k)
            cm = torch.bincount((y.long().flatten() * k + out.argmax(1).flatten()).clamp_(0, k * k - 1),
                                minlength=k * k).double()
            return [a + b for a, b in zip(state, cm.tolist())]
        err = (out.double() - y.double()).pow(2).flatten(1).sum(1) if out.dim() > 1 else \
            (out.double() - y.double()).pow(2)
        if self.name == "neg-mse":
            return [state[0] + err.sum().item(), state[1] + len(y)]
        yd = y.double()
        return [state[0] + yd.sum().item(), state[1] + yd.pow(2).sum().item(), state[2] + err.sum().item(),
                state[3] + yd.numel()]

    def value(self, state: list[float]) -> float:
        if self.user is not None or self.name == "accuracy":
            return state[0] / max(1.0, state[1])
        if self.name == "neg-mse":
            return -state[0] / max(1.0, state[1])
        if self.name == "r2":
            sy, syy, sse, n = state
            var = syy - sy * sy / max(1.0, n)
            return 1.0 - sse / var if var > 0 else 0.0
        k = int(round(len(state) ** 0.5))
        if k == 0:
            return 0.0
        cm = torch.tensor(state, dtype=torch.float64).view(k, k)
        inter, union = cm.diag(), cm.sum(0) + cm.sum(1) - cm.diag()
        present = union > 0
        return float((inter[present] / union[present]).mean()) if present.any() else 0.0


def make_metric(name: str) -> Metric:
    if name in METRICS:
        return Metric(name)
    if ":" not in name:
        raise TaskError(f"--metric must be {', '.join(METRICS)} or module:function, got '{name}'")
    return Metric(name, user=import_callable(name, "--metric"))


@dataclass
class Task:
    """The loss and metric of a run."""

    loss_name: str
    metric: Metric
    loss: Callable

    def fit(self, output_shapes: list) -> Task:
        """mIoU's class count from the model's output channels, so every rank's sums have one length."""
        shape = output_shapes[0] if len(output_shapes) == 1 else None
        if self.metric.name == "miou" and isinstance(shape, (tuple, list)) and len(shape) >= 2:
            self.metric.classes = int(shape[1])
        return self

    @property
    def kind(self) -> str:
        """classification, segmentation, regression or custom (what the data must look like)."""
        return {"cross-entropy": "classification", "pixel-cross-entropy": "segmentation",
                "mse": "regression"}.get(self.loss_name, "custom")


def make_task(loss: str = "cross-entropy", metric: str | None = None) -> Task:
    """The task of ``--loss`` and ``--metric`` (default: the loss's natural metric)."""
    fn = make_loss(loss)
    return Task(loss, make_metric(metric or DEFAULT_METRIC.get(loss, "accuracy")), fn)


def check_target(task: Task, output_shape: tuple, target_shape: tuple, classes: int | None, source: str, *,
                 exact: bool = False) -> None:
    """One line unless one sample's target fits the model's output (``output_shape`` of a batch).
    ``exact``: ``classes`` are all the data has (a folder's subfolders), so the model must output
    exactly that many scores; otherwise the labels only must be below the model's outputs."""
    out = tuple(output_shape[1:])
    tgt = tuple(target_shape)
    if task.kind == "classification":
        want = f"(batch, {classes})" if classes and tgt == () else "(batch, classes)"
        if tgt != ():
            raise TaskError(f"{source} has targets of shape {tgt} per sample, but classification with cross-entropy "
                            "needs one label per sample; use --loss pixel-cross-entropy (label maps) or mse")
        if len(out) != 1:
            raise TaskError(f"{source} has one label per sample: classification, so the model must output {want} "
                            f"scores, but it outputs {tuple(output_shape)}; use data and a --loss that fit the model")
        if classes is not None and (classes > out[0] or (exact and classes != out[0])):
            raise TaskError(f"{source} has {classes} classes but the model outputs {out[0]} scores per sample, so "
                            f"the model must output (batch, {classes}) scores: give its last layer {classes} outputs")
    elif task.kind == "segmentation":
        if len(out) < 2 or tgt != out[1:]:
            raise TaskError(f"{source} has label maps of shape {tgt} but the model outputs {tuple(output_shape)}; "
                            f"per-pixel cross-entropy needs labels (H, W) = {out[1:]} for logits (batch, C, H, W)")
        if classes is not None and (classes > out[0] or (exact and classes != out[0])):
            raise TaskError(f"{source} has {classes} classes but the model outputs {out[0]} channels; give its "
                            f"last layer {classes} output channels")
    elif task.kind == "regression" and tgt != out:
        raise TaskError(f"{source} has targets of shape {tgt} per sample but the model outputs {out}; mse needs "
                        "them equal")


__all__ = ["BOUNDED", "DEFAULT_METRIC", "LOSSES", "METRICS", "Metric", "Task", "TaskError", "check_target",
           "import_callable", "make_loss", "make_metric", "make_task"]
