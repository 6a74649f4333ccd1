"""The entry point of tracing: run ``forward`` once on symbolic tensors under a ``Tracer``; a
submodule that cannot be traced becomes an opaque leaf (its groups freeze) and tracing restarts.
Python state that forward writes is put back after every run (``state_guard.py``)."""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cgap_graph.errors import InputShapeError, TraceError
from cgap_graph.ir.state_guard import StateGuard
from cgap_graph.ir.symbolic import SymTensor, is_internal_file, state
from cgap_graph.ir.traced import Traced, _dce, _forward_signature
from cgap_graph.ir.tracer import _ORIG_CALL, _ORIG_GETATTR, Tracer, _patched_call, _patched_getattr
from cgap_graph.rules.registry import TSpec


def trace_module(model: nn.Module, input_specs: Sequence[TSpec], leaf_modules: Sequence[Any] = (),
                 guard_state: bool = True) -> Traced:
    """Trace ``model`` called on tensors described by ``input_specs``; see module docstring.
    ``guard_state=False`` skips the state guard, for a caller that knows no module's Python
    code runs (the re-trace of a working module made only of built-in layers)."""
    import torch.fx._symbolic_trace as fx_st

    opaque: dict[str, str] = {}
    leaves = list(leaf_modules)
    guard = StateGuard(model) if guard_state else None
    for _attempt in range(32):
        tr = Tracer(model, leaves)
        tr.opaque.update(opaque)
        names, fixed = _forward_signature(model, len(input_specs))
        inputs = []
        for name, spec in zip(names, input_specs):
            node = tr.graph.placeholder(name)
            node.meta["shape"] = spec.shape
            node.meta["dtype"] = spec.dtype
            inputs.append(SymTensor(node, spec.shape, spec.dtype))
        prev, prev_flag = state.tracer, fx_st._is_fx_tracing_flag
        state.tracer = tr
        fx_st._is_fx_tracing_flag = True
        nn.Module.__call__ = _patched_call
        nn.Module.__getattr__ = _patched_getattr
        failing = None
        try:
            with torch.no_grad():
                out = _ORIG_CALL(model, *inputs, **fixed)
        except InputShapeError as exc:
            if getattr(exc, "no_fallback", False):
                raise
            failing = (getattr(exc, "cgap_module", None), str(exc))
        except TraceError as exc:
            failing = (getattr(exc, "cgap_module", None), str(exc))
        except Exception as exc:  # an error inside user code given symbolic tensors
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            loc = _innermost_user_frame(exc)
            failing = (getattr(exc, "cgap_module", None),
                       f"forward() cannot be traced at {loc}: {type(exc).__name__}: {msg}")
        finally:
            nn.Module.__call__ = _ORIG_CALL
            nn.Module.__getattr__ = _ORIG_GETATTR
            state.tracer = prev
            fx_st._is_fx_tracing_flag = prev_flag
            written = guard.restore() if guard else []  # the user's model as it was (caches forward filled)
        if failing is not None:
            mod_name, msg = failing
            if not mod_name:  # the model's own forward: nothing to fall back to
                raise TraceError(msg)
            # Fallback: trace the failing submodule as an opaque leaf; its groups freeze.
            leaves.append(mod_name)
            opaque[mod_name] = msg
            continue
        tr.graph.output(tr.arg(out))
        _dce(tr.graph)
        traced = Traced(model, tr.graph, tr.attrs, tr.attr_kind, tr.guards, tr.opaque, list(input_specs),
                        tr.tensors, tr.modules)
        traced.restored = written
        return traced
    raise TraceError("tracing kept failing after making 32 submodules opaque; give leaf_modules explicitly")


def _innermost_user_frame(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    for fr in reversed(tb):
        if not is_internal_file(fr.filename):
            return f"{fr.filename}:{fr.lineno}"
    return "<unknown>"
