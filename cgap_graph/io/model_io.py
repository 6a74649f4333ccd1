"""Loading models given on the command line, and saving results.

What ``MODEL`` can be:

- a zoo name (``resnet56``; ``--width`` scales it);
- a file written by cgap-graph (``save_model``): safe to open, needs no model class;
- a state dict (``torch.save(model.state_dict())``) with ``--arch module:factory`` naming the
  code that builds the architecture (importable from the current directory);
- a pickled module (``torch.save(model)``): loading one runs code from the file, so it loads
  only with ``trust=True`` (``--trust``).

Every failure is a :class:`ModelLoadError` with one line that says what to do.
"""

from __future__ import annotations

import importlib
import math
import os
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from cgap_graph import zoo
from cgap_graph.errors import ModelLoadError
from cgap_graph.io import serialize
from cgap_graph.io.atomic import atomic_write
from cgap_graph.io.outputs import check_output
from cgap_graph.io.torch_load import load_weights_only


@dataclass
class LoadedModel:
    model: nn.Module
    source: str  # "zoo" | "cgap" | "state_dict" | "pickle"
    input_shape: tuple[int, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def importable_from_cwd() -> None:
    """User code (``--arch mymodels:net``, the class of a trusted pickle, ``--data mydata:build``)
    is imported from the current directory, as ``python -c`` would."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def import_object(spec: str, flag: str, error: type[Exception] = ModelLoadError) -> Any:
    """``module:attr`` (or ``file.py:attr``, ``pkg/file.py:attr``) imported from the current
    directory: the one rule for every piece of user code a command names (--arch, --dataset,
    --loss, --metric)."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        what = "factory" if flag == "--arch" else "function"
        raise error(f"{flag} '{spec}' must look like 'package.module:{what}' (or 'file.py:{what}')")
    if mod_name.endswith(".py"):
        mod_name = mod_name[:-3].replace("\\", "/").strip("/").replace("/", ".")
    importable_from_cwd()
    try:
        mod = importlib.import_module(mod_name)
    except Exception as exc:
        raise error(f"cannot import '{mod_name}' for {flag}: {type(exc).__name__}: {exc}") from None
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise error(f"'{mod_name}' has no '{attr}' (from {flag} {spec})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise error(f"{flag} {spec} is not callable")
    return obj


def _import_factory(spec: str):
    return import_object(spec, "--arch")


def _build_arch(arch: str, kwargs: dict[str, Any] | None) -> nn.Module:
    factory = _import_factory(arch)
    try:
        net = factory(**(kwargs or {}))
    except Exception as exc:
        raise ModelLoadError(f"--arch {arch} failed to build the model: {type(exc).__name__}: {exc}") from None
    if not isinstance(net, nn.Module):
        raise ModelLoadError(f"--arch {arch} returned {type(net).__name__}, not a torch.nn.Module")
    return net


def _unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, dict):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in ("state_dict", "model_state_dict", "model", "net", "weights"):
            if key in obj and isinstance(obj[key], dict):
                found = _unwrap_state_dict(obj[key])
                if found is not None:
                    return found
    return None


def _torch_load(path: Path) -> Any:
    try:
        return load_weights_only(path)
    except pickle.UnpicklingError as exc:
        # a well-formed pickle of objects (a whole model) names the classes it needs; anything
        # else failing here (a text file, random bytes) is simply not a model file
        if "Unsupported global" in str(exc):
            raise _NeedsTrust() from None
        raise ModelLoadError(f"{path} is not a PyTorch model file or is corrupt (unreadable pickle)") from None
    except PermissionError:
        raise ModelLoadError(f"cannot read {path}: permission denied") from None
    except Exception as exc:  # any other failure: not a torch file, truncated, damaged
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path} is not a PyTorch model file or is corrupt "
                             f"({type(exc).__name__}: {msg[:120]})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


class _NeedsTrust(Exception):
    pass


