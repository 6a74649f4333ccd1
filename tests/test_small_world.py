"""Small-World pruning (issue #6): mask density, the small-world measure, masks fixed through training,
exact removal of dead units, resume, ONNX export of the zero kernels, bad input."""

import json
import math

import networkx as nx
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import cgap_graph as cg
from cgap_graph import zoo
from cgap_graph.errors import CgapError
from cgap_graph.ir.graph import trace
from cgap_graph.passes.export import export_onnx
from cgap_graph.passes.small_world import (
    MaskKeeper,
    apply_masks,
    build_masks,
    load_masks,
    masked_violations,
    random_masks,
    small_world_masks,
)
from cgap_graph.passes.small_world.dead import remove_dead_units
from cgap_graph.passes.small_world.layers import layered_graph
from cgap_graph.passes.small_world.measure import bfs_sources, path_length, square_clustering, unique_edges
from cgap_graph.passes.small_world.optimise import kept_params, prune_connections
from cgap_graph.passes.small_world.topology import row_degrees, small_world_mask
from cgap_graph.run.config import TrainConfig
from cgap_graph.run.small_world import train_small_world

SHAPE = (1, 1, 28, 28)


def lenet():
    torch.manual_seed(0)
    return zoo.build("lenet5")


def kept_density(model, masks, exclude=()):
    """Density counted from scratch: kept mask entries x kernel + excluded layers, over all Conv/Linear weights."""
    kept = total = 0
    for name, mod in model.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            w = mod.weight
            total += w.numel()
            kernel = w[0, 0].numel()
            kept += w.numel() if name in exclude else int(masks[name].sum()) * kernel
    return kept / total


def quick_config(**kw):
    base = dict(epochs=2, batch_size=64, lr=0.05, lr_decay_every=0.5, eval_batch_size=500, saliency_batches=2,
                train_limit=1200, test_limit=500)
    return TrainConfig(**{**base, **kw})


# ---- masks ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("density,exclude", [(0.01, ()), (0.03, ()), (0.03, ("fc2",)), (0.1, ("conv1",)),
                                             (0.5, ()), (1.0, ())])
def test_masks_hit_the_density_within_one_percent(density, exclude):
    model = lenet()
    sw = small_world_masks(model, SHAPE, density, exclude=exclude, p_grid=(0.0, 0.05))
    got = kept_density(model, sw.masks, exclude)
    assert abs(got / density - 1) <= 0.01, (got, density)
    assert abs(sw.report.density - got) < 1e-12
    assert set(sw.masks) == {"conv1", "conv2", "fc1", "fc2"} - set(exclude)
    shapes = {"conv1": (20, 1), "conv2": (50, 20), "fc1": (500, 800), "fc2": (10, 500)}
    for name, m in sw.masks.items():
        assert m.dtype == torch.bool and tuple(m.shape) == shapes[name]
    for row in sw.report.layers:  # the report counts excluded layers as dense, in full
        if row.name in exclude:
            assert row.excluded and row.weights == row.weights_total


def test_grouped_and_residual_models_get_masks_of_the_weight_shapes():
    for name, width in (("mobilenetv2", 0.5), ("resnet20", 1.0)):
        torch.manual_seed(0)
        model = zoo.build(name, width=width)
        shape = zoo.input_shape(name)
        sw = small_world_masks(model, shape, 0.3, p_grid=(0.05,), max_sources=64)
        assert abs(kept_density(model, sw.masks) / 0.3 - 1) <= 0.01
        mods = dict(model.named_modules())
        for n, m in sw.masks.items():
            assert tuple(m.shape) == tuple(mods[n].weight.shape[:2])
        apply_masks(model, sw.masks)
        assert masked_violations(model, sw.masks) == 0
        assert torch.isfinite(model.eval()(torch.randn(2, *shape[1:]))).all()


