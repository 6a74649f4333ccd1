"""An op without a rule freezes the groups it touches, is named in the report, and never lets a
surgery corrupt the model."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cgap_graph as cg
from cgap_graph.errors import SurgeryError
from cgap_graph.surgery import apply_selection


class SortNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 6, 3, padding=1)
        self.c3 = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = torch.sort(x, dim=1).values  # mixes channels in a way no rule describes
        return self.c3(F.relu(self.c2(x)))


def test_unknown_op_freezes_and_is_reported():
    g = cg.trace(SortNet(), (1, 3, 8, 8))
    assert any(op == "torch.sort" for _, op, _ in g.unknown_ops)
    c1 = next(grp for grp in g.groups if any(m.target == "c1.weight" and m.role == "produce" for m in grp.members))
    assert c1.frozen is not None and "torch.sort" in c1.frozen
    with pytest.raises(SurgeryError, match="frozen"):
        apply_selection(g, {c1.id: [0, 1]})
    c2 = next(grp for grp in g.groups if any(m.target == "c2.weight" and m.role == "produce" for m in grp.members))
    assert c2.resizable
    apply_selection(g, {c2.id: [0, 1, 2]})
    x = torch.randn(2, 3, 8, 8)
    assert g.module(x).shape == (2, 4, 8, 8)


class Custom(nn.Module):
    def forward(self, x):
        return x.flip(1) * 2


class WithCustomLeaf(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.custom = Custom()
        self.c2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c2(self.custom(self.c1(x)))


def test_leaf_module_option_keeps_a_module_opaque():
    g = cg.trace(WithCustomLeaf(), (1, 3, 8, 8), leaf_modules=["custom"])
    assert "custom" in g.opaque_modules
    c1 = next(grp for grp in g.groups if any(m.target == "c1.weight" and m.role == "produce" for m in grp.members))
    assert c1.frozen is not None and "custom" in c1.frozen
    # without the option the flip is traced and handled by its rule (it freezes too: it reorders)
    g2 = cg.trace(WithCustomLeaf(), (1, 3, 8, 8))
    c1b = next(grp for grp in g2.groups if any(m.target == "c1.weight" and m.role == "produce" for m in grp.members))
    assert c1b.frozen is not None and "reorders" in c1b.frozen
