"""Small-World pruning, step 3: optimise the trained masked network.

1. remove the units the masks left dead (``small_world_dead``): outputs unchanged;
2. prune the lowest-saliency connections: in every masked layer, ``rate`` of its kept mask
   entries go, lowest first, scored by Taylor ``|dL/dw * w|`` (or ``|w|``) summed over the entry's
   kernel, so the sparsity stays kernel-level. An output unit's last connection is never pruned
   (that would be structured pruning by the back door); excluded layers stay dense;
3. remove the units step 2 left dead (e.g. a neuron whose every reader column went).

Fine-tuning with the new masks kept is the caller's job (``cgap_graph.small_world_train``).

``kept_params`` is what "parameters kept" means everywhere in the Small-World tools: the nonzero
entries of every Conv/Linear weight, plus every other parameter entry (biases, norm parameters)
whether zero or not, of the model as it is (after shrinking, only the surviving units).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cgap_graph.errors import CgapError
from cgap_graph.ir.graph import ChannelGraph
from cgap_graph.passes.cgap.saliency import weight_scores
from cgap_graph.passes.cgap.seed import group_key
from cgap_graph.passes.small_world import apply_masks, mask_weights
from cgap_graph.passes.small_world.dead import DeadReport, remove_dead_units
from cgap_graph.passes.small_world.layers import MASKABLE
from cgap_graph.passes.small_world.topology import check_probability
from cgap_graph.verify import random_inputs


@dataclass
class OptimiseReport:
    params_before: int  # kept_params of the trained masked model
    params_after: int
    dead_before_pruning: DeadReport
    dead_after_pruning: DeadReport
    pruned: dict[str, int] = field(default_factory=dict)  # layer -> mask entries pruned
    max_abs_diff: float = 0.0  # outputs of the masked vs the shrunk model (dead-unit removal only)
    widths: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"params_before": self.params_before, "params_after": self.params_after, "pruned": self.pruned,
                "removed_dead": self.dead_before_pruning.removed,
                "removed_after_pruning": self.dead_after_pruning.removed,
                "dead_kept_unfoldable": {**self.dead_before_pruning.kept_unfoldable,
                                         **self.dead_after_pruning.kept_unfoldable},
                "notes": self.dead_before_pruning.notes + self.dead_after_pruning.notes,
                "dead_removal_max_abs_diff": self.max_abs_diff, "widths": self.widths}


def kept_params(model: nn.Module) -> int:
    """Nonzero Conv/Linear weights + all other parameter entries (see module docstring)."""
    total = 0
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            total += int(torch.count_nonzero(p)) if isinstance(mod, MASKABLE) and name == "weight" else p.numel()
    return total


def entry_scores(weight_score: torch.Tensor) -> torch.Tensor:
    """Score of each mask entry: the weight scores summed over its kernel."""
    return weight_score.flatten(2).sum(2) if weight_score.dim() > 2 else weight_score


@torch.no_grad()
def prune_connections(model: nn.Module, masks: Mapping[str, torch.Tensor], scores: Mapping[str, torch.Tensor],
                      rate: float) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Drop ``rate`` of every mask's kept entries, lowest score first, never an output's last one;
    zero their weights. Returns the new masks and the entries pruned per layer."""
    rate = check_probability("prune_rate", rate)
    new, pruned = {}, {}
    for name, mask in masks.items():
        score = entry_scores(scores[name]).detach().cpu().double()
        kept = mask.clone()
        target = int(rate * int(kept.sum()))
        row_left = kept.sum(1).numpy().copy()
        rows, cols = (t.numpy() for t in torch.nonzero(kept, as_tuple=True))
        order = np.argsort(score.numpy()[rows, cols], kind="stable")
        drop = []
        for i in order:
            if len(drop) >= target:
                break
            if row_left[rows[i]] > 1:
                row_left[rows[i]] -= 1
                drop.append(i)
        kept[torch.as_tensor(rows[drop], dtype=torch.int64), torch.as_tensor(cols[drop], dtype=torch.int64)] = False
        done = len(drop)
        new[name], pruned[name] = kept, done
    apply_masks(model, new)
    return new, pruned


def _outputs(cg: ChannelGraph) -> torch.Tensor:
    gm = cg.module
    was = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            out = gm(*random_inputs(cg, batch=8, seed=0))
    finally:
        gm.train(was)
    return out if isinstance(out, torch.Tensor) else out[0]


def optimise(cg: ChannelGraph, masks: Mapping[str, torch.Tensor], *, rate: float = 0.3,
             data: Iterable | None = None, saliency: str = "taylor", batches: int = 10
             ) -> tuple[dict[str, torch.Tensor], OptimiseReport]:
    """Steps 1-3 of the module docstring, in place on ``cg.module``; returns the new masks."""
    if saliency not in ("taylor", "magnitude"):
        raise CgapError(f"saliency must be taylor or magnitude, got '{saliency}'")
    if saliency == "taylor" and data is None:
        raise CgapError("Taylor saliency needs data (a loader of training batches) or saliency='magnitude'")
    gm = cg.module
    apply_masks(gm, masks)
    before = kept_params(gm)
    reference = _outputs(cg)
    masks, dead1 = remove_dead_units(cg, masks)
    diff = float((_outputs(cg) - reference).abs().max())
    pruned: dict[str, int] = {}
    if rate > 0:
        sal = weight_scores(cg, data, mode=saliency, batches=batches)
        scores = {name: sal.weights[f"{name}.weight"] for name in mask_weights(gm, masks)}
        masks, pruned = prune_connections(gm, masks, scores, rate)
    masks, dead2 = remove_dead_units(cg, masks)
    widths = {group_key(g).removesuffix(".weight[0]"): g.width for g in cg.groups}
    return masks, OptimiseReport(before, kept_params(gm), dead1, dead2, pruned, diff, widths)
