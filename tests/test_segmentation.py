"""Segmentation end to end (issue 13): an encoder-decoder with skip concatenations trains with CGaP
under per-pixel cross-entropy and the mIoU metric on a synthetic set, grows and prunes, and its
ONNX file matches PyTorch; the metrics themselves are checked against independent formulas."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_harness import run_cli
from test_export import TOL, ort_vs_torch
from user_data import UNET, segmentation_set, write_module

from cgap_graph.io.model_io import load_model
from cgap_graph.ir.graph import trace
from cgap_graph.passes.cgap.seed import group_key
from cgap_graph.run.tasks import make_metric, make_task

SHAPE = (1, 3, 16, 16)
# grow at epoch 2; one pruning step at epoch 4 once the training mIoU passes 0.5; fine-tune to 8
SCHEDULE = ["--epochs", 8, "--seed-width", 0.5, "--batch-size", 8, "--optimizer", "adam", "--lr", 0.01,
            "--weight-decay", 0, "--lr-decay-every", 1, "--f-growth", 0.5, "--prune-start", 0.5, "--prune-end", 0.5,
            "--tau-accu", 0.5, "--gamma-w", 0.2, "--saliency-batches", 2]


@pytest.fixture
def seg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = write_module(tmp_path, "segnet", UNET)
    x, y = segmentation_set(80)
    np.savez(tmp_path / "seg.npz", x_train=x[:64], y_train=y[:64], x_test=x[64:], y_test=y[64:])
    return tmp_path, f"{net}.py:UNet"


def test_unet_trains_grows_prunes_and_exports(seg):
    d, arch = seg
    r = run_cli("train", "--arch", arch, "--dataset", "seg.npz", "--loss", "pixel-cross-entropy", "--metric", "miou",
                *SCHEDULE, "--out", "run")
    assert r.code == 0, r.err + r.out[-2000:]
    assert "test miou" in r.out
    rows = [json.loads(ln) for ln in (d / "run" / "metrics.jsonl").read_text().splitlines()]
    phases = [m["phase"] for m in rows]
    assert "grow" in phases[:3] and any(p.endswith("prune") for p in phases), phases
    assert rows[1]["params"] > rows[0]["params"] and rows[-1]["params"] < rows[1]["params"]
    assert all(m["metric"] == "miou" for m in rows)
    # all-background prediction scores about 0.25 here; the trained model segments the rectangles
    assert rows[-1]["test_metric"] > 0.8, rows[-1]
    # the prediction's mIoU, computed independently, is the logged one
    model = load_model(str(d / "run" / "model.pt")).model
    data = np.load(d / "seg.npz")
    with torch.no_grad():
        pred = model(torch.from_numpy(data["x_test"])).argmax(1).numpy()
    ious = [((pred == c) & (data["y_test"] == c)).sum() / ((pred == c) | (data["y_test"] == c)).sum()
            for c in range(3)]
    assert abs(float(np.mean(ious)) - rows[-1]["test_metric"]) < 1e-9
    # the head (the model output) is frozen; grown and pruned groups include both sides of each skip
    widths = rows[-1]["widths"]
    assert list(widths.values())[-1] == 3
    r = run_cli("export", "run/model.pt", "-o", "seg.onnx")
    assert r.code == 0, r.err
    diff, scale = ort_vs_torch(d / "seg.onnx", model, SHAPE)
    assert diff <= TOL and scale > 1e-3, (diff, scale)
    r = run_cli("cost", "seg.onnx")
    assert r.code == 0, r.err


def test_unet_grow_and_prune_commands_use_the_per_pixel_loss(seg):
    d, arch = seg
    torch.manual_seed(0)
    net = load_model("", arch=arch).model
    torch.save(net.state_dict(), d / "unet.pt")
    model = ["unet.pt", "--arch", arch, "--input-shape", "1,3,16,16"]
    r = run_cli("grow", *model, "--data", "seg.npz", "--beta", 0.5, "-o", "grown.pt")
    one_line = [ln for ln in r.err.splitlines() if ln.strip()]
    assert r.code == 2 and len(one_line) == 1 and "pixel-cross-entropy" in r.err, r.err  # cross-entropy is default
    r = run_cli("grow", *model, "--data", "seg.npz", "--loss", "pixel-cross-entropy", "--beta", 0.5, "-o", "g.pt")
    assert r.code == 0, r.err
    grown = {group_key(g): g for g in trace(load_model("g.pt").model, SHAPE).groups}
    base = {group_key(g): g for g in trace(net, SHAPE).groups}
    for key, g in base.items():  # every group but the output head gains round(0.5 x width) units
        assert grown[key].width == (g.width if g.frozen else g.width + round(0.5 * g.width)), key
    assert grown["head.weight[0]"].width == 3 and grown["head.weight[0]"].frozen
    r = run_cli("prune", "g.pt", "--data", "seg.npz", "--loss", "pixel-cross-entropy", "--mode", "units",
                "--unit-rate", 0.25, "-o", "p.pt")
    assert r.code == 0, r.err
    pruned = load_model("p.pt").model
    x = torch.randn(2, *SHAPE[1:])
    assert pruned(x).shape == (2, 3, 16, 16)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in load_model("g.pt").model.parameters())
    r = run_cli("export", "p.pt", "-o", "p.onnx")
    assert r.code == 0, r.err
    diff, _ = ort_vs_torch(d / "p.onnx", pruned, SHAPE)
    assert diff <= TOL


def test_label_maps_that_do_not_fit_the_model_are_one_line(seg):
    d, arch = seg
    x, y = segmentation_set(8)
    np.savez(d / "small.npz", x=x, y=y[:, :8, :8])
    train = ["train", "--arch", arch, "--dataset", "small.npz", "--loss", "pixel-cross-entropy", "--epochs", 1,
             "--out", "bad"]
    r = run_cli(*train)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "label maps of shape (8, 8)" in r.err and "(H, W) = (16, 16)" in r.err
    np.savez(d / "many.npz", x=x, y=y + 3)
    r = run_cli(*train[:4], "many.npz", *train[5:])
    assert r.code == 2 and "has 6 classes but the model outputs 3 channels" in r.err, r.err
    assert not (d / "bad").exists()


def test_metrics_match_their_formulas():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, 5, 5, generator=g)
    labels = torch.randint(0, 4, (6, 5, 5), generator=g)
    m = make_metric("miou")
    state = m.update(m.update(m.zeros(4), logits[:3], labels[:3]), logits[3:], labels[3:])
    pred = logits.argmax(1)
    ious = [((pred == c) & (labels == c)).sum().item() / ((pred == c) | (labels == c)).sum().item() for c in range(4)]
    assert abs(m.value(state) - float(np.mean(ious))) < 1e-12
    acc = make_metric("accuracy")
    assert abs(acc.value(acc.update(acc.zeros(), logits, labels)) - (pred == labels).double().mean().item()) < 1e-12
    out, target = torch.randn(20, 3, generator=g), torch.randn(20, 3, generator=g)
    r2, neg = make_metric("r2"), make_metric("neg-mse")
    s = r2.update(r2.update(r2.zeros(), out[:7], target[:7]), out[7:], target[7:])
    t = target.double()
    expect = 1 - ((out.double() - t) ** 2).sum() / ((t - t.mean()) ** 2).sum()
    assert abs(r2.value(s) - expect.item()) < 1e-12
    assert abs(neg.value(neg.update(neg.zeros(), out, target)) + ((out - target) ** 2).sum(1).mean().item()) < 1e-5
    task = make_task("mse")
    assert task.metric.name == "neg-mse" and torch.allclose(task.loss(out, target), ((out - target) ** 2).sum(1).mean())
