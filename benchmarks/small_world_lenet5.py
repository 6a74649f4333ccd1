"""Small-World pruning (Krishnan, Du, Cao 2019) of LeNet-5 on the full MNIST, against random masks.

    CGAP_DATA_DIR=../shared/data python benchmarks/small_world_lenet5.py [--epochs 30] [--quick]
        [--reuse-baseline /tmp/bench/table1/baseline]

- dense baseline: LeNet-5 (20-50-500-10) trained for ``--baseline-epochs`` with the paper's schedule
  (SGD, lr 0.1 divided by 10 at every 30% of the epochs, momentum 0.9, weight decay 5e-4, batch
  128), or a finished run reused with ``--reuse-baseline DIR`` (DIR/summary.json + DIR/model.pt);
- Small-World: masks at ``--density`` of the Conv/Linear weights (ring lattice between adjacent
  layers + hierarchical rewiring, p chosen on the small-world measure), ``--epochs`` of the same
  schedule with the masks fixed, then the optimise step (dead units removed, ``--prune-rate`` of
  each layer's connections pruned by Taylor saliency) and ``--finetune-epochs`` at lr 0.01;
- random masks: the same pipeline and per-layer budget, the connections placed uniformly at random.

"params kept" counts the nonzero Conv/Linear weights plus all biases of the final shrunk model,
over the 431,080 parameters of the dense LeNet-5. Each final model is exported to ONNX
(``passes.export.export_onnx``) and the zero weights of the file are counted. Writes
benchmarks/results/small_world_lenet5.json (``--quick``: small_world_lenet5_quick.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import machine, write_json  # noqa: E402

import cgap_graph as cg  # noqa: E402
from cgap_graph import zoo  # noqa: E402
from cgap_graph.run import data  # noqa: E402
from cgap_graph.run.config import TrainConfig  # noqa: E402
from cgap_graph.run.loop import train_run  # noqa: E402
from cgap_graph.run.small_world import train_small_world  # noqa: E402

SHAPE = (1, 1, 28, 28)


def onnx_zero_weights(path: Path) -> tuple[int, int]:
    """(zero entries, all entries) of the weight initializers (2+ dims) of an ONNX file."""
    import onnx
    from onnx import numpy_helper
    zeros = total = 0
    for init in onnx.load(str(path)).graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.ndim >= 2:
            zeros += int((arr == 0).sum())
            total += arr.size
    return zeros, total


def baseline_row(args, cfg: TrainConfig) -> dict:
    if args.reuse_baseline:
        summary = json.loads((args.reuse_baseline / "summary.json").read_text())
        cg.load_model(str(args.reuse_baseline / "model.pt"))  # it must load
        return {"name": "Dense baseline", "accuracy": summary["test_accuracy"], "params_kept": summary["params"],
                "epochs": summary["epochs"], "seconds": summary["seconds"], "reused": str(args.reuse_baseline)}
    torch.manual_seed(args.seed)
    res = train_run(zoo.build("lenet5"), SHAPE, "mnist", args.out / "baseline",
                    replace_epochs(cfg, args.baseline_epochs), progress=False)
    return {"name": "Dense baseline", "accuracy": res.test_accuracy, "params_kept": res.params, "epochs": res.epochs,
            "seconds": res.seconds}


def replace_epochs(cfg: TrainConfig, epochs: int) -> TrainConfig:
    from dataclasses import replace
    return replace(cfg, epochs=epochs)


def masked_row(args, cfg: TrainConfig, topology: str) -> dict:
    from cgap_graph.passes.export import export_onnx
    out = args.out / topology
    torch.manual_seed(args.seed)
    t = time.perf_counter()
    res = train_small_world(zoo.build("lenet5"), SHAPE, "mnist", out, cfg, density=args.density, p=args.p,
                            exclude=args.exclude, topology=topology, prune_rate=args.prune_rate,
                            finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr, progress=False,
                            resume=args.resume and (out / "settings.json").exists())
    seconds = time.perf_counter() - t
    topo = json.loads((out / "topology.json").read_text())
    final = cg.load_model(str(out / "model.pt")).model
    rep = export_onnx(final, SHAPE, out / "model.onnx")
    zeros, total = onnx_zero_weights(out / "model.onnx")
    nonzero_torch = sum(int(torch.count_nonzero(m.weight)) for m in final.modules()
                        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    return {"name": "Small-World masks" if topology == "small-world" else "Random masks", "topology": topology,
            "accuracy": res.test_accuracy, "accuracy_after_training": res.train_result.test_accuracy,
            "params_kept": res.params_kept, "params_dense": res.params_dense, "density": res.density, "p": res.p,
            "params_before_optimise": res.optimise["params_before"], "widths": list(res.widths.values()),
            "pruned": res.optimise["pruned"], "removed_units": {**res.optimise["removed_dead"],
                                                               **res.optimise["removed_after_pruning"]},
            "sigma": topo["network"]["sigma"], "omega": topo["omega"], "clustering": topo["network"]["clustering"],
            "path_length": topo["network"]["path_length"], "epochs": res.epochs, "seconds": seconds,
            "onnx": {"max_abs_diff": rep.max_abs_diff, "zero_weights": zeros, "weights": total,
                     "nonzero_weights": total - zeros, "nonzero_weights_torch": nonzero_torch}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30, help="training epochs with the masks fixed")
    p.add_argument("--finetune-epochs", type=int, default=10)
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--baseline-epochs", type=int, default=60)
    p.add_argument("--density", type=float, default=0.04, help="fraction of Conv/Linear weights kept by the masks")
    p.add_argument("--prune-rate", type=float, default=0.3, help="fraction of each layer's connections pruned")
    p.add_argument("--p", type=float, default=None, help="rewiring probability (default: chosen on omega)")
    p.add_argument("--exclude", nargs="*", default=[], help="layers kept dense")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "small_world")
    p.add_argument("--reuse-baseline", type=Path, default=None,
                   help="a finished dense LeNet-5 run (summary.json + model.pt) instead of training one")
    p.add_argument("--only", choices=["small-world", "random"], default=None, help="run one topology only")
    p.add_argument("--resume", action="store_true", help="continue stopped runs in OUT")
    p.add_argument("--quick", action="store_true", help="2+1 epochs on 5,000 images: checks the script runs")
    args = p.parse_args()
    train_limit = test_limit = None
    if args.quick:
        args.epochs, args.finetune_epochs, args.baseline_epochs, train_limit, test_limit = 2, 1, 2, 5000, 2000
    if args.reuse_baseline and not (args.reuse_baseline / "summary.json").exists():
        p.error(f"--reuse-baseline {args.reuse_baseline}: no summary.json there")
    data.load_arrays("mnist", "test")  # a clear error now if MNIST is missing
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(epochs=args.epochs, f_growth=0, f_pruning=0, seed=args.seed, train_limit=train_limit,
                      test_limit=test_limit)
    rows = [baseline_row(args, cfg)]
    for topology in ("small-world", "random"):
        if args.only in (None, topology):
            rows.append(masked_row(args, cfg, topology))
    dense = 431_080
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"Small-World pruning, LeNet-5 on MNIST ({args.epochs} + {args.finetune_epochs} epochs, "
                        f"density {args.density:g}, prune rate {args.prune_rate:g})", header_style="bold")
    for col in ("method", "test acc", "acc before optimise", "params kept", "kept %", "p", "sigma", "widths",
                "wall"):
        table.add_column(col, justify="left" if col in ("method", "widths") else "right")
    for r in rows:
        table.add_row(r["name"], f"{100 * r['accuracy']:.2f}%",
                      f"{100 * r['accuracy_after_training']:.2f}%" if "accuracy_after_training" in r else "-",
                      f"{r['params_kept']:,}", f"{100 * r['params_kept'] / dense:.2f}%",
                      "-" if r.get("p") is None else f"{r['p']:g}",
                      f"{r['sigma']:.2f}" if r.get("sigma") is not None else "-",
                      "-".join(map(str, r.get("widths", [20, 50, 500, 10]))), f"{r['seconds'] / 60:.1f} min")
    Console(width=160).print(table)
    goals = {}
    by = {r.get("topology"): r for r in rows}
    if "small-world" in by:
        sw = by["small-world"]
        goals = {"params<=3%": sw["params_kept"] <= 0.03 * dense, "accuracy>=99.0%": sw["accuracy"] >= 0.99}
        if "random" in by:
            goals["beats_random_masks"] = sw["accuracy"] > by["random"]["accuracy"]
    print("goals:", goals)
    result = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "dense_params": dense,
              "rows": rows, "goals": goals,
              "params_kept_counts": "nonzero Conv/Linear weights + all biases of the final shrunk model"}
    print(f"wrote {write_json('small_world_lenet5', result, args.quick)}")


if __name__ == "__main__":
    main()