def test_small_world_coefficient_above_one_and_above_random_masks():
    model = lenet()
    sw = small_world_masks(model, SHAPE, 0.03)
    rnd = random_masks(model, SHAPE, 0.03)
    s_sw, s_rnd = sw.report.network.sigma, rnd.report.network.sigma
    assert s_sw > 1.3, s_sw  # measured 1.58 (p = 0.05)
    assert abs(s_rnd - 1) < 0.05, s_rnd  # a random mask is its own reference: sigma ~ 1
    assert s_sw > s_rnd + 0.3
    assert sw.report.network.clustering > 1.5 * rnd.report.network.clustering
    assert sw.report.network.path_length < 1.2 * rnd.report.network.path_length  # short paths kept
    assert 0 < sw.report.p < 0.5  # rewired, but far from random
    # the sweep: p = 0 is the lattice (omega << 0), p = 1 random-like (omega > 0), the chosen p nearest 0
    sweep = {s["p"]: s for s in sw.report.sweep}
    assert sweep[0.0]["omega"] < -0.1 and sweep[1.0]["omega"] > 0.3
    assert abs(sweep[sw.report.p]["omega"]) == min(abs(s["omega"]) for s in sw.report.sweep)
    # the same measure picks the largest sigma when asked
    by_sigma = small_world_masks(model, SHAPE, 0.03, exclude=["fc2"], criterion="sigma")
    assert by_sigma.report.network.sigma == max(s["sigma"] for s in by_sigma.report.sweep)


def test_measures_match_networkx_on_a_layered_graph():
    rng = np.random.default_rng(0)
    sizes = [3, 12, 20, 8]
    offsets = np.cumsum([0, *sizes])
    pairs = []
    for layer in range(len(sizes) - 1):
        dense = rng.random((sizes[layer + 1], sizes[layer])) < 0.3
        dense[np.arange(sizes[layer + 1]), rng.integers(sizes[layer], size=sizes[layer + 1])] = True
        dense[rng.integers(sizes[layer + 1], size=sizes[layer]), np.arange(sizes[layer])] = True
        r, c = np.nonzero(dense)
        pairs.append(np.stack([r + offsets[layer + 1], c + offsets[layer]], 1))
    edges = unique_edges(np.concatenate(pairs))
    n = int(offsets[-1])
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(edges.tolist())
    assert nx.is_connected(g)
    assert nx.average_clustering(g) == 0  # layered = bipartite: no triangles, why C4 is used
    assert square_clustering(edges, n) == pytest.approx(nx.bipartite.robins_alexander_clustering(g), rel=1e-12)
    length, reach = path_length(edges, n, bfs_sources(n, 10_000))
    assert length == pytest.approx(nx.average_shortest_path_length(g), rel=1e-12)
    assert reach == 1.0


def test_lattice_rows_and_rewiring():
    graph = layered_graph(trace(lenet(), SHAPE))
    fc1 = graph.layer("fc1")
    entries = 5000
    lattice = small_world_mask(fc1, entries, 0.0, np.random.default_rng(0))
    assert lattice.sum() == entries
    assert sorted(set(lattice.sum(1).tolist())) == [10]  # 5000 / 500 outputs
    assert row_degrees(7, 23).tolist() == [4, 3, 3, 4, 3, 3, 3]  # 23 links: the 2 extra ones spread out
    # lattice order is channel-fastest: each fc1 neuron reads 10 different conv2 channels at one position
    col_nodes = fc1.column_nodes()
    channels = [len(set(col_nodes[o][lattice[o]].tolist())) for o in range(fc1.out_units)]
    assert min(channels) == 10
    # neighbouring neurons share most of their inputs; rewiring moves about p of the links, degrees kept
    shared = (lattice[:-1] & lattice[1:]).sum(1).mean()
    assert shared >= 8
    rewired = small_world_mask(fc1, entries, 0.2, np.random.default_rng(0))
    assert (rewired.sum(1) == lattice.sum(1)).all()
    moved = (rewired & ~lattice).sum() / entries
    assert 0.17 < moved < 0.23, moved


