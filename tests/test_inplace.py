"""``trace(model, shape, inplace=True)``: the working module reuses the model's own layers, so an
edit resizes them (as Torch-Pruning does) and saves the copy of every weight; the default leaves
the model untouched. Either way the pruned module computes the same function (relative 1e-5)."""

import copy

import torch

import cgap_graph as cg
from cgap_graph import zoo
from cgap_graph.passes.cgap.prune import prune_units
from cgap_graph.passes.cgap.saliency import saliency
from cgap_graph.verify import make_responsive


def _pruned(model, shape, **kw):
    g = cg.trace(model, shape, **kw)
    prune_units(g, saliency(g, mode="magnitude"), 0.5)
    return g


def test_inplace_resizes_the_model_itself_and_matches_the_copying_path():
    model = make_responsive(zoo.build("resnet20", width=0.5)).eval()
    shape = zoo.input_shape("resnet20")
    x = torch.randn(2, *shape[1:], generator=torch.Generator().manual_seed(0))
    original = {k: v.clone() for k, v in model.state_dict().items()}
    copied = _pruned(model, shape)
    assert all(torch.equal(original[k], v) for k, v in model.state_dict().items()), "default path changed the model"
    own = copy.deepcopy(model)
    widths_before = own.conv1.weight.shape[0]
    shared = _pruned(own, shape, inplace=True)
    assert shared.module.get_submodule("conv1") is own.conv1
    assert own.conv1.weight.shape[0] < widths_before
    assert sum(p.numel() for p in shared.module.parameters()) == sum(p.numel() for p in copied.module.parameters())
    with torch.no_grad():
        a, b = copied.module(x), shared.module(x)
    assert float((a - b).abs().max()) <= 1e-5 * max(1.0, float(a.abs().max()))
