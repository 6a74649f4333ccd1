"""A fast symbolic tracer that records a torch.fx graph with static shapes.

Why not ``torch.fx.symbolic_trace`` plus shape propagation: fx's Proxy machinery costs about
100 us per op, and propagating shapes on meta or fake tensors another 150-1500 us per op. Here
each op is recorded once into an ``fx.Graph`` while a small per-op *shape rule* computes its
output shape in Python, so analysing a 100M-parameter model runs no FLOPs and a ResNet-110
traces in a few milliseconds. Ops without a shape rule fall back to meta tensors.

What it does like fx: parameters become ``get_attr`` nodes, leaf modules (those with a channel
rule) become ``call_module`` nodes, tensor methods ``call_method``, everything else
``call_function``; sizes read with ``x.size()``/``x.shape`` stay symbolic, so the batch size is
not baked in. What it does better: ``forward`` arguments that are not tensors keep their default
values (``forward(x, return_features=False)`` traces), ``x.dim()`` is static, and Python control
flow on a channel width is specialised and reported (its groups freeze) instead of failing.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from cgap_graph.errors import InputShapeError, TraceError
from cgap_graph.ir.symbolic import (
    _NOT_TRACEABLE,
    _STATIC_FALSE,
    SymShape,
    SymTensor,
    SymValue,
    _user_location,
    state,
)
from cgap_graph.ir.traced import FastGraph, _spec_of
from cgap_graph.rules import registry
from cgap_graph.rules.registry import Call, TSpec

_ORIG_CALL = nn.Module.__call__
_ORIG_GETATTR = nn.Module.__getattr__
_HERE = __file__.rsplit("/", 1)[0]


_IS_METHOD: dict = {}


class Tracer:
    def __init__(self, root: nn.Module, leaf_modules: Sequence[Any] = ()) -> None:
        self.root = root
        self.graph = FastGraph()
        self.module_names: dict[int, str] = {}
        self.modules: dict[str, nn.Module] = {}
        self.tensor_names: dict[int, tuple[str, str]] = {}
        self.tensors: dict[str, torch.Tensor] = {}
        self._index(root, "")
        self.attrs: dict[str, Any] = {}
        self.attr_kind: dict[str, str] = {}
        self.attr_nodes: dict[str, SymTensor] = {}
        self._const_ids: dict[int, str] = {}
        self._keepalive: list[Any] = []
        self.guards: list[tuple[fx.Node, str, str]] = []
        self.leaf_types = tuple(t for t in leaf_modules if isinstance(t, type))
        self.leaf_names = {t for t in leaf_modules if isinstance(t, str)}
        self.opaque: dict[str, str] = {}
        self.module_stack: list[str] = []
        self._no_rule_shape = False

    def _index(self, mod: nn.Module, prefix: str) -> None:
        """Names of every submodule, parameter and buffer (first name wins for shared ones).
        A direct walk: ``named_modules``/``named_parameters`` cost several times more."""
        if id(mod) not in self.module_names:
            self.module_names[id(mod)] = prefix
        self.modules[prefix] = mod
        dot = prefix + "." if prefix else ""
        names, tensors = self.tensor_names, self.tensors
        for kind, table in (("param", mod._parameters), ("buffer", mod._buffers)):
            for n, t in table.items():
                if t is not None:
                    key = dot + n
                    if id(t) not in names:
                        names[id(t)] = (key, kind)
                    tensors[key] = t
        for n, c in mod._modules.items():
            if c is not None:
                self._index(c, dot + n)

    # ---- conversion of Python-level values to graph arguments ---------------------------------
    def arg(self, a: Any) -> Any:
        t = type(a)
        if t is SymTensor or t is SymValue:
            return a.node
        if a is None or t is int or t is float or t is bool or t is str:
            return a
        if t is tuple:
            if len(a) == 1 and type(a[0]) is SymTensor:
                return (a[0].node,)
            return tuple([self.arg(x) for x in a])
        if t is list:
            return [self.arg(x) for x in a]
        if isinstance(a, tuple):
            return tuple(self.arg(x) for x in a)
        if isinstance(a, torch.Tensor):
            return self.attr_tensor(a).node
        if t is dict:
            return {k: self.arg(v) for k, v in a.items()}
        if t is slice:
            return slice(self.arg(a.start), self.arg(a.stop), self.arg(a.step))
        if isinstance(a, nn.Module):
            raise TraceError(f"a module ({type(a).__name__}) is passed as an op argument at {_user_location()}")
        return a

    def attr_tensor(self, t: torch.Tensor) -> SymTensor:
        """A get_attr node for a parameter, buffer or constant tensor (one per tensor)."""
        known = self.tensor_names.get(id(t))
        if known is not None:
            name, kind = known
        else:
            name = self._const_ids.get(id(t))
            if name is None:
                name = f"_tensor_constant{len(self._const_ids)}"
                self._const_ids[id(t)] = name
                self._keepalive.append(t)
            kind = "const"
        st = self.attr_nodes.get(name)
        if st is None:
            node = self.graph.create_node("get_attr", name)
            node.meta["shape"] = tuple(t.shape)
            node.meta["dtype"] = t.dtype
            self.attrs[name] = t
            self.attr_kind[name] = kind
            self.tensors[name] = t
            st = SymTensor(node, tuple(t.shape), t.dtype)
            self.attr_nodes[name] = st
        return st

    # ---- recording ----------------------------------------------------------------------------
    def _wrap(self, node: fx.Node, spec: Any) -> Any:
        if isinstance(spec, TSpec):
            node.meta["shape"] = spec.shape
            node.meta["dtype"] = spec.dtype
            return SymTensor(node, spec.shape, spec.dtype)
        if isinstance(spec, (tuple, list)):
            node.meta["shape"] = tuple(s.shape if isinstance(s, TSpec) else None for s in spec)
            node.meta["dtype"] = tuple(s.dtype if isinstance(s, TSpec) else None for s in spec)
            out = []
            for i, s in enumerate(spec):
                g = self.graph.create_node("call_function", operator.getitem, (node, i), {})
                out.append(self._wrap(g, s))
            if isinstance(spec, registry.NamedSpecs) and spec.cls is not None:
                return spec.cls(out)  # x.max(1).values works as in eager mode
            return type(spec)(out) if type(spec) in (tuple, list) else tuple(out)
        node.meta["value"] = spec
        return spec

    def _record(self, op: str, target: Any, args: tuple, kwargs: dict, spec: Any) -> Any:
        node = self.graph.create_node(op, target, self.arg(args), self.arg(kwargs) if kwargs else None)
        if self.module_stack:
            node.meta["module"] = self.module_stack[-1]
        if self._no_rule_shape:
            node.meta["meta_shape"] = True
            self._no_rule_shape = False
        return self._wrap(node, spec)

    def _shape(self, rule: registry.OpRule | None, what: str, call, args, kwargs, module=None):
        """Output spec from the op's shape rule; meta tensors when there is no rule or the rule
        does not cover this call (the node is then marked so the analysis treats it as opaque)."""
        rule_exc = None
        if rule is not None and rule.shape is not None:
            try:
                return rule.shape(Call(args, kwargs, module))
            except TraceError:
                raise
            except Exception as exc:
                rule_exc = exc
        try:
            try:
                spec = self._meta_shape(call, args, kwargs, module)
            except TraceError:
                raise
            except Exception:
                # data-dependent code (x.item(), nonzero) cannot run on meta tensors: run it
                # for real on random inputs of the right shapes, only to learn its output shape
                spec = self._meta_shape(call, args, kwargs, module, real=True)
        except TraceError:
            raise
        except Exception as exc:
            shapes = [a._shape for a in args if isinstance(a, SymTensor)]
            exc = rule_exc or exc  # the rule's message names the mismatch; meta's is vaguer
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            err = InputShapeError(f"{what} fails on inputs of shape {shapes} at {_user_location()}: {msg}")
            err.no_fallback = rule is not None  # a known op rejecting its input: the input is wrong
            raise err from None
        self._no_rule_shape = True
        return spec

    def torch_function(self, func, args, kwargs):
        is_method = _IS_METHOD.get(func)
        if is_method is None:  # torch's check runs under a warnings filter: ask once per function
            is_method = _IS_METHOD[func] = torch.overrides.is_tensor_method_or_property(func)
        if is_method:
            name = func.__name__
            if name == "size":
                return self.size(args[0], *args[1:], **kwargs)
            if name in ("dim", "ndimension"):
                return len(args[0]._shape)
            return self.call_method(name, args[0], args[1:], kwargs)
        return self.call_function(func, args, kwargs)

    def call_function(self, func, args, kwargs):
        rule = registry.FUNCTIONS.get(func)
        spec = self._shape(rule, getattr(func, "__name__", str(func)), lambda *a, **k: func(*a, **k), args, kwargs)
        return self._record("call_function", func, args, kwargs, spec)

    def call_method(self, name: str, self_t, args, kwargs):
        if name in _NOT_TRACEABLE:
            raise TraceError(f"x.{name}() at {_user_location()} reads tensor data, which tracing cannot do; "
                             "make the module that does it a leaf (leaf_modules=...)")
        rule = registry.METHODS.get(name)
        full = (self_t, *args)
        spec = self._shape(rule, f"Tensor.{name}", lambda s, *a, **k: getattr(s, name)(*a, **k), full, kwargs)
        return self._record("call_method", name, full, kwargs, spec)

    def size(self, t: SymTensor, d: int | None = None, **kw):
        if d is None:
            d = kw.get("dim")
        if d is None:
            return SymShape(self.size(t, i) for i in range(len(t._shape)))
        if isinstance(d, SymValue):
            d = d.value
        d = registry.norm_dim(d, len(t._shape))
        node = self.graph.create_node("call_method", "size", (t.node, d), {})
        node.meta["value"] = t._shape[d]
        return SymValue(node, t._shape[d], frozenset([(t.node, d)]))

    def tensor_attr(self, t: SymTensor, name: str) -> Any:
        if name == "shape":
            return self.size(t)
        if name == "device":
            node = self.graph.create_node("call_function", getattr, (t.node, "device"), {})
            dev = torch.device("cpu")
            node.meta["value"] = dev
            return SymValue(node, dev, frozenset())
        if name == "is_cuda":
            return False
        if name in _STATIC_FALSE:
            return False
        if name == "layout":
            return torch.strided
        if name == "T":
            return self.call_method("permute", t, tuple(reversed(range(len(t._shape)))), {})
        if name == "mT":
            return self.call_method("transpose", t, (-2, -1), {})
        if name == "data":
            return self.call_method("detach", t, (), {})
        if name in ("grad", "names", "grad_fn"):
            return None
        if name == "numel" or name == "nelement":
            return lambda: SymShape(self.size(t)).numel()
        if name == "is_floating_point":
            return lambda: t.dtype.is_floating_point
        if name == "is_complex":
            return lambda: t.dtype.is_complex
        if name == "is_contiguous":
            return lambda *a, **k: True
        if name == "element_size":
            return lambda: torch.empty((), dtype=t.dtype).element_size()
        if name == "get_device":
            return lambda: -1
        if name in _NOT_TRACEABLE:
            raise TraceError(f"x.{name} at {_user_location()} reads tensor data, which tracing cannot do; "
                             "make the module that does it a leaf (leaf_modules=...)")
        if callable(getattr(torch.Tensor, name, None)):
            return lambda *a, **k: self.call_method(name, t, a, k)
        raise AttributeError(f"'Tensor' object has no attribute '{name}'")

    def guard(self, v: SymValue, why: str) -> None:
        loc = _user_location()
        for node, d in v.deps:
            if node.op == "placeholder" and d == 0:
                raise TraceError(
                    f"forward() {why.replace('used', 'uses the batch size')} at {loc}: the graph would only "
                    "work for one batch size; compute it with tensor ops or move it into a leaf module")
        self.guards.append((v.node, why, loc))

    # ---- modules ------------------------------------------------------------------------------
    def is_leaf(self, mod: nn.Module, name: str) -> bool:
        if name in self.leaf_names or (self.leaf_types and isinstance(mod, self.leaf_types)):
            return True
        return registry.module_rule(mod) is not None

    def module_call(self, mod: nn.Module, args: tuple, kwargs: dict):
        name = self.module_names.get(id(mod))
        if name is None:
            raise TraceError(f"module {type(mod).__name__} called at {_user_location()} is not an attribute "
                             "of the model; register it as a submodule")
        if self.is_leaf(mod, name):
            rule = registry.module_rule(mod)
            if rule is None:
                self.opaque.setdefault(name, f"leaf module {type(mod).__name__} (no channel rule)")
            spec = self._shape(rule, f"module '{name}' ({type(mod).__name__})",
                               lambda *a, **k: _ORIG_CALL(mod, *a, **k), args, kwargs, module=mod)
            return self._record("call_module", name, args, kwargs, spec)
        self.module_stack.append(name)
        try:
            forward = registry.module_forward(mod)  # an explicit forward from the rules (nn.MultiheadAttention)
            if forward is not None:
                return forward(mod, *args, **kwargs)
            return _ORIG_CALL(mod, *args, **kwargs)
        except Exception as exc:
            if getattr(exc, "cgap_module", None) is None:
                try:
                    exc.cgap_module = name  # innermost traced module: the fallback makes it a leaf
                except AttributeError:
                    pass
            raise
        finally:
            self.module_stack.pop()

    # ---- shapes for ops without a rule ----------------------------------------------------------
    def _meta_shape(self, call, args, kwargs, module=None, real=False):
        def to_meta(a):
            t = type(a)
            if t is SymTensor:
                if real:
                    return (torch.randn(a._shape, dtype=a.dtype) if a.dtype.is_floating_point
                            else torch.zeros(a._shape, dtype=a.dtype))
                return torch.empty(a._shape, dtype=a.dtype, device="meta")
            if t is SymValue:
                return a.value
            if isinstance(a, torch.Tensor):
                return a if real else a.to("meta")
            if t in (list, tuple) or isinstance(a, tuple):
                return type(a)(to_meta(x) for x in a) if t in (list, tuple) else tuple(to_meta(x) for x in a)
            if t is dict:
                return {k: to_meta(v) for k, v in a.items()}
            return a

        margs, mkwargs = to_meta(args), to_meta(kwargs)
        if module is not None:
            params = {k: (v if real else v.to("meta")) for k, v in
                      list(module.named_parameters()) + list(module.named_buffers())}
            saved, state.tracer = state.tracer, None  # run the module for real (on meta), not traced
            nn.Module.__call__, nn.Module.__getattr__ = _ORIG_CALL, _ORIG_GETATTR
            try:
                out = torch.func.functional_call(module, params, margs, mkwargs)
            finally:
                state.tracer = saved
                nn.Module.__call__, nn.Module.__getattr__ = _patched_call, _patched_getattr
        else:
            out = call(*margs, **mkwargs)
        return _spec_of(out)


def _patched_call(mod, *args, **kwargs):
    tr = state.tracer
    if tr is None:
        return _ORIG_CALL(mod, *args, **kwargs)
    return tr.module_call(mod, args, kwargs)


def _patched_getattr(mod, name):
    v = _ORIG_GETATTR(mod, name)
    tr = state.tracer
    if tr is not None and isinstance(v, torch.Tensor):
        return tr.attr_tensor(v)
    return v
