"""Helpers shared by the zoo models."""

from __future__ import annotations


def scaled(channels: int, width: float) -> int:
    """A channel count times the width multiplier, at least 1."""
    return max(1, int(round(channels * width)))
