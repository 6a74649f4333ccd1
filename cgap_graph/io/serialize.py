"""A safe, class-free file format for traced models.

A ``cgap-graph`` file is a ``torch.save`` of plain data only: the fx graph as JSON (targets by
qualified name), the constructor arguments of each leaf module (``torch.nn`` classes only), the
state dict and metadata. It loads with ``torch.load(weights_only=True)``, so opening a file
runs no code from it, and it needs neither the original model class nor its source. Call
targets resolve only inside ``torch``, ``operator``, ``math`` and ``builtins``.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import json
import math
import operator
from typing import Any

import torch
import torch.fx as fx
from torch import nn

FORMAT = "cgap-graph"
VERSION = 1
_SAFE_ROOTS = ("torch", "operator", "_operator", "math", "builtins")


class NotSerializable(Exception):
    """The graph uses something the safe format cannot hold (a user function or module)."""


# ---- call targets -----------------------------------------------------------------------------------
_NAMESPACES = ("torch.nn.functional", "torch", "operator", "math", "builtins")


def _target_name(t: Any) -> str:
    """An importable name that resolves back to exactly ``t``."""
    if isinstance(t, str):
        return t
    mod = getattr(t, "__module__", None) or ""
    candidates = []
    for attr in ("__name__", "__qualname__"):
        name = getattr(t, attr, None)
        if name and "<" not in name:
            candidates.append(f"{mod}.{name}" if mod else name)
            candidates.extend(f"{ns}.{name}" for ns in _NAMESPACES)
    for full in candidates:
        if full.split(".")[0] not in _SAFE_ROOTS:
            continue
        try:
            if _resolve(full) is t:
                return full
        except Exception:
            continue
    raise NotSerializable(f"call target {mod}.{getattr(t, '__name__', t)} is not an importable torch function")


def _resolve(name: str) -> Any:
    parts = name.split(".")
    if parts[0] not in _SAFE_ROOTS:
        raise ValueError(f"refusing to resolve '{name}': only torch, operator, math and builtins targets load")
    for i in range(len(parts), 0, -1):
        modname = ".".join(parts[:i])
        try:
            obj = importlib.import_module(modname)
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ValueError(f"cannot resolve call target '{name}'")


# ---- arguments ---------------------------------------------------------------------------------------
def _enc(a: Any) -> Any:
    if isinstance(a, fx.Node):
        return {"__node__": a.name}
    if a is None or isinstance(a, (bool, int, str)):
        return a
    if isinstance(a, float):
        if math.isfinite(a):
            return a
        return {"__float__": repr(a)}
    if isinstance(a, tuple):
        return {"__tuple__": [_enc(x) for x in a]}
    if isinstance(a, list):
        return [_enc(x) for x in a]
    if isinstance(a, dict):
        return {"__dict__": [[k, _enc(v)] for k, v in a.items()]}
    if isinstance(a, slice):
        return {"__slice__": [_enc(a.start), _enc(a.stop), _enc(a.step)]}
    if a is Ellipsis:
        return {"__ellipsis__": True}
    if isinstance(a, torch.dtype):
        return {"__dtype__": str(a).replace("torch.", "")}
    if isinstance(a, torch.device):
        return {"__device__": str(a)}
    if isinstance(a, torch.memory_format):
        return {"__memory_format__": str(a).replace("torch.", "")}
    if isinstance(a, torch.layout):
        return {"__layout__": str(a).replace("torch.", "")}
    raise NotSerializable(f"argument of type {type(a).__name__} cannot be stored")


def _dec(a: Any, nodes: dict[str, fx.Node]) -> Any:
    if isinstance(a, list):
        return [_dec(x, nodes) for x in a]
    if not isinstance(a, dict):
        return a
    if "__node__" in a:
        return nodes[a["__node__"]]
    if "__tuple__" in a:
        return tuple(_dec(x, nodes) for x in a["__tuple__"])
    if "__dict__" in a:
        return {k: _dec(v, nodes) for k, v in a["__dict__"]}
    if "__slice__" in a:
        return slice(*(_dec(x, nodes) for x in a["__slice__"]))
    if "__ellipsis__" in a:
        return Ellipsis
    if "__float__" in a:
        return float(a["__float__"])
    if "__dtype__" in a:
        return getattr(torch, a["__dtype__"])
    if "__device__" in a:
        return torch.device(a["__device__"])
    if "__memory_format__" in a:
        return getattr(torch, a["__memory_format__"])
    if "__layout__" in a:
        return getattr(torch, a["__layout__"])
    raise ValueError(f"unknown encoded value {a}")


# ---- leaf modules ---------------------------------------------------------------------------------------
def module_spec(mod: nn.Module) -> dict[str, Any]:
    """Constructor arguments of a ``torch.nn`` module, read back from its attributes."""
    cls = type(mod)
    if not cls.__module__.startswith("torch.nn"):
        raise NotSerializable(f"module {cls.__module__}.{cls.__qualname__} is not a torch.nn module")
    kwargs: dict[str, Any] = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", "device", "dtype") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name == "bias" and "bias" in mod._parameters:
            kwargs[name] = mod._parameters["bias"] is not None
            continue
        if name == "elementwise_affine":
            kwargs[name] = getattr(mod, "weight", None) is not None
            continue
        if name.startswith("_"):
            continue
        if hasattr(mod, name):
            v = getattr(mod, name)
            if isinstance(v, (torch.Tensor, nn.Module)):
                continue
            kwargs[name] = list(v) if isinstance(v, torch.Size) else v
        elif p.default is p.empty:
            raise NotSerializable(f"cannot read argument '{name}' of {cls.__name__}")
    return {"type": f"{cls.__module__}.{cls.__qualname__}", "kwargs": _enc(kwargs), "training": mod.training}


def build_module(spec: dict[str, Any]) -> nn.Module:
    name = spec["type"]
    if not name.startswith("torch.nn."):
        raise ValueError(f"refusing to build module type '{name}': only torch.nn modules load")
    cls = _resolve(name)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"'{name}' is not a module class")
    kwargs = _dec(spec["kwargs"], {})
    mod = cls(**kwargs)
    mod.train(spec.get("training", False))
    return mod


# ---- whole graph modules ------------------------------------------------------------------------------
def to_payload(gm: fx.GraphModule, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Plain-data description of a graph module (raises :class:`NotSerializable`)."""
    nodes = []
    modules: dict[str, Any] = {}
    for n in gm.graph.nodes:
        target = n.target
        if n.op == "call_function":
            target = _target_name(target)
        elif n.op == "call_module":
            if target not in modules:
                modules[target] = module_spec(gm.get_submodule(target))
        nodes.append({"name": n.name, "op": n.op, "target": target, "args": _enc(n.args),
                      "kwargs": _enc(dict(n.kwargs))})
    state = {k: v.detach().cpu().clone() for k, v in gm.state_dict().items()}
    consts = {}
    for n in gm.graph.nodes:
        if n.op == "get_attr" and n.target not in state:
            v = _get(gm, n.target)
            if not isinstance(v, torch.Tensor):
                raise NotSerializable(f"attribute {n.target} is not a tensor")
            consts[n.target] = v.detach().cpu().clone()
    params = {n.target for n in gm.graph.nodes if n.op == "get_attr" and isinstance(_get(gm, n.target), nn.Parameter)}
    return {
        "format": FORMAT,
        "version": VERSION,
        "graph": json.dumps({"nodes": nodes, "modules": modules, "parameters": sorted(params),
                             "class_name": type(gm).__name__}),
        "state_dict": state,
        "constants": consts,
        "meta": json.dumps(meta or {}),
        "torch_version": str(torch.__version__),
    }


