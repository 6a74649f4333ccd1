"""ONNX export (issue #5): ONNX Runtime matches PyTorch on every zoo model, dense, grown and pruned;
masked units are shrunk away; metadata; nothing written on failure; the command line."""

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

import cgap_graph as cg
from cgap_graph import zoo
from cgap_graph.cli.app import app
from cgap_graph.errors import CgapError
from cgap_graph.ir.graph import trace
from cgap_graph.passes import export as export_mod
from cgap_graph.passes.cgap.grow import grow
from cgap_graph.passes.cgap.prune import prune_units
from cgap_graph.passes.cgap.saliency import saliency
from cgap_graph.passes.cgap.seed import group_key
from cgap_graph.passes.export import ExportError, export_onnx, read_metadata, session
from cgap_graph.surgery import mask_channels
from cgap_graph.verify import make_responsive

TOL = 1e-4  # the bound on |ONNX Runtime - PyTorch|, times max(1, |output|): float32 resolves
# ~1e-7 of an output's magnitude, and a grown model (paper init) can give outputs of 1e5
runner = CliRunner()


def ort_vs_torch(path, module, shape, batch=4, seed=7):
    """An independent check at a batch size the export never saw: (max diff / max(1, scale), scale)."""
    x = torch.randn(batch, *shape[1:], generator=torch.Generator().manual_seed(seed))
    sess = session(path)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = module.eval()(x).numpy()
    assert got.shape == ref.shape
    scale = float(np.abs(ref).max())
    return float(np.abs(got - ref).max()) / max(1.0, scale), scale


def ok(rep) -> bool:
    return rep.max_abs_diff <= TOL * max(1.0, rep.output_scale)


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_onnx_runtime_matches_pytorch_dense_grown_and_pruned(name, tmp_path):
    shape = zoo.ZOO[name].input_shape
    torch.manual_seed(0)
    model = make_responsive(zoo.build(name), seed=1).eval()
    rep = export_onnx(model, shape, tmp_path / "dense.onnx")
    assert rep.exporter == "dynamo" and rep.dynamic_batch and ok(rep)
    diff, scale = ort_vs_torch(tmp_path / "dense.onnx", model, shape)
    assert diff <= TOL and scale > 1e-3, (diff, scale)  # a real signal, not all zeros

    g = trace(model, shape)
    widths0 = {x.id: x.width for x in g.groups}
    grow(g, saliency(g, None, mode="magnitude"), 0.5, init="paper", seed=1)
    assert any(x.width > widths0[x.id] for x in g.groups)
    rep = export_onnx(g, None, tmp_path / "grown.onnx")
    diff, scale = ort_vs_torch(tmp_path / "grown.onnx", g.module, shape)
    assert ok(rep) and diff <= TOL and scale > 1e-3, (diff, scale)

    prune_units(g, saliency(g, None, mode="magnitude"), 0.5)
    rep = export_onnx(g, None, tmp_path / "pruned.onnx")
    diff, scale = ort_vs_torch(tmp_path / "pruned.onnx", g.module, shape)
    assert ok(rep) and diff <= TOL and scale > 1e-3, (diff, scale)
    assert read_metadata(tmp_path / "pruned.onnx")["widths"] == {group_key(x): x.width for x in g.groups}
    assert rep.params == g.param_count() < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_masked_units_are_shrunk_and_outputs_kept(name, tmp_path):
    shape = zoo.ZOO[name].input_shape
    torch.manual_seed(0)
    g = trace(make_responsive(zoo.build(name), seed=2), shape)
    masks = {x.id: list(range(0, x.width, 3)) for x in g.groups if x.prunable and x.width > 3}
    mask_channels(g, masks)
    masked = g.module
    rep = export_onnx(g, None, tmp_path / "m.onnx")
    assert sum(rep.removed.values()) == sum(len(v) for v in masks.values())
    diff, scale = ort_vs_torch(tmp_path / "m.onnx", masked, shape)  # oracle 1, through ONNX Runtime
    assert diff <= TOL and scale > 1e-3
    conv_weights = [i for i in onnx.load(str(tmp_path / "m.onnx")).graph.initializer if len(i.dims) == 4]
    full = trace(zoo.build(name), shape)
    assert sum(np.prod(i.dims) for i in conv_weights) < sum(
        p.numel() for n, p in full.module.named_parameters() if p.dim() == 4)
    assert g.module is masked  # the caller's graph is untouched: the shrink worked on a copy
    assert {x.id: x.width for x in g.groups} == {x.id: x.width for x in full.groups}


def test_metadata_dynamic_batch_and_legacy_exporter(tmp_path):
    model = zoo.build("lenet5").eval()
    rep = export_onnx(model, (1, 1, 28, 28), tmp_path / "a.onnx", meta={"history": [{"step": "grow"}]})
    m = read_metadata(tmp_path / "a.onnx")
    assert m["widths"] == {"conv1.weight[0]": 20, "conv2.weight[0]": 50, "fc1.weight[0]": 500, "fc2.weight[0]": 10}
    assert m["meta"]["history"] == [{"step": "grow"}] and m["exporter"] == "dynamo"
    proto = onnx.load(str(tmp_path / "a.onnx"))
    assert proto.opset_import[0].version == 18 and rep.opset == 18
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value  # a symbolic batch axis
    for batch in (1, 17):
        diff, _ = ort_vs_torch(tmp_path / "a.onnx", model, (1, 1, 28, 28), batch=batch)
        assert diff <= TOL
    rep = export_onnx(model, (1, 1, 28, 28), tmp_path / "b.onnx", exporter="legacy")
    assert rep.exporter == "legacy" and ok(rep)


def test_failures_write_nothing_and_inputs_are_safe(tmp_path, monkeypatch):
    model = zoo.build("lenet5")
    monkeypatch.setattr(export_mod, "_compare", lambda *a, **k: (0.5, 1.0))
    with pytest.raises(ExportError, match="differs from PyTorch by 0.5"):
        export_onnx(model, (1, 1, 28, 28), tmp_path / "x.onnx")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    src = tmp_path / "model.pt"
    cg.save_model(model, src, meta={"input_shape": [1, 1, 28, 28]})
    with pytest.raises(CgapError, match="never overwritten"):
        export_onnx(model, (1, 1, 28, 28), src, inputs=[src])
    with pytest.raises(ExportError, match="opset 5"):
        export_onnx(model, (1, 1, 28, 28), tmp_path / "y.onnx", opset=5)
    with pytest.raises(ExportError, match="exporter must be"):
        export_onnx(model, (1, 1, 28, 28), tmp_path / "y.onnx", exporter="tvm")


def test_cli_export(tmp_path):
    out = tmp_path / "l.onnx"
    r = runner.invoke(app, ["export", "lenet5", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "max |diff|" in r.output and out.stat().st_size > 1_000_000
    r = runner.invoke(app, ["export", "lenet5", "-o", str(tmp_path / "x.onnx"), "--opset", "4"])
    assert r.exit_code == 2 and "opset 4 is not supported" in r.output
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a model")
    r = runner.invoke(app, ["export", str(bad), "-o", str(tmp_path / "y.onnx")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "y.onnx").exists() and not (tmp_path / "x.onnx").exists()
