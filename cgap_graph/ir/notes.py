"""How a group's notes read to a user: which notes leave pruning exact against kept-channel
statistics, and the status text built from them.

A norm that normalises across a group's channels (LayerNorm, RMSNorm, GroupNorm, F.normalize)
counts zeroed channels in its statistics; removed channels are not counted. Removal is exactly
the masked model with statistics over the kept channels (the reference of
``verify/kept_stats.py``), so such groups are reported "exact against kept-channel statistics"
when pruned, not "inexact". Growth on them stays inexact unless uniform.
"""

from __future__ import annotations

KEPT_STATS_MARKS = ("normalises across these channels: removing or duplicating one changes its statistics",
                    "normalises across these channels (its norm changes)")


def is_kept_stats_note(note: str) -> bool:
    """Whether a note says only that a norm's statistics see the removed channels."""
    return any(m in note for m in KEPT_STATS_MARKS)


# a norm's bias leaves removed channels at a constant the prune pass folds into the reader's bias:
# the shrunk model still equals the kept-statistics reference (where removed channels read as absent)
FOLDED_MARK = "where masking leaves a non-zero constant (the prune pass folds it"


def kept_stats_exact(prune_notes: list[str]) -> bool:
    """Removal changes only norm statistics (and constants the prune pass folds): exact against
    kept-channel statistics."""
    return (any(is_kept_stats_note(n) for n in prune_notes)
            and all(is_kept_stats_note(n) or FOLDED_MARK in n for n in prune_notes))


def note_parts(prune_notes: list[str], grow_notes: list[str]) -> list[str]:
    """The exactness parts of a group's status line."""
    if kept_stats_exact(prune_notes):
        parts = ["pruning exact against kept-channel statistics"]
        if grow_notes:
            parts.append("growth inexact: " + "; ".join(dict.fromkeys(grow_notes)))
        return parts
    if prune_notes or grow_notes:
        return ["inexact: " + "; ".join(dict.fromkeys(prune_notes + grow_notes))]
    return []
