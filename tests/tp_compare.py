"""Compare our channel groups with Torch-Pruning's DependencyGraph groups.

Both sides become sets of channel atoms ``(module, "in"|"out", position)``; two partitions agree
when, on the atoms both know, every one of our groups lies in exactly one Torch-Pruning group
and vice versa.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

import cgap_graph as cg

_LAYERS = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
           nn.Embedding)


def ours(g: cg.ChannelGraph) -> dict[tuple, int]:
    t = g.an.t
    root = g.traced.root
    atoms: dict[tuple, int] = {}
    for grp in g.groups:
        for slot in g.an.slots.values():
            mod_name, _, pname = slot.key.rpartition(".")
            if pname != "weight":
                continue
            try:
                mod = root.get_submodule(mod_name)
            except AttributeError:
                continue
            if not isinstance(mod, _LAYERS):
                continue
            ids = t.unit_ids(slot.expr, grp.space)
            transposed = isinstance(mod, nn.modules.conv._ConvNd) and mod.transposed
            if isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
                side = "out"
            elif isinstance(mod, nn.Embedding):
                side = "out"
            else:
                side = "out" if (slot.dim == 0) != transposed else "in"
            for pos in (ids >= 0).nonzero()[0]:
                atoms[(mod_name, side, int(pos))] = grp.id
    return atoms


def torch_pruning(model: nn.Module, example: torch.Tensor) -> dict[tuple, int]:
    import torch_pruning as tp
    names = {m: n for n, m in model.named_modules()}
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    atoms: dict[tuple, int] = {}
    for gi, group in enumerate(dg.get_all_groups(root_module_types=[nn.modules.conv._ConvNd, nn.Linear])):
        for dep, idxs in group:
            mod = dep.target.module
            if not isinstance(mod, _LAYERS) or mod not in names:
                continue
            side = "out" if dep.handler.__name__.endswith("out_channels") else "in"
            for i in idxs:
                atoms.setdefault((names[mod], side, int(i)), gi)
    return atoms


def disagreements(a: dict[tuple, int], b: dict[tuple, int]) -> list[str]:
    common = set(a) & set(b)
    out = []
    for left, right, lname, rname in ((a, b, "ours", "torch-pruning"), (b, a, "torch-pruning", "ours")):
        cover = defaultdict(set)
        for atom in common:
            cover[left[atom]].add(right[atom])
        for gid, others in cover.items():
            if len(others) > 1:
                example = sorted(at for at in common if left[at] == gid)[:3]
                out.append(f"{lname} group {gid} spans {len(others)} {rname} groups (e.g. {example})")
    return out
