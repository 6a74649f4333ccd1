"""The user's own model, data and task from the command line (issue 13): an image folder, .npz and
.pt array files and a module:function dataset feed train, grow (Taylor saliency) and prune of a
user's model file; the model learns (accuracy above chance), Taylor scores are not magnitude's,
a killed run resumes exactly, TensorBoard files hold the scalars, and bad input is one line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_harness import run_cli
from PIL import Image
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from user_data import DATA_FUNCTION, USER_NET, arrays, image_folder, write_module

import cgap_graph.run.loop as loop
from cgap_graph.io.model_io import load_model
from cgap_graph.ir.graph import trace
from cgap_graph.passes.cgap.saliency import saliency
from cgap_graph.run.config import TrainConfig
from cgap_graph.run.loop import train_run
from cgap_graph.run.sources import make_loader, open_source

SHAPE = "1,3,16,16"
# a short CGaP schedule: grow at epoch 2, prune once training accuracy passes 0.7 (from epoch 3 to 4)
QUICK = ["--epochs", 6, "--seed-width", 0.5, "--batch-size", 16, "--lr", 0.02, "--lr-decay-every", 1,
         "--f-growth", 0.5, "--prune-start", 0.5, "--prune-end", 0.7, "--tau-accu", 0.7, "--gamma-w", 0.3,
         "--saliency-batches", 2]
CHANCE = 1 / 3


def one_line_error(r, needle: str) -> None:
    assert r.code == 2, (r.code, r.out[-800:], r.err)
    assert len(r.err_lines) == 1, r.err
    assert needle in r.err, r.err
    assert "Traceback" not in r.err + r.out


@pytest.fixture
def user(tmp_path, monkeypatch):
    """A user's working directory: their model file and their data in each form."""
    monkeypatch.chdir(tmp_path)
    net = write_module(tmp_path, "usernet", USER_NET)
    image_folder(tmp_path / "imgs")
    x, y = arrays()
    np.savez(tmp_path / "arr.npz", x=x, y=y)
    xt, yt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)
    torch.save({"x_train": xt[:72], "y_train": yt[:72], "x_test": xt[72:], "y_test": yt[72:]}, tmp_path / "arr.pt")
    fn = write_module(tmp_path, "userdata", DATA_FUNCTION.format(path=str(tmp_path / "arr.npz")))
    return {"dir": tmp_path, "arch": f"{net}.py:Net", "folder": "imgs", "npz": "arr.npz", "pt": "arr.pt",
            "function": f"{fn}:build"}


