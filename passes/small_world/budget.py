"""How many connections each layer keeps, so that the whole network hits a target density.

Density is counted over the weights of every Conv/Linear layer (biases and norms are not masks):
``kept weights / all weights``. An excluded layer stays dense and its weights count as kept, so it
spends budget; the masked layers share the rest.

``balanced`` (the default) gives every masked layer the same mean degree per unit, like the
constant degree of a Watts-Strogatz lattice: a layer keeps ``eps * (out + in)`` mask entries (capped
at all of them), one ``eps`` for the network, solved so the kept weights hit the target. Small
layers (LeNet-5's conv1 reads one image channel) end up dense; large ones (fc1, 400K weights) very
sparse. ``uniform`` keeps the same fraction of every masked layer instead.
"""

from __future__ import annotations

import math

import numpy as np

from cgap_graph.errors import CgapError
from cgap_graph.passes.small_world.layers import LayeredGraph

ALLOCATIONS = ("balanced", "uniform")
TOLERANCE = 0.01  # relative error allowed between the kept and the target weights


def check_density(density: float) -> float:
    if not isinstance(density, (int, float)) or not math.isfinite(density) or not 0 < density <= 1:
        raise CgapError(f"density must be in (0, 1] (the fraction of connections kept, e.g. 0.03), got {density}")
    return float(density)


def layer_entries(graph: LayeredGraph, density: float, allocation: str = "balanced") -> dict[str, int]:
    """Mask entries kept per masked layer; the kept weights are within 1% of ``density`` of all weights."""
    density = check_density(density)
    if allocation not in ALLOCATIONS:
        raise CgapError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got '{allocation}'")
    total = graph.total_weights()
    target = density * total
    fixed = sum(layer.weights for layer in graph.layers if layer.excluded)
    masked = graph.masked
    budget = target - fixed
    if not masked:
        raise CgapError("every layer is excluded: nothing to mask; exclude fewer layers")
    if budget < min(layer.kernel for layer in masked):
        raise CgapError(f"density {density:g} keeps {target:.0f} weights, but the excluded layers alone keep {fixed} "
                        f"({fixed / total:.4f} of {total}); raise the density or exclude fewer layers")
    full = np.array([layer.entries for layer in masked], dtype=np.float64)
    kernel = np.array([layer.kernel for layer in masked], dtype=np.float64)
    scale = np.array([layer.out_units + layer.in_units for layer in masked] if allocation == "balanced"
                     else full, dtype=np.float64)

    def kept(eps: float) -> np.ndarray:
        return np.minimum(full, np.floor(eps * scale))

    lo, hi = 0.0, float((full / scale).max())
    for _ in range(200):  # bisection on the weights kept
        mid = (lo + hi) / 2
        if (kept(mid) * kernel).sum() <= budget:
            lo = mid
        else:
            hi = mid
    entries = kept(lo).astype(np.int64)
    rest = budget - float((entries * kernel).sum())
    for i in np.argsort(kernel, kind="stable"):  # fill what rounding left, finest layers first
        add = int(min(full[i] - entries[i], rest // kernel[i]))
        if add > 0:
            entries[i] += add
            rest -= add * kernel[i]
    got = fixed + float((entries * kernel).sum())
    if abs(got - target) > TOLERANCE * target:
        raise CgapError(f"density {density:g} cannot be met within 1% at kernel granularity (closest: "
                        f"{got / total:.4g}); choose a density of at least {2 * kernel.max() / total:.2g}")
    return {layer.name: int(e) for layer, e in zip(masked, entries)}
