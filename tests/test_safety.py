"""Safe by construction (issue 10): no code runs from a model file, no input or run is lost, bad
input gets one line. One test per case the issue found; each failed before the fix."""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

import pytest
import tomllib
import torch
from cli_harness import HOSTILE, hostile_file, run_cli, saved_lenet

import cgap_graph as cg
from cgap_graph.errors import ModelLoadError

ROOT = Path(__file__).resolve().parent.parent


def one_line_error(r, needle: str) -> None:
    assert r.code == 2, (r.code, r.out[-500:], r.err)
    assert len(r.err_lines) == 1, r.err
    assert needle in r.err, r.err
    assert "Traceback" not in r.err + r.out


# ---- 1. no code from the "safe" format ------------------------------------------------------------------
@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("command", ["inspect", "grow", "prune", "export"])
def test_hostile_file_runs_no_code(tmp_path, kind, command):
    marker = tmp_path / "PWNED"
    path = hostile_file(tmp_path / "evil.pt", kind, marker)
    extra = {"inspect": [], "grow": ["--select", "magnitude", "-o", tmp_path / "o.pt"],
             "prune": ["--select", "magnitude", "-o", tmp_path / "o.pt"], "export": ["-o", tmp_path / "o.onnx"]}
    r = run_cli(command, path, *extra[command])
    assert not marker.exists(), f"{kind}: the payload ran"
    one_line_error(r, "unsafe cgap-graph file")
    assert not (tmp_path / "o.pt").exists() and not (tmp_path / "o.onnx").exists()


def test_hostile_file_fails_in_the_python_api_too(tmp_path):
    marker = tmp_path / "PWNED"
    with pytest.raises(ModelLoadError, match="builtins.exec"):
        cg.load_model(str(hostile_file(tmp_path / "evil.pt", "exec", marker)))
    assert not marker.exists()


def test_trusted_pickle_warns_and_finds_its_class_in_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "import torch.nn as nn\n\nclass Tiny(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.c = nn.Conv2d(1, 4, 3)\n        self.f = nn.Linear(4 * 26 * 26, 10)\n\n"
        "    def forward(self, x):\n        return self.f(self.c(x).flatten(1))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import mymodels
    torch.save(mymodels.Tiny(), tmp_path / "tiny.pt")
    monkeypatch.delitem(sys.modules, "mymodels")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in (str(tmp_path), "", ".")])
    r = run_cli("inspect", "tiny.pt", "--trust", "--input-shape", "1,1,28,28")
    assert r.code == 0, r.err
    assert "warning:" in r.err and "ran code from the file" in r.err and len(r.err_lines) == 1


# ---- 2. inputs and runs are never lost --------------------------------------------------------------------
def test_no_output_replaces_an_input_by_any_name(tmp_path):
    model = saved_lenet(tmp_path / "m.pt")
    before = model.read_bytes()
    (tmp_path / "link.pt").symlink_to(model)
    os.link(model, tmp_path / "hard.pt")
    cases = [("inspect", model, "--graph", model), ("grow", model, "--select", "magnitude", "-o", tmp_path / "link.pt"),
             ("prune", model, "--select", "magnitude", "-o", tmp_path / "hard.pt"),
             ("export", model, "-o", model)]
    for args in cases:
        one_line_error(run_cli(*args), "is the input file")
    assert model.read_bytes() == before


def test_train_never_writes_over_its_input_model(tmp_path):
    run_dir = tmp_path / "D"
    run_dir.mkdir()
    model = saved_lenet(run_dir / "model.pt")
    before = model.read_bytes()
    one_line_error(run_cli("train", "--model", model, "--dataset", "mnist-mini", "--out", run_dir, "--epochs", "1"),
                   "which is the input")
    assert model.read_bytes() == before and sorted(os.listdir(run_dir)) == ["model.pt"]


QUICK = ["--dataset", "mnist-mini", "--epochs", "2", "--train-limit", "256", "--test-limit", "128",
         "--batch-size", "64"]


