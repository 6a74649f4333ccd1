"""Small-world measures of a layered graph: clustering, path length, sigma and omega.

The graph is undirected: nodes are units (see ``small_world_layers.py``), and an edge joins two
units when a nonzero mask entry of a masked layer connects them. Layers the user excluded (kept
dense) are left out of the graph: a dense layer is a complete bipartite block that puts all its
units two hops apart and closes squares among all of them, the same for every mask, and swamps the
measure (LeNet-5 with a dense fc2: sigma 0.99-1.00 for every rewiring probability). They still
count as kept weights in the density.

Clustering. A feed-forward network links only adjacent layers, so its graph is bipartite (colour
the layers alternately) and has no triangles: the usual clustering coefficient is 0 for every mask.
We use the bipartite analogue, the square clustering of Robins and Alexander (2004), which is what
``networkx.bipartite.robins_alexander_clustering`` computes: ``C = 4 * (number of 4-cycles) /
(number of paths of length 3)``. It is 1 for a complete bipartite graph and about the density for a
random one; a ring lattice, where neighbouring outputs share inputs, scores high.

Path length: mean shortest path over the ordered pairs of nodes that reach each other (a random
mask may leave units unconnected; ``reachable`` says which fraction of pairs is connected), by
breadth-first search from every node, or from a fixed random sample of ``max_sources`` nodes on
large graphs (an estimate, the same sample for a mask and its references).

sigma = (C / C_rand) / (L / L_rand) (Humphries and Gurney 2008), > 1 for a small-world graph;
omega = L_rand / L - C / C_latt (Telesford et al. 2011), near 0 for a small-world graph. The
references are masks of the same layers with the same number of entries per layer: uniformly
random (``C_rand``, ``L_rand``, averaged over a few draws) and the unrewired lattice (``C_latt``).
networkx's ``sigma``/``omega`` would instead rewire the whole graph (destroying the layers) and
take minutes on a 600-node network; these take milliseconds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from cgap_graph.passes.small_world.layers import Layer, LayeredGraph


@dataclass
class GraphStats:
    nodes: int
    edges: int
    clustering: float
    path_length: float
    reachable: float  # fraction of ordered node pairs joined by a path (from the sources)
    sources: int  # BFS sources: all nodes, or a sample


def layer_edges(layer: Layer, mask: np.ndarray | None) -> np.ndarray:
    """Unit pairs (u, v) connected by this layer's mask (``None``: dense)."""
    pairs = []
    for out_nodes, col_nodes in layer.calls():
        rows = np.broadcast_to(out_nodes[:, None], col_nodes.shape)
        keep = np.ones(col_nodes.shape, dtype=bool) if mask is None else mask
        pairs.append(np.stack([rows[keep], col_nodes[keep]], 1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)


def network_edges(graph: LayeredGraph, masks: Mapping[str, np.ndarray]) -> np.ndarray:
    """Undirected simple edges (u < v) of every masked layer under ``masks`` (see module docstring)."""
    parts = [layer_edges(layer, masks[layer.name]) for layer in graph.masked]
    return unique_edges(np.concatenate(parts))


def unique_edges(pairs: np.ndarray) -> np.ndarray:
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]  # a unit read back into its own group: no self-loops
    if len(pairs) == 0:
        return pairs.reshape(0, 2).astype(np.int64)
    n = int(pairs.max()) + 1
    keys = np.unique(pairs[:, 0].astype(np.int64) * n + pairs[:, 1])
    return np.stack([keys // n, keys % n], 1)


def _adjacency(edges: np.ndarray, n: int) -> torch.Tensor:
    idx = torch.as_tensor(np.concatenate([edges, edges[:, ::-1]]).T.copy(), dtype=torch.int64)
    return torch.sparse_coo_tensor(idx, torch.ones(idx.shape[1], dtype=torch.float64), (n, n),
                                   check_invariants=False).coalesce()


def _spmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta", raised inside torch.sparse.mm
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse.mm(a, b)


def square_clustering(edges: np.ndarray, n: int) -> float:
    """Robins-Alexander clustering ``4 * C4 / P3`` (nan when the graph has no path of length 3)."""
    if len(edges) == 0:
        return math.nan
    adj = _adjacency(edges, n)
    common = _spmm(adj, adj).coalesce()  # common neighbours of every pair of nodes
    i, j = common.indices()
    w = common.values()[i != j]
    ordered_pair_squares = float((w * (w - 1) / 2).sum())  # = 4 * C4
    deg = np.bincount(edges.ravel(), minlength=n).astype(np.float64)
    paths3 = float(((deg[edges[:, 0]] - 1) * (deg[edges[:, 1]] - 1)).sum())
    return ordered_pair_squares / paths3 if paths3 > 0 else math.nan


def path_length(edges: np.ndarray, n: int, sources: np.ndarray) -> tuple[float, float]:
    """Mean shortest-path length over reachable ordered pairs from ``sources``, and the reachable fraction."""
    if len(edges) == 0 or len(sources) == 0:
        return math.nan, 0.0
    adj = _adjacency(edges, n).float()
    s = len(sources)
    frontier = torch.zeros(n, s)
    frontier[torch.as_tensor(sources), torch.arange(s)] = 1.0
    reached = frontier.bool()
    total = pairs = 0.0
    depth = 0
    while True:
        depth += 1
        new = (_spmm(adj, frontier) > 0) & ~reached
        found = float(new.sum())
        if found == 0:
            break
        total += depth * found
        pairs += found
        reached |= new
        frontier = new.float()
    return (total / pairs if pairs else math.nan), pairs / (s * (n - 1)) if n > 1 else 0.0


def graph_stats(edges: np.ndarray, n: int, sources: np.ndarray) -> GraphStats:
    length, reach = path_length(edges, n, sources)
    return GraphStats(n, len(edges), square_clustering(edges, n), length, reach, len(sources))


def bfs_sources(n: int, max_sources: int, seed: int = 0) -> np.ndarray:
    """Every node, or a fixed random sample of ``max_sources`` of them."""
    if n <= max_sources:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_sources, replace=False))


def sigma(stats: GraphStats, rand_c: float, rand_l: float) -> float:
    """(C / C_rand) / (L / L_rand); nan when a term is undefined."""
    try:
        return (stats.clustering / rand_c) / (stats.path_length / rand_l)
    except ZeroDivisionError:
        return math.nan


def omega(stats: GraphStats, rand_l: float, latt_c: float) -> float:
    """L_rand / L - C / C_latt."""
    try:
        return rand_l / stats.path_length - stats.clustering / latt_c
    except ZeroDivisionError:
        return math.nan