def load_model(model: str, *, arch: str | None = None, arch_kwargs: dict[str, Any] | None = None,
               trust: bool = False, width: float = 1.0, shape_only: bool = False) -> LoadedModel:
    """Load ``model`` (a zoo name or a file; see module docstring). ``shape_only``: a zoo model is
    built on the meta device (no memory for weights), enough for tracing and counting. With no
    ``model`` (an empty name) and an ``arch``, the architecture is built fresh (its own initial
    weights): the user's model file, trained from scratch."""
    if not model and arch is not None:
        return LoadedModel(_build_arch(arch, arch_kwargs).eval(), "arch", None, {"arch": arch})
    path = Path(model)
    name = model[4:] if model.startswith("zoo:") else model
    if not path.exists():
        if name in zoo.ZOO:
            return LoadedModel(_build_zoo(name, width, shape_only), "zoo", zoo.input_shape(name),
                               {"zoo": name, "width": width})
        raise ModelLoadError(f"no file '{model}' and no zoo model of that name; zoo models: "
                             f"{', '.join(zoo.names())}")
    if path.is_dir():
        raise ModelLoadError(f"{model} is a directory; give a model file")
    if arch is not None:
        obj = _torch_load(path)
        state = _unwrap_state_dict(obj)
        if state is None:
            raise ModelLoadError(f"{model} holds no state dict (a dict of tensors); save one with "
                                 "torch.save(model.state_dict(), path)")
        net = _build_arch(arch, arch_kwargs)
        missing, unexpected = _load_state(net, state)
        if missing or unexpected:
            detail = (f"missing {len(missing)} (e.g. {missing[0]})" if missing else "") + \
                     ("; " if missing and unexpected else "") + \
                     (f"unexpected {len(unexpected)} (e.g. {unexpected[0]})" if unexpected else "")
            raise ModelLoadError(f"the weights in {model} do not fit --arch {arch}: {detail}")
        return LoadedModel(net.eval(), "state_dict")
    try:
        obj = _torch_load(path)
    except _NeedsTrust:
        obj = _load_trusted_pickle(path, model, trust)
    if isinstance(obj, dict) and obj.get("format") == serialize.FORMAT:
        try:
            gm, meta = serialize.from_payload(obj)
        except Exception as exc:  # a forbidden name, or any damage: one line, nothing built
            raise ModelLoadError(f"{model} is a damaged or unsafe cgap-graph file: {_first_line(exc)}") from None
        shape = tuple(meta["input_shape"]) if meta.get("input_shape") else None
        return LoadedModel(gm.eval(), "cgap", shape, meta)
    if isinstance(obj, nn.Module):
        return LoadedModel(obj.eval(), "pickle")
    if _unwrap_state_dict(obj) is not None:
        raise ModelLoadError(f"{model} holds only weights (a state dict); say which architecture they belong to "
                             "with --arch module:factory")
    raise ModelLoadError(f"{model} holds a {type(obj).__name__}, not a model")


# Weights a real build may take: beyond this, only shape-only work (inspect) is possible.
MAX_REAL_PARAMS = 2_000_000_000
MAX_WIDTH = 10_000.0  # a zoo model this many times as wide is already beyond any memory


def _build_zoo(name: str, width: float, shape_only: bool) -> nn.Module:
    if not (isinstance(width, (int, float)) and math.isfinite(width) and 0 < width <= MAX_WIDTH):
        raise ModelLoadError(f"--width must be a finite number in (0, {MAX_WIDTH:g}] (a width multiplier, e.g. 0.125), "
                             f"got {width}")
    try:
        with torch.device("meta"):
            meta = zoo.build(name, width=width)
    except (ValueError, RuntimeError, OverflowError, TypeError) as exc:
        raise ModelLoadError(f"cannot build {name} at --width {width}: {exc}") from None
    if shape_only:
        return meta
    n = sum(p.numel() for p in meta.parameters())
    if n > MAX_REAL_PARAMS:
        raise ModelLoadError(f"{name} at --width {width:g} has {n / 1e9:.1f}G parameters ({4 * n / 2**30:.0f} GiB); "
                             "this command needs real weights: use a smaller --width ('cgap-graph inspect' analyses "
                             "it without weights)")
    return zoo.build(name, width=width)


def _load_trusted_pickle(path: Path, model: str, trust: bool) -> nn.Module:
    if not trust:
        raise ModelLoadError(
            f"{model} is a pickled model: loading it runs code from the file. If you trust it, add "
            "--trust (trust=True); otherwise save model.state_dict() and pass --arch module:factory")
    importable_from_cwd()  # the pickle names its class: find it where the user keeps it
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)  # --trust: its warnings are the user's
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot unpickle {model}: {type(exc).__name__}: {msg} (is the model's class "
                             "importable from here?)") from None
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"{model} holds a {type(obj).__name__}, not a torch.nn.Module")
    return obj


def _load_state(net: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    try:
        res = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches
        line = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), str(exc).splitlines()[0])
        raise ModelLoadError(f"the weights do not fit the architecture: {line}") from None
    return list(res.missing_keys), list(res.unexpected_keys)


def save_model(module: nn.Module, path: str | os.PathLike, *, meta: dict[str, Any] | None = None,
               inputs: list[str | os.PathLike] | None = None) -> str:
    """Save atomically. Graph modules go to the safe cgap-graph format when possible (returns
    "cgap"); otherwise the module is pickled (returns "pickle": loading it needs its class and
    ``--trust``)."""
    check_output(path, inputs or [])
    payload: Any
    kind = "cgap"
    if isinstance(module, fx.GraphModule):
        try:
            payload = serialize.to_payload(module, meta)
        except serialize.NotSerializable:
            payload, kind = module, "pickle"
    else:
        payload, kind = module, "pickle"
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return kind


__all__ = ["MAX_REAL_PARAMS", "LoadedModel", "import_object", "importable_from_cwd", "load_model", "save_model"]
