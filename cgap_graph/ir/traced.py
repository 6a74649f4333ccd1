"""What tracing records into and returns: a fast ``fx.Graph``, the ``Traced`` result, and the
small graph utilities the tracer uses (forward signature, dead-code removal, specs of outputs)."""

from __future__ import annotations

import inspect
import operator
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from cgap_graph.errors import TraceError
from cgap_graph.rules import registry
from cgap_graph.rules.registry import TSpec


class FastGraph(fx.Graph):
    """``fx.Graph`` whose ``create_node`` skips the scan of every argument for raw SymInts
    (a pytree walk that costs more than the rest of node creation): the tracer never creates
    SymInts. Falls back to the stock method if fx's internals change."""

    _fast = True
    _names: dict = {}

    def create_node(self, op, target, args=None, kwargs=None, name=None, type_expr=None):
        if not self._fast:
            return super().create_node(op, target, args, kwargs, name, type_expr)
        try:
            if name is None:
                key = (op, target) if isinstance(target, str) else (op, id(target))
                candidate = FastGraph._names.get(key)
                if candidate is None:
                    candidate = FastGraph._names[key] = self._target_to_str(target)
            else:
                candidate = name
            name = self._graph_namespace.create_name(candidate, None)
            n = fx.Node(self, name, op, target, args or (), kwargs or {}, type_expr)
            self._graph_namespace.associate_name_with_obj(name, n)
            self._insert(n)
            self._find_nodes_lookup_table.insert(n)
            self._len += 1
            return n
        except AttributeError:
            FastGraph._fast = False
            return super().create_node(op, target, args, kwargs, name, type_expr)


class Traced:
    """The result of tracing: graph (with ``meta['shape']``/``meta['dtype']``), the attributes
    the graph refers to, and what tracing had to specialise or leave opaque."""

    def __init__(self, root: nn.Module, graph: fx.Graph, attrs: dict[str, Any], attr_kind: dict[str, str],
                 guards: list, opaque: dict[str, str], input_specs: list[TSpec],
                 tensors: dict[str, torch.Tensor], modules: dict[str, nn.Module] | None = None) -> None:
        self.root = root
        self.tensors = tensors
        self.modules = modules if modules is not None else dict(root.named_modules())
        self.graph = graph
        self.attrs = attrs
        self.attr_kind = attr_kind
        self.guards = guards
        self.opaque = opaque
        self.input_specs = input_specs
        self.restored: list[str] = []  # "module.attr" that forward wrote and tracing put back


def _spec_of(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return TSpec(out.shape, out.dtype)
    if isinstance(out, (tuple, list)):
        specs = tuple(_spec_of(o) for o in out)
        if type(out).__module__ == "torch.return_types":
            return registry.NamedSpecs(specs, type(out))
        return specs
    return out


def _forward_signature(model: nn.Module, n_inputs: int) -> tuple[list[str], dict[str, Any]]:
    """Names of the tensor arguments, and the defaults used for the other arguments."""
    sig = inspect.signature(model.forward)
    names, fixed = [], {}
    params = [p for p in sig.parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for i, p in enumerate(params):
        if i < n_inputs:
            names.append(p.name)
        elif p.default is not p.empty:
            fixed[p.name] = p.default
        else:
            raise TraceError(f"forward() needs argument '{p.name}' but only {n_inputs} input(s) were given; "
                             "pass one --input-shape per tensor argument")
    has_var = any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())
    if len(names) < n_inputs and not has_var:
        raise TraceError(f"{n_inputs} inputs were given but forward() takes {len(names)}")
    while len(names) < n_inputs:
        names.append(f"input_{len(names)}")
    return names, fixed


def _dce(graph: fx.Graph) -> None:
    """Remove nodes whose value is unused and that mutate nothing."""
    for node in reversed(list(graph.nodes)):
        if node.op in ("placeholder", "output") or node.users:
            continue
        t = node.target
        if node.op == "call_method" and isinstance(t, str) and t.endswith("_") and not t.endswith("__"):
            continue
        if t is operator.setitem or node.kwargs.get("inplace"):
            continue
        if node.op == "call_module":
            continue  # a module may mutate state (running statistics): keep it
        graph.erase_node(node)
