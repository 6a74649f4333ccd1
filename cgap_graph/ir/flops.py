"""FLOPs as the CGaP paper counts them: 2 x multiply-accumulates of convolutions and linear
layers (LeNet-5 = 4.59M), plus any other contraction (matmul, einsum, attention) in the graph.

Counted from the static shapes on the graph, so it is free and stays right after surgery;
``tests/test_flops.py`` checks it against ``torch.utils.flop_counter``.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import nn

_MATMULS = {torch.matmul, operator.matmul, torch.bmm, torch.mm, "matmul", "bmm", "mm"}


def _numel(shape) -> int:
    return math.prod(shape) if shape else 1


def node_macs(node, module_of) -> int:
    """Multiply-accumulates of one node (0 for ops that are not contractions)."""
    shape = node.meta.get("shape")
    if node.op == "call_module":
        mod = module_of(node.target)
        if isinstance(mod, nn.modules.conv._ConvNd):
            k = _numel(mod.kernel_size)
            if mod.transposed:
                in_shape = node.args[0].meta["shape"]
                return _numel(in_shape) * (mod.out_channels // mod.groups) * k
            return _numel(shape) * (mod.in_channels // mod.groups) * k
        if isinstance(mod, nn.Linear):
            return _numel(shape) * mod.in_features
        return 0
    if node.op not in ("call_function", "call_method"):
        return 0
    t = node.target
    if t is F.linear:
        w = node.args[1] if len(node.args) > 1 else node.kwargs["weight"]
        return _numel(shape) * w.meta["shape"][-1]
    if t in (F.conv1d, F.conv2d, F.conv3d):
        w = node.args[1] if len(node.args) > 1 else node.kwargs["weight"]
        ws = w.meta["shape"]
        return _numel(shape) * ws[1] * _numel(ws[2:])
    if t in _MATMULS:
        a = node.args[0].meta["shape"] if node.op == "call_function" else node.args[0].meta["shape"]
        return _numel(shape) * a[-1]
    if t in (torch.addmm, torch.baddbmm, "addmm", "baddbmm"):
        return _numel(shape) * node.args[1].meta["shape"][-1]
    if t is F.scaled_dot_product_attention:
        q = node.args[0].meta["shape"]
        k = node.args[1].meta["shape"]
        s = k[-2]
        return _numel(q) * s + _numel(shape) * s
    if t is torch.einsum:
        sizes: dict[str, int] = {}
        eq = node.args[0].replace(" ", "").split("->")[0].split(",")
        ops = node.args[1:] if not isinstance(node.args[1], (list, tuple)) else node.args[1]
        for sub, op in zip(eq, ops):
            for c, n in zip(sub.replace("...", ""), op.meta["shape"][-len(sub.replace("...", "")):]):
                sizes[c] = max(sizes.get(c, 1), n)
        return _numel(sizes.values()) * _numel(shape[:len(shape) - len(sizes)]) if sizes else 0
    return 0


def count_flops(cg) -> int:
    """2 x MACs for one forward of the traced input shape."""
    if cg._gm is not None:
        module_of = cg._gm.get_submodule
    else:
        module_of = cg.traced.root.get_submodule
    return 2 * sum(node_macs(n, module_of) for n in cg.graph.nodes)
