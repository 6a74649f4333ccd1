"""Symbolic values seen by the user's forward during tracing: tensors, sizes, shapes.

They record every operation into the active tracer (``state.tracer``) and carry static facts
(shape, dtype, concrete size values) so shape rules can run without executing anything.
"""

from __future__ import annotations

import operator
import sys
from typing import Any

import torch
import torch.fx as fx

from cgap_graph.errors import TraceError


class _State:
    tracer: Any = None


state = _State()
_HERE = __file__.rsplit("/", 1)[0]

def is_internal_file(fn: str) -> bool:
    """Frames of torch or of cgap-graph's machinery (the zoo models count as user code)."""
    if fn.startswith(_HERE):
        return not fn.startswith(_HERE + "/zoo/")
    return "/torch/" in fn or "<frozen" in fn


def _user_location() -> str:
    """file:line of the innermost frame outside torch and cgap_graph (for error messages)."""
    f = sys._getframe(1)
    while f is not None:
        fn = f.f_code.co_filename
        if not is_internal_file(fn):
            return f"{fn}:{f.f_lineno}"
        f = f.f_back
    return "<unknown>"


class SymValue:
    """A Python scalar computed from tensor sizes (or a device); recorded in the graph."""

    __slots__ = ("node", "value", "deps")

    def __init__(self, node: fx.Node, value: Any, deps: frozenset) -> None:
        self.node = node
        self.value = value
        self.deps = deps

    def __repr__(self) -> str:
        return f"SymValue({self.value!r})"

    # Arithmetic is recorded, so shapes that depend on it stay symbolic.
    def _bin(self, op, other, rev=False):
        if isinstance(other, SymTensor):
            return NotImplemented
        tr = state.tracer
        a, b = (other, self) if rev else (self, other)
        va = a.value if isinstance(a, SymValue) else a
        vb = b.value if isinstance(b, SymValue) else b
        deps = self.deps | (other.deps if isinstance(other, SymValue) else frozenset())
        node = tr.graph.create_node("call_function", op, (tr.arg(a), tr.arg(b)), {})
        val = op(va, vb)
        node.meta["value"] = val
        return SymValue(node, val, deps)

    def __add__(self, o): return self._bin(operator.add, o)
    def __radd__(self, o): return self._bin(operator.add, o, True)
    def __sub__(self, o): return self._bin(operator.sub, o)
    def __rsub__(self, o): return self._bin(operator.sub, o, True)
    def __mul__(self, o): return self._bin(operator.mul, o)
    def __rmul__(self, o): return self._bin(operator.mul, o, True)
    def __floordiv__(self, o): return self._bin(operator.floordiv, o)
    def __rfloordiv__(self, o): return self._bin(operator.floordiv, o, True)
    def __truediv__(self, o): return self._bin(operator.truediv, o)
    def __rtruediv__(self, o): return self._bin(operator.truediv, o, True)
    def __mod__(self, o): return self._bin(operator.mod, o)
    def __pow__(self, o): return self._bin(operator.pow, o)
    def __rpow__(self, o): return self._bin(operator.pow, o, True)
    def __eq__(self, o): return self._bin(operator.eq, o)  # type: ignore[override]
    def __ne__(self, o): return self._bin(operator.ne, o)  # type: ignore[override]
    def __lt__(self, o): return self._bin(operator.lt, o)
    def __le__(self, o): return self._bin(operator.le, o)
    def __gt__(self, o): return self._bin(operator.gt, o)
    def __ge__(self, o): return self._bin(operator.ge, o)

    def __neg__(self):
        tr = state.tracer
        node = tr.graph.create_node("call_function", operator.neg, (self.node,), {})
        return SymValue(node, -self.value, self.deps)

    def __hash__(self) -> int:
        return hash(self.value)

    # Python needs a concrete value here: specialise and remember it (a guard).
    def _concrete(self, why: str):
        state.tracer.guard(self, why)
        return self.value

    def __bool__(self) -> bool: return bool(self._concrete("used in a Python condition"))
    def __index__(self) -> int: return int(self._concrete("used as a Python int"))
    def __int__(self) -> int: return int(self._concrete("used as a Python int"))
    def __float__(self) -> float: return float(self._concrete("used as a Python float"))

    def __getattr__(self, name: str) -> Any:
        # device.type, dtype.is_floating_point ...: static facts, no guard needed.
        return getattr(object.__getattribute__(self, "value"), name)


