"""Reading and replacing a model's parameters and buffers by qualified name."""

from __future__ import annotations

import torch
from torch import nn


def owner(gm: nn.Module, key: str) -> tuple[nn.Module, str]:
    mod_path, _, name = key.rpartition(".")
    return (gm.get_submodule(mod_path) if mod_path else gm), name


def get_tensor(gm: nn.Module, key: str) -> torch.Tensor:
    """The parameter, buffer or tensor attribute ``key`` (e.g. ``layer1.0.conv1.weight``)."""
    mod, name = owner(gm, key)
    return getattr(mod, name)


def put_tensor(gm: nn.Module, key: str, value: torch.Tensor) -> None:
    """Replace ``key`` with ``value``, keeping its kind (a parameter stays a parameter)."""
    mod, name = owner(gm, key)
    if name in mod._parameters:
        old = mod._parameters[name]
        mod._parameters[name] = nn.Parameter(value, requires_grad=old.requires_grad if old is not None else True)
    elif name in mod._buffers:
        mod._buffers[name] = value
    else:
        setattr(mod, name, value)


def restore_tensor(gm: nn.Module, key: str, obj: torch.Tensor) -> None:
    mod, name = owner(gm, key)
    if name in mod._parameters:
        mod._parameters[name] = obj
    elif name in mod._buffers:
        mod._buffers[name] = obj
    else:
        setattr(mod, name, obj)
