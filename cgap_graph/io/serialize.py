"""A safe, class-free file format for traced models.

A ``cgap-graph`` file is a ``torch.save`` of plain data only: the fx graph as JSON (targets by
qualified name), the constructor arguments of each leaf module (``torch.nn`` layers only), the
state dict and metadata. It loads with ``torch.load(weights_only=True)``, and every name in it is
checked against the explicit tables of ``allowlist.py`` before the graph is built, so opening,
tracing or running a file runs only pure tensor maths that cgap-graph names; it needs neither
the original model class nor its source.
"""

from __future__ import annotations

import inspect
import json
import math
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from cgap_graph.io import allowlist

FORMAT = "cgap-graph"
VERSION = 1


class NotSerializable(Exception):
    """The graph uses something the safe format cannot hold (a user function or module)."""


def _target_name(t: Any) -> str:
    """The allowlist's name for a call target (raises :class:`NotSerializable` for anything else)."""
    if isinstance(t, str):
        return t
    name = allowlist.function_name(t)
    if name is None:
        raise NotSerializable(f"call target {getattr(t, '__module__', '')}.{getattr(t, '__name__', t)} is not in "
                              "the table of tensor functions a cgap-graph file may hold")
    return name


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


def _key(k: Any) -> Any:
    if not isinstance(k, (str, int, bool)) and k is not None:
        raise ValueError(f"a dictionary key of type {type(k).__name__} cannot be stored")
    return k


def _dec(a: Any, nodes: dict[str, fx.Node]) -> Any:
    if isinstance(a, list):
        return [_dec(x, nodes) for x in a]
    if not isinstance(a, dict):
        return a
    if "__node__" in a:
        if a["__node__"] not in nodes:
            raise ValueError(f"a node refers to '{str(a['__node__'])[:40]}', which comes later or does not exist")
        return nodes[a["__node__"]]
    if "__tuple__" in a:
        return tuple(_dec(x, nodes) for x in a["__tuple__"])
    if "__dict__" in a:
        return {_key(k): _dec(v, nodes) for k, v in a["__dict__"]}
    if "__slice__" in a:
        return slice(*(_dec(x, nodes) for x in a["__slice__"]))
    if "__ellipsis__" in a:
        return Ellipsis
    if "__float__" in a:
        return float(a["__float__"])
    if "__dtype__" in a:
        return _torch_constant(a["__dtype__"], torch.dtype)
    if "__device__" in a:
        return torch.device(str(a["__device__"]))
    if "__memory_format__" in a:
        return _torch_constant(a["__memory_format__"], torch.memory_format)
    if "__layout__" in a:
        return _torch_constant(a["__layout__"], torch.layout)
    raise ValueError(f"unknown encoded value {str(a)[:80]}")


def _torch_constant(name: Any, kind: type) -> Any:
    """``torch.float32`` and the like: looked up, then checked to be of ``kind`` (never a function)."""
    value = getattr(torch, allowlist.identifier(name, "torch constant"), None)
    if not isinstance(value, kind):
        raise allowlist.Forbidden(f"'{name}' is not a torch {kind.__name__}")
    return value


# ---- leaf modules ---------------------------------------------------------------------------------------
def module_spec(mod: nn.Module) -> dict[str, Any]:
    """Constructor arguments of a ``torch.nn`` module, read back from its attributes."""
    cls = type(mod)
    if cls not in allowlist.MODULE_CLASSES.values():
        raise NotSerializable(f"module {cls.__module__}.{cls.__qualname__} is not one of the torch.nn layers a "
                              "cgap-graph file may hold")
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
    cls = allowlist.module_class(spec["type"])
    kwargs = _dec(spec["kwargs"], {})
    if not isinstance(kwargs, dict):
        raise ValueError(f"the arguments of a {cls.__name__} are not a table")
    for k in kwargs:
        allowlist.identifier(k, f"argument of {cls.__name__}")
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
        elif n.op == "call_method" and target not in allowlist.METHODS:
            raise NotSerializable(f"tensor method '{target}' is not in the table a cgap-graph file may hold")
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
    """Rebuild a graph module from :func:`to_payload` data. Every name is checked against the
    allowlist first (raises :class:`allowlist.Forbidden`), so no code from the file runs."""
    spec = json.loads(payload["graph"])
    state = _checked_tensors(payload["state_dict"], "state dict")
    consts = _checked_tensors(payload.get("constants", {}), "constant")
    modules = {allowlist.dotted(k, "module name"): v for k, v in spec["modules"].items()}
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    for nd in spec["nodes"]:
        env[nd["name"]] = _build_node(graph, nd, env, state, consts, modules)
    attrs: dict[str, Any] = {name: build_module(mspec) for name, mspec in modules.items()}
    params = set(spec.get("parameters", []))
    for nd in spec["nodes"]:
        if nd["op"] == "get_attr":
            t = nd["target"]
            attrs[t] = consts[t] if t in consts else nn.Parameter(state[t].clone()) if t in params else state[t].clone()
    class_name = allowlist.identifier(spec.get("class_name", "GraphModule"), "class name")
    gm = fx.GraphModule(attrs, graph, class_name=class_name)
    missing, unexpected = gm.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{len(unexpected)} unexpected tensors in the file (e.g. {unexpected[0]})")
    if missing:
        raise ValueError(f"{len(missing)} tensors missing from the file (e.g. {missing[0]})")
    return gm, json.loads(payload.get("meta", "{}"))


def _checked_tensors(tensors: Any, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(tensors, dict):
        raise ValueError(f"the file's {what} table is a {type(tensors).__name__}")
    for k, t in tensors.items():
        allowlist.dotted(k, f"{what} name")
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{what} '{k}' is a {type(t).__name__}, not a tensor")
    return tensors


def _build_node(graph: fx.Graph, nd: dict[str, Any], env: dict[str, fx.Node], state: dict, consts: dict,
                modules: dict) -> fx.Node:
    """One graph node, after checking its op, target and every name against the allowlist."""
    op, target = nd["op"], nd["target"]
    name = allowlist.identifier(nd["name"], "node name")
    if op not in allowlist.OPS:
        raise allowlist.Forbidden(f"node '{name}' has op '{op}'")
    args = _dec(nd["args"], env)
    kwargs = _dec(nd["kwargs"], env)
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise ValueError(f"node '{name}' has malformed arguments")
    for k in kwargs:
        allowlist.identifier(k, f"keyword of node '{name}'")
    if op == "placeholder":
        return graph.placeholder(name)
    if op == "output":
        return graph.output(args[0] if args else None)
    if op == "call_function":
        target = allowlist.function(target)
        if target is getattr:
            allowlist.check_getattr(tuple(args))
    elif op == "call_method":
        target = allowlist.method(target)
    elif op == "call_module":
        if allowlist.dotted(target, "module name") not in modules:
            raise ValueError(f"node '{name}' calls module '{target}', which the file does not define")
    elif allowlist.dotted(target, "attribute name") not in state and target not in consts:  # get_attr
        raise ValueError(f"node '{name}' reads '{target}', which is not a tensor in the file")
    return graph.create_node(op, target, tuple(args), kwargs, name=name)


__all__ = ["FORMAT", "NotSerializable", "build_module", "from_payload", "module_spec", "to_payload"]
