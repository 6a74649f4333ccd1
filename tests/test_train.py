"""CGaP training (issue #4): the schedule of Algorithm 1, metrics, checkpoints, resume, NaN
handling, bad input, the command line, the demo and the API example."""

import dataclasses
import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import cgap_graph as cg
from cgap_graph import zoo
from cgap_graph.cli.app import app
from cgap_graph.errors import CgapError
from cgap_graph.ir.graph import trace
from cgap_graph.passes.cgap.seed import seed
from cgap_graph.run.checkpoint import CHECKPOINT, METRICS
from cgap_graph.run.config import TrainConfig, load_config
from cgap_graph.run.data import DataError
from cgap_graph.run.epochs import TrainingDiverged
from cgap_graph.run.loop import train_run

SHAPE = (1, 1, 28, 28)
runner = CliRunner()


def quick_config(**kw) -> TrainConfig:
    base = dict(epochs=6, batch_size=64, lr=0.05, lr_decay_every=0.5, f_growth=0.5, beta=0.6,
                prune_start=0.5, prune_end=0.84, tau_accu=0.5, gamma_w=0.3, saliency_batches=3,
                eval_batch_size=500, train_limit=1500, test_limit=500)
    base.update(kw)
    return TrainConfig(**base)


def lenet_seed():
    torch.manual_seed(0)
    g = trace(zoo.build("lenet5"), SHAPE)
    rep = seed(g, 0.25, select="first", reinit=True)
    return g.module, rep.reference_widths


def test_schedule_grows_prunes_learns_and_resumes(tmp_path):
    cfg = quick_config()
    model, ref = lenet_seed()
    full = train_run(model, SHAPE, "mnist-mini", tmp_path / "full", cfg, reference_widths=ref, progress=False)
    phases = [m["phase"] for m in full.metrics]
    assert any(p.startswith("grow") for p in phases), phases
    assert any(p.endswith("prune") for p in phases), phases
    peak = max(m["params"] for m in full.metrics)
    assert full.metrics[0]["params"] < peak and full.params < peak  # grew, then shrank
    assert full.test_accuracy > 0.5  # chance is 0.1
    # kill after 3 epochs, resume: same widths, same metrics
    model, ref = lenet_seed()
    part = train_run(model, SHAPE, "mnist-mini", tmp_path / "killed", cfg, reference_widths=ref, progress=False,
                     stop_after=3)
    assert part.epochs == 3 and not (tmp_path / "killed" / "model.pt").exists()
    # resumed with other settings (as `--resume` with default options would pass): the saved ones win
    other = dataclasses.replace(cfg, batch_size=cfg.batch_size * 2, train_limit=None)
    resumed = train_run(None, SHAPE, "mnist-mini", tmp_path / "killed", other, resume=True, progress=False)
    assert resumed.widths == full.widths
    assert resumed.test_accuracy == full.test_accuracy
    a = [json.loads(ln) for ln in (tmp_path / "full" / METRICS).read_text().splitlines()]
    b = [json.loads(ln) for ln in (tmp_path / "killed" / METRICS).read_text().splitlines()]
    assert [r["loss"] for r in a] == [r["loss"] for r in b] and len(b) == cfg.epochs