# ---- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,words", [
    (dict(density=0.0), "density must be in (0, 1]"),
    (dict(density=1.5), "density must be in (0, 1]"),
    (dict(density=math.nan), "density must be in (0, 1]"),
    (dict(density=0.03, p=-0.1), "p (the rewiring probability) must be in [0, 1]"),
    (dict(density=0.03, p=1.1), "p (the rewiring probability) must be in [0, 1]"),
    (dict(density=0.03, exclude=["fc3"]), "unknown layer 'fc3' in exclude; choose from conv1, conv2, fc1, fc2"),
    (dict(density=0.03, exclude="fc2"), "use ['fc2']"),
    (dict(density=0.005, exclude=["fc2"]), "raise the density or exclude fewer layers"),
    (dict(density=0.03, topology="lattice"), "topology must be one of small-world, random"),
])
def test_bad_input_is_a_one_line_error_naming_the_fix(kwargs, words, tmp_path):
    density = kwargs.pop("density")
    with pytest.raises(CgapError) as e:
        build_masks(lenet(), SHAPE, density, **kwargs)
    assert words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CgapError) as e:  # the training entry point checks the same, writing nothing
        train_small_world(lenet(), SHAPE, "mnist-mini", tmp_path / "run", quick_config(), density=density, **kwargs)
    assert words in str(e.value)
    assert not (tmp_path / "run").exists()


def test_bad_training_options(tmp_path):
    for kwargs, words in ((dict(prune_rate=1.5), "prune_rate must be in [0, 1]"),
                          (dict(finetune_epochs=-1), "finetune_epochs must be an integer >= 0"),
                          (dict(saliency="random"), "saliency must be taylor or magnitude")):
        with pytest.raises(CgapError) as e:
            train_small_world(lenet(), SHAPE, "mnist-mini", tmp_path / "run", quick_config(), density=0.05, **kwargs)
        assert words in str(e.value)
    with pytest.raises(CgapError, match="no Small-World run"):
        train_small_world(None, SHAPE, "mnist-mini", tmp_path / "none", quick_config(), density=0.05, resume=True)
    with pytest.raises(CgapError, match="no density"):
        train_small_world(lenet(), SHAPE, "mnist-mini", tmp_path / "run", quick_config())
    with pytest.raises(CgapError, match="gives inputs of shape"):  # the data is checked before masks are written
        train_small_world(lenet(), SHAPE, "cifar10", tmp_path / "run", quick_config(), density=0.05)
    assert not (tmp_path / "run").exists()


def test_no_fine_tuning_evaluates_the_optimised_model(tmp_path):
    torch.manual_seed(0)
    res = train_small_world(lenet(), SHAPE, "mnist-mini", tmp_path / "run", quick_config(epochs=1), density=0.05,
                            finetune_epochs=0, prune_rate=0.0, progress=False)
    assert res.stage == "done" and res.epochs == 1
    # no pruning, no dead units: the final model is the trained masked one, and so is its accuracy
    assert res.params_kept == res.optimise["params_before"] == kept_params(cg.load_model(str(tmp_path / "run" /
                                                                                            "model.pt")).model)
    assert res.test_accuracy == res.train_result.test_accuracy


# ---- training, optimising, resuming ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sw") / "run"
    torch.manual_seed(0)
    res = train_small_world(lenet(), SHAPE, "mnist-mini", out, quick_config(epochs=3), density=0.05,
                            finetune_epochs=1, progress=False)
    return out, res


