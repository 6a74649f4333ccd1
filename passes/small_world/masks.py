"""Small-World pruning, step 1 (Krishnan, Du, Cao 2019): trim the network to a Small-World topology
*before* training, as fixed connectivity masks.

    sw = small_world_masks(zoo.build("lenet5"), (1, 1, 28, 28), density=0.03, exclude=["fc2"])
    sw.report.print()                 # per layer and network: density, C, L, sigma vs random masks
    apply_masks(model, sw.masks)      # zero the weights the masks drop (then again after every step)

A mask has one entry per (output unit, input unit): ``out x in`` neurons for a Linear, ``out x
in/groups`` channels for a convolution, broadcast over its K x K kernel. Each layer's budget comes
from ``small_world_budget`` (the whole network hits ``density`` of its Conv/Linear weights within
1%), each mask is a ring lattice between adjacent layers with hierarchical rewiring
(``small_world_topology``), and ``p``, unless given, is the rewiring probability of ``p_grid``
whose layered graph (all masked layers) is most small-world (``small_world_measure``): omega
closest to 0 (default), or the largest sigma (``criterion="sigma"``; on LeNet-5 with every layer
masked, sigma is largest for the unrewired lattice, see docs/small_world.md).

The masks are plain bool tensors keyed by module name: they apply to the model, to its traced
``fx.GraphModule`` (same names) and, saved with ``save_masks``, to a resumed run
(``apply.py``; the package re-exports both).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cgap_graph.errors import CgapError
from cgap_graph.ir.graph import ChannelGraph, trace
from cgap_graph.passes.small_world.budget import check_density, layer_entries
from cgap_graph.passes.small_world.layers import Layer, LayeredGraph, layered_graph
from cgap_graph.passes.small_world.measure import (
    GraphStats,
    bfs_sources,
    graph_stats,
    layer_edges,
    network_edges,
    omega,
    sigma,
    unique_edges,
)
from cgap_graph.passes.small_world.report import TopologyReport, TopologyRow
from cgap_graph.passes.small_world.topology import check_probability, random_mask, small_world_mask

P_GRID = (0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)
TOPOLOGIES = ("small-world", "random")
CRITERIA = ("omega", "sigma")


@dataclass
class SmallWorldMasks:
    """Masks (module name -> bool tensor, True = connection kept) and their topology report."""

    masks: dict[str, torch.Tensor]
    report: TopologyReport
    graph: LayeredGraph


def build_masks(model: nn.Module | ChannelGraph, input_shape: Sequence[int] | None, density: float, *,
                topology: str = "small-world", p: float | None = None, exclude: Sequence[str] = (),
                seed: int = 0, allocation: str = "balanced", global_fraction: float = 0.5,
                local_span: float = 0.25, criterion: str = "omega", p_grid: Sequence[float] = P_GRID,
                random_draws: int = 3, max_sources: int = 512) -> SmallWorldMasks:
    """Masks of ``topology`` "small-world" (see module docstring) or "random" (same per-layer
    entries, uniformly placed: the baseline), with the report measured against random masks."""
    if topology not in TOPOLOGIES:
        raise CgapError(f"topology must be one of {', '.join(TOPOLOGIES)}, got '{topology}'")
    if criterion not in CRITERIA:
        raise CgapError(f"criterion must be one of {', '.join(CRITERIA)}, got '{criterion}'")
    density = check_density(density)
    if p is not None:
        p = check_probability("p (the rewiring probability)", p)
    global_fraction = check_probability("global_fraction", global_fraction)
    local_span = check_probability("local_span", local_span)
    for q in p_grid:
        check_probability("every p of p_grid", q)
    if random_draws < 1 or max_sources < 1:
        raise CgapError(f"random_draws and max_sources must be >= 1, got {random_draws} and {max_sources}")
    cg = model if isinstance(model, ChannelGraph) else trace(model, input_shape)
    graph = layered_graph(cg, exclude)
    entries = layer_entries(graph, density, allocation)
    ctx = _Measure(graph, entries, seed, random_draws, max_sources)

    def lattice(q: float) -> dict[str, np.ndarray]:
        return {layer.name: small_world_mask(layer, entries[layer.name], q, _rng(seed, i, "rewire"),
                                             global_fraction=global_fraction, local_span=local_span)
                for i, layer in enumerate(graph.layers) if not layer.excluded}

    latt = ctx.stats(lattice(0.0))
    rand_c, rand_l = ctx.random_reference
    sweep: list[dict[str, float]] = []
    if topology == "random":
        masks = {layer.name: random_mask(layer, entries[layer.name], _rng(seed, i, "mask"))
                 for i, layer in enumerate(graph.layers) if not layer.excluded}
        stats, chosen = ctx.stats(masks), None
    else:
        best = None
        for q in ([p] if p is not None else sorted(set(p_grid))):
            m = lattice(q)
            st = latt if q == 0 else ctx.stats(m)
            s, w = sigma(st, rand_c, rand_l), omega(st, rand_l, latt.clustering)
            sweep.append({"p": q, "clustering": st.clustering, "path_length": st.path_length, "sigma": s, "omega": w})
            score = s if criterion == "sigma" else -abs(w)
            score = -math.inf if math.isnan(score) else score
            if best is None or score > best[0]:  # ties keep the smaller p
                best = (score, q, m, st)
        _, chosen, masks, stats = best
    report = ctx.report(masks, stats, latt.clustering, topology, chosen, density, allocation, sweep, criterion)
    return SmallWorldMasks({k: torch.from_numpy(v.copy()) for k, v in masks.items()}, report, graph)


def small_world_masks(model: nn.Module | ChannelGraph, input_shape: Sequence[int] | None, density: float,
                      **options) -> SmallWorldMasks:
    """Small-World masks (``build_masks(topology="small-world")``)."""
    return build_masks(model, input_shape, density, topology="small-world", **options)


def random_masks(model: nn.Module | ChannelGraph, input_shape: Sequence[int] | None, density: float,
                 **options) -> SmallWorldMasks:
    """Uniformly random masks with the same per-layer budget (``build_masks(topology="random")``)."""
    return build_masks(model, input_shape, density, topology="random", **options)


def _rng(seed: int, layer_index: int, purpose: str) -> np.random.Generator:
    """One stream per layer: every p of the sweep draws the same numbers for the same layer."""
    return np.random.default_rng([seed, layer_index, {"rewire": 1, "mask": 2, "reference": 3}[purpose]])


class _Measure:
    """Network and per-layer statistics, and the random references they are compared with."""

    def __init__(self, graph: LayeredGraph, entries: dict[str, int], seed: int, draws: int, max_sources: int):
        self.graph, self.entries, self.seed, self.draws = graph, entries, seed, draws
        self.sources = bfs_sources(graph.nodes, max_sources, seed)
        self.max_sources = max_sources
        self.random_draws = [
            {layer.name: random_mask(layer, entries[layer.name], _rng(seed + 1000 * d, i, "reference"))
             for i, layer in enumerate(graph.layers) if not layer.excluded} for d in range(draws)]
        refs = [self.stats(m) for m in self.random_draws]
        self.random_reference = (float(np.mean([r.clustering for r in refs])),
                                 float(np.mean([r.path_length for r in refs])))

    def stats(self, masks: Mapping[str, np.ndarray]) -> GraphStats:
        return graph_stats(network_edges(self.graph, masks), self.graph.nodes, self.sources)

    def layer_stats(self, layer: Layer, mask: np.ndarray) -> GraphStats:
        """The layer's own bipartite graph, nodes renumbered 0..n-1."""
        edges = unique_edges(layer_edges(layer, mask))
        used, local = np.unique(edges, return_inverse=True) if len(edges) else (np.zeros(0, int), edges)
        n = max(len(used), 1)
        return graph_stats(local.reshape(edges.shape), n, bfs_sources(n, self.max_sources, self.seed))

    def report(self, masks, stats: GraphStats, latt_c: float, topology: str, p: float | None, density: float,
               allocation: str, sweep: list, criterion: str) -> TopologyReport:
        rows, kept = [], 0
        for layer in self.graph.layers:
            if layer.excluded:
                rows.append(TopologyRow(layer.name, layer.entries, layer.entries, layer.weights, layer.weights,
                                        *([float("nan")] * 5), excluded=True))
                kept += layer.weights
                continue
            mask = masks[layer.name]
            own = self.layer_stats(layer, mask)
            refs = [self.layer_stats(layer, m[layer.name]) for m in self.random_draws]
            rc = float(np.mean([r.clustering for r in refs]))
            rl = float(np.mean([r.path_length for r in refs]))
            n = int(mask.sum())
            kept += n * layer.kernel
            rows.append(TopologyRow(layer.name, n, layer.entries, n * layer.kernel, layer.weights, own.clustering,
                                    rc, own.path_length, rl, sigma(own, rc, rl)))
        rc, rl = self.random_reference
        net = TopologyRow("network", sum(r.entries for r in rows), sum(r.entries_total for r in rows), kept,
                          self.graph.total_weights(), stats.clustering, rc, stats.path_length, rl,
                          sigma(stats, rc, rl))
        return TopologyReport(topology, p, density, allocation, rows, net, omega(stats, rl, latt_c), latt_c,
                              stats.reachable, stats.nodes, stats.edges, stats.sources, self.seed, criterion, sweep)
