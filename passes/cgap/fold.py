"""Folding removed units' constant outputs into their readers' biases (Alg. 3 made exact).

A unit whose filters are zeroed outputs a constant (its bias, carried through norms and
activations); removing the channel would drop that constant from every reader, so it is added to
the reader's bias first. The constants come from the graph (``dead_constants.py``) and, for what
the graph cannot prove, from one probe forward."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from cgap_graph.ir.analysis import Slot
from cgap_graph.ir.graph import ChannelGraph
from cgap_graph.passes.cgap.dead_constants import NOT_CONSTANT, PRODUCERS, DeadConstants
from cgap_graph.passes.cgap.saliency import weight_slots
from cgap_graph.surgery.masking import dropped_positions
from cgap_graph.verify import random_inputs

if TYPE_CHECKING:  # prune.py calls this module
    from cgap_graph.passes.cgap.prune import PruneReport

PROBE_SIZE = 32  # spatial size of the folding probe where the model accepts it


def reader_inputs(cg: ChannelGraph) -> dict[str, torch.Tensor]:
    """Inputs of every call_module reader on a random probe batch (eval mode).

    A removed unit's value is a constant that per-channel ops (norms, activations, pooling,
    adds) carry unchanged at any resolution, so the probe runs at a small spatial size when the
    model accepts one (a fixed-size flatten or position embedding does not: then at full size).
    Channels that are not constant at the small size are not constant at the full one either.
    At full size one sample is enough (a constant channel is constant over every position of
    it), which halves the probe of a ViT, where the position embedding fixes the size. The
    probe runs the compiled module with pre-hooks on the called layers (cheaper than an
    ``fx.Interpreter``); eval mode is set and put back flag by flag, as each layer had it."""
    gm = cg.module
    seen: dict[str, torch.Tensor] = {}
    dev = next((p.device for p in gm.parameters()), torch.device("cpu"))  # probe where the model is (CUDA)
    small = [t.to(dev) for t in random_inputs(cg, batch=2, seed=123, spatial=PROBE_SIZE)]

    def record(target: str):
        def hook(_mod, args):
            if args and isinstance(args[0], torch.Tensor):
                seen[target] = args[0]
        return hook

    targets = dict.fromkeys(n.target for n in cg.graph.nodes if n.op == "call_module")
    hooks = [gm.get_submodule(t).register_forward_pre_hook(record(t)) for t in targets]
    flags = [(m, m.training) for m in gm.modules()]
    for m, _ in flags:
        m.training = False
    try:
        if any(x.shape[1:] != tuple(spec.shape[1:]) for x, spec in zip(small, cg.input_specs)):
            try:
                gm.forward(*small)  # not gm(...): fx's wrapper prints the generated code on errors
                return seen
            except Exception:  # the model needs its own input size
                seen.clear()
        gm.forward(*[t.to(dev) for t in random_inputs(cg, batch=1, seed=123)])
    finally:
        for h in hooks:
            h.remove()
        for m, was in flags:
            m.training = was
    return seen


@torch.no_grad()
def fold_constants(cg: ChannelGraph, dead: dict[int, list[int]], report: PruneReport,
                    zeroed: dict[str, np.ndarray] | None = None, before_probe: Callable[[], object] | None = None
                    ) -> None:
    """Every reader's input at the removed channels, from the graph where it proves the values
    constant (``dead_constants.py``, told which filter rows are zero by ``zeroed``), from one
    probe forward for the rest (``before_probe`` zeroes the filters it reads); then fold."""
    readers = [s for s in weight_slots(cg) if s.role == "consume"]
    found = list(dropped_positions(cg, readers, cg.dead_by_space(dead)))
    known = DeadConstants(cg, zeroed)
    inputs: dict[str, object] = {}
    at: dict[str, np.ndarray] = {}
    for s, pos in found:
        mod_path = s.key.rpartition(".")[0]
        if mod_path not in inputs:
            inputs[mod_path], at[mod_path] = known.reader_input(mod_path, pos), pos
        elif not np.array_equal(at[mod_path], pos):
            inputs[mod_path] = None  # the stand-in holds one slot's positions only: probe it
    unknown = any(v is None and known.reads_from_call(k) for k, v in inputs.items())
    if unknown:
        if before_probe is not None:
            before_probe()
        probed = reader_inputs(cg)
        inputs = {k: probed.get(k) if v is None else v for k, v in inputs.items()}
    for s, pos in found:
        _fold_one(cg, s, pos, inputs, report)


def _fold_one(cg: ChannelGraph, s: Slot, pos: np.ndarray, inputs: dict, report: PruneReport) -> None:
    """Fold the constant that removed channels ``pos`` feed a reader into its bias, if exact."""
    gm = cg.module
    mod_path, _, pname = s.key.rpartition(".")
    mod = gm.get_submodule(mod_path) if mod_path else None
    x = inputs.get(mod_path)
    if x is NOT_CONSTANT:
        report.not_folded.append(f"{s.key}: the removed channels are not constant there")
        return
    if not isinstance(mod, PRODUCERS) or pname != "weight" or x is None:
        report.not_folded.append(f"{s.key}: reader is not a Linear/Conv module")
        return
    cdim = x.dim() - 1 if isinstance(mod, nn.Linear) else x.dim() - len(mod.kernel_size) - 1
    idx = torch.as_tensor(pos, device=x.device)
    vals = x.movedim(cdim, 0)[idx].reshape(len(pos), -1)
    c = vals[:, 0]
    if (vals.max(1).values - vals.min(1).values).abs().max() > 1e-6 * (1 + c.abs().max()):
        report.not_folded.append(f"{s.key}: the removed channels are not constant there")
        return
    if c.abs().max() == 0:
        return
    if isinstance(mod, nn.Linear):
        contrib = mod.weight[:, idx] @ c
    else:
        if mod.groups != 1 or any(p != 0 for p in _padding(mod)):
            report.not_folded.append(
                f"{mod_path}: a constant of up to {float(c.abs().max()):.3g} from removed channels cannot be "
                "folded exactly into a padded or grouped convolution")
            return
        contrib = (mod.weight[:, idx] * c.view(1, -1, *([1] * len(mod.kernel_size)))
                   ).flatten(1).sum(1)
    _ensure_bias(cg, mod_path, s)
    mod.bias += contrib
    report.folded.append(f"{mod_path}: folded {len(pos)} constant input(s) into the bias")


def _padding(mod) -> tuple:
    p = mod.padding
    if isinstance(p, str):
        return (0,) if p == "valid" else (1,)
    return tuple(p) if isinstance(p, (tuple, list)) else (p,)


def _ensure_bias(cg: ChannelGraph, mod_path: str, weight_slot: Slot) -> None:
    """Give a reader a bias (zeros) so a constant can be folded, and register its slot."""
    gm = cg.module
    mod = gm.get_submodule(mod_path)
    if mod.bias is not None:
        return
    out_dim = 0 if not getattr(mod, "transposed", False) else 1
    mod.bias = nn.Parameter(torch.zeros(mod.weight.shape[out_dim], dtype=mod.weight.dtype, device=mod.weight.device))
    wslot = cg.an.slots.get((f"{mod_path}.weight", out_dim))
    key = f"{mod_path}.bias"
    cg.traced.tensors[key] = mod.bias
    cg.traced.attr_kind.setdefault(key, "param")
    if wslot is not None:
        cg.an.slots[(key, 0)] = Slot(key, 0, wslot.expr, "produce")
    cg.invalidate()
