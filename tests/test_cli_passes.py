"""grow / prune / seed on the command line, on models a user wrote (issue #3 acceptance)."""

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner
from user_models import MyMobileNet, MyResNet, MyVGG

import cgap_graph as cg
from cgap_graph.cli.app import app

runner = CliRunner()
CIFAR = Path(os.environ.get("CGAP_DATA_DIR", "/nonexistent"), "cifar-10", "cifar-10-batches-py", "test_batch")


def _run(*args):
    r = runner.invoke(app, [str(a) for a in args])
    return r.exit_code, r.output


@pytest.mark.parametrize("cls", [MyVGG, MyResNet, MyMobileNet])
def test_grow_pickled_user_model(tmp_path, cls):
    path = tmp_path / "model.pt"
    torch.save(cls().eval(), path)
    out = tmp_path / "grown.pt"
    code, text = _run("grow", path, "--beta", "0.6", "--select", "magnitude", "--input-shape", "1,3,32,32",
                      "-o", out)
    assert code == 2 and "--trust" in text  # a pickle is never opened without being trusted
    code, text = _run("grow", path, "--trust", "--beta", "0.6", "--select", "magnitude", "--input-shape",
                      "1,3,32,32", "-o", out)
    assert code == 0, text
    assert "parameters" in text and "->" in text
    loaded = cg.load_model(str(out))  # the result opens safely, without the user's class
    assert loaded.source == "cgap"
    before = sum(p.numel() for p in cls().parameters())
    assert sum(p.numel() for p in loaded.model.parameters()) > before
    assert loaded.model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.skipif(not CIFAR.exists(), reason="CIFAR-10 not in $CGAP_DATA_DIR")
@pytest.mark.parametrize("cls", [MyVGG, MyResNet, MyMobileNet])
def test_grow_and_prune_with_cifar_saliency(tmp_path, cls):
    path = tmp_path / "model.pt"
    torch.save(cls().eval(), path)
    grown = tmp_path / "grown.pt"
    code, text = _run("grow", path, "--trust", "--beta", "0.6", "--data", "cifar10", "--batches", "2",
                      "--input-shape", "1,3,32,32", "-o", grown)
    assert code == 0, text
    assert "saliency taylor" in text
    pruned = tmp_path / "pruned.pt"
    code, text = _run("prune", grown, "--weight-rate", "0.5", "--unit-rate", "0.5", "--data", "cifar10",
                      "--batches", "2", "-o", pruned)
    assert code == 0, text
    a = cg.load_model(str(grown)).model
    b = cg.load_model(str(pruned)).model
    assert sum(p.numel() for p in b.parameters()) < sum(p.numel() for p in a.parameters())


def test_seed_then_grow_respects_capacity(tmp_path):
    seed = tmp_path / "seed.pt"
    code, text = _run("seed", "resnet20", "--width", "0.125", "-o", seed)
    assert code == 0, text
    loaded = cg.load_model(str(seed))
    assert loaded.meta["capacity"]
    current = seed
    for i in range(12):  # growth stops at the reference widths
        nxt = tmp_path / f"g{i}.pt"
        code, text = _run("grow", current, "--beta", "0.6", "--select", "magnitude", "--init", "preserve", "-o", nxt)
        assert code == 0, text
        current = nxt
    g = cg.trace(cg.load_model(str(current)).model, (1, 3, 32, 32))
    assert max(gr.width for gr in g.groups if gr.resizable) <= 64


def test_bad_parameters_are_one_line_errors(tmp_path):
    out = tmp_path / "x.pt"
    cases = [
        (["grow", "lenet5", "--beta", "0", "--select", "magnitude"], "--beta must be > 0"),
        (["grow", "lenet5", "--beta", "0.6", "--sigma", "0", "--select", "magnitude"], "--sigma must be > 0"),
        (["grow", "lenet5", "--select", "magnitude", "--init", "other"], "--init must be"),
        (["grow", "lenet5"], "give --data DATASET"),
        (["grow", "lenet5", "--data", "cifar10"], "dataset cifar10 gives inputs of shape (3, 32, 32)"),
        (["grow", "lenet5", "--data", "imagenet"], "unknown dataset"),
        (["prune", "lenet5", "--weight-rate", "1.5", "--select", "magnitude"], "--weight-rate must be in (0, 1)"),
        (["prune", "lenet5", "--unit-rate", "0", "--select", "magnitude"], "--unit-rate must be in (0, 1)"),
        (["prune", "lenet5", "--mode", "weights", "--select", "magnitude"], "--mode must be alg3 or units"),
        (["seed", "lenet5", "--width", "0"], "--width must be in (0, 1]"),
        (["grow", "lenet5", "--select", "magnitude", "--device", "tpu9"], "--device 'tpu9' is not a device"),
    ]
    for args, needle in cases:
        code, text = _run(*args, "-o", out)
        assert code == 2, (args, text)
        assert needle in text, (args, text)
        assert len([ln for ln in text.splitlines() if ln.strip()]) == 1
    assert not out.exists()


def test_mnist_mini_needs_no_files(tmp_path, monkeypatch):
    monkeypatch.delenv("CGAP_DATA_DIR", raising=False)
    out = tmp_path / "grown.pt"
    code, text = _run("grow", "lenet5", "--beta", "0.6", "--data", "mnist-mini", "--batches", "2", "-o", out)
    assert code == 0, text
    code, text = _run("grow", "lenet5", "--data", "mnist", "-o", out)
    assert code == 2 and "no data directory" in text
