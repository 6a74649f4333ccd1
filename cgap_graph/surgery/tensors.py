"""Reading and replacing a model's parameters and buffers by qualified name."""

from __future__ import annotations

import weakref

import torch
from torch import nn

# module path -> module, per root module: a surgery looks the same few hundred paths up thousands
# of times, and submodules keep their identity through it (only their tensors are replaced)
_PATHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def owner(gm: nn.Module, key: str) -> tuple[nn.Module, str]:
    """The module holding ``key`` and the attribute name in it."""
    mod_path, _, name = key.rpartition(".")
    if not mod_path:
        return gm, name
    paths = _PATHS.get(gm)
    if paths is None:
        paths = _PATHS[gm] = {}
    mod = paths.get(mod_path)
    if mod is None:
        mod = paths[mod_path] = gm.get_submodule(mod_path)
    return mod, name


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