def test_an_existing_run_is_continued_or_replaced_only_on_purpose(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", *QUICK, "--out", out, "--epochs", "1").code == 0
    metrics, ckpt = (out / "metrics.jsonl").read_bytes(), (out / "checkpoint.pt").read_bytes()
    one_line_error(run_cli("train", *QUICK, "--out", out), "already holds a run")
    assert (out / "metrics.jsonl").read_bytes() == metrics and (out / "checkpoint.pt").read_bytes() == ckpt
    # --resume with settings of another run: refused with the list of differences
    r = run_cli("train", "--out", out, "--resume", "--lr", "0.5", "--dataset", "cifar10")
    one_line_error(r, "settings differ")
    assert "--lr 0.1 (checkpoint) vs 0.5 (now)" in r.err and "--dataset mnist-mini (checkpoint) vs cifar10" in r.err
    # a safe change is applied, and said
    r = run_cli("train", "--out", out, "--resume", "--epochs", "2")
    assert r.code == 0, r.err
    assert "resuming" in r.out and "at epoch 2 of 2" in r.out and "epochs 1 -> 2" in r.out
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    r = run_cli("train", *QUICK, "--out", out, "--overwrite", "--epochs", "1")
    assert r.code == 0 and len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_results_have_the_users_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        assert run_cli("seed", "lenet5", "--width", "0.5", "-o", tmp_path / "s.pt").code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "s.pt").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]  # no temporary file left


def test_stale_temporary_files_of_killed_writers_are_swept(tmp_path):
    from cgap_graph.io.atomic import atomic_write_text
    stale = tmp_path / ".out.txt.999999999.abcd.tmp"  # no process has that pid
    stale.write_text("half")
    atomic_write_text(tmp_path / "out.txt", "done")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


# ---- 3. out-of-range values -----------------------------------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["grow", "lenet5", "--beta", "100"], "--beta must be <= 10"),
    (["grow", "lenet5", "--beta", "inf"], "--beta must be a finite number"),
    (["grow", "lenet5", "--beta", "nan"], "--beta must be a finite number"),
    (["grow", "lenet5", "--beta", "0.6", "--width", "inf"], "--width must be a finite number"),
    (["grow", "lenet5", "--mu", "-1"], "--mu must be >= 0"),
    (["prune", "lenet5", "--unit-rate", "nan"], "--unit-rate must be a finite number"),
    (["train", "--dataset", "mnist-mini", "--lr", "inf"], "--lr must be a finite number"),
])
def test_out_of_range_values_are_refused_with_their_meaning(tmp_path, args, needle):
    one_line_error(run_cli(*args, "--select", "magnitude", "-o", tmp_path / "o.pt") if args[0] != "train"
                   else run_cli(*args, "--out", tmp_path / "run"), needle)
    assert not (tmp_path / "o.pt").exists() and not (tmp_path / "run").exists()


def test_beta_above_one_gives_several_copies_and_preserves_outputs(tmp_path):
    r = run_cli("grow", "lenet5", "--beta", "2", "--init", "preserve", "--select", "magnitude", "-o", tmp_path / "g.pt")
    assert r.code == 0, r.err
    grown = cg.load_model(str(tmp_path / "g.pt")).model
    assert (grown.conv1.out_channels, grown.conv2.out_channels, grown.fc1.out_features) == (60, 150, 1500)
    x = torch.randn(3, 1, 28, 28)
    torch.manual_seed(0)
    ref = cg.zoo.build("lenet5").eval()
    assert torch.allclose(grown(x), ref(x), atol=1e-5)


def test_shape_only_analysis_needs_no_weights():
    loaded = cg.load_model("vgg19", width=30, shape_only=True)
    assert all(p.is_meta for p in loaded.model.parameters())
    r = run_cli("inspect", "vgg19", "--width", "30")
    assert r.code == 0 and "18,251,917,450" in r.out
    r = run_cli("inspect", "lenet5", "--width", "1000")
    assert r.code == 0 and "500000" in r.out
    one_line_error(run_cli("seed", "vgg19", "--zoo-width", "30", "--width", "0.5", "-o", "/tmp/never.pt"),
                   "needs real weights")


