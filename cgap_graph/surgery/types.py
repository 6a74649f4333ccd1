"""What a surgery step hands to initialisers and returns to its caller."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cgap_graph.ir.analysis import Slot
from cgap_graph.ir.graph import ChannelGraph


@dataclass
class SlotChange:
    """What happens to one parameter/buffer: handed to initialisers for new units."""

    key: str
    slots: list[Slot]
    old: torch.Tensor
    new: torch.Tensor
    index: dict[int, np.ndarray]  # dim -> source positions
    new_mask: dict[int, np.ndarray]  # dim -> True where the position is an added copy
    picked_mask: dict[int, np.ndarray]  # dim -> True where the position's unit was duplicated


Initializer = Callable[[SlotChange, "SurgeryContext"], torch.Tensor]


@dataclass
class SurgeryContext:
    cg: ChannelGraph
    sel: dict[int, np.ndarray]  # leaf rep -> selection vector
    counts: dict[int, np.ndarray]  # leaf rep -> multiplicity of each old unit in the selection
    rng: torch.Generator | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SurgeryReport:
    widths_before: dict[int, int]
    widths_after: dict[int, int]
    params_before: int
    params_after: int
    changed: list[str]
    # per changed parameter: dim -> source positions, and dim -> True where a position is a new copy
    index: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    new_mask: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    old_params: dict[str, torch.Tensor] = field(default_factory=dict)
    new_params: dict[str, torch.Tensor] = field(default_factory=dict)  # right after this step
