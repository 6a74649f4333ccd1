"""The working module's own copy of a model's layers: fast for plain layers, exact for the rest."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def copy_module(mod: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """A copy with its own tensors (shared ones stay shared through ``memo``). A childless layer
    (nearly every leaf) is copied field by field, several times faster than ``deepcopy``."""
    if mod._modules or hasattr(type(mod), "__deepcopy__"):
        return copy.deepcopy(mod, memo)
    new = copy.copy(mod)
    new.__dict__ = dict(mod.__dict__)
    for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_state_dict_hooks"):
        if name in new.__dict__:
            new.__dict__[name] = type(new.__dict__[name])(new.__dict__[name])
    new._parameters = {k: _copy_tensor(p, memo) for k, p in mod._parameters.items()}
    new._buffers = {k: _copy_tensor(b, memo) for k, b in mod._buffers.items()}
    new._modules = {}
    return new


def _copy_tensor(t: torch.Tensor | None, memo: dict[int, Any]):
    if t is None:
        return None
    out = memo.get(id(t))
    if out is None:
        data = t.detach().clone()
        out = memo[id(t)] = nn.Parameter(data, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) \
            else data
    return out
