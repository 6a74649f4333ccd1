"""The extension contract from outside the package: a user registers a rule for an op of their
own, the engine resizes through it, and a wrong rule cannot hand back a broken model (issue 11)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import cgap_graph as cg
from cgap_graph.errors import SurgeryError
from cgap_graph.rules import TInfo, TSpec, shp
from cgap_graph.surgery import apply_selection

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))


def test_custom_op_example_runs():
    import custom_op
    r = custom_op.main()
    assert r["frozen_before"] == 3  # without the rule every group freezes (c1's, c2's inputs, the output)
    assert r["resizable"] and r["width"] == 6 and r["gate"] == 6 and r["unknown_ops"] == 0
    assert r["diff"] <= 1e-6


@torch.library.custom_op("cgap_tests::tile2", mutates_args=())
def tile2(x: torch.Tensor) -> torch.Tensor:
    """Two copies of x's channels: C in, 2C out."""
    return torch.cat([x, x], 1)


@tile2.register_fake
def _(x):
    return torch.cat([x, x], 1)


class TileSum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x):
        return tile2(self.c1(x)).sum(1)  # (N, H, W): the output shape does not see the channels


def test_a_wrong_rule_is_caught_at_the_intermediate_shape_and_rolled_back():
    # the shape rule is right (2C channels), the channel rule claims tile2 keeps x's layout: the
    # output shape is the same after a resize, so only the intermediate shape shows the mistake
    def doubled(op):
        n, c, *rest = shp(op.args[0])
        return TSpec((n, 2 * c, *rest), op.args[0].dtype)

    cg.register_rule(tile2, shape=doubled,
                     channels=lambda an, op: TInfo(op.args[0].exprs, op.args[0].keeps_zero, op.node.meta["shape"]))
    model = TileSum().eval()
    g = cg.trace(model, (1, 3, 8, 8))
    group = next(grp for grp in g.groups if any(m.target == "c1.weight" for m in grp.members))
    assert group.prunable  # the wrong rule makes it look prunable
    code, x = g.module.code, torch.randn(2, 3, 8, 8)
    with pytest.raises(SurgeryError, match="tile2_default.*shape"):
        apply_selection(g, {group.id: [0, 1, 2]})
    assert g.module.c1.out_channels == 6 and g.group(group.id).width == 6 and g.module.code == code
    assert torch.equal(g.module(x), model(x))


def test_a_rule_that_raises_is_an_error_in_strict_mode_and_a_freeze_otherwise():
    @torch.library.custom_op("cgap_tests::noisy", mutates_args=())
    def noisy(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @noisy.register_fake
    def _(x):
        return torch.empty_like(x)

    def broken(an, op):
        raise KeyError("a bug in the rule")

    cg.register_rule(noisy, shape=lambda op: TSpec(shp(op.args[0]), op.args[0].dtype), channels=broken)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.c2(noisy(self.c1(x)))

    with cg.strict_rules(True), pytest.raises(cg.TraceError, match="a bug in the rule"):
        cg.trace(Net(), (1, 3, 4, 4))
    with cg.strict_rules(False):
        g = cg.trace(Net(), (1, 3, 4, 4))
    assert any("a bug in the rule" in why for _, _, why in g.unknown_ops)
    assert all(grp.frozen for grp in g.groups)
