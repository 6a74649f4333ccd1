"""Swin-T coverage (issue 16): the fraction of its conv/linear output channels that lie in
resizable groups, and whether pruning half of every prunable group shrinks to a working model
that matches the masked one on the groups reported exact.

A channel of a Linear whose output is a product (fused qkv: 3 x heads x head_dim) counts as
resizable when every factor is, except a stacked axis that is unbound by integer index
(``qkv[0]``: the 3 is frozen by design, it is not a width).

    python benchmarks/swin_coverage.py [--model swin_t] [--size 224] [--no-prune]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
from torch import nn
from tv import import_torchvision

import cgap_graph as cg
from cgap_graph.surgery import apply_selection, mask_channels
from cgap_graph.verify import randomize_norm_stats
from cgap_graph.verify.inputs import output_tensor, random_inputs

STACKED = "a single channel is selected by index"


def resizable_fraction(g, model: nn.Module) -> tuple[int, int]:
    """(channels in resizable groups, all channels) over conv/linear output dimensions."""
    t = g.an.t
    res = tot = 0
    for s in g.an.slots.values():
        mod_path, _, name = s.key.rpartition(".")
        try:
            mod = model.get_submodule(mod_path)
        except AttributeError:
            continue
        if not isinstance(mod, (nn.Linear, nn.Conv2d)) or name != "weight" or s.dim != 0:
            continue
        n = t.width(s.expr)
        tot += n
        groups = [g.group_of_space(leaf) for leaf in t.leaves(s.expr)]
        widths = [grp for grp in groups if STACKED not in (grp.frozen or "")]
        if widths and all(grp.resizable for grp in widths):
            res += n
    return res, tot


@torch.no_grad()
def prune_half(model: nn.Module, shape) -> dict:
    """Mask half of every prunable group in one copy, remove it in another, compare outputs."""
    masked, shrunk = cg.trace(model, shape), cg.trace(model, shape)
    rng = np.random.default_rng(0)
    drop = {grp.id: rng.choice(grp.width, grp.width // 2, replace=False) for grp in masked.groups
            if grp.prunable and not grp.prune_notes}
    mask_channels(masked, drop)
    keep = {gid: [i for i in range(masked.group(gid).width) if i not in set(d.tolist())] for gid, d in drop.items()}
    apply_selection(shrunk, keep)
    x = random_inputs(masked)
    ref, out = output_tensor(masked.module.eval()(*x)), output_tensor(shrunk.module.eval()(*x))
    return {"groups_pruned": len(drop), "params_before": masked.param_count(), "params_after": shrunk.param_count(),
            "masked_vs_shrunk_rel": float((ref - out).abs().max() / ref.abs().max())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="swin_t")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--no-prune", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    tv = import_torchvision()
    if tv is None:
        print("torchvision is not installed (pip install --no-deps torchvision==0.28.0)", file=sys.stderr)
        return 2
    model = randomize_norm_stats(getattr(tv.models, a.model)()).eval()
    shape = (1, 3, a.size, a.size)
    g = cg.trace(model, shape)
    res, tot = resizable_fraction(g, model)
    out = {"model": a.model, "groups": len(g.groups), "resizable_groups": len(g.resizable_groups()),
           "resizable_channels": res, "channels": tot, "fraction": round(res / tot, 4)}
    if not a.no_prune:
        out.update(prune_half(model, shape))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
