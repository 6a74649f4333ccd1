"""Trace + channel analysis time, cgap-graph vs Torch-Pruning's DependencyGraph build.

    python benchmarks/analysis_speed.py [--repeats 7]

Both produce the coupled channel groups of a model from an example input: cgap-graph by tracing
with static shape rules (no FLOPs), Torch-Pruning by running a real forward pass and walking its
autograd graph; its groups then need ``get_all_groups()``. Times are medians with garbage
collection before each run. Speed-ups are Torch-Pruning's time over ours, against its build step
alone (the goal as written: >= 5x) and against build + groups (the same output ``trace`` gives).
Writes benchmarks/results/analysis_speed.json.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, median_seconds, write_json  # noqa: E402

import cgap_graph as cg
from cgap_graph import zoo  # noqa: E402

MODELS = [
    ("resnet110", 1.0, "ResNet-110 (CIFAR)"),
    ("vgg19", 1.0, "VGG-19 (32x32, BN)"),
    ("densenet", 1.0, "DenseNet-BC-like"),
    ("vgg19", 2.5, "VGG-19 x2.5 wide (>100M params)"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    import torch_pruning as tp
    from rich.console import Console
    from rich.table import Table

    warnings.filterwarnings("ignore")
    torch.set_grad_enabled(True)
    rows = []
    for name, width, label in MODELS:
        model = zoo.build(name, width=width).eval()
        shape = zoo.input_shape(name)
        example = torch.randn(*shape)
        params = sum(p.numel() for p in model.parameters())

        def ours():
            return cg.trace(model, shape)

        def theirs():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example)

        def theirs_groups():
            dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
            return list(dg.get_all_groups(root_module_types=[torch.nn.Conv2d, torch.nn.Linear]))

        ours(), theirs()  # warm up both (imports, allocator)
        t_ours, all_ours = median_seconds(ours, args.repeats)
        t_tp, all_tp = median_seconds(theirs, args.repeats)
        t_tp_groups, _ = median_seconds(theirs_groups, max(3, args.repeats // 2))
        n_groups = len(ours().groups)
        rows.append({"model": label, "zoo": name, "width": width, "params": params, "groups": n_groups,
                     "ours_ms": t_ours * 1e3, "torch_pruning_build_ms": t_tp * 1e3,
                     "torch_pruning_build_and_groups_ms": t_tp_groups * 1e3,
                     "speedup_vs_build": t_tp / t_ours, "speedup_vs_build_and_groups": t_tp_groups / t_ours,
                     "ours_runs_ms": [t * 1e3 for t in all_ours], "torch_pruning_runs_ms": [t * 1e3 for t in all_tp]})
    table = Table(title="trace + analysis (median ms)", header_style="bold")
    for col in ("model", "params", "groups", "cgap-graph", "TP build", "TP build+groups", "x vs build",
                "x vs build+groups"):
        table.add_column(col, justify="left" if col == "model" else "right")

    def mark(x: float) -> str:
        return f"[green]{x:.1f}x[/green]" if x >= 5 else f"[red]{x:.1f}x[/red]"

    for r in rows:
        table.add_row(r["model"], f"{r['params'] / 1e6:.1f}M", str(r["groups"]), f"{r['ours_ms']:.1f}",
                      f"{r['torch_pruning_build_ms']:.1f}", f"{r['torch_pruning_build_and_groups_ms']:.1f}",
                      mark(r["speedup_vs_build"]), mark(r["speedup_vs_build_and_groups"]))
    Console(width=150).print(table)
    path = write_json("analysis_speed", {"machine": machine(), "repeats": args.repeats, "rows": rows,
                                         "speedup_is": "Torch-Pruning DependencyGraph.build_dependency time / "
                                                       "cgap_graph.trace time"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
