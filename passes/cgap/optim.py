"""Carry an optimizer's state over a grow/prune step instead of resetting it.

Each state tensor shaped like its parameter (SGD momentum, Adam's moments) is index-selected
exactly like the parameter, so it follows its channels. A new copy of a channel gets a copy of
the original's state (``new_units="copy"``, the default: the copy starts where the original is)
or zeros (``"zero"``). Scalar state (Adam's step count) is kept. Parameters that the surgery did
not touch keep their state as it is.
"""

from __future__ import annotations

import torch

from cgap_graph.errors import CgapError
from cgap_graph.surgery import SurgeryReport, get_tensor


def carry_optimizer(optimizer: torch.optim.Optimizer, module: torch.nn.Module, report: SurgeryReport,
                    new_units: str = "copy") -> torch.optim.Optimizer:
    """A new optimizer of the same kind over ``module``'s parameters, with carried-over state."""
    if new_units not in ("copy", "zero"):
        raise CgapError(f"new_units must be 'copy' or 'zero', got '{new_units}'")
    old_to_key = {id(p): k for k, p in report.old_params.items()}

    def new_of(key: str) -> torch.Tensor:  # the parameter this step made (later steps may replace it)
        return report.new_params[key] if key in report.new_params else get_tensor(module, key)
    groups = []
    for group in optimizer.param_groups:
        params = []
        for p in group["params"]:
            key = old_to_key.get(id(p))
            params.append(new_of(key) if key is not None else p)
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": params})
    new_opt = type(optimizer)(groups, **getattr(optimizer, "defaults", {}))
    for p, state in optimizer.state.items():
        key = old_to_key.get(id(p))
        if key is None:
            new_opt.state[p] = state
            continue
        new_p = new_of(key)
        carried = {}
        for name, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == p.shape:
                for dim, idx in report.index[key].items():
                    value = value.index_select(dim, torch.as_tensor(idx, device=value.device))
                if new_units == "zero":
                    for dim, mask in report.new_mask[key].items():
                        if mask.any():
                            value = value.index_fill(dim, torch.as_tensor(mask.nonzero()[0], device=value.device), 0)
                carried[name] = value.clone()
            else:
                carried[name] = value
        new_opt.state[new_p] = carried
    return new_opt
