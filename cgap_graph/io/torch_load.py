"""Every weights-only ``torch.load`` in cgap-graph (model files, datasets, checkpoints, masks): onto
the CPU, and silent.

A damaged file makes torch's weights-only unpickler warn (``... not implemented by this protocol,
please file an issue ...``) before it raises or returns; the caller turns a failure into its own
one-line error, so the warning would only be a second, misleading message on stderr. (A ``--trust``
pickle runs the user's code and keeps its warnings: ``model_io`` loads it with plain ``torch.load``.)
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch


def load_weights_only(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU with torch's warnings held back (errors still raise)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)