def test_masked_weights_stay_exactly_zero_through_training(finished_run):
    out, res = finished_run
    masks = load_masks(out / "masks.pt")
    trained = cg.load_model(str(out / "train" / "model.pt")).model
    dropped = sum(int((~m).sum()) * dict(trained.named_modules())[n].weight[0, 0].numel() for n, m in masks.items())
    assert dropped > 0.9 * 431_080
    assert masked_violations(trained, masks) == 0
    # and the weights it keeps did train (not all zero)
    assert all(int(torch.count_nonzero(dict(trained.named_modules())[n].weight)) ==
               int(m.sum()) * dict(trained.named_modules())[n].weight[0, 0].numel() for n, m in masks.items())
    final = cg.load_model(str(out / "model.pt")).model
    assert masked_violations(final, load_masks(out / "finetune" / "masks.pt")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["params_kept"] == res.params_kept == kept_params(final)
    assert res.params_kept < res.optimise["params_before"] < 0.06 * 431_080  # pruned below the 5% masks
    assert res.kept_fraction == pytest.approx(res.params_kept / 431_080)
    assert res.test_accuracy > 0.5  # chance is 0.1
    assert res.stage == "done" and res.epochs == 4


def test_mask_keeper_zeroes_after_every_step():
    model = lenet()
    masks = small_world_masks(model, SHAPE, 0.05, p_grid=(0.05,)).masks
    apply_masks(model, masks)
    keep = MaskKeeper(masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.randn(8, 1, 28, 28)), torch.randint(0, 10, (8,))).backward()
        opt.step()
        assert masked_violations(model, masks) > 0  # the optimizer alone moves dropped weights (momentum, decay)
        keep(model)
        assert masked_violations(model, masks) == 0


def test_removing_dead_units_leaves_outputs_unchanged():
    model = lenet()
    with torch.no_grad():  # biases of dead-input units are constants that must be folded, not dropped
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.bias.uniform_(0.05, 0.3)
    masks = random_masks(model, SHAPE, 0.012).masks  # sparse enough to leave units without inputs
    masks["fc2"][:, :40] = False  # and fc1 neurons nobody reads
    masks["fc1"][:, :32] = False  # conv2 channels 0 and 1: no reader
    masks["conv2"][5:8] = False  # conv2 channels 5-7: no input
    apply_masks(model, masks)
    g = trace(model, SHAPE)
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        before = g.module.eval()(x)
    new_masks, rep = remove_dead_units(g, masks)
    with torch.no_grad():
        after = g.module.eval()(x)
    assert (after - before).abs().max() <= 1e-5
    assert rep.removed["conv2"] >= 5 and rep.removed["fc1"] >= 40, rep.removed
    widths = [gr.width for gr in g.groups]
    assert widths[1] <= 45 and widths[2] <= 460
    for name, m in new_masks.items():
        assert tuple(m.shape) == tuple(g.module.get_submodule(name).weight.shape[:2])
    assert masked_violations(g.module, new_masks) == 0
    assert rep.notes == []
    assert kept_params(g.module) < kept_params(model)


def test_prune_connections_rate_and_last_connection():
    model = lenet()
    masks = small_world_masks(model, SHAPE, 0.05, p_grid=(0.05,)).masks
    apply_masks(model, masks)
    scores = {n: dict(model.named_modules())[n].weight.detach().abs() for n in masks}
    new, pruned = prune_connections(model, masks, scores, 0.4)
    for name, m in masks.items():
        kept = int(m.sum())
        assert int(new[name].sum()) == kept - pruned[name]
        assert (new[name].sum(1) >= 1).all()  # no output loses its last connection
        if m.sum(1).min() > 2:
            assert pruned[name] == int(0.4 * kept)
    assert pruned["conv1"] == 0  # one input channel: every kernel is its unit's last connection
    assert masked_violations(model, new) == 0