# ---- 4. one line instead of a traceback -----------------------------------------------------------------
def test_unwritable_or_wrong_run_folders_are_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        # root writes anywhere: then a folder no one can create in (the kernel's /proc) stands in
        target = locked if not os.access(locked, os.W_OK) else Path("/proc/cgap-test-run")
        one_line_error(run_cli("train", *QUICK, "--out", target), "cannot write")
        one_line_error(run_cli("seed", "lenet5", "--width", "0.5", "-o", target / "s.pt"), "cannot write")
    finally:
        locked.chmod(stat.S_IRWXU)
    (tmp_path / "file").write_text("x")
    one_line_error(run_cli("train", *QUICK, "--out", tmp_path / "file"), "is a file")


def test_config_value_of_the_wrong_type(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[train]\nepochs = "ten"\n')
    r = run_cli("train", "--dataset", "mnist-mini", "--config", cfg, "--out", tmp_path / "run")
    one_line_error(r, "'epochs' must be a whole number")


SEGNET = """import torch
from torch import nn


class SegNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, padding=1)
        self.dec = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        return self.dec(torch.relu(self.enc(x)))
"""


def test_classification_data_on_a_segmentation_model(tmp_path, monkeypatch):
    (tmp_path / "segmodels.py").write_text(SEGNET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import segmodels
    torch.save(segmodels.SegNet().state_dict(), tmp_path / "seg.pt")
    r = run_cli("grow", "seg.pt", "--arch", "segmodels:SegNet", "--input-shape", "1,3,32,32", "--data", "cifar10",
                "-o", "g.pt")
    one_line_error(r, "must output (batch, 10) scores")


def test_bad_arch_kwargs_are_one_line_in_every_command(tmp_path):
    for args in (["train", "--dataset", "mnist-mini", "--out", tmp_path / "r"], ["inspect", "lenet5"]):
        r = run_cli(*args, "--arch", "cgap_graph.zoo.lenet:LeNet5", "--arch-kwargs", "{bad")
        one_line_error(r, "not valid JSON")


# ---- 5. the first minutes -------------------------------------------------------------------------------
def test_help_teaches_and_keeps_brackets():
    r = run_cli("train", "--help")
    assert r.code == 0
    assert "<bool>" not in r.out and "[train] table" in r.out
    for cmd in ("inspect", "grow", "export"):
        text = " ".join(run_cli(cmd, "--help").out.split())
        for flag, words in (("--input-shape SHAPE", "Input shape"), ("--arch MODULE:FACTORY", "builds the"),
                            ("--trust", "runs code from the file")):
            assert flag in text and words in text, (cmd, flag)


def test_error_messages_keep_brackets(tmp_path):
    r = run_cli("train", "--dataset", "mnist-mini", "--gamma-w-layer", "fc[1]", "--out", tmp_path / "r")
    one_line_error(r, "'fc[1]'")


def test_cost_of_a_directory_says_so(tmp_path):
    one_line_error(run_cli("cost", tmp_path), "is a directory")


def test_interrupted_training_says_how_to_continue(tmp_path, monkeypatch):
    import cgap_graph.run.loop as loop

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(loop, "train_epoch", interrupt)
    r = run_cli("train", *QUICK, "--out", tmp_path / "run")
    assert r.code == 130 and len(r.err_lines) == 1
    assert "interrupted" in r.err and f"cgap-graph train --out {tmp_path / 'run'} --resume" in r.err


def test_the_readme_test_command_prints_the_summary_line():
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    assert "-q" not in addopts.split()  # with the README's -q, one more would hide "N passed"


def test_readme_demo_figures_are_the_ones_it_prints(tmp_path):
    r = run_cli("demo", "--out", tmp_path / "demo")
    assert r.code == 0, r.err
    m = re.search(r"done: 10 epochs, test accuracy ([0-9.]+%), ([0-9,]+) parameters", r.out)
    assert m, r.out[-800:]
    readme = (ROOT / "README.md").read_text()
    assert f"ending at {m.group(1)} test accuracy with {m.group(2)} parameters" in readme
