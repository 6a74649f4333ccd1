"""Graph constants that follow widths: paths into an fx node's arguments, and the rewrite of a
:class:`ConstSlot` (a ``view`` size, split sizes, a pinned attention scale) after a resize."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from cgap_graph.errors import SurgeryError
from cgap_graph.ir.analysis import ConstSlot
from cgap_graph.ir.graph import layouts


def get_arg(node: fx.Node, path: tuple) -> Any:
    where, *rest = path
    cur: Any = node.args if where == "args" else node.kwargs
    for k in rest:
        if isinstance(cur, slice):
            cur = getattr(cur, k)
        elif isinstance(cur, dict):
            cur = cur.get(k)
        else:
            cur = cur[k]
    return cur


def _set_in(container: Any, path: list, value: Any) -> Any:
    k, *rest = path
    if isinstance(container, slice):
        parts = {"start": container.start, "stop": container.stop, "step": container.step}
        parts[k] = value if not rest else _set_in(parts[k], rest, value)
        return slice(parts["start"], parts["stop"], parts["step"])
    if isinstance(container, dict):
        c = dict(container)
        c[k] = value if not rest else _set_in(c[k], rest, value)
        return c
    c = list(container)
    c[k] = value if not rest else _set_in(c[k], rest, value)
    return tuple(c) if isinstance(container, tuple) else c


def set_arg(node: fx.Node, path: tuple, value: Any) -> None:
    where, *rest = path
    if where == "args":
        node.args = _set_in(node.args, rest, value)
    else:
        node.kwargs = _set_in(node.kwargs, rest, value)


def apply_const(c: ConstSlot, node: fx.Node, t, touched: set, undo: list) -> None:
    """Rewrite constant ``c`` in ``node`` if a touched group reaches it; record how to undo it."""
    exprs = layouts(c.expr)
    leaves = set()
    for e in (*exprs, *c.deps):
        leaves |= set(t.leaves(e))
    if not touched & leaves:
        return
    old_args, old_kwargs, old_target = node.args, node.kwargs, node.target

    def restore(n=node, a=old_args, k=old_kwargs, tg=old_target):
        n.args, n.kwargs, n.target = a, k, tg

    undo.append(restore)
    if c.mode == "width":
        set_arg(node, c.path, t.width(c.expr))
    elif c.mode == "neg_width":
        set_arg(node, c.path, -t.width(c.expr))
    elif c.mode == "infer":
        set_arg(node, c.path, -1)
    elif c.mode in ("sdpa_scale", "pin"):  # a scalar keeps its traced value (a scale from C // heads)
        set_arg(node, c.path, c.extra)
    elif c.mode == "sections":
        set_arg(node, c.path, [t.width(e) for e in exprs])
    elif c.mode == "chunk":
        set_arg(node, c.path, [t.width(e) for e in exprs])
        if node.op == "call_method":
            node.target = "split"
        else:
            node.target = torch.split
    else:
        raise SurgeryError(f"unknown constant kind {c.mode}")