def _get(m: nn.Module, target: str) -> Any:
    obj: Any = m
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def from_payload(payload: dict[str, Any]) -> tuple[fx.GraphModule, dict[str, Any]]:
    """Rebuild a graph module from :func:`to_payload` data (no code from the file runs)."""
    spec = json.loads(payload["graph"])
    state = payload["state_dict"]
    consts = payload.get("constants", {})
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    for nd in spec["nodes"]:
        op = nd["op"]
        target = nd["target"]
        if op == "call_function":
            target = _resolve(target)
        args = _dec(nd["args"], env)
        kwargs = _dec(nd["kwargs"], env)
        if op == "placeholder":
            node = graph.placeholder(nd["name"])
        elif op == "output":
            node = graph.output(args[0])
        else:
            node = graph.create_node(op, target, tuple(args), kwargs, name=nd["name"])
        env[nd["name"]] = node
    attrs: dict[str, Any] = {}
    for name, mspec in spec["modules"].items():
        attrs[name] = build_module(mspec)
    params = set(spec.get("parameters", []))
    for nd in spec["nodes"]:
        if nd["op"] == "get_attr":
            t = nd["target"]
            if t in consts:
                attrs[t] = consts[t]
            elif t in state:
                attrs[t] = nn.Parameter(state[t].clone()) if t in params else state[t].clone()
    gm = fx.GraphModule(attrs, graph, class_name=spec.get("class_name", "GraphModule"))
    missing, unexpected = gm.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{len(unexpected)} unexpected tensors in the file (e.g. {unexpected[0]})")
    if missing:
        raise ValueError(f"{len(missing)} tensors missing from the file (e.g. {missing[0]})")
    return gm, json.loads(payload.get("meta", "{}"))


__all__ = ["FORMAT", "NotSerializable", "build_module", "from_payload", "module_spec", "to_payload", "builtins",
           "operator"]
