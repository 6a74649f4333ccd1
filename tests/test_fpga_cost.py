"""FPGA cost pass: hand-calculated layer costs, the roofline bound, structured vs scattered sparsity,
fusion, bad inputs and the ``cost`` command."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from cgap_graph import zoo
from cgap_graph.cli.cost_cmd import cost
from cgap_graph.errors import CgapError
from cgap_graph.ir.graph import trace
from cgap_graph.passes.cgap.prune import prune_units
from cgap_graph.passes.cgap.saliency import saliency
from cgap_graph.passes.export import export_onnx
from cgap_graph.passes.fpga.config import HwConfig, load_hw_config
from cgap_graph.passes.fpga.cost import cost_onnx
from cgap_graph.passes.fpga.graph import MacLayer, MemoryPass
from cgap_graph.passes.fpga.schedule import Schedule, cost_layer, search_schedule
from cgap_graph.passes.fpga.sparse import WeightStore, csr_entries, zero_word_counts
from cgap_graph.passes.fpga.workload import read_workload

CFG = HwConfig()
F = 300e6  # Hz
BW = 19.2e9  # bytes/s


def to_onnx(model: torch.nn.Module, shape: tuple[int, ...], path) -> None:
    """The one place these tests turn a torch model into ONNX (dynamic batch axis); the legacy
    exporter is ~10x faster than dynamo on these models."""
    export_onnx(model, shape, path, check=False, exporter="legacy")


def shrunk(name: str, rate: float = 0.5) -> torch.nn.Module:
    """The zoo model with ``rate`` of every prunable group's units removed (magnitude saliency)."""
    cg = trace(zoo.build(name).eval(), (1, 3, 32, 32))
    prune_units(cg, saliency(cg, None, mode="magnitude"), rate)
    return cg.module.eval()


@pytest.fixture(scope="module")
def zoo_onnx(tmp_path_factory):
    """Dense and shrunk (50% of units) VGG-16 and ResNet-20 as ONNX files."""
    d = tmp_path_factory.mktemp("fpga")
    torch.manual_seed(0)
    out = {}
    for name in ("vgg16", "resnet20"):
        out[name] = d / f"{name}.onnx"
        to_onnx(zoo.build(name).eval(), (1, 3, 32, 32), out[name])
        out[name + "_shrunk"] = d / f"{name}_shrunk.onnx"
        to_onnx(shrunk(name), (1, 3, 32, 32), out[name + "_shrunk"])
    return out


