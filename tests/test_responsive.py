"""Oracles only see a mix-up on a model whose output responds to its input (issue 16). After
``make_responsive`` every zoo and coupling model, and the norm test models, has a relative input
sensitivity (max |f(a) - f(b)| / max |f(a)| over two random inputs) above 1e-3; a zero-initialised
head (torchvision ViT's) no longer makes the output exactly zero."""

import pytest
import torch
from coupling_models import MODELS, zoo_and_coupling_cases
from norm_models import MODELS as NORM_MODELS
from torch import nn

import cgap_graph as cg
from cgap_graph import zoo
from cgap_graph.verify import calibrate_norms, input_sensitivity, make_responsive, random_inputs

MIN_SENSITIVITY = 1e-3


def _cases():
    yield from zoo_and_coupling_cases()
    for name in NORM_MODELS:
        yield pytest.param(("norm", name), id=f"norm-{name}")


def _build(case):
    kind, name = case
    if kind == "zoo":
        return zoo.build(name, width=0.25), zoo.input_shape(name), {}
    if kind == "norm":
        factory, shape = NORM_MODELS[name]
        return factory(), shape, {}
    factory, shape, dtype = MODELS[name]
    return factory(), shape, {"input_dtype": dtype}


@pytest.mark.parametrize("case", list(_cases()))
def test_responsive_models_respond_to_input(case):
    model, shape, kw = _build(case)
    torch.manual_seed(0)
    make_responsive(model, input_shape=shape, input_dtype=kw.get("input_dtype", torch.float32)).eval()
    g = cg.trace(model, shape, **kw)
    a, b = random_inputs(g, batch=2, seed=1), random_inputs(g, batch=2, seed=2)
    s = input_sensitivity(model, a, b)
    assert s > MIN_SENSITIVITY, f"output barely depends on the input: sensitivity {s:.2e}"


class ZeroHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.bn, self.head = nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.body(x))))


def test_zero_initialised_head_is_redrawn():
    model = ZeroHead().eval()
    a, b = [torch.randn(4, 6)], [torch.randn(4, 6)]
    assert input_sensitivity(model, a, b) == 0.0  # as built: the output is exactly zero
    make_responsive(model)
    assert bool(model.head.weight.any()) and input_sensitivity(model, a, b) > MIN_SENSITIVITY
    calibrate_norms(model, [torch.randn(16, 6)])
    assert float(model.bn.running_var.min()) > 0 and input_sensitivity(model, a, b) > MIN_SENSITIVITY
