"""The one way cgap-graph calls ``torch.load``: on the CPU, and silent.

A damaged file makes torch's weights-only unpickler warn (``... not implemented by this protocol,
please file an issue ...``) before it raises; the caller turns the exception into its own one-line
error, so the warning would only be a second, misleading message on stderr.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch


def torch_load(path: str | Path, weights_only: bool = True) -> Any:
    """``torch.load(path)`` onto the CPU with torch's own warnings held back (errors still raise)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=weights_only)