class SymShape(tuple):
    """``x.shape`` / ``x.size()``: a tuple of symbolic sizes."""

    __slots__ = ()

    def numel(self):
        out = 1
        for v in self:
            out = out * v
        return out


_NOT_TRACEABLE = {"item", "tolist", "numpy", "__array__", "backward", "cpu", "cuda"}
_STATIC_FALSE = {"is_nested", "is_sparse", "is_quantized", "is_meta", "is_mkldnn", "is_complex_",
                 "requires_grad", "is_leaf"}


class SymTensor:
    """A tensor during tracing: an fx node, a static shape and a dtype."""

    __slots__ = ("node", "_shape", "dtype", "__weakref__")

    def __init__(self, node: fx.Node, shape: tuple, dtype: torch.dtype) -> None:
        self.node = node
        self._shape = shape  # static; user code reading x.shape gets symbolic sizes instead
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"SymTensor({self.node.name}, shape={self._shape}, dtype={self.dtype})"

    @property
    def shape(self):
        return state.tracer.size(self)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        tr = state.tracer
        if tr is None:
            raise TraceError("a symbolic tensor escaped tracing")
        return tr.torch_function(func, args, kwargs or {})

    def __getattr__(self, name: str) -> Any:
        return state.tracer.tensor_attr(self, name)

    @property
    def ndim(self) -> int:
        return len(self._shape)

    def dim(self) -> int:
        return len(self._shape)

    ndimension = dim

    def size(self, d: int | None = None):
        return state.tracer.size(self, d)

    def __len__(self) -> int:
        raise TraceError(
            f"len() of a traced tensor at {_user_location()}: the length (the batch size) would be "
            "baked into the graph; use x.size(0) instead")

    def __iter__(self):
        raise TraceError(
            f"iterating over a traced tensor at {_user_location()}: the loop would be unrolled for one "
            "batch size; use torch.unbind or vectorised ops")

    def __bool__(self) -> bool:
        raise TraceError(
            f"forward() uses a tensor value in Python control flow at {_user_location()}: the branch "
            "depends on data, so no static graph exists; make it a leaf module (leaf_modules=...) or "
            "rewrite it with torch.where")

    def __hash__(self) -> int:
        return id(self)

    def __setitem__(self, idx, value):
        state.tracer.call_function(operator.setitem, (self, idx, value), {})


def _binop(op, reflected=False):
    if reflected:
        def f(self, other):
            return state.tracer.call_function(op, (other, self), {})
    else:
        def f(self, other):
            return state.tracer.call_function(op, (self, other), {})
    return f


def _unop(op):
    def f(self):
        return state.tracer.call_function(op, (self,), {})
    return f


for _name, _op in [("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv),
                   ("mod", operator.mod), ("pow", operator.pow), ("matmul", operator.matmul),
                   ("and", operator.and_), ("or", operator.or_), ("xor", operator.xor),
                   ("lshift", operator.lshift), ("rshift", operator.rshift)]:
    setattr(SymTensor, f"__{_name}__", _binop(_op))
    setattr(SymTensor, f"__r{_name}__", _binop(_op, reflected=True))
for _name, _op in [("lt", operator.lt), ("le", operator.le), ("gt", operator.gt),
                   ("ge", operator.ge), ("eq", operator.eq), ("ne", operator.ne),
                   ("getitem", operator.getitem)]:
    setattr(SymTensor, f"__{_name}__", _binop(_op))
for _name, _op in [("neg", operator.neg), ("pos", operator.pos), ("abs", operator.abs),
                   ("invert", operator.invert)]:
    setattr(SymTensor, f"__{_name}__", _unop(_op))


