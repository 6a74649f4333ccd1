"""Data-parallel CGaP (issue #7): 2 processes on CPU (gloo, loopback) grow and prune in step,
match the one-process run with the same global batch and seed, survive a dead rank without
hanging, and resume exactly; plus the pieces (sharding, divergence check) without processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cgap_graph.run import data as D
from cgap_graph.run import distributed
from cgap_graph.run.checkpoint import CHECKPOINT, DIST_REPORT, METRICS
from cgap_graph.run.distributed import Dist, DistributedError, RanksDiverged, ShardedBatchSampler

# LeNet-5 seed at 1/4 width on the built-in MNIST subset: grows at epochs 2 and 4, prunes at 4 and 5,
# fine-tunes to epoch 10 (long enough that the accuracy has settled: float-level differences between
# one and two processes change which units sit exactly at Algorithm 3's sparsity threshold)
TRAIN = ["train", "--model", "lenet5", "--seed-width", "0.25", "--dataset", "mnist-mini", "--epochs", "10",
         "--batch-size", "64", "--lr", "0.05", "--lr-decay-every", "0.8", "--f-growth", "0.5",
         "--prune-start", "0.4", "--prune-end", "0.5", "--tau-accu", "0.5", "--gamma-w", "0.3", "--gamma-f", "0.5",
         "--saliency-batches", "3", "--eval-batch-size", "500", "--test-limit", "1000"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CGAP_DIST_TIMEOUT": "60"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(_free_port()), "-m", "cgap_graph", *TRAIN, "--out", str(out), *extra]


def _metrics(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / METRICS).read_text().splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "run"
    t0 = time.perf_counter()
    r = subprocess.run(_torchrun(out), env=ENV, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return out, time.perf_counter() - t0, r.stdout


def test_two_processes_stay_in_step_and_match_one_process(two_process_run, tmp_path):
    out, seconds, stdout = two_process_run
    report = json.loads((out / DIST_REPORT).read_text())
    assert report["world_size"] == 2 and report["backend"] == "gloo" and report["epoch"] == 10
    r0, r1 = report["ranks"]
    assert (r0["rank"], r1["rank"]) == (0, 1)
    assert r0["widths"] == r1["widths"] and r0["hash"] == r1["hash"] and r0["params"] == r1["params"]
    rows = _metrics(out)
    assert len(rows) == 10 and all(r["world_size"] == 2 for r in rows)
    assert any(r["phase"].startswith("grow") for r in rows) and any(r["phase"].endswith("prune") for r in rows)
    peak = max(r["params"] for r in rows)
    assert rows[0]["params"] < peak and rows[-1]["params"] < peak  # grew, then shrank
    assert stdout.count("epoch  10/10") == 1  # only rank 0 prints
    assert not list(out.glob("rank*"))  # and only rank 0 writes
    # the one-process run with the same global batch (64) and seed
    one = tmp_path / "one"
    r = subprocess.run([sys.executable, "-m", "cgap_graph", *TRAIN, "--out", str(one)], env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    single = _metrics(one)
    # same global batches: before any structural step the two runs agree to float rounding
    assert rows[0]["loss"] == pytest.approx(single[0]["loss"], rel=1e-4)
    assert rows[0]["train_acc"] == pytest.approx(single[0]["train_acc"], abs=0.002)
    assert rows[0]["widths"] == single[0]["widths"] and rows[1]["widths"] == single[1]["widths"]
    assert rows[-1]["test_acc"] > 0.95
    assert abs(rows[-1]["test_acc"] - single[-1]["test_acc"]) <= 0.01, (rows[-1]["test_acc"], single[-1]["test_acc"])


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    try:
        kids = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    except OSError:
        return None
    for pid in kids:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return int(pid)
    return None


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the worker through /proc")
def test_dead_rank_ends_the_run_and_resume_finishes_it_exactly(two_process_run, tmp_path):
    # two "nodes" of one process each on loopback: the survivor is not killed by its own launcher, so
    # it must notice the lost rank itself and stop with one clear line
    out, port = tmp_path / "killed", str(_free_port())
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(r), "--nproc_per_node",
         "1", "--master_addr", "127.0.0.1", "--master_port", port, "-m", "cgap_graph", *TRAIN, "--out", str(out)],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and nodes[0].poll() is None:
            if (out / METRICS).exists() and len(_metrics(out)) >= 3:
                break
            time.sleep(0.2)
        assert nodes[0].poll() is None, "the run ended before rank 1 could be killed"
        pid = _rank_pid(nodes[1], 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        _, err = nodes[0].communicate(timeout=60)  # no hang: a timeout fails the test
        nodes[1].communicate(timeout=60)
    finally:
        for p in nodes:
            if p.poll() is None:
                p.kill()
    assert nodes[0].returncode != 0 and nodes[1].returncode != 0
    assert "error: rank 0: lost contact with the other ranks" in err and "--resume" in err
    assert "exitcode  : 2" in err  # the survivor's own clean exit, not a signal
    epoch = torch.load(out / CHECKPOINT, weights_only=True)["epoch"]
    assert 3 <= epoch < 10 and not (out / "model.pt").exists()
    # resumed on one node of two processes, every rank from rank 0's checkpoint: the result is the
    # uninterrupted run's, bit for bit
    r = subprocess.run(_torchrun(out, "--resume"), env=ENV, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    full_out = two_process_run[0]
    resumed, full = json.loads((out / DIST_REPORT).read_text()), json.loads((full_out / DIST_REPORT).read_text())
    assert [x["hash"] for x in resumed["ranks"]] == [x["hash"] for x in full["ranks"]]
    assert [m["loss"] for m in _metrics(out)] == [m["loss"] for m in _metrics(full_out)]
    assert (out / "model.pt").exists()


def test_rank_0_error_stops_every_rank(tmp_path):
    # rank 0 finds no checkpoint; the others get its error instead of waiting for a broadcast
    r = subprocess.run(_torchrun(tmp_path / "none", "--resume"), env=ENV, capture_output=True, text=True,
                       timeout=120)  # no hang: a timeout fails the test
    assert r.returncode != 0
    assert r.stderr.count("error: --resume: no checkpoint in") == 2, r.stderr[-2000:]  # one line per rank
    assert "cgap_graph/run/loop.py" not in r.stderr and "cgap_graph/run/distributed.py" not in r.stderr  # no traceback


# ---- the pieces, without processes ----------------------------------------------------------------------
@pytest.mark.parametrize("batch", [64, 100])
def test_shards_reassemble_the_one_process_batches(batch):
    def labels(loader, epochs=2):
        return [[y.tolist() for _, y in loader] for _ in range(epochs)]

    ref = D.loader("mnist-mini", "train", batch, limit=1000, seed=3)
    want = labels(ref)
    for world in (1, 2, 3):
        shards = []
        for rank in range(world):
            loader = Dist(rank, world, rank, "gloo").shard(D.loader("mnist-mini", "train", batch, limit=1000, seed=3))
            got = labels(loader)
            assert torch.equal(loader.generator.get_state(), ref.generator.get_state())  # same random stream
            assert len(loader) == len(got[0]) and loader.batch_sampler.num_samples == sum(map(len, got[0]))
            shards.append(got)
        for ep in range(2):
            assert [sum((s[ep][b] for s in shards), []) for b in range(len(want[ep]))] == want[ep]
    # a last batch of 2 for 3 ranks: dropped in training (equal steps), seen once in evaluation
    g = torch.Generator()
    train = [ShardedBatchSampler(10, 4, r, 3, g, shuffle=True) for r in range(3)]
    assert [len(list(s)) for s in train] == [len(s) for s in train] == [2, 2, 2]
    assert sum(s.num_samples for s in train) == 8
    test = [ShardedBatchSampler(10, 4, r, 3, g, shuffle=False) for r in range(3)]
    assert [list(s) for s in test] == [[[0, 1], [4, 5], [8]], [[2], [6], [9]], [[3], [7]]]
    assert [len(s) for s in test] == [3, 3, 2] and [s.num_samples for s in test] == [5, 3, 2]


class _TwoRanks(Dist):
    """rank 0 of two, whose 'rank 1' reports a given fingerprint (no process group needed)."""

    other: dict = {}

    def gather(self, obj):
        return [obj, self.other | {"rank": 1}]


def test_divergence_check_stops_with_one_line():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    widths = {0: 3}
    ctx = _TwoRanks(0, 2, 0, "gloo")
    same = distributed.fingerprint(model, widths)
    _TwoRanks.other = same
    assert [p["hash"] for p in ctx.check_in_step(model, widths, "after epoch 1")] == [same["hash"]] * 2
    _TwoRanks.other = distributed.fingerprint(model, {0: 2})
    with pytest.raises(RanksDiverged, match=r"after epoch 3: rank 1 has different widths .*\(widths 2 vs 3"):
        ctx.check_in_step(model, widths, "after epoch 3")
    with torch.no_grad():
        model[1].running_mean[1] += 1e-7  # one buffer, one ulp-scale change
    _TwoRanks.other = distributed.fingerprint(model, widths)
    with torch.no_grad():
        model[1].running_mean[1] -= 1e-7
    with pytest.raises(RanksDiverged, match="different parameters"):
        ctx.check_in_step(model, widths, "after epoch 4")


def test_setup_without_torchrun_changes_nothing(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.setup("cpu") is None and distributed.is_main()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.setup("cpu") is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DistributedError, match="RANK, MASTER_ADDR, MASTER_PORT are not set; launch with torchrun"):
        distributed.setup("cpu")
    monkeypatch.setenv("CGAP_DIST_TIMEOUT", "soon")
    with pytest.raises(DistributedError, match="must be a positive number of seconds"):
        distributed._timeout()
    assert distributed.is_comm_error(RuntimeError("[gloo/transport/tcp/pair.cc:537] Connection reset by peer"))
    assert not distributed.is_comm_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
