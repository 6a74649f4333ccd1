"""The check after every edit: the resized module, traced again with the shape rules (no FLOPs),
must have every intermediate shape the channel analysis predicts, not only the outputs. A
mismatch anywhere (a constant not rewritten, a rule that got an op wrong) is a
:class:`SurgeryError` naming the first node that differs, and the edit is rolled back."""

from __future__ import annotations

import torch.fx as fx

from cgap_graph.errors import SurgeryError
from cgap_graph.ir.graph import ChannelGraph, output_shapes
from cgap_graph.ir.tracing import trace_module


def validate(cg: ChannelGraph) -> None:
    traced = trace_module(cg.module, cg.input_specs, guard_state=not _only_builtin_layers(cg.module))
    cg.graph.lint()
    expected, got = list(cg.graph.nodes), list(traced.graph.nodes)
    if len(expected) == len(got) and all(a.op == b.op for a, b in zip(expected, got)):
        pairs = zip(expected, got)  # the same program: compare node by node
    else:
        # size arithmetic that a rewritten constant no longer needs is not traced again, so names
        # shift; the tensor-valued nodes are the same program: compare them in order
        te, tg = _tensor_nodes(expected), _tensor_nodes(got)
        if len(te) == len(tg) and all(a.op == b.op and a.target == b.target for a, b in zip(te, tg)):
            pairs = zip(te, tg)
        else:  # the re-trace differs in structure: compare the nodes both have, by name
            names = {n.name: n for n in got}
            pairs = [(n, names[n.name]) for n in expected if n.name in names]
    for a, b in pairs:
        want, have = _shape(a), _shape(b)
        if want is not None and have is not None and want != have:
            raise SurgeryError(f"after the edit, node '{a.name}' ({_what(a)}) has shape {have} where the channel "
                               f"graph expects {want}")
    if output_shapes(cg.graph) != output_shapes(traced.graph):
        raise SurgeryError(f"output shapes changed from {output_shapes(cg.graph)} to {output_shapes(traced.graph)}")


def _only_builtin_layers(gm: fx.GraphModule) -> bool:
    """Whether every module the working module calls is a built-in ``torch.nn`` layer: then the
    re-trace runs no user Python (the graph's code is generated, the layers have shape rules or
    run on meta tensors) and there is no state for a guard to put back."""
    return all(type(m).__module__.startswith("torch.nn.") for name, m in gm.named_modules() if name)


def _tensor_nodes(nodes: list[fx.Node]) -> list[fx.Node]:
    return [n for n in nodes if isinstance(n.meta.get("shape"), tuple) and n.op != "output"]


def _shape(n: fx.Node):
    if n.op == "call_method" and n.target == "size":
        return n.meta.get("value")
    return n.meta.get("shape")


def _what(n: fx.Node) -> str:
    return str(n.target) if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
