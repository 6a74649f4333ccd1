"""CGaP passes (issue #3): saliency, growth (Algorithm 2), pruning (Algorithm 3), seed, and
optimizer carry-over."""

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

import cgap_graph as cg
from cgap_graph import zoo
from cgap_graph.errors import CgapError
from cgap_graph.passes.cgap.grow import grow
from cgap_graph.passes.cgap.optim import carry_optimizer
from cgap_graph.passes.cgap.prune import prune, prune_units, sparse_units, zero_filters, zero_weights
from cgap_graph.passes.cgap.saliency import saliency
from cgap_graph.passes.cgap.seed import capacity_by_id, seed
from cgap_graph.run import data
from cgap_graph.run.config import TrainConfig
from cgap_graph.verify import make_responsive
from cgap_graph.verify.oracles import _MaskedStatsInterpreter

ZOO_WIDTH = {"vgg16": 0.25, "vgg19": 0.25, "resnet56": 0.5, "resnet110": 0.25, "densenet": 0.5}


def _mnist(split="train", batch=64):
    """Full MNIST from $CGAP_DATA_DIR when present, else the built-in subset."""
    name = "mnist" if os.environ.get("CGAP_DATA_DIR") and Path(os.environ["CGAP_DATA_DIR"], "mnist").exists() \
        else "mnist-mini"
    return data.loader(name, split, batch, limit=3000 if split == "train" else 1000)


