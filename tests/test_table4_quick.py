"""benchmarks/table4_cifar10.py (Table IV, CIFAR-10): the quick CPU run, resuming, the fast input
path against the project's per-image augmentation, and the GPU script's dry run.

The quick run trains a half-width ResNet-20 on 512 images for 4 epochs: its accuracies mean
nothing; what is checked is that every method produces a row of numbers, that CGaP and
pruning-only end smaller than the baseline, and that a resumed run equals an uninterrupted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "table4_cifar10.py"
CIFAR = Path(os.environ.get("CGAP_DATA_DIR", "/nonexistent"), "cifar-10", "cifar-10-batches-py", "test_batch")
needs_cifar = pytest.mark.skipif(not CIFAR.exists(), reason="CIFAR-10 not in $CGAP_DATA_DIR")
sys.path.insert(0, str(ROOT / "benchmarks"))

import table4_cifar10  # noqa: E402
from cifar_fast import DeviceData, FastOptions, bf16_channels_last_safe, contiguous, crop_flip  # noqa: E402
from table4_run import RunSpec, run  # noqa: E402

import cgap_graph  # noqa: E402
from cgap_graph import zoo  # noqa: E402
from cgap_graph.passes.cgap.seed import seed as seed_pass  # noqa: E402
from cgap_graph.run.config import TrainConfig  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread, as the script's own runs use (two threads thrash on a shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--threads", "1"], capture_output=True, text=True,
                          env=e, timeout=600)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("table4")
    res = _run("--quick", "--out", str(out), "--results", str(out / "r.json"))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return out, json.loads((out / "r.json").read_text()), res.stdout


@needs_cifar
def test_quick_rows_have_numbers(quick):
    _, result, stdout = quick
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"baseline", "cgap", "pruning-only"}
    for r in rows.values():
        assert r["model"] == "resnet20"
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["params"] > 0 and r["flops"] > 0 and r["train_flops"] > 0 and r["seconds"] > 0
        assert 0 < r["nonzero_params"] <= r["params"]
    base, cgap, po = rows["baseline"], rows["cgap"], rows["pruning-only"]
    assert cgap["params"] < base["params"] and cgap["flops"] < base["flops"]
    assert po["params"] < base["params"]
    assert cgap["grown_at"] and cgap["pruned_at"], "the quick schedule grows and prunes"
    assert po["pruned_at"] == [1] and not po["grown_at"]
    assert cgap["params"] < cgap["peak_params"] and po["params"] < po["peak_params"] == base["params"]
    # pruning-only paid for the baseline too
    assert po["train_flops_total"] == pytest.approx(po["train_flops"] + base["train_flops"], rel=1e-12)
    assert result["paper"]["resnet56"][2][0] == "CGaP" and "Table IV" in stdout


def _main(capsys, *args: str) -> tuple[int, str, str]:
    """The script in this process (no interpreter start-up); its rc, stdout and stderr."""
    rc = table4_cifar10.main([*args, "--threads", "1"])
    out, err = capsys.readouterr()
    return rc, out, err


@needs_cifar
def test_resumed_run_equals_uninterrupted(quick, tmp_path, capsys):
    out_full, _, _ = quick
    args = ("--quick", "--methods", "cgap", "--out", str(tmp_path), "--results", str(tmp_path / "r.json"))
    rc, out, err = _main(capsys, *args, "--stop-after", "2")
    assert rc == 0, err[-2000:]
    assert not (tmp_path / "resnet20" / "cgap" / "summary.json").exists()
    rc, out, err = _main(capsys, *args)
    assert rc == 0, err[-2000:]
    assert "resuming at epoch 3" in out
    keys = ("epoch", "phase", "lr", "params", "flops", "widths", "events", "train_acc", "test_acc")
    read = lambda d: [json.loads(ln) for ln in (d / "resnet20" / "cgap" / "metrics.jsonl").read_text().splitlines()]
    full, resumed = read(out_full), read(tmp_path)
    assert [{k: m[k] for k in keys} for m in resumed] == [{k: m[k] for k in keys} for m in full]
    for a, b in zip(full, resumed):  # the same arithmetic on the same CPU: the losses agree to rounding
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-7)


@needs_cifar
def test_other_settings_are_refused_in_one_line(quick, capsys):
    out, _, _ = quick
    rc, _, err = _main(capsys, "--quick", "--methods", "baseline", "--epochs", "5", "--out", str(out), "--results",
                       str(out / "other.json"))
    assert rc == 2
    assert err.count("\n") == 1 and "holds a finished run of other settings" in err
    assert "epochs 4 there vs 5 now" in err and not (out / "other.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_missing_is_one_line(capsys):
    rc, _, err = _main(capsys, "--device", "cuda", "--models", "resnet20", "--epochs", "1")
    assert rc == 2 and err == "error: --device cuda: no CUDA device here; use --device cpu (or --quick)\n"


def test_crop_flip_matches_per_image_loop():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    got = crop_flip(x, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the same draws, in the same order
    dx = torch.randint(0, 9, (16,), generator=g)
    dy = torch.randint(0, 9, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(16):
        want = padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        assert torch.equal(got[i], want.flip(-1) if flip[i] else want)
    assert 0 < int(flip.sum()) < 16 and got.dtype == torch.uint8


@needs_cifar
def test_gpu_script_dry_run(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "RUNS": str(tmp_path / "runs"), "PLAN_PYTHON": sys.executable}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_table4.sh"), "--dry-run"], capture_output=True,
                         text=True, env=env, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "--device cuda --models resnet20 --methods baseline,cgap,pruning-only --epochs 30 --bf16" in res.stdout
    assert "resnet20: reference 272,474 params" in res.stdout and "dry run: nothing trained" in res.stdout
    assert (tmp_path / "plan.txt").exists() and not (tmp_path / "table4_cifar10.json").exists()


def _synthetic(n: int, seed: int) -> DeviceData:
    g = torch.Generator().manual_seed(seed)
    return DeviceData(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                      torch.randint(0, 10, (n,), generator=g), torch.device("cpu"))


def test_channels_last_model_computes_the_same():
    """The layout the GPU path trains in changes no number (fp32, tolerance 1e-5 relative)."""
    torch.manual_seed(0)
    model = cgap_graph.trace(zoo.build("resnet20", width=0.25), (1, 3, 32, 32)).module.eval()
    x = _synthetic(8, 1)
    xin = x.normalise(x.x)
    want = model(xin)
    opts = FastOptions(torch.device("cpu"), channels_last=True)
    opts.layout(model)
    assert model.get_submodule("conv1").weight.is_contiguous(memory_format=torch.channels_last)
    got = model(xin.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    contiguous(model)
    assert all(p.is_contiguous() for p in model.parameters())
    torch.testing.assert_close(model(xin), want, rtol=1e-5, atol=1e-5)


def test_gpu_path_grows_and_prunes_channels_last_bf16(tmp_path):
    """The GPU options (channels-last, bf16 autocast) through growth, pruning and a resume, on the
    CPU with synthetic images: surgery sees contiguous weights, training sees channels-last.
    On a CPU without native bf16 (AVX2), PyTorch 2.13's backward segfaults under bf16 autocast on
    channels-last tensors (and fp32 channels-last backward crawls), so there the run keeps the
    standard layout; ``test_channels_last_model_computes_the_same`` covers the layout itself."""
    cl = bf16_channels_last_safe(torch.device("cpu"))
    cfg = TrainConfig(epochs=3, batch_size=32, f_growth=1.0, tau_accu=0.0, prune_start=0.67, prune_end=0.67,
                      gamma_w=0.5, saliency_batches=1)
    g = cgap_graph.trace(zoo.build("resnet20", width=0.25), (1, 3, 32, 32))
    rep = seed_pass(g, 0.5, select="first", reinit=True)
    spec = RunSpec("synthetic/cgap", tmp_path, cfg, lambda: g.module, {"test": 1}, rep.reference_widths)
    opts = FastOptions(torch.device("cpu"), bf16=True, channels_last=cl, batch_size=32, eval_batch_size=64)
    train, test = _synthetic(96, 2), _synthetic(64, 3)
    assert run(spec, train, test, opts, log=lambda s: None, stop_after=1) is None  # checkpointed after epoch 1
    summary = run(spec, train, test, opts, log=lambda s: None)
    assert summary["grown_at"][:1] == [1] and summary["pruned_at"] == [2]
    assert summary["params"] < summary["peak_params"]
    assert 0 <= summary["accuracy"] <= 1
    model = cgap_graph.load_model(str(tmp_path / "model.pt")).model
    assert sum(p.numel() for p in model.parameters()) == summary["params"]


def test_bad_setting_is_refused_before_training(tmp_path, capsys):
    rc, out, err = _main(capsys, "--quick", "--gamma-w", "1.5", "--out", str(tmp_path / "runs"))
    assert rc == 2 and err == "error: gamma-w must be in (0, 1), got 1.5\n"
    assert "epoch" not in out and not (tmp_path / "runs").exists()