def test_run_outputs_and_metrics(tmp_path):
    cfg = quick_config(epochs=3, f_pruning=0)
    model, ref = lenet_seed()
    train_run(model, SHAPE, "mnist-mini", tmp_path, cfg, reference_widths=ref, progress=False)
    for name in ("model.pt", METRICS, CHECKPOINT, "params.png", "widths.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    row = json.loads((tmp_path / METRICS).read_text().splitlines()[0])
    for key in ("epoch", "phase", "lr", "loss", "train_acc", "test_acc", "params", "flops", "widths"):
        assert key in row
    loaded = cg.load_model(str(tmp_path / "model.pt"))
    assert loaded.meta["capacity"] == ref
    assert not list(tmp_path.glob(".*.tmp"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = quick_config(epochs=4, f_growth=0, f_pruning=0)
    model, ref = lenet_seed()
    train_run(model, SHAPE, "mnist-mini", tmp_path, cfg, reference_widths=ref, progress=False, stop_after=1)
    good = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert good["epoch"] == 1

    def nan_loss(out, y, reduction="mean"):  # a loss that blows up as soon as training resumes
        return torch.nn.functional.cross_entropy(out, y, reduction=reduction) * float("nan")

    with pytest.raises(TrainingDiverged, match="epoch 2, batch 1"):
        train_run(None, SHAPE, "mnist-mini", tmp_path, cfg, resume=True, progress=False, loss_fn=nan_loss)
    kept = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert kept["epoch"] == 1 and not (tmp_path / "model.pt").exists()


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    cfg = quick_config(epochs=1)
    model, ref = lenet_seed()
    out = tmp_path / "out"
    with pytest.raises(DataError, match="no data directory"):
        monkeypatch.delenv("CGAP_DATA_DIR", raising=False)
        train_run(model, SHAPE, "mnist", out, cfg, progress=False)
    empty = tmp_path / "data"
    (empty / "mnist").mkdir(parents=True)
    with pytest.raises(DataError, match="missing; put the original mnist files"):
        train_run(model, SHAPE, "mnist", out, cfg, data_dir=str(empty), progress=False)
    src = Path(os.environ.get("CGAP_DATA_DIR", "/nonexistent")) / "mnist"
    if src.exists():  # a truncated copy of the real files
        for f in src.iterdir():
            shutil.copy(f, empty / "mnist" / f.name)
        victim = empty / "mnist" / "t10k-labels-idx1-ubyte.gz"
        os.chmod(victim, 0o644)
        victim.write_bytes(victim.read_bytes()[:100])
        with pytest.raises(DataError, match="truncated or not the original"):
            train_run(model, SHAPE, "mnist", out, cfg, data_dir=str(empty), progress=False)
    with pytest.raises(DataError, match="gives inputs of shape"):
        train_run(model, SHAPE, "cifar10", out, cfg, progress=False)
    assert not out.exists()  # nothing was written for bad input
    if os.geteuid() != 0:  # root can write anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        with pytest.raises(CgapError, match="cannot write"):
            train_run(model, SHAPE, "mnist-mini", locked / "run", cfg, progress=False)


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "cgap.toml"
    path.write_text("[train]\nepochs = 7\nbeta = 0.4\ngamma-w = 0.3\n[train.gamma_w_layers]\nfc1 = 0.9\n")
    cfg = load_config(path, {"beta": 0.5})
    assert (cfg.epochs, cfg.beta, cfg.gamma_w, cfg.gamma_w_layers) == (7, 0.5, 0.3, {"fc1": 0.9})
    path.write_text("[train]\nbogus = 1\n")
    with pytest.raises(CgapError, match="unknown setting 'bogus'"):
        load_config(path, {})
    for kw, match in [({"beta": 0}, "beta"), ({"gamma_w": 1.0}, "gamma-w"), ({"tau_accu": 1.5}, "tau-accu"),
                      ({"prune_start": 0.9, "prune_end": 0.5}, "prune-start"), ({"epochs": 0}, "epochs")]:
        with pytest.raises(CgapError, match=match):
            TrainConfig(**kw).validate()
    cfg = TrainConfig(epochs=60)
    assert [cfg.lr_at(e) for e in (1, 18, 19, 36, 37, 55)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 1e-4])
    assert [e for e in range(1, 13) if cfg.grows_at(e)] == [3, 6, 9, 12]


def test_cli_train_and_resume(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--model", "lenet5", "--seed-width", "0.25", "--dataset", "mnist-mini", "--epochs", "4",
            "--train-limit", "1000", "--test-limit", "300", "--batch-size", "64", "--lr", "0.05",
            "--f-growth", "0.5", "--prune-start", "0.75", "--tau-accu", "0.3", "--gamma-w-layer", "fc1=0.6",
            "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "done: 4 epochs" in r.output and (out / "model.pt").exists()
    r = runner.invoke(app, ["train", "--dataset", "mnist-mini", "--out", str(tmp_path / "none"), "--resume"])
    assert r.exit_code == 2 and "no checkpoint" in r.output
    r = runner.invoke(app, ["train", "--model", "lenet5", "--dataset", "cifar10", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "gives inputs of shape" in r.output
    r = runner.invoke(app, ["train", "--model", "lenet5", "--dataset", "mnist-mini", "--gamma-w-layer", "fc1",
                            "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "NAME=RATE" in r.output


def test_demo_is_quick_and_shows_growth_and_pruning(tmp_path):
    # its speed (under 3 minutes on 2 cores) is measured by benchmarks/demo_time.py, not here
    r = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo")])
    assert r.exit_code == 0, r.output
    assert " grow" in r.output and "prune" in r.output and "done: 10 epochs" in r.output
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.8


def test_api_example_runs():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    import custom_loop
    acc = custom_loop.main(epochs=4)
    assert acc > 0.5


# ---- options used by the Table I study (issue 14) -------------------------------------------------------
def test_restart_lr_restarts_the_schedule_after_pruning():
    cfg = TrainConfig(epochs=60, restart_lr=0.01)
    assert cfg.lr_at(20) == pytest.approx(0.01) and cfg.lr_at(40) == pytest.approx(0.001)  # no restart given
    # pruning over after epoch 24: 36 epochs left, decay every round(0.3 * 36) = 11
    assert [cfg.lr_at(e, 25) for e in (24, 25, 35, 36, 47, 58)] == pytest.approx([0.01, 0.01, 0.01, 0.001, 1e-4, 1e-5])
    assert TrainConfig(epochs=60).lr_at(40, 25) == pytest.approx(0.001)  # no restart_lr: the plain schedule
    with pytest.raises(CgapError, match="restart-lr"):
        TrainConfig(restart_lr=0).validate()
    with pytest.raises(CgapError, match="growth-saliency"):
        TrainConfig(growth_saliency="best").validate()


def test_random_growth_keep_zeros_and_restart(tmp_path):
    cfg = quick_config(growth_saliency="random", keep_zeros=True, restart_lr=0.02, prune_end=0.67)
    model, ref = lenet_seed()
    res = train_run(model, SHAPE, "mnist-mini", tmp_path / "run", cfg, reference_widths=ref, progress=False)
    m = res.metrics
    assert any(r["phase"].startswith("grow") for r in m) and any(r["phase"].endswith("prune") for r in m)
    last_prune = max(r["epoch"] for r in m if r["phase"].endswith("prune"))
    assert m[last_prune]["lr"] == pytest.approx(0.02)  # the epoch after pruning ended restarts the lr
    # the zeroed weights stayed zero to the end: far more zeros than a trained layer has by chance
    sd = cg.load_model(str(tmp_path / "run" / "model.pt")).model.state_dict()
    zeros = sum(int((v == 0).sum()) for k, v in sd.items() if k.endswith("weight") and v.dim() >= 2)
    total = sum(v.numel() for k, v in sd.items() if k.endswith("weight") and v.dim() >= 2)
    assert zeros >= 0.1 * total, (zeros, total)  # (without keep_zeros: next to none are exactly 0)


def test_resumed_optimizer_state_follows_the_parameters():
    """A checkpoint loads on the CPU; the restored momentum must sit on each parameter's device
    and dtype (a CPU buffer beside CUDA parameters fails the first step of a resumed GPU run).
    The meta device and float64 stand in for a GPU here."""
    from cgap_graph.run.checkpoint import named_state, restore_state

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    saved = named_state(opt, model)
    for target in (model.to("meta"), torch.nn.Linear(4, 3).double()):
        opt2 = torch.optim.SGD(target.parameters(), lr=0.1, momentum=0.9)
        restore_state(opt2, target, saved)
        for p in target.parameters():
            buf = opt2.state[p]["momentum_buffer"]
            assert (buf.device, buf.dtype) == (p.device, p.dtype)
