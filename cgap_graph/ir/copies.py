"""The working module's own copy of a model's layers: fast for plain layers, exact for the rest."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def copy_module(mod: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """A copy with its own tensors (shared ones stay shared through ``memo``). A childless layer
    (nearly every leaf) is copied field by field, several times faster than ``deepcopy``: its
    ``__dict__`` is filled directly, as ``copy.copy`` would, without ``Module.__setattr__``."""
    cls = type(mod)
    if mod._modules or hasattr(cls, "__deepcopy__") or not _plain_copy(cls):
        return copy.deepcopy(mod, memo)
    state = dict(mod.__dict__)
    for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_state_dict_hooks"):
        if name in state:
            state[name] = type(state[name])(state[name])
    state["_parameters"] = {k: _copy_tensor(p, memo) for k, p in mod._parameters.items()}
    state["_buffers"] = {k: _copy_tensor(b, memo) for k, b in mod._buffers.items()}
    state["_modules"] = {}
    new = cls.__new__(cls)
    if cls.__setstate__ is nn.Module.__setstate__:
        new.__dict__.update(state)  # all Module.__setstate__ adds is defaults for missing fields
    else:
        new.__setstate__(state)  # e.g. _ConvNd's, which fills in padding_mode
    return new


_PLAIN: dict[type, bool] = {}


def _plain_copy(cls: type) -> bool:
    """Whether ``copy.copy`` of a ``cls`` instance is ``cls.__new__`` plus ``__setstate__`` of its
    ``__dict__``: no ``__copy__``, ``__reduce__`` or ``__getstate__`` of its own."""
    ok = _PLAIN.get(cls)
    if ok is None:
        ok = _PLAIN[cls] = not hasattr(cls, "__copy__") and all(
            getattr(cls, m) is getattr(nn.Module, m) for m in ("__reduce_ex__", "__reduce__", "__getstate__",
                                                                   "__new__"))
    return ok


def _copy_tensor(t: torch.Tensor | None, memo: dict[int, Any]):
    if t is None:
        return None
    out = memo.get(id(t))
    if out is None:
        data = t.detach().clone()
        out = memo[id(t)] = nn.Parameter(data, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) \
            else data
    return out