def test_resume_reloads_the_same_masks(tmp_path):
    out = tmp_path / "run"
    cfg = quick_config(epochs=2)
    torch.manual_seed(0)
    part = train_small_world(lenet(), SHAPE, "mnist-mini", out, cfg, density=0.05, finetune_epochs=2,
                             stop_after=1, progress=False)
    assert part.stage == "train" and part.epochs == 1 and not (out / "model.pt").exists()
    masks = load_masks(out / "masks.pt")
    # resume with other arguments: the saved masks and settings win
    mid = train_small_world(None, SHAPE, "mnist-mini", out, quick_config(epochs=9), density=0.5, p=1.0,
                            resume=True, stop_after=1, progress=False)
    assert mid.stage == "finetune" and mid.density == 0.05
    again = load_masks(out / "masks.pt")
    assert all(torch.equal(masks[k], again[k]) for k in masks)
    trained = cg.load_model(str(out / "train" / "model.pt")).model
    assert masked_violations(trained, masks) == 0
    ft_masks = load_masks(out / "finetune" / "masks.pt")
    done = train_small_world(None, SHAPE, "mnist-mini", out, cfg, density=0.5, resume=True, progress=False)
    assert done.stage == "done" and done.epochs == 4
    assert all(torch.equal(ft_masks[k], v) for k, v in load_masks(out / "finetune" / "masks.pt").items())
    assert masked_violations(cg.load_model(str(out / "model.pt")).model, ft_masks) == 0


def test_export_keeps_the_zero_kernels_visible(finished_run, tmp_path):
    out, _ = finished_run
    final = cg.load_model(str(out / "model.pt")).model
    rep = export_onnx(final, SHAPE, tmp_path / "sw.onnx")
    assert rep.max_abs_diff <= 1e-4
    zeros = nonzero = 0
    for init in onnx.load(str(tmp_path / "sw.onnx")).graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.ndim >= 2:
            zeros += int((arr == 0).sum())
            nonzero += int((arr != 0).sum())
    weights = [m.weight for m in final.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert nonzero == sum(int(torch.count_nonzero(w)) for w in weights)
    assert zeros == sum(int((w == 0).sum()) for w in weights) > 0
    conv2 = final.get_submodule("conv2").weight
    zero_kernels = int((conv2.flatten(2).abs().sum(2) == 0).sum())
    assert zero_kernels > 0.5 * conv2.shape[0] * conv2.shape[1]  # kernel-level sparsity, in the file too


def test_report_serialises_and_prints():
    sw = small_world_masks(lenet(), SHAPE, 0.03, exclude=["fc2"], p_grid=(0.0, 0.05))
    d = sw.report.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text)["layers"][3]["excluded"] is True and d["layers"][3]["sigma"] is None
    assert d["network"]["weights"] == sum(r["weights"] for r in d["layers"])
    from rich.console import Console
    console = Console(record=True, width=200)
    sw.report.print(console)
    shown = console.export_text()
    assert "network" in shown and "fc2 (excluded: dense)" in shown and f"{sw.report.network.sigma:.3f}" in shown


def test_train_command_small_world_method(tmp_path):
    from typer.testing import CliRunner

    from cgap_graph.cli.app import app
    runner = CliRunner()
    out = tmp_path / "cli"
    r = runner.invoke(app, ["train", "--method", "small-world", "--density", "0.05", "--dataset", "mnist-mini",
                            "--epochs", "1", "--finetune-epochs", "1", "--batch-size", "256", "--out", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    topology = json.loads((out / "topology.json").read_text())
    assert topology["network"]["density"] == pytest.approx(0.05, abs=0.0005)
    assert summary["params_kept"] < 0.05 * 431_080
    final = cg.load_model(str(out / "model.pt")).model
    assert masked_violations(final, load_masks(out / "finetune" / "masks.pt")) == 0
    for args, words in [(["--method", "small-world"], "needs --density"),
                        (["--density", "0.05"], "--method small-world"),
                        (["--method", "prune"], "cgap or small-world")]:
        r = runner.invoke(app, ["train", "--dataset", "mnist-mini", "--epochs", "1", "--out", str(tmp_path / "x"),
                                *args])
        assert r.exit_code == 2 and words in r.output and not (tmp_path / "x").exists(), r.output
