"""FPGA cost of structured vs non-structured sparsity, like Fig. 8 of the CGaP paper.

    python benchmarks/fpga_cost.py [--sparsity 0.6]

VGG-16, VGG-19, ResNet-56 and ResNet-110 (32x32 inputs) are costed with passes/fpga_cost.py on
the paper's FPGA setup (16-bit, 512-bit DRAM words, 300 MHz, 19.2 GB/s; the rest: docs/fpga_cost.md):

- dense: the zoo model;
- non-structured: the ``--sparsity`` fraction of smallest-|w| weights of every Conv and Linear
  layer (the first and the last included) set to zero, costed with ``--unstructured`` (zero
  weights stored as the accelerator can exploit them: all-zero DRAM words skipped);
- non-structured, CSR: the same model with weights stored as value + 4-bit index (an optimistic
  compressed format the paper's accelerator does not have); table and JSON only;
- structured: units removed with ``prune_units`` (magnitude saliency) at the unit rate that, found
  by bisection, removes the same fraction of the model's parameters.

Which units or weights go does not matter here: the cost depends only on the widths and on where
the zeros are. Writes benchmarks/results/fpga_cost.json and the chart benchmarks/results/fpga_cost.png.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import RESULTS, machine, write_json  # noqa: E402

from cgap_graph import zoo  # noqa: E402
from cgap_graph.ir.graph import trace  # noqa: E402
from cgap_graph.passes.cgap.prune import prune_units  # noqa: E402
from cgap_graph.passes.cgap.saliency import saliency  # noqa: E402
from cgap_graph.passes.export import export_onnx  # noqa: E402
from cgap_graph.passes.fpga.config import HwConfig  # noqa: E402
from cgap_graph.passes.fpga.cost import CostReport, cost_onnx, plot_compare  # noqa: E402

MODELS = [("vgg16", "VGG-16"), ("vgg19", "VGG-19"), ("resnet56", "ResNet-56"), ("resnet110", "ResNet-110")]
SHAPE = (1, 3, 32, 32)
SCHEMES = ["dense", "non-structured", "structured (CGaP)"]
CSR = "non-structured, CSR"
METRICS = [("buffer_energy_pj", "buffer energy (uJ)", 1e-6), ("dram_energy_pj", "DRAM energy (uJ)", 1e-6),
           ("latency_ms", "latency (ms)", 1.0)]


def to_onnx(model: torch.nn.Module, path: Path) -> None:
    """Export with a dynamic batch axis (the legacy exporter: ~10x faster than dynamo here)."""
    export_onnx(model, SHAPE, path, check=False, exporter="legacy", shrink=False)


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def magnitude_zeroed(model: torch.nn.Module, sparsity: float) -> torch.nn.Module:
    """Zero the ``sparsity`` fraction of smallest-|w| weights of every Conv and Linear layer."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            w = m.weight.view(-1)
            w[torch.argsort(w.abs(), stable=True)[: int(sparsity * w.numel())]] = 0.0
    return model


def shrunk_to(name: str, target: float, steps: int = 14) -> tuple[torch.nn.Module, float]:
    """The model with units removed at the unit rate (bisection) whose parameter reduction is nearest ``target``."""
    base = params(zoo.build(name))

    def shrink(rate: float):
        torch.manual_seed(0)
        cg = trace(zoo.build(name).eval(), SHAPE)
        prune_units(cg, saliency(cg, None, mode="magnitude"), rate)
        return cg.module.eval(), 1 - cg.param_count() / base

    lo, hi = 0.0, 0.95
    best = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        model, reduction = shrink(mid)
        if best is None or abs(reduction - target) < abs(best[1] - target):
            best = (model, reduction, mid)
        if reduction < target:
            lo = mid
        else:
            hi = mid
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.6, help="fraction of weights / parameters removed")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    warnings.filterwarnings("ignore")
    torch.set_grad_enabled(False)
    cfg = HwConfig()
    csr_cfg = HwConfig(sparse_format="csr")
    reports: dict[str, dict[str, CostReport]] = {}
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, label in MODELS:
            torch.manual_seed(0)
            dense = zoo.build(name).eval()
            small, reduction = shrunk_to(name, args.sparsity)
            sparse = magnitude_zeroed(zoo.build(name).eval(), args.sparsity)
            paths = {s: Path(tmp) / f"{name}-{i}.onnx" for i, s in enumerate(SCHEMES)}
            for scheme, model in zip(SCHEMES, (dense, sparse, small)):
                to_onnx(model, paths[scheme])
            reports[label] = {
                "dense": cost_onnx(paths["dense"], cfg, name=f"{label} dense"),
                "non-structured": cost_onnx(paths["non-structured"], cfg, sparsity_mode="unstructured",
                                            name=f"{label} non-structured"),
                "structured (CGaP)": cost_onnx(paths["structured (CGaP)"], cfg, name=f"{label} structured"),
            }
            csr = cost_onnx(paths["non-structured"], csr_cfg, sparsity_mode="unstructured", name=f"{label} CSR")
            nonzero = sum(int((m.weight != 0).sum()) for m in sparse.modules()
                          if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
            base = reports[label]["dense"].totals()
            for scheme, report in [*reports[label].items(), (CSR, csr)]:
                t = report.totals()
                row = {"model": label, "zoo": name, "scheme": scheme,
                       "params": params(small) if scheme.startswith("structured") else params(dense),
                       "macs": t["macs"], "dram_bytes": t["dram_bytes"], "compute_cycles": t["compute_cycles"],
                       "latency_cycles": t["latency_cycles"]}
                if scheme.startswith("non-structured"):
                    row["nonzero_conv_linear_weights"] = nonzero
                if scheme.startswith("structured"):
                    row["parameter_reduction"] = reduction
                for key, _, _ in METRICS:
                    row[key] = t[key]
                    row[f"{key}_change_pct"] = 100 * (t[key] / base[key] - 1)
                rows.append(row)
    seconds = time.perf_counter() - t0

    table = Table(title=f"FPGA cost, {args.sparsity:.0%} sparsity (change vs dense)", header_style="bold")
    for col in ("model", "scheme", "params", "MMACs", *[m[1] for m in METRICS]):
        table.add_column(col, justify="left" if col in ("model", "scheme") else "right")
    for r in rows:
        cells = []
        for key, _, scale in METRICS:
            pct = r[f"{key}_change_pct"]
            cells.append(f"{r[key] * scale:,.3f}" + ("" if r["scheme"] == "dense" else f" ({pct:+.1f}%)"))
        table.add_row(r["model"], r["scheme"], f"{r['params'] / 1e6:.2f}M", f"{r['macs'] / 1e6:,.1f}", *cells)
    Console(width=150).print(table)
    png = plot_compare(reports, RESULTS / "fpga_cost.png",
                       title=f"FPGA performance model: dense vs {args.sparsity:.0%} non-structured vs structured")
    path = write_json("fpga_cost", {
        "machine": machine(), "seconds": seconds, "sparsity": args.sparsity, "config": cfg.to_dict(),
        "schemes": {
            "dense": "zoo model, random weights",
            "non-structured": "smallest-|w| weights of every Conv/Linear zeroed, --unstructured, zero-bursts format",
            CSR: "same zeros, weights stored as value + 4-bit relative index (optimistic)",
            "structured (CGaP)": "units removed by prune_units (magnitude) at the rate that removes the same "
                                 "fraction of parameters",
        },
        "rows": rows,
    })
    print(f"wrote {path} and {png} in {seconds:.0f} s")


if __name__ == "__main__":
    main()