def metrics(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("source", ["folder", "npz", "function"])
def test_train_learns_from_each_source(user, source):
    r = run_cli("train", "--arch", user["arch"], "--input-shape", SHAPE, "--dataset", user[source], *QUICK,
                "--out", "run")
    assert r.code == 0, r.err + r.out[-2000:]
    rows = metrics(user["dir"] / "run")
    phases = [m["phase"] for m in rows]
    assert any(p.startswith("grow") for p in phases) and any(p.endswith("prune") for p in phases), phases
    for m in rows:  # pruning window: epochs 3-4; the tau_accu gate (0.7) on the training accuracy decides
        if 3 <= m["epoch"] <= 4 and not any(p.endswith("prune") for p in phases[:m["epoch"] - 1]):
            assert m["phase"].endswith("prune") == (m["train_acc"] > 0.7), rows
    summary = json.loads((user["dir"] / "run" / "summary.json").read_text())
    assert summary["test_accuracy"] > CHANCE + 0.3, summary  # chance is 1/3
    assert summary["metric"] == "accuracy"
    assert max(m["params"] for m in rows) > rows[0]["params"] and summary["params"] < max(m["params"] for m in rows)


def test_image_folder_is_resized_split_and_normalised(user):
    src = open_source("imgs", (1, 3, 16, 16), val_split=0.2, seed=0)
    assert src.classes == 3 and src.sample_shape == (3, 16, 16)
    assert len(src.train) == 72 and len(src.test) == 18  # 6 of each class's 30 held out
    assert sorted(src.test.y.tolist()) == [0] * 6 + [1] * 6 + [2] * 6
    x, _ = make_loader(src, "train", 72, shuffle=False).__iter__().__next__()
    assert x.shape == (72, 3, 16, 16)
    # normalised with the training split's own statistics: per channel mean 0, std 1 (float32 sums: 1e-5)
    flat = x.transpose(0, 1).reshape(3, -1)
    assert flat.mean(1).abs().max() < 1e-5 and (flat.std(1) - 1).abs().max() < 1e-3
    # train/ and val/ inside: used as given
    image_folder(user["dir"] / "split", per_class=8, split=True)
    src = open_source("split", (1, 1, 12, 12))
    assert len(src.train) == 18 and len(src.test) == 6 and src.sample_shape == (1, 12, 12)


def test_a_killed_run_resumes_at_its_checkpoint_and_ends_as_an_uninterrupted_one(user, monkeypatch):
    args = ["train", "--arch", user["arch"], "--input-shape", SHAPE, "--dataset", "imgs", *QUICK]
    assert run_cli(*args, "--out", "full").code == 0
    real, calls = loop.train_epoch, []

    def killed_in_epoch_4(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the kill: during epoch 4, after epoch 3's checkpoint
        return real(*a, **k)
    monkeypatch.setattr(loop, "train_epoch", killed_in_epoch_4)
    r = run_cli(*args, "--out", "killed", "--tensorboard", "tb")
    assert r.code == 130 and "--resume" in r.err
    assert [m["epoch"] for m in metrics(user["dir"] / "killed")] == [1, 2, 3]
    assert not (user["dir"] / "killed" / "model.pt").exists()
    monkeypatch.setattr(loop, "train_epoch", real)
    r = run_cli("train", "--out", "killed", "--resume", "--tensorboard", "tb")
    assert r.code == 0, r.err
    assert "resuming killed at epoch 4 of 6" in r.out
    acc = EventAccumulator(str(user["dir"] / "tb"))
    acc.Reload()  # the curves continue: every epoch once, the resumed ones from the second writer
    assert [e.step for e in acc.Scalars("loss/train")] == list(range(1, 7))
    full, resumed = metrics(user["dir"] / "full"), metrics(user["dir"] / "killed")
    assert [m["epoch"] for m in resumed] == list(range(1, 7))
    for key in ("loss", "train_acc", "test_acc", "params", "widths"):
        assert [m[key] for m in resumed] == [m[key] for m in full], key
    assert np.allclose([e.value for e in acc.Scalars("loss/train")], [m["loss"] for m in full], rtol=1e-6, atol=0)


@pytest.mark.parametrize("source", ["folder", "npz", "pt", "function"])
def test_grow_with_taylor_saliency_and_prune_from_each_source(user, source):
    torch.manual_seed(0)
    net = load_model("", arch=user["arch"]).model
    torch.save(net.state_dict(), user["dir"] / "net.pt")
    model = ["net.pt", "--arch", user["arch"], "--input-shape", SHAPE]
    r = run_cli("grow", *model, "--data", user[source], "--beta", 0.5, "-o", "grown.pt")
    assert r.code == 0, r.err
    assert "saliency taylor" in r.out
    grown = load_model("grown.pt").model
    n0, n1 = sum(p.numel() for p in net.parameters()), sum(p.numel() for p in grown.parameters())
    assert n1 > n0
    r = run_cli("prune", "grown.pt", "--data", user[source], "--weight-rate", 0.5, "--unit-rate", 0.5,
                "-o", "pruned.pt")
    assert r.code == 0, r.err
    pruned = load_model("pruned.pt").model
    assert sum(p.numel() for p in pruned.parameters()) < n1
    assert pruned(torch.randn(2, 3, 16, 16)).shape == (2, 3)


def test_taylor_saliency_is_not_magnitude(user):
    torch.manual_seed(0)
    g = trace(load_model("", arch=user["arch"]).model, (1, 3, 16, 16))
    src = open_source("imgs", (1, 3, 16, 16))
    taylor = saliency(g, make_loader(src, "train", 16, seed=0), batches=3)
    magnitude = saliency(g, mode="magnitude")
    differ = 0
    for gid, t in taylor.units.items():
        m = magnitude.units[gid]
        assert t.shape == m.shape and (t >= 0).all() and t.sum() > 0
        rho = np.corrcoef(np.argsort(np.argsort(t)), np.argsort(np.argsort(m)))[0, 1]  # Spearman
        differ += int(rho < 0.9 and list(taylor.ranking(gid)[:3]) != list(magnitude.ranking(gid)[:3]))
    assert differ >= 2, {gid: (taylor.ranking(gid)[:5], magnitude.ranking(gid)[:5]) for gid in taylor.units}


def test_tensorboard_files_hold_the_scalars(user):
    r = run_cli("train", "--arch", user["arch"], "--input-shape", SHAPE, "--dataset", "arr.npz", *QUICK,
                "--out", "run", "--tensorboard", "tb")
    assert r.code == 0, r.err
    acc = EventAccumulator(str(user["dir"] / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    rows = metrics(user["dir"] / "run")
    expect = {"loss/train": "loss", "loss/test": "test_loss", "accuracy/train": "train_metric",
              "accuracy/test": "test_metric", "model/params": "params", "model/flops": "flops", "lr": "lr"}
    for tag, key in expect.items():
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [m["epoch"] for m in rows], tag
        # event files store float32: 1e-6 relative
        assert np.allclose([v for _, v in got], [m[key] for m in rows], rtol=1e-6, atol=0), tag
    width_tags = sorted(t for t in tags if t.startswith("widths/"))
    assert len(width_tags) == len(rows[0]["widths"])
    conv1 = next(t for t in width_tags if t.endswith("conv1"))
    assert [e.value for e in acc.Scalars(conv1)] == [m["widths"][conv1.split("_")[1]] for m in rows]
    assert "events/grown_groups" in tags and "events/pruned_units" in tags
    texts = [e.tensor_proto.string_val[0].decode() for e in acc.Tensors("events/text_summary")]
    structural = [m for m in rows if m["events"]]
    assert len(texts) == len(structural) and all(m["events"][0] in t for m, t in zip(structural, texts))


def test_every_bad_input_is_one_line(user):
    d, arch = user["dir"], user["arch"]
    train = ["train", "--arch", arch, "--input-shape", SHAPE, "--epochs", 1, "--out", "bad"]
    (d / "empty").mkdir()
    one_line_error(run_cli(*train, "--dataset", "empty"), "holds no class subfolders with images")
    broken = image_folder(d / "broken", per_class=3)
    (broken / "vertical" / "001.png").write_bytes(b"not a png at all")
    one_line_error(run_cli(*train, "--dataset", "broken"), "cannot read image broken/vertical/001.png")
    (d / "nolabel").mkdir()
    (d / "nolabel" / "a").mkdir()
    one_line_error(run_cli(*train, "--dataset", "nolabel"), "holds no class subfolders with images")
    four = image_folder(d / "four", per_class=3, classes=("a", "b", "c", "d"))
    one_line_error(run_cli(*train, "--dataset", four), "has 4 classes but the model outputs 3 scores")
    x, y = arrays(12)
    np.savez(d / "noy.npz", x=x)
    one_line_error(run_cli(*train, "--dataset", "noy.npz"), "has no 'x' and 'y' arrays (it holds x)")
    np.savez(d / "short.npz", x=x, y=y[:5])
    one_line_error(run_cli(*train, "--dataset", "short.npz"), "'x' has 12 samples but 'y' has 5")
    np.savez(d / "small.npz", x=x[:, :8, :8], y=y)
    one_line_error(run_cli(*train, "--dataset", "small.npz"), "expects inputs of shape (3, 16, 16)")
    np.savez(d / "many.npz", x=x, y=y + 5)
    one_line_error(run_cli(*train, "--dataset", "many.npz"), "has 8 classes but the model outputs 3")
    np.savez(d / "maps.npz", x=x, y=np.zeros((12, 16, 16), dtype=np.int64))
    one_line_error(run_cli(*train, "--dataset", "maps.npz"), "targets of shape (16, 16) per sample, but "
                   "classification with cross-entropy needs one label per sample")
    np.save(d / "obj.npy", x)
    (d / "obj.npy").rename(d / "obj.npz")
    one_line_error(run_cli(*train, "--dataset", "obj.npz"), "is not a readable .npz file")
    (d / "arr.csv").write_text("1,2\n")
    one_line_error(run_cli(*train, "--dataset", "arr.csv"), "is neither .npz nor .pt")
    torch.save({"x": torch.zeros(2, 3, 16, 16), "y": [0, 1]}, d / "list.pt")
    one_line_error(run_cli(*train, "--dataset", "list.pt"), "'y' is a list, not an array")
    one_line_error(run_cli(*train, "--dataset", "nowhere"), "unknown dataset 'nowhere'")
    one_line_error(run_cli(*train, "--dataset", "no_such_module_13:build"), "cannot import 'no_such_module_13'")
    bad = write_module(d, "baddata", "def build():\n    return 3\n\ndef boom():\n    raise ValueError('no files')\n")
    one_line_error(run_cli(*train, "--dataset", f"{bad}:build"), "returned int; return (train_dataset")
    one_line_error(run_cli(*train, "--dataset", f"{bad}:boom"), "raised ValueError: no files")
    one_line_error(run_cli(*train, "--dataset", f"{bad}:nothing"), f"'{bad}' has no 'nothing'")
    one_line_error(run_cli(*train, "--dataset", "imgs", "--loss", "hinge"), "--loss must be cross-entropy")
    one_line_error(run_cli(*train, "--dataset", "imgs", "--metric", "f1"), "--metric must be accuracy")
    one_line_error(run_cli(*train, "--dataset", "imgs", "--loss", "mse"), "targets of shape () per sample")
    one_line_error(run_cli(*train, "--dataset", "imgs", "--mean", "0.5,0.5"), "--mean gives 2 values but the "
                   "inputs have 3 channels")
    one_line_error(run_cli(*train, "--dataset", "imgs", "--mean", "a,b,c"), "comma-separated numbers")
    one_line_error(run_cli(*train, "--dataset", "imgs", "--val-split", 1.5), "--val-split must be in (0, 1)")
    one_line_error(run_cli("train", "--arch", arch, "--dataset", "imgs", "--out", "bad"),
                   "pass --input-shape, e.g. 1,3,32,32")
    one_line_error(run_cli("train", "--arch", f"{arch.split('.py')[0]}.py:Nope", "--dataset", "imgs", "--out", "b"),
                   "has no 'Nope'")
    # grow / prune --data: the same sources, the same lines
    torch.save(load_model("", arch=arch).model.state_dict(), d / "net.pt")
    for cmd in ("grow", "prune"):
        r = run_cli(cmd, "net.pt", "--arch", arch, "--input-shape", SHAPE, "--data", "four", "-o", "o.pt")
        one_line_error(r, "has 4 classes but the model outputs 3 scores")
        r = run_cli(cmd, "net.pt", "--arch", arch, "--input-shape", SHAPE, "--data", "broken", "-o", "o.pt")
        one_line_error(r, "cannot read image broken/vertical/001.png")
    assert not (d / "bad").exists() and not (d / "o.pt").exists()


def test_module_function_may_return_loaders(user, tmp_path):
    src = write_module(tmp_path, "loaderdata", '''
import torch
from torch.utils.data import DataLoader, TensorDataset

def build():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, 16, 16, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    return DataLoader(TensorDataset(x[:32], y[:32]), batch_size=8, shuffle=True, generator=g), \\
        DataLoader(TensorDataset(x[32:], y[32:]), batch_size=8)
''')
    r = run_cli("train", "--arch", user["arch"], "--input-shape", SHAPE, "--dataset", f"{src}:build",
                "--epochs", 2, "--out", "run", "--f-pruning", 0)
    assert r.code == 0, r.err
    assert "its DataLoaders are used as given" in r.out
    assert [m["samples"] for m in metrics(tmp_path / "run")] == [32, 32]


def test_an_unreadable_image_is_named_also_from_python(tmp_path):
    root = image_folder(tmp_path / "f", per_class=2)
    Image.new("RGB", (4, 4)).save(root / "vertical" / "ok.png")
    (root / "horizontal" / "zz.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(Exception, match="cannot read image .*zz.jpg"):
        open_source(str(root), (1, 3, 16, 16))


def test_progress_bar_on_a_terminal_and_one_line_per_epoch_elsewhere(user):
    r = run_cli("train", "--arch", user["arch"], "--input-shape", SHAPE, "--dataset", "arr.npz", "--epochs", 2,
                "--f-pruning", 0, "--out", "plain")
    assert r.code == 0, r.err
    lines = [ln for ln in r.out.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 2 and "ETA" not in r.out and all("train " in ln and "test " in ln for ln in lines)
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=160)
    torch.manual_seed(0)
    model = load_model("", arch=user["arch"]).model
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.02, f_pruning=0, f_growth=0)
    train_run(model, (1, 3, 16, 16), "arr.npz", user["dir"] / "tty", cfg, console=console, progress=True)
    text = buf.getvalue()
    assert "ETA" in text and "loss " in text and "accuracy " in text and "77/77" in text, text[-600:]


def test_small_world_runs_on_user_data(user):
    r = run_cli("train", "--method", "small-world", "--density", 0.3, "--arch", user["arch"], "--input-shape", SHAPE,
                "--dataset", "imgs", "--epochs", 2, "--finetune-epochs", 1, "--batch-size", 16, "--lr", 0.02,
                "--out", "sw")
    assert r.code == 0, r.err
    summary = json.loads((user["dir"] / "sw" / "summary.json").read_text())
    assert summary["params_kept"] < summary["params_dense"]


def test_task_settings_live_in_toml_and_resume_refuses_a_different_task(user):
    (user["dir"] / "task.toml").write_text('[train]\nloss = "cross-entropy"\nmetric = "accuracy"\nval-split = 0.25\n'
                                           'mean = "0.5,0.5,0.5"\nstd = "0.25,0.25,0.25"\n')
    args = ["train", "--arch", user["arch"], "--input-shape", SHAPE, "--dataset", "arr.npz", "--epochs", 3,
            "--f-pruning", 0, "--config", "task.toml", "--out", "run"]
    real, calls = loop.train_epoch, []

    def killed_in_epoch_2(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    loop.train_epoch = killed_in_epoch_2
    try:
        assert run_cli(*args).code == 130
    finally:
        loop.train_epoch = real
    saved = json.loads(torch.load(user["dir"] / "run" / "checkpoint.pt", weights_only=True)["config"])
    assert (saved["loss"], saved["metric"], saved["val_split"], saved["mean"]) == \
        ("cross-entropy", "accuracy", 0.25, "0.5,0.5,0.5")
    r = run_cli("train", "--out", "run", "--resume", "--metric", "r2")
    one_line_error(r, "--metric accuracy (checkpoint) vs r2 (now)")
    r = run_cli("train", "--out", "run", "--resume", "--val-split", 0.5)
    one_line_error(r, "--val-split 0.25 (checkpoint) vs 0.5 (now)")
    r = run_cli("train", "--out", "run", "--resume")
    assert r.code == 0 and "resuming run at epoch 2 of 3" in r.out, r.err
    assert len(open_source("arr.npz", (1, 3, 16, 16), val_split=0.25).test) == 24  # the held-out quarter
    assert [m["samples"] for m in metrics(user["dir"] / "run")] == [72, 72, 72]


def test_user_loss_and_metric_functions(user):
    name = write_module(user["dir"], "usertask", '''
import torch.nn.functional as F

def smooth_ce(out, y):
    return F.cross_entropy(out, y, label_smoothing=0.1)

def top2(out, y):
    return (out.topk(2, 1).indices == y[:, None]).any(1).float().mean().item()
''')
    r = run_cli("train", "--arch", user["arch"], "--input-shape", SHAPE, "--dataset", "arr.npz", "--epochs", 2,
                "--f-pruning", 0, "--loss", f"{name}:smooth_ce", "--metric", f"{name}:top2", "--tau-accu", 0.9,
                "--out", "run")
    assert r.code == 0, r.err
    rows = metrics(user["dir"] / "run")
    assert rows[0]["metric"] == f"{name}:top2"
    # the logged metric is the user's function over the held-out samples, computed here independently
    model = load_model(str(user["dir"] / "run" / "model.pt")).model
    x, y = next(iter(make_loader(open_source("arr.npz", (1, 3, 16, 16)), "test", 1000, shuffle=False)))
    with torch.no_grad():
        top2 = (model(x).topk(2, 1).indices == y[:, None]).any(1).double().mean().item()
    assert abs(rows[-1]["test_metric"] - top2) < 1e-6
    one_line_error(run_cli("train", "--arch", user["arch"], "--input-shape", SHAPE, "--dataset", "arr.npz",
                           "--epochs", 1, "--loss", f"{name}:nope", "--out", "r2"), f"'{name}' has no 'nope'")
