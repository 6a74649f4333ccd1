"""The constants removed units feed their readers, read off the graph (``dead_constants.py``),
against the probe forward they replace: equal where both find a constant (relative 1e-5), and
models made of per-channel ops prune with no probe at all, masked == shrunk as before."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cgap_graph as cg
import cgap_graph.passes.cgap.fold as fold_mod
from cgap_graph import zoo
from cgap_graph.passes.cgap.dead_constants import NOT_CONSTANT, DeadConstants
from cgap_graph.passes.cgap.fold import reader_inputs
from cgap_graph.passes.cgap.prune import prune_units, remove_units, zero_filters
from cgap_graph.passes.cgap.saliency import saliency, weight_slots
from cgap_graph.surgery.masking import dropped_positions
from cgap_graph.verify import make_responsive


def _half_dead(g):
    sal = saliency(g, mode="magnitude")
    return {gr.id: sorted(int(u) for u in np.argsort(sal.units[gr.id], kind="stable")[: gr.width // 2])
            for gr in g.groups if gr.prunable and gr.id in sal.units and gr.width > 1}


def _readers(g, dead):
    readers = [s for s in weight_slots(g) if s.role == "consume"]
    return [(s.key.rpartition(".")[0], pos) for s, pos in dropped_positions(g, readers, g.dead_by_space(dead))]


@pytest.mark.parametrize("name", ["lenet5", "vgg16", "resnet20", "mobilenetv2", "se_resnet", "densenet", "vit"])
def test_graph_constants_equal_the_probe(name):
    model = make_responsive(zoo.build(name, width=0.25 if name in ("vgg16",) else 0.5)).eval()
    g = cg.trace(model, zoo.input_shape(name))
    dead = _half_dead(g)
    resolved = 0
    with torch.no_grad():
        zero_filters(g, dead)
        probe = reader_inputs(g)
        known = DeadConstants(g)
        for mod_path, pos in _readers(g, dead):
            if not known.reads_from_call(mod_path):
                continue
            x = known.reader_input(mod_path, pos)
            if x is None or x is NOT_CONSTANT:
                continue
            resolved += 1
            real = probe[mod_path]
            mod = g.module.get_submodule(mod_path)
            cdim = real.dim() - 1 if isinstance(mod, nn.Linear) else 1
            idx = torch.as_tensor(pos)
            vals = real.movedim(cdim, 0)[idx].reshape(len(pos), -1)
            assert float((vals.max(1).values - vals.min(1).values).abs().max()) <= 1e-6 * (1 + float(vals.abs().max()))
            mine = x.movedim(cdim, 0)[idx].reshape(-1)
            assert float((mine - vals[:, 0]).abs().max()) <= 1e-5 * (1 + float(vals.abs().max())), mod_path
    assert resolved > 0


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "mobilenetv2", "vgg16", "se_resnet", "densenet"])
def test_per_channel_models_prune_without_a_probe(name, monkeypatch):
    model = make_responsive(zoo.build(name, width=0.25 if name == "vgg16" else 0.5)).eval()
    shape = zoo.input_shape(name)
    x = torch.randn(2, *shape[1:], generator=torch.Generator().manual_seed(0))

    def no_probe(_cg):
        raise AssertionError("the probe forward ran")

    monkeypatch.setattr(fold_mod, "reader_inputs", no_probe)
    shrunk = cg.trace(model, shape)
    rep = prune_units(shrunk, saliency(shrunk, mode="magnitude"), 0.5)
    assert rep.removed and rep.folded
    masked = cg.trace(copy.deepcopy(model), shape)
    remove_units(masked, rep.removed, shrink=False)
    with torch.no_grad():
        a, b = masked.module(x), shrunk.module(x)
    assert float((a - b).abs().max()) <= 1e-5 * max(1.0, float(a.abs().max()))


def test_layer_norm_over_the_channels_is_not_constant():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.ln, self.fc2 = nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4)

        def forward(self, x):
            return self.fc2(self.ln(torch.relu(self.fc1(x))))

    g = cg.trace(Net().eval(), (1, 8))
    gid = next(gr.id for gr in g.groups if gr.prunable and gr.width == 16)
    with torch.no_grad():
        zero_filters(g, {gid: [0, 3]})
        assert DeadConstants(g).reader_input("fc2", np.array([0, 3])) is NOT_CONSTANT


def test_attention_carries_constants_without_a_probe(monkeypatch):
    """ViT's attention output projection folds from the graph: the shrunk model equals the one
    folded from the probe forward (relative 1e-5), and no probe runs."""
    import cgap_graph.passes.cgap.dead_constants as dc_mod

    model = make_responsive(zoo.build("vit")).eval()
    shape = zoo.input_shape("vit")
    x = torch.randn(2, *shape[1:], generator=torch.Generator().manual_seed(0))
    probed = cg.trace(copy.deepcopy(model), shape)
    with monkeypatch.context() as m:
        m.setattr(dc_mod, "attention_merge", lambda *a: None)
        rep_probe = prune_units(probed, saliency(probed, mode="magnitude"), 0.5)

    def no_probe(_cg):
        raise AssertionError("the probe forward ran")

    monkeypatch.setattr(fold_mod, "reader_inputs", no_probe)
    graph = cg.trace(copy.deepcopy(model), shape)
    rep = prune_units(graph, saliency(graph, mode="magnitude"), 0.5)
    assert rep.removed == rep_probe.removed
    assert sum("out_proj" in f for f in rep.folded) == 4
    with torch.no_grad():
        a, b = probed.module(x), graph.module(x)
    assert float((a - b).abs().max()) <= 1e-5 * max(1.0, float(a.abs().max()))


@pytest.mark.parametrize("include_pad", [True, False])
def test_padded_average_pool(include_pad):
    """Inception's branch pool (3x3, padding 1): counting the padding makes a non-zero constant
    vary at the border (not constant, as the probe finds); not counting it keeps the constant."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.bn, self.c2 = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = F.avg_pool2d(torch.relu(self.bn(self.c1(x))), 3, 1, 1, count_include_pad=include_pad)
            return self.c2(y)

    model = make_responsive(Net()).eval()
    with torch.no_grad():
        model.bn.bias.abs_().add_(0.5)  # the removed channels' constant is non-zero after the ReLU
    g = cg.trace(model, (1, 3, 12, 12))
    gid = next(gr.id for gr in g.groups if gr.prunable and gr.width == 8)
    pos = np.array([1, 5])
    with torch.no_grad():
        zero_filters(g, {gid: list(pos)})
        got = DeadConstants(g).reader_input("c2", pos)
        real = reader_inputs(g)["c2"][:, torch.as_tensor(pos)]
    if include_pad:
        assert got is NOT_CONSTANT
        assert float(real.amax() - real.amin()) > 1e-3
    else:
        assert float((got[0, torch.as_tensor(pos), 0, 0] - real[0, :, 0, 0]).abs().max()) <= 1e-6
        assert float((real - real[:1, :, :1, :1]).abs().max()) <= 1e-6
