"""What CGaP costs on top of plain PyTorch training (issue 12).

    python benchmarks/train_overhead.py [--epochs 6] [--train-limit 10000] [--repeats 3]

1. The traced ``fx.GraphModule`` against the eager module it came from: forward + backward + SGD
   step, batch 128, LeNet-5 (MNIST shapes) and ResNet-20 (CIFAR shapes), interleaved, medians.
2. A CGaP run (``train_run``: LeNet-5 from a 1/4 seed, growth and pruning on, evaluation and a
   checkpoint every epoch) against plain PyTorch training of the same architectures: for every
   epoch an eager LeNet-5 with the widths the CGaP run trained that epoch, one epoch of the same
   batches, optimizer and evaluation. The ratio of total times is the overhead of saliency,
   structural steps, metrics and checkpoints. One thread; MNIST from $CGAP_DATA_DIR, else the
   built-in mnist-mini. Writes benchmarks/results/train_overhead.json.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json  # noqa: E402

import cgap_graph as cg  # noqa: E402
from cgap_graph.passes.cgap.seed import seed as seed_pass  # noqa: E402
from cgap_graph.run import data  # noqa: E402
from cgap_graph.run.config import TrainConfig  # noqa: E402
from cgap_graph.run.epochs import evaluate, train_epoch  # noqa: E402
from cgap_graph.run.loop import train_run  # noqa: E402


class PlainLeNet(nn.Module):
    """LeNet-5 at given widths, written as a user would."""

    def __init__(self, c1: int, c2: int, f1: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, c1, 5), nn.Conv2d(c1, c2, 5)
        self.fc1, self.fc2 = nn.Linear(c2 * 16, f1), nn.Linear(f1, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def step_time(model: nn.Module, shape, steps: int = 20) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(128, *shape[1:]), torch.randint(0, 10, (128,))
    model.train()
    t = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - t) / steps


def graph_vs_eager(repeats: int) -> list[dict]:
    """GraphModule against eager, with a deep copy of the eager module as the noise floor (the
    same code, other memory: two eager copies differ by a few percent on this machine); the order
    is reversed every other repeat so neither side always runs first."""
    rows = []
    for name in ("lenet5", "resnet20"):
        eager = cg.zoo.build(name)
        shape = cg.zoo.input_shape(name)
        graph = cg.trace(eager, shape).module
        twin = copy.deepcopy(eager)
        for m in (eager, graph, twin):
            step_time(m, shape, 3)  # warm-up
        t: dict[str, list[float]] = {"eager": [], "graph": [], "twin": []}
        for i in range(repeats):
            order = [("eager", eager), ("graph", graph), ("twin", twin)]
            for key, m in order[::-1] if i % 2 else order:
                t[key].append(step_time(m, shape))
        e, g, c = (statistics.median(t[k]) for k in ("eager", "graph", "twin"))
        rows.append({"model": name, "eager_s": e, "graph_s": g, "eager_copy_s": c, "ratio": g / e,
                     "copy_ratio": c / e})
    return rows


def cgap_vs_plain(dataset: str, epochs: int, limit: int) -> dict:
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=0.05, f_growth=0.5, prune_start=0.5, prune_end=0.9,
                      tau_accu=0.5, gamma_w=0.3, saliency_batches=4, train_limit=limit, test_limit=2000)
    torch.manual_seed(0)
    g = cg.trace(cg.zoo.build("lenet5"), (1, 1, 28, 28))
    rep = seed_pass(g, 0.25, select="first", reinit=True)
    with tempfile.TemporaryDirectory() as tmp:
        res = train_run(g.module, (1, 1, 28, 28), dataset, Path(tmp) / "run", cfg,
                        reference_widths=rep.reference_widths, progress=False)
    cgap_s = res.metrics[-1]["seconds"]
    train = data.loader(dataset, "train", 128, limit=limit, seed=0)
    test = data.loader(dataset, "test", 1000, limit=2000, shuffle=False)
    plain_s = 0.0
    for row in res.metrics:  # the architecture the CGaP run trained in that epoch
        c1, c2, f1 = (row["widths_before"][k] for k in ("0", "1", "2"))
        model = PlainLeNet(c1, c2, f1)
        opt = torch.optim.SGD(model.parameters(), lr=row["lr"], momentum=0.9, weight_decay=5e-4)
        t = time.perf_counter()
        train_epoch(model, train, opt, torch.device("cpu"))
        evaluate(model, test, torch.device("cpu"))
        plain_s += time.perf_counter() - t
    images = epochs * len(train.dataset)
    return {"dataset": dataset, "epochs": epochs, "images": images, "cgap_s": cgap_s, "plain_s": plain_s,
            "cgap_images_per_s": images / cgap_s, "plain_images_per_s": images / plain_s,
            "overhead": cgap_s / plain_s - 1, "widths": [r["widths_before"] for r in res.metrics],
            "events": [r["events"] for r in res.metrics]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--train-limit", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="2 epochs on 2,000 images: checks the script runs")
    args = p.parse_args()
    if args.quick:
        args.epochs, args.train_limit, args.repeats = 2, 2000, 1
    torch.set_num_threads(1)
    dataset = "mnist" if data.data_root() is not None else "mnist-mini"
    graph = graph_vs_eager(args.repeats)
    for r in graph:
        print(f"{r['model']:10s} fwd+bwd+step: eager {1e3 * r['eager_s']:.1f} ms, GraphModule "
              f"{1e3 * r['graph_s']:.1f} ms ({100 * (r['ratio'] - 1):+.1f}%, goal within 3%); an eager deep copy "
              f"{100 * (r['copy_ratio'] - 1):+.1f}% (the noise floor)")
    run = cgap_vs_plain(dataset, args.epochs, args.train_limit)
    print(f"CGaP run: {run['cgap_images_per_s']:.0f} images/s, plain PyTorch at the same widths "
          f"{run['plain_images_per_s']:.0f} images/s: overhead {100 * run['overhead']:+.1f}% (goal within 10%)")
    result = {"machine": machine(), "graph_vs_eager": graph, "cgap_vs_plain": run}
    print(f"wrote {write_json('train_overhead', result, args.quick)}")


if __name__ == "__main__":
    main()
