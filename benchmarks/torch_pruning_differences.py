"""Where cgap-graph's channel groups and Torch-Pruning's DependencyGraph disagree, and who is right.

    python benchmarks/torch_pruning_differences.py

For every zoo model and coupling test model, both partitions are reduced to channel atoms
(module, in/out, position) and compared. For models where they disagree, one channel of the
disputed layer is removed with each tool and compared with the masked model (that channel
zeroed in every producer of the tool's own group): a correct removal gives the same outputs.
Writes benchmarks/results/torch_pruning_differences.json.
"""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from common import machine, write_json  # noqa: E402
from coupling_models import MODELS  # noqa: E402
from tp_compare import disagreements, ours, torch_pruning  # noqa: E402

import cgap_graph as cg  # noqa: E402
from cgap_graph import zoo  # noqa: E402
from cgap_graph.verify import make_responsive, masked_vs_shrunk  # noqa: E402

# the layer whose output channel 1 is removed to settle a disagreement
DISPUTED = {"pad_shortcut": "c0", "channel_shuffle": "stem", "hand_attention": "attn.k",
            "fused_qkv_sdpa": "qkv", "shuffle_grouped_v1": "stem", "split_concat": "c2"}


def tp_removal(model: torch.nn.Module, example: torch.Tensor, layer: str) -> str:
    import torch_pruning as tp
    model = copy.deepcopy(model)
    mods = dict(model.named_modules())
    target = mods[layer]
    fn = tp.prune_conv_out_channels if isinstance(target, torch.nn.Conv2d) else tp.prune_linear_out_channels
    try:
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        group = dg.get_pruning_group(target, fn, idxs=[1])
    except Exception as exc:
        return f"fails to build the group ({type(exc).__name__})"
    masked = copy.deepcopy(model)
    mm = dict(masked.named_modules())
    try:
        with torch.no_grad():
            for dep, idxs in group:
                mod = dep.target.module
                if dep.handler.__name__.endswith("out_channels") and mod in mods.values() and hasattr(mod, "weight"):
                    name = next(k for k, v in mods.items() if v is mod)
                    mm[name].weight.index_fill_(0, torch.tensor(idxs), 0.0)
                    if getattr(mm[name], "bias", None) is not None:
                        mm[name].bias.index_fill_(0, torch.tensor(idxs), 0.0)
    except Exception as exc:
        return f"its group holds out-of-range indices ({type(exc).__name__})"
    try:
        group.prune()
        diff = (model(example) - masked(example)).abs().max().item()
    except Exception as exc:
        return f"the pruned model no longer runs ({type(exc).__name__}: {str(exc).splitlines()[0][:60]})"
    return f"runs; |pruned - masked| = {diff:.1e}" + (" (wrong)" if diff > 1e-5 else " (right)")


def ours_removal(model, shape, dtype, layer) -> str:
    g = cg.trace(model, shape, input_dtype=dtype)
    grp = next(gr for gr in g.groups if any(m.target == f"{layer}.weight" and m.role == "produce" for m in gr.members))
    if not grp.prunable:
        return f"group frozen ({grp.frozen})"
    diff = masked_vs_shrunk(model, shape, grp.id, [1], input_dtype=dtype)
    return f"|shrunk - masked| = {diff:.1e}" + (" (right)" if diff <= 1e-5 else " (wrong)")


def main() -> None:
    from rich.console import Console
    from rich.table import Table
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    cases = [(f"zoo:{n}", zoo.build(n).eval(), zoo.input_shape(n), torch.float32) for n in zoo.names()]
    cases += [(n, make_responsive(f()).eval(), s, d) for n, (f, s, d) in MODELS.items()]
    rows = []
    for name, model, shape, dtype in cases:
        example = torch.randn(*shape) if dtype.is_floating_point else torch.randint(0, 8, shape)
        a = ours(cg.trace(model, shape, input_dtype=dtype))
        try:
            b = torch_pruning(model, example)
            dis = disagreements(a, b)
            status = "identical" if set(a) == set(b) and not dis else ("agree on shared atoms" if not dis
                                                                      else f"{len(dis)} disagreement(s)")
        except Exception as exc:
            b, dis, status = {}, [], f"Torch-Pruning fails ({type(exc).__name__})"
        row = {"model": name, "ours_atoms": len(a), "tp_atoms": len(b), "shared": len(set(a) & set(b)),
               "status": status, "disagreements": dis}
        key = name.split(":")[-1]
        if key in DISPUTED and (dis or "fails" in status):
            row["removed_layer"] = DISPUTED[key]
            row["torch_pruning_removal"] = tp_removal(model, example, DISPUTED[key])
            row["cgap_graph_removal"] = ours_removal(model, shape, dtype, DISPUTED[key])
        rows.append(row)
    table = Table(title="channel groups: cgap-graph vs Torch-Pruning", header_style="bold")
    for col in ("model", "atoms (ours/TP/shared)", "partition", "removing channel 1: Torch-Pruning",
                "removing channel 1: cgap-graph"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["model"], f"{r['ours_atoms']}/{r['tp_atoms']}/{r['shared']}", r["status"],
                      r.get("torch_pruning_removal", ""), r.get("cgap_graph_removal", ""))
    Console(width=200).print(table)
    print(f"wrote {write_json('torch_pruning_differences', {'machine': machine(), 'rows': rows})}")


if __name__ == "__main__":
    main()
