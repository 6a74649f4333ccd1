"""Teach cgap-graph a new op: a rule for your own function, then prune through it.

Your model calls ``gated_relu(x, gate)``, your own op (a ``torch.library.custom_op``, so tracing
cannot look inside it). Without a rule the op is traced on meta tensors and every channel group
it touches freezes (``cgap-graph inspect`` names it). A rule has two parts (the contract is in
``cgap_graph/rules/registry.py``):

- ``shape(op)``: the output's shape and dtype, from the traced arguments, without running the op;
- ``channels(an, op)``: how the output's channels relate to the inputs'. ``gated_relu`` is
  element-wise in ``x`` and multiplies by a per-channel ``gate``, so the output has ``x``'s layout,
  and the gate's one dimension is the same channel space (``an.unify``).

    python examples/custom_op.py
"""

from __future__ import annotations

import torch
from torch import nn

import cgap_graph as cg
from cgap_graph.rules import TInfo, TSpec, shp
from cgap_graph.surgery import apply_selection
from cgap_graph.verify import masked_vs_shrunk


@torch.library.custom_op("cgap_examples::gated_relu", mutates_args=())
def gated_relu(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """The user's op: ReLU, then a learned gain per channel."""
    return torch.relu(x) * gate.view(1, -1, 1, 1)


@gated_relu.register_fake
def _(x, gate):
    return torch.empty_like(x)


def gated_relu_shape(op):
    x = op.args[0]
    return TSpec(shp(x), x.dtype)


def gated_relu_channels(an, op):
    x, gate = op.args[0], op.args[1]
    an.unify(x.exprs[1], gate.exprs[0])  # the gate follows x's channels
    # zero stays zero (relu(0) * g = 0), so a masked channel stays masked: keeps_zero carries through
    return TInfo(x.exprs, x.keeps_zero, op.node.meta["shape"])


class GatedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = nn.Parameter(torch.rand(8) + 0.5)
        self.c2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.c2(gated_relu(self.c1(x), self.gate))


def main() -> dict:
    model = GatedNet().eval()
    frozen = cg.trace(model, (1, 3, 16, 16))  # before: the op has no rule, so its groups freeze
    print("without a rule:", [grp.status() for grp in frozen.groups][0])
    cg.register_rule(gated_relu, shape=gated_relu_shape, channels=gated_relu_channels)
    g = cg.trace(model, (1, 3, 16, 16))
    stream = next(grp for grp in g.groups if any(m.target == "gate" for m in grp.members))
    print(g, "| group of c1's filters:", stream.status(), [m.label() for m in stream.members])
    diff = masked_vs_shrunk(model, (1, 3, 16, 16), stream.id, [1, 5])  # oracle: masked == shrunk
    apply_selection(g, {stream.id: [0, 2, 3, 4, 6, 7]})
    x = torch.randn(2, 3, 16, 16)
    print(f"pruned c1 8 -> {g.module.c1.out_channels}, gate {tuple(g.module.gate.shape)}; "
          f"masked vs shrunk max |diff| {diff:.1e}; output {tuple(g.module(x).shape)}")
    return {"frozen_before": sum(grp.frozen is not None for grp in frozen.groups), "resizable": stream.resizable,
            "width": g.module.c1.out_channels, "gate": g.module.gate.shape[0], "diff": diff,
            "unknown_ops": len(g.unknown_ops)}


if __name__ == "__main__":
    main()
