"""Pause Python's cyclic garbage collector during a graph edit.

A surgery allocates many small containers (fx nodes, index maps, dicts) while the heap already
holds a whole model and its graph; the collector then runs its full passes over that heap again
and again. On EfficientNet-B0 that was 60% of a prune (0.68 s of 1.12 s). Reference counting
still frees everything acyclic at once; the cycles left are collected when the edit returns.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def gc_paused(fn: F) -> F:
    """Run ``fn`` with the cyclic collector off (re-entrant: only the outermost call turns it on)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return wrapper  # type: ignore[return-value]
