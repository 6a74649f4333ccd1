"""Widths hardware likes: multiples of N (``--round-to``).

A MAC array computes ``pof`` output channels at a time and vector units work in lanes of 8 or 16,
so a layer of 61 channels costs what one of 64 does (ONNX Runtime's convolution kernels block
channels the same way). Every structural step can keep the widths it produces on multiples of
``N``; a group narrower than ``N`` is left as it is (it cannot be rounded without growing).
"""

from __future__ import annotations

import math

from cgap_graph.errors import check_number


def check_round_to(n: int) -> int:
    check_number("round_to", n, 1, 4096, meaning="widths are kept on multiples of it")
    return int(n)


def rounded_keep(width: int, keep: int, n: int) -> int:
    """The width to keep when a step would keep ``keep`` of ``width`` units: the nearest multiple
    of ``n`` (at least ``n``, at most ``width``); ``width`` itself if it is below ``n``."""
    if n <= 1 or width < n:
        return max(1, min(width, keep))
    return max(n, min(width // n * n, int(round(keep / n)) * n))


def rounded_growth(width: int, new: int, n: int) -> int:
    """Units to add so that the width becomes a multiple of ``n`` (at least ``new`` if ``new`` > 0)."""
    if n <= 1 or new <= 0:
        return new
    return math.ceil((width + new) / n) * n - width
