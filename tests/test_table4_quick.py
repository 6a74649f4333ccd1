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

from cifar_fast import crop_flip  # noqa: E402


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


@needs_cifar
def test_resumed_run_equals_uninterrupted(quick, tmp_path):
    out_full, _, _ = quick
    args = ("--quick", "--methods", "cgap", "--out", str(tmp_path), "--results", str(tmp_path / "r.json"))
    first = _run(*args, "--stop-after", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    assert not (tmp_path / "resnet20" / "cgap" / "summary.json").exists()
    second = _run(*args)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming at epoch 3" in second.stdout
    keys = ("epoch", "phase", "lr", "params", "flops", "widths", "events", "train_acc", "test_acc")
    read = lambda d: [json.loads(ln) for ln in (d / "resnet20" / "cgap" / "metrics.jsonl").read_text().splitlines()]
    full, resumed = read(out_full), read(tmp_path)
    assert [{k: m[k] for k in keys} for m in resumed] == [{k: m[k] for k in keys} for m in full]
    for a, b in zip(full, resumed):  # the same arithmetic on the same CPU: the losses agree to rounding
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-7)


@needs_cifar
def test_other_settings_are_refused_in_one_line(quick):
    out, _, _ = quick
    res = _run("--quick", "--methods", "baseline", "--epochs", "5", "--out", str(out), "--results",
               str(out / "other.json"))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "holds a finished run of other settings" in res.stderr
    assert "epochs 4 there vs 5 now" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_missing_is_one_line():
    res = _run("--device", "cuda", "--models", "resnet20", "--epochs", "1")
    assert res.returncode == 2 and res.stderr.startswith("error: --device cuda: no CUDA device here")
    assert "Traceback" not in res.stderr


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
