"""Fixed connectivity masks on a model's weights: apply them, keep them through training, save them.

Masks are bool tensors keyed by module name, ``out x in`` for a Linear and ``out x in/groups`` for a
convolution (broadcast over the kernel); ``True`` keeps a connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from cgap_graph.errors import CgapError
from cgap_graph.io.atomic import atomic_write
from cgap_graph.io.torch_load import load_weights_only


def _broadcast(mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if tuple(mask.shape) != tuple(weight.shape[:2]):
        raise CgapError(f"a mask of shape {tuple(mask.shape)} does not fit a weight of shape "
                        f"{tuple(weight.shape)}; the masks belong to another model")
    return mask.to(device=weight.device, dtype=weight.dtype).view(*mask.shape, *([1] * (weight.dim() - 2)))


def mask_weights(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(weight, broadcast mask) of every masked module; unknown names are an error."""
    modules = dict(model.named_modules())
    out = {}
    for name, mask in masks.items():
        mod = modules.get(name)
        if mod is None or not isinstance(getattr(mod, "weight", None), torch.Tensor):
            raise CgapError(f"the masks name a layer '{name}' that this model does not have; "
                            "use the masks built for this model")
        out[name] = (mod.weight, _broadcast(mask, mod.weight))
    return out


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero every weight a mask drops (in place)."""
    for weight, mask in mask_weights(model, masks).values():
        weight.mul_(mask)


@torch.no_grad()
def rescale_init(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Scale each output unit's kept weights by ``sqrt(dense fan-in / kept fan-in)``.

    PyTorch initialises a layer for its dense fan-in; a unit that keeps 10 of fc1's 800 inputs
    would start with a pre-activation ~9x too small, and the signal would fade layer by layer (the
    sparse-training fix of Evci et al., "Gradient flow in sparse neural networks", AAAI 2022).
    Only for a freshly initialised model; units with no input are left alone."""
    for weight, mask in mask_weights(model, masks).values():
        kept = mask.flatten(1).sum(1).clamp(min=1.0)
        scale = torch.sqrt(mask[0].numel() / kept).view(-1, *([1] * (weight.dim() - 1)))
        weight.mul_(mask).mul_(scale.to(weight.dtype))


class MaskKeeper:
    """``after_step`` hook for ``train_run``: re-applies fixed masks after every optimizer step.

    The weights and broadcast masks are looked up once per model object, so a step costs one
    multiply per masked layer."""

    def __init__(self, masks: Mapping[str, torch.Tensor]) -> None:
        self.masks = dict(masks)
        self._model_id: int | None = None
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> None:
        if id(model) != self._model_id:
            self._pairs = list(mask_weights(model, self.masks).values())
            self._model_id = id(model)
        for weight, mask in self._pairs:
            weight.mul_(mask)


def masked_violations(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> int:
    """Number of weights a mask drops that are not exactly zero (0 after training with a MaskKeeper)."""
    return sum(int(((w != 0) & (m == 0)).sum()) for w, m in mask_weights(model, masks).values())


def save_masks(path: str | Path, masks: Mapping[str, torch.Tensor]) -> None:
    """Atomically, as a dict of bool tensors (loads with ``weights_only=True``)."""
    payload = {k: v.detach().cpu().bool().contiguous() for k, v in masks.items()}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_masks(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise CgapError(f"no masks at {path}; start the run without resume")
    try:
        obj = load_weights_only(path)
    except Exception as exc:
        raise CgapError(f"{path} is damaged ({type(exc).__name__}); start a new run") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) and v.dtype == torch.bool
                                            for v in obj.values()):
        raise CgapError(f"{path} holds no masks (a dict of bool tensors); start a new run")
    return dict(obj)