def conv_model(nif=16, nof=32, size=32, k=3, pad=1, bias=False, weights=None) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", nif, size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = weights if weights is not None else np.random.default_rng(0).standard_normal((nof, nif, k, k))
    inits = [numpy_helper.from_array(w.astype(np.float32), "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(np.zeros(nof, np.float32), "b"))
        inputs.append("b")
    node = helper.make_node("Conv", inputs, ["y"], name="conv", pads=[pad] * 4, kernel_shape=[k, k])
    return helper.make_model(helper.make_graph([node], "one_conv", [x], [y], inits),
                             opset_imports=[helper.make_opsetid("", 17)])


# ---- one layer, by hand ---------------------------------------------------------------------------
def test_single_conv_matches_hand_calculation():
    (layer,) = read_workload(conv_model()).layers
    assert (layer.nif, layer.niy, layer.nix, layer.nof, layer.noy, layer.nox, layer.nky) == (16, 32, 32, 32, 32, 32, 3)
    assert layer.macs == 32 * 32 * 32 * 16 * 9
    c = cost_layer(layer, Schedule(toy=16, tof=64, order="rows"), CFG)
    # 2 row tiles x 1 channel tile (32 filters < Tof). Per tile:
    comp = 3 * 3 * 16 * math.ceil(32 / 4) * math.ceil(16 / 4) * math.ceil(32 / 64)  # = 4608 cycles
    # input rows with the halo: output rows 0-15 read rows -1..16 -> 0..16 (17); rows 16-31 read 15..32 -> 17
    px_bytes = 17 * 32 * 16 * 2  # 17,408 B = 272 words of 64 B, 64 B per cycle (19.2 GB/s at 300 MHz)
    w_bytes = 32 * 16 * 9 * 2  # 9,216 B = 144 words, read once (Tof >= Nof)
    out_bytes = 16 * 32 * 32 * 2  # 32,768 B = 512 words per tile
    oh = 16  # cycles per transfer
    read0 = (272 + oh) + (144 + oh)  # pixels and weights of tile 0: 448
    read1 = 272 + oh  # pixels of tile 1: 288
    write = 512 + oh  # 528
    # read tile 0; compute 0 || read 1; compute 1 || write 0; write 1
    latency = read0 + max(comp, read1) + max(comp, write) + write
    assert comp == 4608 and latency == 10192
    assert c.compute_cycles == 2 * comp
    assert c.latency_cycles == latency
    assert c.latency_s == pytest.approx(latency / F)
    assert c.dram_read_bytes == 2 * px_bytes + w_bytes == 44032
    assert c.dram_write_bytes == 2 * out_bytes == 65536
    assert c.dram_words == 2 * 272 + 144 + 2 * 512
    assert c.dram_transfers == 5
    assert c.dram_energy_pj == pytest.approx(c.dram_words * 512 * 20.0)
    # buffers: pixels written once and read Pox*Poy per cycle, weights written once and read Pof per
    # cycle, every output written and read once
    assert c.pixel_buffer_accesses == 2 * 17 * 32 * 16 + 2 * comp * 16
    assert c.weight_buffer_accesses == 32 * 16 * 9 + 2 * comp * 64
    assert c.output_buffer_accesses == 2 * 32 * 32 * 32
    assert c.buffer_energy_pj == pytest.approx(c.buffer_accesses * 16 * 0.15625)
    assert c.fits
    best = search_schedule(layer, CFG)
    assert best.latency_cycles <= latency
    assert best.compute_cycles == c.compute_cycles  # 32 rows and 32 filters: no padding either way


def test_fully_connected_layer_is_bound_by_weight_reads():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 512])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.ones((512, 512), np.float32), "w")
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)
    model = helper.make_model(helper.make_graph([node], "fc", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    (c,) = cost_onnx(model).layers
    weight_time = 512 * 512 * 2 / BW
    assert c.compute_cycles == 512 * 512 // 64  # one output pixel: 1/16 of the array busy
    assert weight_time <= c.latency_s <= 1.1 * weight_time


def test_depthwise_tiles_read_only_their_groups_inputs():
    layer = MacLayer("dw", "Conv", nif=128, niy=8, nix=8, nof=128, noy=8, nox=8, nky=3, nkx=3, pad_top=1,
                     groups=128, out_elems=128 * 8 * 8)
    c = cost_layer(layer, Schedule(toy=8, tof=64, order="rows"), CFG)  # 1 row tile x 2 channel tiles
    assert c.compute_cycles == 2 * (3 * 3 * 1 * 2 * 2 * 1)
    assert c.dram_read_bytes == 128 * 8 * 8 * 2 + 128 * 9 * 2  # each input channel read once, by its tile
    assert c.pixel_buffer_accesses == 128 * 8 * 8 + c.compute_cycles * 4 * 4 * 64  # 64 lanes, 64 pixels


# ---- the roofline ---------------------------------------------------------------------------------
def check_roofline(c) -> None:
    compute_bound = c.macs / (CFG.mac_units * F)
    memory_bound = c.dram_bytes / BW
    assert c.latency_s >= compute_bound * (1 - 1e-9), c
    assert c.latency_s >= memory_bound * (1 - 1e-9), c
    assert c.latency_cycles >= c.compute_cycles


def test_every_layer_respects_the_roofline(zoo_onnx):
    for key in ("vgg16", "vgg16_shrunk", "resnet20", "resnet20_shrunk"):
        report = cost_onnx(zoo_onnx[key])
        assert not report.skipped
        assert all(c.fits for c in report.layers)
        for c in report.layers:
            check_roofline(c)
        t = report.totals()
        assert t["latency_s"] >= max(t["macs"] / (CFG.mac_units * F), t["dram_bytes"] / BW)


@settings(max_examples=40, deadline=None)
@given(nif=st.integers(1, 300), nof=st.integers(1, 300), size=st.integers(1, 40), k=st.sampled_from([1, 3, 5, 7]),
       stride=st.sampled_from([1, 2]), groups_depthwise=st.booleans())
def test_roofline_property_random_convs(nif, nof, size, k, stride, groups_depthwise):
    pad = k // 2
    out = (size + 2 * pad - k) // stride + 1
    groups = nif if groups_depthwise else 1
    nof = nif if groups_depthwise else nof
    layer = MacLayer("c", "Conv", nif=nif, niy=size, nix=size, nof=nof, noy=out, nox=out, nky=k, nkx=k,
                     stride_y=stride, pad_top=pad, groups=groups, out_elems=nof * out * out)
    best = search_schedule(layer, CFG)
    check_roofline(best)
    smallest = cost_layer(layer, Schedule(CFG.poy, CFG.pof), CFG)
    if smallest.fits:
        assert best.fits and best.latency_cycles <= smallest.latency_cycles
    assert best.compute_cycles >= layer.macs / CFG.array_macs


# ---- structured vs scattered sparsity ---------------------------------------------------------------
def test_shrunk_model_costs_less(zoo_onnx):
    for name in ("vgg16", "resnet20"):
        dense, small = cost_onnx(zoo_onnx[name]).totals(), cost_onnx(zoo_onnx[name + "_shrunk"]).totals()
        for key in ("latency_s", "dram_energy_pj", "buffer_energy_pj", "macs"):
            assert small[key] < dense[key], (name, key)
        assert small["latency_s"] < 0.7 * dense["latency_s"], name  # half the units: a large drop


def magnitude_zeroed(model: onnx.ModelProto, rate: float) -> onnx.ModelProto:
    """A copy with the ``rate`` smallest-|w| weights of every weight matrix/kernel set to zero."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, t in enumerate(out.graph.initializer):
        w = numpy_helper.to_array(t).copy()
        if w.ndim >= 2:
            flat = w.reshape(-1)
            flat[np.argsort(np.abs(flat), kind="stable")[: int(rate * flat.size)]] = 0
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(w, t.name))
    return out


def test_scattered_zeros_barely_change_the_cost(zoo_onnx):
    proto = magnitude_zeroed(onnx.load(str(zoo_onnx["vgg16"])), 0.6)
    dense = cost_onnx(proto, sparsity_mode="dense")
    sparse = cost_onnx(proto, sparsity_mode="unstructured")
    convs = [c for c in sparse.layers if c.op == "Conv"]
    assert all(c.weight_zero_fraction == pytest.approx(0.6, abs=0.01) for c in convs)
    d, s = dense.totals(), sparse.totals()
    assert s["compute_cycles"] == d["compute_cycles"]
    for key in ("latency_s", "dram_energy_pj", "buffer_energy_pj"):
        assert abs(s[key] / d[key] - 1) < 0.05, key
    # the structured model at the same rate of units drops a lot
    small = cost_onnx(zoo_onnx["vgg16_shrunk"]).totals()
    assert small["latency_s"] < 0.7 * s["latency_s"]


def test_csr_storage_saves_weight_traffic_but_no_compute(zoo_onnx):
    proto = magnitude_zeroed(onnx.load(str(zoo_onnx["resnet20"])), 0.6)
    csr_cfg = HwConfig(sparse_format="csr")
    dense = cost_onnx(proto, csr_cfg).totals()
    csr = cost_onnx(proto, csr_cfg, sparsity_mode="unstructured")
    t = csr.totals()
    assert t["compute_cycles"] == dense["compute_cycles"]
    assert t["dram_bytes"] < dense["dram_bytes"]
    assert {c.weight_format for c in csr.layers if c.op == "Conv"} == {"csr"}


def test_whole_zero_filters_skip_dram_words_but_not_compute():
    w = np.random.default_rng(0).standard_normal((32, 16, 3, 3))
    w[::2] = 0  # every other filter pruned (zeroed) but not removed
    model = conv_model(weights=w)
    dense, sparse = cost_onnx(model), cost_onnx(model, sparsity_mode="unstructured")
    (d,), (s,) = dense.layers, sparse.layers
    assert s.weight_format == "zero-bursts" and d.weight_format == "dense"
    assert s.compute_cycles == d.compute_cycles
    # 16 filters of 144 weights = 5 words each (filter-aligned) + a bitmap of 160 bits
    assert s.dram_read_bytes == d.dram_read_bytes - 32 * 144 * 2 + 16 * 5 * 64 + 160 // 8


def test_sparse_weight_formats_by_hand():
    w = np.zeros((2, 40))
    w[0, [0, 35]] = 1.0  # both 32-weight words of filter 0 hold a non-zero
    w[1, 39] = 1.0  # only the second word of filter 1
    assert zero_word_counts(w, 32).tolist() == [2, 1]
    # 4-bit index: an entry skips <= 15 zeros; 34 zeros before w[0,35] need 34 // 16 = 2 fillers
    assert csr_entries(w, 4).tolist() == [1 + 1 + 2, 1 + 39 // 16]
    layer = MacLayer("fc", "Gemm", nif=40, niy=1, nix=1, nof=2, noy=1, nox=1, out_elems=2, weights=w)
    store = WeightStore(layer, HwConfig(sparse_format="csr"), sparse=True)
    assert store.format == "csr" and store.nbytes(0, 2) == math.ceil((4 + 3) * 20 / 8)
    assert store.elems(0, 2) == 80  # the weight buffer holds them dense


def test_zero_kernels_skip_compute_when_every_lane_is_zero():
    """Kernel-level sparsity (Small-World masks): an input channel is skipped for a group of pof
    output channels only when all their kernels on it are zero; storage is non-zero kernels + bitmap."""
    cfg = HwConfig(pof=8)
    w = np.random.default_rng(0).standard_normal((32, 16, 3, 3))
    w[0:8, 0:10] = 0  # lane group 0: input channels 0-9 zero on every lane -> 6 steps left
    w[8:16, 0:4] = 0  # lane group 1: 0-3 zero on every lane -> 12 steps
    w[9, 4:16] = 0  # ... and one lane zero elsewhere: no step saved (other lanes need them)
    w[16:24, :, 1, 1] = 0  # single zero weights inside kernels: the kernel is still non-zero
    model = conv_model(weights=w)
    dense, kern = cost_onnx(model, cfg), cost_onnx(model, cfg, sparsity_mode="kernel")
    (d,), (k,) = dense.layers, kern.layers
    (layer,) = read_workload(model, want_weights=True).layers
    store = WeightStore(layer, cfg, kernel=True)
    assert store.lane_steps(0, 32, 8) == 6 + 12 + 16 + 16
    assert store.lane_steps(0, 8, 8) == 6 and store.lane_steps(8, 16, 8) == 12
    per_row_step = 3 * 3 * math.ceil(32 / cfg.pox)  # one input channel, one Poy-row band, pof lanes
    assert k.compute_cycles == per_row_step * math.ceil(32 / cfg.poy) * (6 + 12 + 16 + 16)
    assert d.compute_cycles == per_row_step * math.ceil(32 / cfg.poy) * 16 * 4
    nonzero_kernels = 32 * 16 - 8 * 10 - 8 * 4 - 12
    assert k.weight_format == "kernel"
    assert store.nbytes(0, 32) == math.ceil((nonzero_kernels * 9 * 16 + 32 * 16) / 8)
    assert k.latency_cycles < d.latency_cycles and k.dram_read_bytes < d.dram_read_bytes
    # a dense file costs the same in kernel mode as in dense mode (dense storage is smaller than kernel's)
    plain = conv_model()
    (a,), (b,) = cost_onnx(plain, cfg).layers, cost_onnx(plain, cfg, sparsity_mode="kernel").layers
    assert (a.compute_cycles, a.latency_cycles, a.dram_read_bytes) == (b.compute_cycles, b.latency_cycles,
                                                                      b.dram_read_bytes)
    with pytest.raises(CgapError, match="dense, unstructured or kernel"):
        cost_onnx(model, cfg, sparsity_mode="kernels")


# ---- graph reading: fusion, memory passes, batch -------------------------------------------------
def test_fusion_rules():
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in [("w1", (8, 8, 3, 3)), ("w2", (8, 8, 3, 3)), ("s", (8,)), ("b", (8,)), ("m", (8,)),
                          ("v", (8,))]]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),  # r1 has two readers: the chain stops
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["a"], name="add"),  # residual: fused into conv2
        helper.make_node("Relu", ["a"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),  # a view: free
        helper.make_node("Softmax", ["f"], ["y"], name="softmax"),  # not fusable: a memory pass
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    work = read_workload(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    conv1, conv2, soft = work.layers
    assert conv1.fused == ["BatchNormalization", "Relu"] and conv1.bias and conv1.out_elems == 8 * 16 * 16
    assert conv2.fused == ["Add", "Relu", "MaxPool"] and conv2.extra_elems == 8 * 16 * 16
    assert conv2.out_elems == 8 * 8 * 8  # only the pooled map is written
    assert isinstance(soft, MemoryPass) and soft.read_elems == [512] and soft.write_elems == [512]
    c = cost_layer(conv2, Schedule(16, 64), CFG)
    assert c.dram_read_bytes == (8 * 16 * 16 + 8 * 8 * 9 + 8 * 16 * 16) * 2  # pixels, weights, residual
    assert c.dram_write_bytes == 8 * 8 * 8 * 2
    assert not work.skipped


def test_fixed_batch_is_one_inference():
    one = conv_model()
    four = conv_model()
    four.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    assert cost_onnx(one).totals() == cost_onnx(four).totals()


# ---- bad inputs ---------------------------------------------------------------------------------------
def test_not_onnx_is_a_clear_error(tmp_path):
    text = tmp_path / "notes.onnx"
    text.write_text("hello, not a model\n")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    for path in (text, empty):
        with pytest.raises(CgapError, match=r"is not an ONNX model .*; export the model to ONNX first"):
            cost_onnx(path)
    with pytest.raises(CgapError, match="does not exist"):
        cost_onnx(tmp_path / "missing.onnx")


def test_unknown_op_is_reported_and_skipped():
    model = conv_model()
    g = model.graph
    g.node[0].output[0] = "c"
    g.node.append(helper.make_node("Glitter", ["c"], ["y"], name="sparkle", domain="com.example"))
    (layer,) = cost_onnx(model).layers  # the conv is still costed; the undeclared domain does not crash
    assert layer.name == "conv" and layer.macs > 0
    assert cost_onnx(model).skipped == ["sparkle (com.example:Glitter): no cost model for this op"]


@pytest.mark.parametrize("text, needle", [
    ("pox = -4", "pox is -4; give a positive number, e.g. pox = 4"),
    ("freq_mhz = 0", "freq_mhz is 0; give a positive number"),
    ("poxx = 4", "unknown key 'poxx'; valid keys:"),
    ("pox = ", "is not valid TOML"),
    ("pox = \"\"", "pox has no value"),
    ("pox = \"four\"", "pox is 'four', not a number"),
    ("pox = 4.5", "pox is 4.5, not a whole number"),
    ("pof = 128", "pox * poy * pof = 2048 exceeds mac_units = 1024"),
    ("sparse_format = \"rle\"", "sparse_format is 'rle'; use one of zero-bursts, csr"),
    ("dram_overhead_cycles = -1", "dram_overhead_cycles is -1; give 0 or more cycles"),
    ("[gpu]\npox = 4", "unknown table [gpu]"),
])
def test_bad_config_is_a_one_line_error(tmp_path, text, needle):
    path = tmp_path / "fpga.toml"
    path.write_text(text + "\n")
    with pytest.raises(CgapError) as info:
        load_hw_config(path)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_config_overrides_change_the_cost(tmp_path):
    path = tmp_path / "fpga.toml"
    path.write_text("[fpga]\npof = 32\nmac_units = 512\ndram_overhead_cycles = 0\n")
    cfg = load_hw_config(path)
    assert (cfg.pof, cfg.mac_units, cfg.dram_overhead_cycles, cfg.pox) == (32, 512, 0, 4)
    model = conv_model()
    assert cost_onnx(model, cfg).totals()["compute_cycles"] == 3 * 3 * 16 * 8 * 8 * 1  # 32 filters: one Pof step
    assert cost_onnx(model).totals()["compute_cycles"] == 3 * 3 * 16 * 8 * 8 * 1


# ---- the command --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli():
    app = typer.Typer()
    app.command("cost")(cost)

    @app.command("other")
    def other():  # a second command keeps 'cost' a subcommand, as in cgap-graph
        pass

    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["cost", *map(str, args)])


def test_cli_bad_inputs_exit_2_with_one_line(cli, tmp_path):
    text = tmp_path / "model.onnx"
    text.write_text("not a model")
    good = tmp_path / "conv.onnx"
    onnx.save(conv_model(), good)
    bad_cfg = tmp_path / "fpga.toml"
    bad_cfg.write_text("pof = -1\n")
    for args, needle in [
        ((text,), "is not an ONNX model"),
        ((tmp_path / "nope.onnx",), "does not exist"),
        ((good, "--config", bad_cfg), "pof is -1"),
        ((good, "--csv", good), "is the input file"),
    ]:
        r = cli(*args)
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.output
        assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1, r.output


def test_cli_json_csv_plot_and_comparison(cli, tmp_path):
    a, b = tmp_path / "big.onnx", tmp_path / "small.onnx"
    onnx.save(conv_model(nof=64), a)
    onnx.save(conv_model(nof=32), b)
    r = cli(a, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["totals"]["latency_s"] == pytest.approx(cost_onnx(a).totals()["latency_s"])
    assert data["layers"][0]["schedule"]["tof"] % 64 == 0
    png, csv_path = tmp_path / "fig8.png", tmp_path / "layers.csv"
    r = cli(a, b, "--plot", png, "--csv", csv_path, "--unstructured")
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("model,name,op,shape") and len(lines) == 3
    assert "comparison" in r.output and "unstructured" in r.output
    r = cli(a, b, "--json")
    rows = json.loads(r.output)["comparison"]
    assert rows[1]["model"] == "small" and rows[1]["macs_change_pct"] == pytest.approx(-50.0)
