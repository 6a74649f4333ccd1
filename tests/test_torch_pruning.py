"""Agreement with Torch-Pruning's DependencyGraph on the zoo (acceptance of issue #2).

Both sides are reduced to channel atoms (module, in/out, position). On every convolutional zoo
model the two partitions are identical, atom for atom. On the transformer, Torch-Pruning keeps
nn.MultiheadAttention whole (its out_proj is not a separate layer there), so it knows fewer
atoms; on the atoms both know the groups agree. Where the tools disagree on other patterns,
``benchmarks/torch_pruning_differences.py`` shows which one is right (README, "Torch-Pruning").
"""

import warnings

import pytest
import torch
from tp_compare import disagreements, ours, torch_pruning

import cgap_graph as cg
from cgap_graph import zoo

pytest.importorskip("torch_pruning")

CNNS = ["lenet5", "vgg16", "vgg19", "resnet20", "resnet56", "resnet110", "mobilenetv2", "densenet", "se_resnet"]


@pytest.mark.parametrize("name", CNNS)
def test_identical_partition_on_cnn_zoo(name):
    model = zoo.build(name).eval()
    shape = zoo.input_shape(name)
    a = ours(cg.trace(model, shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = torch_pruning(model, torch.randn(*shape))
    assert set(a) == set(b)
    assert disagreements(a, b) == []


def test_transformer_agrees_where_both_see_the_layer():
    model = zoo.build("vit").eval()
    a = ours(cg.trace(model, (1, 3, 32, 32)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = torch_pruning(model, torch.randn(1, 3, 32, 32))
    assert set(b) <= set(a)
    assert {m for m, _, _ in set(a) - set(b)} == {f"layers.{i}.attn.out_proj" for i in range(4)}
    assert disagreements(a, b) == []
