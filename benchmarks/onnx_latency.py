"""ONNX Runtime CPU latency before and after CGaP, against the FLOP reduction (issue #5).

    python benchmarks/onnx_latency.py [--cgap runs/table1/cgap/model.pt] [--zoo vgg16 resnet56] [--repeats 50]

- LeNet-5: the baseline against the model a CGaP run produced (``--cgap``, by default the Table I
  run of ``benchmarks/table1_lenet5_mnist.py`` if it exists);
- zoo CIFAR models: the dense model against the same model with ``--prune`` of its parameters
  removed by the structural prune pass (magnitude saliency, rate found by bisection). Latency
  depends on the widths, not on the weight values, so this stands in for a CGaP run we cannot
  afford on a CPU (200 epochs on CIFAR-10).

Each model is exported with ``passes.export`` (checked against PyTorch), then timed in ONNX Runtime
(CPU, default threads) at batch 1 and 64: median of ``--repeats`` runs after warm-up. Prints the
speed-up next to the FLOP reduction and writes benchmarks/results/onnx_latency.json.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine, write_json  # noqa: E402

import cgap_graph as cg  # noqa: E402
from cgap_graph import zoo  # noqa: E402
from cgap_graph.ir.graph import trace  # noqa: E402
from cgap_graph.passes.cgap.prune import prune_units  # noqa: E402
from cgap_graph.passes.cgap.saliency import saliency  # noqa: E402
from cgap_graph.passes.export import export_onnx, median_run_seconds, session  # noqa: E402

BATCHES = (1, 64)


def ort_latency(path: Path, shape: tuple[int, ...], batch: int, repeats: int) -> float:
    """Median seconds of one ONNX Runtime call on a batch."""
    sess = session(path)
    x = np.random.default_rng(0).standard_normal((batch, *shape[1:])).astype(np.float32)
    return median_run_seconds(sess, {sess.get_inputs()[0].name: x}, repeats, warmup=max(3, repeats // 10))


def pruned_to(model: torch.nn.Module, shape: tuple[int, ...], fraction: float):
    """The model with about ``fraction`` of its parameters removed by the unit prune pass."""
    full = trace(model, shape).param_count()
    lo, hi = 0.0, 0.95
    best = None
    for _ in range(12):
        rate = (lo + hi) / 2
        g = trace(copy.deepcopy(model), shape)
        prune_units(g, saliency(g, None, mode="magnitude"), rate)
        removed = 1 - g.param_count() / full
        best = (g, rate, removed)
        if abs(removed - fraction) < 0.01:
            break
        lo, hi = (rate, hi) if removed < fraction else (lo, rate)
    return best


def measure(name: str, before, after, shape, repeats: int, note: str) -> dict:
    row = {"model": name, "note": note}
    with tempfile.TemporaryDirectory() as tmp:
        for tag, m in (("before", before), ("after", after)):
            g = m if isinstance(m, cg.ChannelGraph) else trace(m, shape)
            path = Path(tmp) / f"{tag}.onnx"
            rep = export_onnx(g, None, path)
            row[tag] = {"params": g.param_count(), "flops": g.flops(), "widths": rep.widths,
                        "onnx_max_diff": rep.max_abs_diff,
                        "latency_ms": {b: 1e3 * ort_latency(path, shape, b, repeats) for b in BATCHES}}
    row["flop_reduction"] = row["before"]["flops"] / row["after"]["flops"]
    row["speedup"] = {b: row["before"]["latency_ms"][b] / row["after"]["latency_ms"][b] for b in BATCHES}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cgap", type=Path, default=ROOT / "runs" / "table1" / "cgap" / "model.pt",
                   help="a LeNet-5 model produced by CGaP (skipped if missing)")
    p.add_argument("--zoo", nargs="*", default=["vgg16", "resnet56"])
    p.add_argument("--prune", type=float, default=0.6, help="fraction of parameters removed from zoo models")
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    torch.manual_seed(0)
    rows = []
    if args.cgap.exists():
        after = cg.load_model(str(args.cgap))
        rows.append(measure("lenet5", zoo.build("lenet5"), after.model, (1, 1, 28, 28), args.repeats,
                            f"CGaP run {args.cgap}"))
    else:
        print(f"no CGaP LeNet-5 at {args.cgap}: run benchmarks/table1_lenet5_mnist.py, or pass --cgap")
    for name in args.zoo:
        shape = zoo.ZOO[name].input_shape
        model = zoo.build(name).eval()
        g, rate, removed = pruned_to(model, shape, args.prune)
        rows.append(measure(name, model, g, shape, args.repeats,
                            f"prune pass, {100 * removed:.0f}% of parameters removed (unit rate {rate:.2f})"))
    from rich.console import Console
    from rich.table import Table
    table = Table(title="ONNX Runtime CPU latency, before -> after", header_style="bold")
    for col in ("model", "params", "FLOPs", "FLOP reduction", "batch 1 (ms)", "speed-up", "batch 64 (ms)",
                "speed-up", "what"):
        table.add_column(col, justify="left" if col in ("model", "what") else "right")
    for r in rows:
        b, a = r["before"], r["after"]
        table.add_row(r["model"], f"{b['params'] / 1e6:.3f}M -> {a['params'] / 1e6:.3f}M",
                      f"{b['flops'] / 1e6:.1f}M -> {a['flops'] / 1e6:.1f}M", f"{r['flop_reduction']:.2f}x",
                      f"{b['latency_ms'][1]:.3f} -> {a['latency_ms'][1]:.3f}", f"{r['speedup'][1]:.2f}x",
                      f"{b['latency_ms'][64]:.2f} -> {a['latency_ms'][64]:.2f}", f"{r['speedup'][64]:.2f}x", r["note"])
    Console(width=200).print(table)
    print(f"wrote {write_json('onnx_latency', {'machine': machine(), 'repeats': args.repeats, 'rows': rows})}")


if __name__ == "__main__":
    main()
