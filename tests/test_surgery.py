"""The surgery primitive: attributes and graph constants follow, results train and save, and a
failure leaves the model untouched."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coupling_models import MODELS

import cgap_graph as cg
from cgap_graph import zoo
from cgap_graph.errors import SurgeryError
from cgap_graph.io.model_io import load_model, save_model
from cgap_graph.surgery import apply_selection, mask_channels


def _group_with(g, key, role="produce"):
    return next(grp for grp in g.groups for m in grp.members if m.target == key and m.role == role)


def test_lenet_hard_coded_view_is_rewritten():
    model = zoo.build("lenet5").eval()
    g = cg.trace(model, (1, 1, 28, 28))
    conv2 = _group_with(g, "conv2.weight")
    apply_selection(g, {conv2.id: list(range(0, 50, 2))})  # keep 25 of 50
    assert g.module.conv2.out_channels == 25 and g.module.fc1.in_features == 25 * 16
    view = next(n for n in g.graph.nodes if n.target == "view")
    assert view.args[2] == 400
    assert g.module(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_result_trains_and_round_trips(tmp_path):
    model = zoo.build("resnet20", width=0.5)
    g = cg.trace(model, (1, 3, 32, 32))
    stream = _group_with(g, "conv1.weight")
    apply_selection(g, {stream.id: [0, 1, 2, 5, 5, 6]})
    gm = g.module.train()
    opt = torch.optim.SGD(gm.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = F.cross_entropy(gm(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    path = tmp_path / "grown.pt"
    assert save_model(gm, path, meta={"input_shape": [1, 3, 32, 32]}) == "cgap"
    loaded = load_model(str(path))
    gm.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded.model(x), gm(x), atol=1e-6)
    assert loaded.model.conv1.out_channels == 6


def test_grouped_and_depthwise_attributes_follow():
    factory, shape, _ = MODELS["grouped_depthwise"]
    g = cg.trace(factory().eval(), shape)
    groups_of_g1 = next(grp for grp in g.groups if any(m.target == "g1.groups" for m in grp.members))
    assert groups_of_g1.width == 4
    apply_selection(g, {groups_of_g1.id: [0, 2, 3]})  # remove one of the 4 conv groups
    assert g.module.g1.groups == 3 and g.module.g1.in_channels == 12 and g.module.g1.out_channels == 12
    # the depthwise conv follows (the residual add ties its channels to g1's), multiplier kept
    assert g.module.dw.groups == g.module.dw.in_channels == 12 and g.module.dw.out_channels == 24
    per_group = next(grp for grp in g.groups if any(m.target == "g1.weight" and m.role == "consume"
                                                   for m in grp.members))
    apply_selection(g, {per_group.id: [1, 3]})  # 4 -> 2 input channels in every group of g1
    assert g.module.g1.groups == 3 and g.module.g1.in_channels == 6 and g.module.g1.out_channels == 12
    assert g.module.pw.out_channels == 6  # the residual add ties pw's output to g1's input
    assert g.module(torch.randn(2, *shape[1:])).shape == (2, 3)


def test_chunk_becomes_split_when_halves_differ():
    factory, shape, _ = MODELS["split_concat"]
    g = cg.trace(factory().eval(), shape)
    first_half = _group_with(g, "a.weight", "consume")
    apply_selection(g, {first_half.id: [0, 1, 2]})
    node = next(n for n in g.graph.nodes if n.target in ("split", torch.split) and n.args[1] == [3, 6])
    assert node is not None
    assert g.module(torch.randn(2, *shape[1:])).shape == (2, 3)


def test_sdpa_default_scale_is_pinned_when_head_dim_changes():
    factory, shape, _ = MODELS["fused_qkv_sdpa"]
    model = factory().eval()
    g = cg.trace(model, shape)
    head_dim = next(grp for grp in g.groups if any(m.target.endswith(":scale") for m in grp.members))
    assert head_dim.width == 8
    x = torch.randn(2, *shape[1:])
    ref = model(x)
    apply_selection(g, {head_dim.id: list(range(8)) + [3]}, "preserve")
    assert torch.allclose(g.module(x), ref, atol=1e-5)  # q.k split on the k side, scale pinned
    sdpa = next(n for n in g.graph.nodes if n.target is F.scaled_dot_product_attention)
    assert sdpa.kwargs["scale"] == pytest.approx(1 / np.sqrt(8))


def test_permutation_preserves_outputs():
    model = zoo.build("mobilenetv2", width=0.5).eval()
    x = torch.randn(2, 3, 32, 32)
    g = cg.trace(model, (1, 3, 32, 32))
    rng = np.random.default_rng(0)
    sel = {grp.id: rng.permutation(grp.width) for grp in g.groups if grp.resizable}
    apply_selection(g, sel)
    assert torch.allclose(g.module(x), model(x), atol=1e-5)


def test_repeated_surgery_on_one_graph():
    """The graph is updated in place, so several edits in a row need no re-analysis."""
    model = zoo.build("resnet20", width=0.5).eval()
    x = torch.randn(2, 3, 32, 32)
    g = cg.trace(model, (1, 3, 32, 32))
    grp = _group_with(g, "layers.0.conv1.weight")
    apply_selection(g, {grp.id: list(range(grp.width)) + [0, 1]})  # grow 8 -> 10
    apply_selection(g, {grp.id: [0, 2, 4, 6, 8, 9]})  # then prune to 6
    assert g.module.get_submodule("layers.0.conv1").out_channels == 6
    ref = copy.deepcopy(g.module)
    mask_channels(g, {grp.id: [1]})
    masked = g.module(x)
    apply_selection(g, {grp.id: [0, 2, 3, 4, 5]})
    assert torch.allclose(g.module(x), masked, atol=1e-5)
    assert not torch.allclose(ref(x), masked)


def test_bad_selections_are_refused_and_change_nothing():
    model = zoo.build("lenet5").eval()
    g = cg.trace(model, (1, 1, 28, 28))
    out = next(grp for grp in g.groups if grp.frozen)
    with pytest.raises(SurgeryError, match="frozen"):
        apply_selection(g, {out.id: [0]})
    conv1 = _group_with(g, "conv1.weight")
    with pytest.raises(SurgeryError, match="0..19"):
        apply_selection(g, {conv1.id: [0, 20]})
    with pytest.raises(SurgeryError, match="empty"):
        apply_selection(g, {conv1.id: []})
    with pytest.raises(SurgeryError, match="initialiser"):
        apply_selection(g, {conv1.id: [0]}, init="nonsense")
    assert g.module.conv1.out_channels == 20


def test_failed_validation_rolls_back(monkeypatch):
    import cgap_graph.surgery.select as S
    model = zoo.build("lenet5").eval()
    x = torch.randn(2, 1, 28, 28)
    g = cg.trace(model, (1, 1, 28, 28))
    code = g.module.code
    conv2 = _group_with(g, "conv2.weight")

    def boom(_):
        raise RuntimeError("simulated validation failure")

    monkeypatch.setattr(S, "validate_graph", boom)
    with pytest.raises(SurgeryError, match="simulated"):
        apply_selection(g, {conv2.id: list(range(10))})
    assert g.module.conv2.out_channels == 50 and g.module.fc1.in_features == 800
    assert g.module.conv2.weight.shape[0] == 50 and g.groups[conv2.id].width == 50
    assert g.module.code == code
    assert torch.equal(g.module(x), model(x))


def test_user_model_is_never_modified():
    model = zoo.build("resnet20", width=0.5).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = cg.trace(model, (1, 3, 32, 32))
    apply_selection(g, {_group_with(g, "conv1.weight").id: [0, 1]})
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
