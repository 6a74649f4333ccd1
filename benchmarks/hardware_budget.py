"""Hardware-aware pruning, measured (issue 15).

    CGAP_DATA_DIR=../shared/data python benchmarks/hardware_budget.py [--quick]

A. ResNet-56 and VGG-16 (CIFAR shapes, random weights: latency does not depend on them): the same
   parameter budget (40% of the parameters kept) with and without ``round_to=8``; ONNX Runtime
   latency (one thread, medians, interleaved) at batch 1 and 64 of the dense and both pruned
   models, against their FLOP reduction (goal: the speed-up reaches 70% of the FLOP reduction at
   batch 64).
B. LeNet-5 on MNIST: a baseline trained a few epochs, then pruned (Taylor saliency) to several
   parameter budgets, and to FPGA-latency budgets equal to the latency each parameter-budgeted
   model got; every pruned model fine-tuned the same epochs from each of ``--ft-seeds`` (mean and
   spread). Accuracy of each pair at equal FPGA latency (goal: the latency-aware model is at least
   as accurate), and the Pareto plot of
   accuracy against FPGA latency and energy (``benchmarks/results/hardware_pareto.png``).
C. An ``ort-latency`` budget measured on this machine: ResNet-20 pruned to half its dense ONNX
   Runtime latency at batch 64, then timed again on its own: the budget holds where it was measured.
Writes benchmarks/results/hardware_budget.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import RESULTS, machine, write_json  # noqa: E402

import cgap_graph as cg  # noqa: E402
from cgap_graph.passes.cgap.budget import budget_prune, measure, ort_latency, parse_budget  # noqa: E402
from cgap_graph.passes.cgap.saliency import saliency  # noqa: E402
from cgap_graph.passes.export import export_onnx, median_run_seconds, session  # noqa: E402
from cgap_graph.passes.fpga.cost import cost_onnx  # noqa: E402
from cgap_graph.passes.fpga.plot import plot_pareto  # noqa: E402
from cgap_graph.run import data  # noqa: E402
from cgap_graph.run.config import TrainConfig  # noqa: E402
from cgap_graph.run.loop import train_run  # noqa: E402


def _session(module, shape, tmp: Path, name: str):
    path = tmp / f"{name}.onnx"
    export_onnx(module, shape, path, check=False)
    return session(path, threads=1)


def _latency(sess, shape, batch: int, runs: int) -> float:
    x = torch.randn(batch, *shape[1:]).numpy()
    return median_run_seconds(sess, {sess.get_inputs()[0].name: x}, runs)


def part_a(names: list[str], repeats: int, runs: int) -> list[dict]:
    rows = []
    for name in names:
        shape = cg.zoo.input_shape(name)
        variants = {}
        dense = cg.trace(cg.zoo.build(name).eval(), shape)
        variants["dense"] = dense
        for r in (1, 8):
            g = cg.trace(cg.zoo.build(name).eval(), shape)
            limit = 0.4 * g.param_count()
            budget_prune(g, saliency(g, mode="magnitude"), parse_budget(f"params={limit:.0f}"), round_to=r)
            variants[f"round_to={r}"] = g
        with tempfile.TemporaryDirectory() as tmp:
            sessions = {k: _session(g.module, shape, Path(tmp), k.replace("=", "")) for k, g in variants.items()}
            lat = {(k, b): [] for k in sessions for b in (1, 64)}
            for _ in range(repeats):  # interleaved: the machine's load touches every variant alike
                for b in (1, 64):
                    for k, s in sessions.items():
                        lat[(k, b)].append(_latency(s, shape, b, runs))
        base_flops = dense.flops()
        for k, g in variants.items():
            row = {"model": name, "variant": k, "params": g.param_count(), "flops": g.flops(),
                   "widths": [grp.width for grp in g.groups], "flop_reduction": base_flops / g.flops()}
            for b in (1, 64):
                row[f"latency_b{b}_ms"] = 1e3 * statistics.median(lat[(k, b)])
                row[f"speedup_b{b}"] = statistics.median(lat[("dense", b)]) / statistics.median(lat[(k, b)])
                row[f"speedup_over_flops_b{b}"] = row[f"speedup_b{b}"] / row["flop_reduction"]
            rows.append(row)
            print(f"{name:9s} {k:12s} params {row['params']:>10,} FLOPs x{row['flop_reduction']:.2f} less: ORT "
                  f"b1 {row['speedup_b1']:.2f}x ({100 * row['speedup_over_flops_b1']:.0f}%), "
                  f"b64 {row['speedup_b64']:.2f}x "
                  f"({100 * row['speedup_over_flops_b64']:.0f}% of the FLOP reduction; goal 70%)", flush=True)
    return rows


def _finetune(module, out: Path, epochs: int, limit: int | None, seed: int = 0) -> float:
    cfg = TrainConfig(epochs=epochs, lr=0.01, f_growth=0, f_pruning=0, train_limit=limit, seed=seed)
    return train_run(module, (1, 1, 28, 28), "mnist", out, cfg, progress=False).test_accuracy


def _finetune_seeds(module, out: Path, args) -> list[float]:
    """Test accuracy after fine-tuning from each of ``--ft-seeds`` (data order and augmentation):
    the first seed trains ``module`` itself, the others a copy."""
    models = [module] + [copy.deepcopy(module) for _ in args.ft_seeds[1:]]  # copies of the pruned model
    return [_finetune(m, out / f"seed{seed}", args.ft_epochs, args.limit, seed)
            for m, seed in zip(models, args.ft_seeds)]


def _pct(accs: list[float]) -> str:
    mean = 100 * statistics.mean(accs)
    return f"{mean:.2f}%" if len(accs) == 1 else f"{mean:.2f} +- {100 * statistics.stdev(accs):.2f}%"


def part_b(args, tmp: Path) -> dict:
    torch.manual_seed(0)
    base_dir = tmp / "baseline"
    cfg = TrainConfig(epochs=args.base_epochs, f_growth=0, f_pruning=0, train_limit=args.limit, seed=0)
    res = train_run(cg.zoo.build("lenet5"), (1, 1, 28, 28), "mnist", base_dir, cfg, progress=False)
    trained = cg.load_model(str(base_dir / "model.pt")).model
    sal_data = data.loader("mnist", "train", 128, limit=args.limit, seed=1, augment=False)
    points, pairs = {"LeNet-5": (res.test_accuracy, None)}, []
    for budget_params in args.params_budgets:
        rows = {}
        for kind in ("params", "fpga-latency"):
            g = cg.trace(trained, (1, 1, 28, 28))
            sal = saliency(g, sal_data, batches=10)
            if kind == "params":
                budget = parse_budget(f"params={budget_params}")
            else:  # the latency the parameter-budgeted model got
                budget = parse_budget(f"fpga-latency={rows['params']['fpga_latency_s']}")
            budget_prune(g, sal, budget)
            accs = _finetune_seeds(g.module, tmp / f"{kind}-{budget_params}", args)
            acc = statistics.mean(accs)
            onnx_path = tmp / f"{kind}-{budget_params}.onnx"
            export_onnx(g.module, (1, 1, 28, 28), onnx_path, check=False)
            report = cost_onnx(onnx_path)
            rows[kind] = {"budget": str(budget), "accuracy": acc, "accuracies": accs, "params": g.param_count(),
                          "flops": g.flops(),
                          "widths": [grp.width for grp in g.groups],
                          "fpga_latency_s": measure(g, parse_budget("fpga-latency=1")),
                          "onnx_fpga_latency_ms": report.totals()["latency_ms"]}
            points[f"{kind.split('-')[-1]} {budget_params // 1000}K"] = (acc, report)
        pairs.append(rows)
        p, lat = rows["params"], rows["fpga-latency"]
        print(f"LeNet-5 at {p['fpga_latency_s'] * 1e6:.2f} us FPGA latency: params budget {budget_params:,} -> "
              f"{_pct(p['accuracies'])} ({p['params']:,} params, widths {p['widths']}), latency budget -> "
              f"{_pct(lat['accuracies'])} ({lat['params']:,} params, widths {lat['widths']})", flush=True)
    dense_onnx = tmp / "dense.onnx"
    export_onnx(trained, (1, 1, 28, 28), dense_onnx, check=False)
    points["LeNet-5"] = (res.test_accuracy, cost_onnx(dense_onnx))
    png = RESULTS / f"hardware_pareto{'_quick' if args.quick else ''}.png"
    plot_pareto(points, png, title="LeNet-5 on MNIST: parameter vs FPGA-latency budgets")
    return {"baseline_accuracy": res.test_accuracy, "pairs": pairs}


def part_c(repeats: int, runs: int, batch: int = 64, fraction: float = 0.5) -> dict:
    """An ``ort-latency`` budget on this machine: ResNet-20 (CIFAR shape, random weights) pruned to
    ``fraction`` of its measured dense latency at ``batch``, then timed again ``repeats`` times on its
    own (the pass stops on its own measurement; the re-measurement says whether that holds)."""
    g = cg.trace(cg.zoo.build("resnet20"), (1, 3, 32, 32))
    dense = ort_latency(g, batch, runs)
    budget = parse_budget(f"ort-latency={1e3 * fraction * dense:.4g}ms@{batch}")
    params, flops = g.param_count(), g.flops()
    t0 = time.perf_counter()
    rep = budget_prune(g, saliency(g, mode="magnitude"), budget)
    seconds = time.perf_counter() - t0
    again = statistics.median(ort_latency(g, batch, runs) for _ in range(repeats))
    row = {"model": "resnet20", "batch": batch, "dense_ms": 1e3 * dense, "budget_ms": 1e3 * budget.limit,
           "pass_measured_ms": 1e3 * rep.after, "remeasured_ms": 1e3 * again, "met": again <= budget.limit,
           "steps": rep.steps, "seconds": seconds, "params": [params, g.param_count()], "flops": [flops, g.flops()]}
    print(f"ResNet-20 at batch {batch}: dense {row['dense_ms']:.2f} ms, budget {row['budget_ms']:.2f} ms -> "
          f"{row['pass_measured_ms']:.2f} ms in {rep.steps} steps ({seconds:.0f} s); timed again "
          f"{row['remeasured_ms']:.2f} ms ({'met' if row['met'] else 'MISSED'}); FLOPs {flops / g.flops():.2f}x fewer",
          flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny runs: checks the script works")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--parts", default="a,b,c", help="which parts to run (a: ORT latency, b: LeNet-5 budgets, "
                   "c: an ort-latency budget); "
                   "a part not run keeps its figures from the previous JSON")
    p.add_argument("--base-epochs", type=int, default=8)
    p.add_argument("--ft-epochs", type=int, default=4)
    p.add_argument("--ft-seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0, 1, 2],
                   help="fine-tuning seeds for part b; accuracies are their mean (default 0,1,2)")
    args = p.parse_args()
    torch.set_num_threads(1)
    args.limit = None
    args.params_budgets = [40000, 15000, 8000]
    runs = 20
    if args.quick:
        args.repeats, args.base_epochs, args.ft_epochs, args.limit, runs = 1, 1, 1, 2000, 3
        args.params_budgets, args.ft_seeds = [40000], args.ft_seeds[:1]
    previous = RESULTS / f"hardware_budget{'_quick' if args.quick else ''}.json"
    kept = json.loads(previous.read_text()) if previous.exists() else {}
    a = part_a(["resnet56", "vgg16"], args.repeats, runs) if "a" in args.parts else kept.get("ort")
    c = part_c(args.repeats, runs) if "c" in args.parts else kept.get("ort_budget")
    with tempfile.TemporaryDirectory() as tmp:
        if "b" not in args.parts:
            b = kept.get("lenet5")
        else:
            b = part_b(args, Path(tmp)) if data.data_root() is not None else {"skipped": "no CGAP_DATA_DIR"}
    result = {"machine": machine(), "ort": a, "lenet5": b, "ort_budget": c}
    print(f"wrote {write_json('hardware_budget', result, args.quick)}")


if __name__ == "__main__":
    main()
