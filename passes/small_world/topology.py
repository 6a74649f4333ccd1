"""Connectivity masks of one layer: Watts-Strogatz ring lattice with hierarchical rewiring, or random.

Lattice: output unit ``o`` sits at position ``(o + 1/2) / out * in`` of the input index space (of
its group, for a grouped conv; in ``Layer.lattice_order``, channel index fastest) and reads the
``k`` input positions nearest to it on a ring (wrapping from the last index to the first), so
neighbouring outputs share most of their inputs: locally clustered. Every output gets ``k`` or
``k + 1`` inputs, to spend the layer's budget exactly.

Rewiring: each link, with probability ``p``, moves its input end to a position the output does not
read yet. Two levels ("hierarchically"): a ``global_fraction`` of the rewired links go anywhere in
the index space (the long-range shortcuts that shorten paths across the network), the rest stay in
a local neighbourhood of ``local_span`` of the index space around the output's position (they
keep the clustering of the region). ``p = 0`` is the lattice; ``p = 1, global_fraction = 1`` is a
random graph with a fixed in-degree.

Random (the baseline): the same number of entries, anywhere in the mask, uniformly.
"""

from __future__ import annotations

import math

import numpy as np

from cgap_graph.errors import CgapError
from cgap_graph.passes.small_world.layers import Layer


def check_probability(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
        raise CgapError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def row_degrees(rows: int, entries: int) -> np.ndarray:
    """``entries`` links spread over ``rows`` outputs as evenly as possible (extras evenly spaced)."""
    base, extra = divmod(entries, rows)
    deg = np.full(rows, base, dtype=np.int64)
    if extra:
        deg[(np.arange(extra) * rows) // extra] += 1
    return deg


def lattice_centres(layer: Layer) -> np.ndarray:
    """Position of each output unit in its input index space (``in_units`` wide)."""
    per_group = layer.out_units // layer.groups
    return ((np.arange(layer.out_units) % per_group) + 0.5) / per_group * layer.in_units


def small_world_mask(layer: Layer, entries: int, p: float, rng: np.random.Generator, *,
                     global_fraction: float = 0.5, local_span: float = 0.25) -> np.ndarray:
    """A bool ``out x in_units`` mask with ``entries`` links: lattice, then hierarchical rewiring."""
    n_in = layer.in_units
    mask = np.zeros(layer.mask_shape, dtype=bool)
    order = layer.lattice_order()
    centres = lattice_centres(layer)
    radius = max(1, int(round(local_span * n_in / 2)))
    for o, k in enumerate(row_degrees(layer.out_units, entries)):
        if k == 0:
            continue
        start = int(math.floor(centres[o] - k / 2 + 0.5))
        cols = (start + np.arange(k)) % n_in
        if 0 < p and k < n_in:
            cols = _rewire(cols, n_in, p, rng, int(centres[o]), radius, global_fraction)
        mask[o, order[cols]] = True
    return mask


def _rewire(cols: np.ndarray, n_in: int, p: float, rng: np.random.Generator, centre: int, radius: int,
            global_fraction: float) -> np.ndarray:
    taken = set(cols.tolist())
    cols = cols.copy()
    rewired = np.nonzero(rng.random(len(cols)) < p)[0]
    far = rng.random(len(rewired)) < global_fraction
    for i, anywhere in zip(rewired, far):
        for _ in range(32):  # a free position; give up (keep the link) if the region is full
            new = int(rng.integers(n_in)) if anywhere else (centre + int(rng.integers(-radius, radius + 1))) % n_in
            if new not in taken:
                taken.discard(int(cols[i]))
                taken.add(new)
                cols[i] = new
                break
    return cols


def random_mask(layer: Layer, entries: int, rng: np.random.Generator) -> np.ndarray:
    """``entries`` links chosen uniformly among all entries of the mask."""
    flat = np.zeros(layer.entries, dtype=bool)
    flat[rng.choice(layer.entries, size=entries, replace=False)] = True
    return flat.reshape(layer.mask_shape)
