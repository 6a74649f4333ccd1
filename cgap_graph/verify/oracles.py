"""Oracles 1 and 2 of the design notes.

- :func:`masked_vs_shrunk`: zeroing channels across a group and removing them give the same
  outputs (for groups normalised by LayerNorm/RMSNorm/GroupNorm, module or functional, the masked
  reference computes those statistics over the kept channels only, which is what removal means:
  see ``kept_stats.py``).
- :func:`preserve_growth_diff`: duplicating channels with the ``preserve`` initialiser leaves
  outputs unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cgap_graph.ir.graph import trace
from cgap_graph.surgery import apply_selection, mask_channels
from cgap_graph.verify.inputs import output_tensor, random_inputs
from cgap_graph.verify.kept_stats import KeptStatsInterpreter

_MaskedStatsInterpreter = KeptStatsInterpreter  # the old name


@torch.no_grad()
def masked_vs_shrunk(model: nn.Module, input_shape: Sequence[int], gid: int, drop: Sequence[int],
                     inputs: Sequence[torch.Tensor] | None = None, **trace_kw: Any) -> float:
    """Max |masked - shrunk| over the outputs, removing channels ``drop`` of group ``gid``."""
    masked = trace(model, input_shape, **trace_kw)
    shrunk = trace(model, input_shape, **trace_kw)
    inputs = list(inputs) if inputs is not None else random_inputs(masked)
    g = masked.group(gid)
    drop = np.asarray(sorted(set(int(i) for i in drop)), dtype=np.int64)
    mask_channels(masked, {gid: drop})
    masked.module.eval()
    ref = KeptStatsInterpreter(masked, {g.space: drop}).run(*inputs)
    keep = [i for i in range(g.width) if i not in set(drop.tolist())]
    apply_selection(shrunk, {gid: keep})
    shrunk.module.eval()
    out = shrunk.module(*inputs)
    return float((output_tensor(ref) - output_tensor(out)).abs().max())


@torch.no_grad()
def preserve_growth_diff(model: nn.Module, input_shape: Sequence[int], selections: Mapping[int, Sequence[int]],
                         inputs: Sequence[torch.Tensor] | None = None, **trace_kw: Any) -> float:
    """Max |grown - original| with the ``preserve`` initialiser."""
    cg = trace(model, input_shape, **trace_kw)
    inputs = list(inputs) if inputs is not None else random_inputs(cg)
    ref = output_tensor(model(*inputs))
    apply_selection(cg, selections, "preserve")
    cg.module.eval()
    return float((output_tensor(cg.module(*inputs)) - ref).abs().max())

