"""FLOPs and parameters: the paper's LeNet-5 numbers, and agreement with torch's flop counter."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import cgap_graph as cg
from cgap_graph import zoo
from cgap_graph.surgery import apply_selection


def test_lenet5_matches_the_paper():
    g = cg.trace(zoo.build("lenet5"), (1, 1, 28, 28))
    assert g.param_count() == 431_080  # paper Table I: 431K
    assert g.flops() == 4_586_000  # paper Table I: 4.59M


def test_vgg19_matches_the_paper():
    g = cg.trace(zoo.build("vgg19", num_classes=100), (1, 3, 32, 32))
    assert round(g.flops() / 1e6) == 797  # paper Table II: 797M
    assert round(g.param_count() / 1e5) / 10 == 20.3  # paper: 20.4M (BN and bias details differ)


@pytest.mark.parametrize("name", zoo.names())
def test_static_count_equals_flop_counter(name):
    model = zoo.build(name, width=0.5).eval()
    shape = zoo.input_shape(name)
    g = cg.trace(model, shape)
    # torch's counter skips fused CPU attention kernels: count the math form of attention
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        g.module(torch.randn(*shape))
    assert g.flops() == fc.get_total_flops()
    grp = next(gr for gr in g.groups if gr.prunable)
    apply_selection(g, {grp.id: list(range(grp.width // 2))})
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        g.module(torch.randn(*shape))
    assert g.flops() == fc.get_total_flops()