@pytest.fixture(scope="module")
def trained_lenet():
    torch.manual_seed(0)
    model = zoo.build("lenet5", width=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(2):
        for x, y in _mnist():
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


# ---- saliency ------------------------------------------------------------------------------------------
def test_taylor_saliency_ranks_like_brute_force_eq1(trained_lenet):
    """Eq. 3 scores rank filters like the loss change of Eq. 1 (zeroing each filter)."""
    g = cg.trace(trained_lenet, (1, 1, 28, 28))
    batches = [b for _, b in zip(range(8), _mnist("test", 100))]
    sal = saliency(g, batches, batches=8)
    model = g.module

    def loss():
        with torch.no_grad():
            return float(np.mean([F.cross_entropy(model(x), y).item() for x, y in batches]))

    base = loss()
    for layer in ("conv1", "conv2"):
        grp = next(gr for gr in g.groups if any(m.target == f"{layer}.weight" and m.role == "produce"
                                                   for m in gr.members))
        w = getattr(model, layer).weight
        brute = []
        for u in range(grp.width):
            saved = w.data[u].clone()
            w.data[u] = 0
            brute.append(abs(loss() - base))
            w.data[u] = saved
        rho = spearmanr(sal.units[grp.id], brute)[0]
        assert rho >= 0.8, f"{layer}: Spearman {rho:.2f}"


def test_coupled_group_score_sums_its_filters():
    model = zoo.build("resnet20", width=0.5).eval()
    g = cg.trace(model, (1, 3, 32, 32))
    sal = saliency(g, mode="magnitude")
    stream = g.groups[0]
    producers = [m.target for m in stream.members if m.kind == "param" and m.role == "produce"
                 and m.target.endswith("weight") and g.traced.tensors[m.target].dim() == 4]
    assert len(producers) == 4  # stem conv and the three blocks' second convs write the stream
    expected = sum(g.module.get_parameter(k).detach().abs().flatten(1).sum(1).numpy() for k in producers)
    assert np.allclose(sal.units[stream.id], expected, rtol=1e-5)


def test_saliency_modes_and_errors():
    g = cg.trace(zoo.build("lenet5"), (1, 1, 28, 28))
    with pytest.raises(CgapError, match="needs data"):
        saliency(g)
    r1 = saliency(g, mode="random", generator=torch.Generator().manual_seed(1))
    r2 = saliency(g, mode="random", generator=torch.Generator().manual_seed(1))
    assert all(np.array_equal(r1.units[k], r2.units[k]) for k in r1.units)
    with pytest.raises(CgapError, match="unknown saliency"):
        saliency(g, mode="nope")


# ---- growth --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", zoo.names())
def test_preserve_growth_leaves_every_zoo_model_unchanged(name):
    model = make_responsive(zoo.build(name, width=ZOO_WIDTH.get(name, 1.0))).eval()
    shape = zoo.input_shape(name)
    x = torch.randn(2, *shape[1:])
    g = cg.trace(model, shape)
    rep = grow(g, saliency(g, mode="magnitude"), 0.6, init="preserve")
    assert rep.picked  # something grew
    g.module.eval()
    assert (g.module(x) - model(x)).abs().max().item() <= 1e-5
    for gid in rep.skipped:  # only groups whose duplication cannot be exact are left out
        assert g.group(gid).grow_notes or not g.group(gid).growable or round(0.6 * g.group(gid).width) == 0


def test_paper_growth_widths_and_training(trained_lenet):
    g = cg.trace(copy.deepcopy(trained_lenet), (1, 1, 28, 28))
    sal = saliency(g, _mnist(), batches=4)
    before = {gr.id: gr.width for gr in g.groups}
    grow(g, sal, 0.6, init="paper", sigma=0.5, mu=0.1)
    for gr in g.groups:
        expected = before[gr.id] + (round(0.6 * before[gr.id]) if gr.growable else 0)
        assert gr.width == expected
    gm = g.module.train()
    opt = torch.optim.SGD(gm.parameters(), lr=0.02, momentum=0.9)
    losses = []
    for i, (x, y) in enumerate(_mnist()):
        opt.zero_grad()
        loss = F.cross_entropy(gm(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if i == 30:
            break
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_coupled_residual_stream_grows_together():
    model = make_responsive(zoo.build("resnet20", width=0.5)).eval()
    g = cg.trace(model, (1, 3, 32, 32))
    grow(g, saliency(g, mode="magnitude"), 0.5, init="preserve")
    gm = g.module
    assert gm.conv1.out_channels == gm.get_submodule("layers.0.conv2").out_channels == \
        gm.get_submodule("layers.1.conv1").in_channels == 12


def test_random_init_and_capacity():
    g = cg.trace(zoo.build("lenet5"), (1, 1, 28, 28))
    sal = saliency(g, mode="magnitude")
    conv1 = g.groups[0]
    rep = grow(g, sal, 0.6, init="random", capacity={conv1.id: 25})
    assert conv1.id in rep.skipped and "capacity" in rep.skipped[conv1.id] and g.groups[0].width == 20
    rep = grow(g, sal, 0.6, init="random", capacity={conv1.id: 25}, capacity_mode="clip")
    assert g.groups[0].width == 25


def test_growth_parameter_errors():
    g = cg.trace(zoo.build("lenet5"), (1, 1, 28, 28))
    sal = saliency(g, mode="magnitude")
    for kw, match in [({"beta": 0}, "beta"), ({"sigma": 0}, "sigma"), ({"mu": -1}, "mu"), ({"init": "x"}, "init")]:
        args = {"beta": 0.6, **kw}
        with pytest.raises(CgapError, match=match):
            grow(g, sal, **args)


# ---- pruning -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lenet5", "vgg16", "resnet20", "mobilenetv2", "densenet", "se_resnet", "vit"])
def test_alg3_masked_and_shrunk_agree(name):
    model = make_responsive(zoo.build(name, width=ZOO_WIDTH.get(name, 0.5))).eval()
    shape = zoo.input_shape(name)
    x = torch.randn(2, *shape[1:])
    g = cg.trace(model, shape)
    sal = saliency(g, mode="random", generator=torch.Generator().manual_seed(0))
    rep = prune(g, sal, 0.5, 0.5, shrink=False)  # the masked model
    g.module.eval()
    # channels a LayerNorm normalises together: removal means statistics over the kept ones
    masked = _MaskedStatsInterpreter(g, {g.group(gid).space: np.array(u) for gid, u in rep.removed.items()}).run(x)
    assert bool(rep.inexact) == (name == "vit")
    keep = {gid: [u for u in range(g.group(gid).width) if u not in units] for gid, units in rep.removed.items()}
    assert keep
    from cgap_graph.surgery import apply_selection
    apply_selection(g, keep)  # the shrunk model
    assert (g.module(x) - masked).abs().max().item() <= 1e-5
    assert g.param_count() < sum(p.numel() for p in model.parameters())


def test_alg3_with_folding_equals_literal_algorithm(trained_lenet):
    """Zeroing the removed filters only (bias untouched, as Alg. 3 says) gives the same outputs
    as the pruned, folded and shrunk model: every reader in LeNet-5 can fold constants exactly."""
    x = torch.randn(4, 1, 28, 28)
    literal = cg.trace(copy.deepcopy(trained_lenet), (1, 1, 28, 28))
    sal = saliency(literal, _mnist(), batches=3)
    zero_weights(literal, sal, 0.5)
    dead = sparse_units(literal, 0.5)
    zero_filters(literal, dead)
    ref = literal.module.eval()(x)
    g = cg.trace(copy.deepcopy(trained_lenet), (1, 1, 28, 28))
    rep = prune(g, sal, 0.5, 0.5)
    assert rep.removed == dead and rep.folded and not rep.not_folded
    assert (g.module.eval()(x) - ref).abs().max().item() <= 1e-5
    assert g.param_count() < literal.param_count()


def test_layer_rate_zero_leaves_the_layer_alone():
    """A per-layer gamma_W of 0 keeps every unit and weight of that layer; the others are pruned
    as before (the Table I study keeps conv1 this way)."""
    torch.manual_seed(0)
    g = cg.trace(zoo.build("lenet5"), (1, 1, 28, 28))
    conv1 = g.module.get_submodule("conv1").weight.detach().clone()
    rates = {"conv1": 0.0, "conv2": 0.5, "fc1": 0.95, "fc2": 0.81}
    widths = [gr.width for gr in g.groups]
    rep = prune(g, saliency(g, mode="magnitude"), 0.5, None, layer_rates=rates)
    after = [gr.width for gr in g.groups]
    assert after[0] == widths[0] == 20 and after[1] < widths[1] and after[2] < widths[2]
    assert torch.equal(g.module.get_submodule("conv1").weight[:, :, :, :], conv1)
    assert rep.weights_zeroed > 0
    with pytest.raises(CgapError, match=r"gamma-w for layer 'fc1' must be in \[0, 1\)"):
        TrainConfig(gamma_w_layers={"fc1": -0.1}).validate()


def test_unfoldable_constants_are_reported():
    model = zoo.build("vgg16", width=0.125).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.fill_(0.3)  # a BN shift: removed filters leave a constant behind
    g = cg.trace(model, (1, 3, 32, 32))
    rep = prune_units(g, saliency(g, mode="magnitude"), 0.25)
    assert rep.not_folded and any("padded" in n for n in rep.not_folded)


def test_direct_unit_pruning_hits_target_width():
    g = cg.trace(zoo.build("resnet20"), (1, 3, 32, 32))
    before = {gr.id: gr.width for gr in g.groups}
    prune_units(g, saliency(g, mode="magnitude"), 0.25)
    for gr in g.groups:
        if gr.prunable:
            assert gr.width == before[gr.id] - round(0.25 * before[gr.id])


def test_rates_out_of_range():
    g = cg.trace(zoo.build("lenet5"), (1, 1, 28, 28))
    sal = saliency(g, mode="magnitude")
    for w, u in [(0.0, 0.5), (1.0, 0.5), (0.5, -0.1), (0.5, 1.5)]:
        with pytest.raises(CgapError, match=r"in \(0, 1\)"):
            prune(g, sal, w, u)


# ---- seed and optimizer --------------------------------------------------------------------------------
def test_seed_widths_and_capacity_round_trip(tmp_path):
    g = cg.trace(zoo.build("vgg19"), (1, 3, 32, 32))
    ref = {gr.id: gr.width for gr in g.groups}
    rep = seed(g, 0.125)
    for gr in g.groups:
        if gr.prunable or ref[gr.id] != gr.width:
            assert gr.width == max(1, round(0.125 * ref[gr.id]))
    path = tmp_path / "seed.pt"
    cg.save_model(g.module, path, meta={"input_shape": [1, 3, 32, 32], "capacity": rep.reference_widths})
    loaded = cg.load_model(str(path))
    g2 = cg.trace(loaded.model, loaded.input_shape)
    cap = capacity_by_id(g2, loaded.meta["capacity"])
    assert cap == {gid: w for gid, w in ref.items() if g.group(gid).resizable}


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam])
def test_optimizer_state_follows_channels(opt_cls):
    g = cg.trace(zoo.build("lenet5", width=0.5), (1, 1, 28, 28))
    gm = g.module
    opt = opt_cls(gm.parameters(), lr=0.01, **({"momentum": 0.9} if opt_cls is torch.optim.SGD else {}))
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(gm(x), y).backward()
        opt.step()
    key = "momentum_buffer" if opt_cls is torch.optim.SGD else "exp_avg"
    old_state = opt.state[gm.conv1.weight][key].clone()
    rep = grow(g, saliency(g, mode="magnitude"), 0.6, init="preserve")
    new_opt = carry_optimizer(opt, g.module, rep.surgery)
    new_w = g.module.conv1.weight
    st = new_opt.state[new_w][key]
    assert st.shape == new_w.shape
    picked = rep.picked[0]
    assert torch.equal(st[:10], old_state) and torch.equal(st[10:], old_state[picked])
    zero_opt = carry_optimizer(opt, g.module, rep.surgery, new_units="zero")
    assert zero_opt.state[new_w][key][10:].abs().sum() == 0
    new_opt.zero_grad()
    F.cross_entropy(g.module(x), y).backward()
    new_opt.step()  # the carried state has the right shapes to keep training
