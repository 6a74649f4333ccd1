"""Throughput of ``cgap-graph train`` on 1 and 2 processes (issue #7: data-parallel CGaP).

    python benchmarks/distributed_scaling.py [--repeats 3] [--train-limit 10000] [--epochs 3]

Each configuration runs the command a user would (a fresh process; 2 processes through
``python -m torch.distributed.run``, gloo on loopback) on LeNet-5 grown from a 1/4-width seed,
with growth and pruning, global batch 128 in every case. Throughput is training images per
second of the run's own clock (``summary.json``: the epoch loop, i.e. training steps, saliency
batches, structural steps, evaluation and checkpoints, without process start-up); wall time
includes start-up. Configurations:

- 1 process, 1 thread (OMP_NUM_THREADS=1)
- 1 process, 2 threads (the same two cores as the next row, used by intra-op threads)
- 2 processes, 1 thread each (torchrun --nproc_per_node 2)

The configurations are interleaved (repeat 1 of each, then repeat 2 ...) and the median kept.
Uses MNIST from $CGAP_DATA_DIR if present, else the built-in mnist-mini. Prints a table and writes
benchmarks/results/distributed_scaling.json with the machine, thread settings and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json  # noqa: E402

CONFIGS = [("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2), ("2 processes, 1 thread each", 2, 1)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(dataset: str, args) -> list[str]:
    return ["train", "--model", "lenet5", "--seed-width", "0.25", "--dataset", dataset, "--epochs", str(args.epochs),
            "--batch-size", "128", "--lr", "0.05", "--f-growth", "0.5", "--prune-start", "0.75", "--prune-end", "1.0",
            "--tau-accu", "0.5", "--gamma-w", "0.3", "--train-limit", str(args.train_limit), "--test-limit", "2000"]


def run_one(procs: int, threads: int, dataset: str, args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        if procs == 1:
            cmd = [sys.executable, "-m", "cgap_graph", *_train_args(dataset, args), "--out", str(out)]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_addr",
                   "127.0.0.1", "--master_port", str(_free_port()), "-m", "cgap_graph",
                   *_train_args(dataset, args), "--out", str(out)]
        load = os.getloadavg()[0]
        t = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        summary = json.loads((out / "summary.json").read_text())
        rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    images = rows[-1]["samples"] * len(rows)
    return {"images": images, "loop_seconds": summary["seconds"], "wall_seconds": wall,
            "images_per_s": images / summary["seconds"], "test_accuracy": summary["test_accuracy"],
            "params": summary["params"], "phases": [r["phase"] for r in rows], "load_avg_1min_before": load}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-limit", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    root = os.environ.get("CGAP_DATA_DIR")
    dataset = "mnist" if root and (Path(root) / "mnist").is_dir() else "mnist-mini"
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in CONFIGS}
    for rep in range(args.repeats):  # interleaved, so a change in the machine's load hits every row alike
        for name, procs, threads in CONFIGS:
            runs[name].append(run_one(procs, threads, dataset, args))
            print(f"repeat {rep + 1}: {name:28s} {runs[name][-1]['images_per_s']:8.0f} images/s", flush=True)
    results = []
    for name, procs, threads in CONFIGS:
        ips = statistics.median(r["images_per_s"] for r in runs[name])
        results.append({"config": name, "processes": procs, "threads_per_process": threads, "runs": runs[name],
                        "median_images_per_s": ips})
    base = results[0]["median_images_per_s"]
    print("\n| configuration | images/s | vs 1 process, 1 thread |\n| --- | ---: | ---: |")
    for r in results:
        print(f"| {r['config']} | {r['median_images_per_s']:,.0f} | {r['median_images_per_s'] / base:.2f}x |")
    result = {"machine": machine(), "dataset": dataset, "train_images": args.train_limit, "epochs": args.epochs,
              "global_batch": 128, "model": "lenet5, seed width 0.25, growth + pruning", "repeats": args.repeats,
              "command": "python benchmarks/distributed_scaling.py " + " ".join(sys.argv[1:]),
              "thread_settings": "OMP_NUM_THREADS and MKL_NUM_THREADS set per configuration (threads_per_process)",
              "configs": results}
    print(f"wrote {write_json('distributed_scaling', result)}")


if __name__ == "__main__":
    main()
