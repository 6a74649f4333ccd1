"""Tracing: static shapes agree with real execution, the graph stays batch-size agnostic, and
models that cannot be traced get a precise error or an opaque submodule."""

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from coupling_models import MODELS
from torch import nn

import cgap_graph as cg
from cgap_graph import zoo
from cgap_graph.errors import InputShapeError, TraceError


def _real_shapes(gm, inputs):
    shapes = {}

    class Rec(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n.op == "output":
                return out
            if isinstance(out, torch.Tensor):
                shapes[n.name] = tuple(out.shape)
            elif isinstance(out, (tuple, list)) and out and all(isinstance(o, torch.Tensor) for o in out):
                shapes[n.name] = tuple(tuple(o.shape) for o in out)
            return out

    Rec(gm).run(*inputs)
    return shapes


def _inputs(shape, dtype):
    return [torch.randn(shape) if dtype.is_floating_point else torch.randint(0, 8, shape)]


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_shapes_match_execution(name):
    model = zoo.build(name).eval()
    shape = zoo.input_shape(name)
    g = cg.trace(model, shape)
    real = _real_shapes(g.module, _inputs(shape, torch.float32))
    for n in g.graph.nodes:
        if n.name in real:
            assert n.meta["shape"] == real[n.name], n.name


@pytest.mark.parametrize("name", list(MODELS))
def test_coupling_models_shapes_and_outputs(name):
    factory, shape, dtype = MODELS[name]
    model = factory().eval()
    g = cg.trace(model, shape, input_dtype=dtype)
    x = _inputs(shape, dtype)
    real = _real_shapes(g.module, x)
    for n in g.graph.nodes:
        if n.name in real:
            assert n.meta["shape"] == real[n.name], n.name
    ref, out = model(*x), g.module(*x)
    ref = ref if isinstance(ref, tuple) else (ref,)
    out = out if isinstance(out, tuple) else (out,)
    for a, b in zip(ref, out):
        assert torch.equal(a, b)


def test_batch_size_is_not_baked_in():
    """Traced at batch 1, the graph runs at batch 5 (sizes read with x.shape stay symbolic)."""
    for name in ("hand_attention", "fused_qkv_sdpa", "channel_shuffle"):
        factory, shape, dtype = MODELS[name]
        model = factory().eval()
        g = cg.trace(model, shape, input_dtype=dtype)
        x = torch.randn(5, *shape[1:])
        assert torch.allclose(g.module(x), model(x), atol=1e-6)


def test_non_tensor_argument_uses_its_default():
    factory, shape, _ = MODELS["return_features_default"]
    model = factory().eval()
    g = cg.trace(model, shape)
    x = torch.randn(shape)
    assert torch.equal(g.module(x), model(x))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.c(x)
        if y.sum() > 0:
            return y
        return -y


def test_data_dependent_control_flow_is_a_precise_error():
    with pytest.raises(TraceError) as exc:
        cg.trace(DataDependent(), (1, 3, 8, 8))
    msg = str(exc.value)
    assert "test_trace.py:" in msg and "Python control flow" in msg and "\n" not in msg


class Gate(nn.Module):
    """A submodule whose forward branches on data: traced as an opaque leaf."""

    def __init__(self, c):
        super().__init__()
        self.fc = nn.Linear(c, c)

    def forward(self, x):
        if x.mean() > 0:
            return x * torch.sigmoid(self.fc(x.mean((2, 3))))[:, :, None, None]
        return x


class WithGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = Gate(8)
        self.c2 = nn.Conv2d(8, 6, 3, padding=1)
        self.c3 = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        return self.c3(F.relu(self.c2(self.gate(F.relu(self.c1(x))))))


def test_untraceable_submodule_becomes_opaque_and_freezes_its_groups():
    g = cg.trace(WithGate(), (1, 3, 8, 8))
    assert "gate" in g.opaque_modules and "control flow" in g.opaque_modules["gate"]
    by_member = {lbl: grp for grp in g.groups for lbl in (m.target for m in grp.members)}
    assert by_member["c1.weight"].frozen is not None and "gate" in by_member["c1.weight"].frozen
    assert by_member["c2.weight"].resizable  # the rest of the model is unaffected
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(g.module(x), g.traced.root(x))


def test_bad_input_shape_is_one_line():
    with pytest.raises(InputShapeError) as exc:
        cg.trace(zoo.build("resnet20"), (1, 1, 32, 32))
    assert "expected 3 input channels, got 1" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(InputShapeError):
        cg.trace(zoo.build("lenet5"), (1, 1, 32, 32))  # 32x32 does not fit view(-1, 800)
    with pytest.raises(InputShapeError):
        cg.trace(zoo.build("lenet5"), (1, 0, 28))


def test_not_a_module():
    with pytest.raises(TraceError):
        cg.trace(lambda x: x, (1, 3))


def test_parameters_used_in_forward_become_graph_attributes():
    factory, shape, _ = MODELS["layer_scale"]
    g = cg.trace(factory(), shape)
    targets = {n.target for n in g.graph.nodes if n.op == "get_attr"}
    assert {"gamma", "beta"} <= targets
