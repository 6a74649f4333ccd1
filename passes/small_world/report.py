"""The topology report: density, clustering, path length and small-world coefficient, per layer and
for the whole network, each against random masks of the same density (see ``small_world_measure``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TopologyRow:
    """One layer's bipartite graph, or (``name == "network"``) the layered graph of all layers."""

    name: str
    entries: int  # mask entries kept (kernels for a conv, weights for a Linear)
    entries_total: int
    weights: int  # weights kept: entries x kernel size; an excluded layer keeps all
    weights_total: int
    clustering: float
    clustering_random: float
    path_length: float
    path_length_random: float
    sigma: float
    excluded: bool = False

    @property
    def density(self) -> float:
        return self.weights / self.weights_total if self.weights_total else math.nan


@dataclass
class TopologyReport:
    topology: str  # "small-world" | "random"
    p: float | None  # rewiring probability (None for random masks)
    target_density: float
    allocation: str
    layers: list[TopologyRow]
    network: TopologyRow
    omega: float  # L_rand / L - C / C_latt of the network
    clustering_lattice: float
    reachable: float  # fraction of node pairs joined by a path
    nodes: int
    edges: int
    sources: int  # BFS sources of the path lengths (all nodes unless sampled)
    seed: int
    criterion: str = "omega"  # how p was chosen: omega closest to 0, or the largest sigma
    sweep: list[dict[str, float]] = field(default_factory=list)  # p -> network C, L, sigma, omega

    @property
    def density(self) -> float:
        return self.network.density

    def to_dict(self) -> dict[str, Any]:
        def row(r: TopologyRow) -> dict[str, Any]:
            return {**{k: _json_float(v) for k, v in asdict(r).items()}, "density": _json_float(r.density)}
        return {"topology": self.topology, "p": self.p, "target_density": self.target_density,
                "density": _json_float(self.density), "allocation": self.allocation,
                "measure": "sigma = (C/C_rand)/(L/L_rand), C = Robins-Alexander square clustering",
                "network": row(self.network), "layers": [row(r) for r in self.layers],
                "omega": _json_float(self.omega), "clustering_lattice": _json_float(self.clustering_lattice),
                "reachable": self.reachable, "nodes": self.nodes, "edges": self.edges, "sources": self.sources,
                "seed": self.seed, "criterion": self.criterion,
                "sweep": [{k: _json_float(v) for k, v in s.items()} for s in self.sweep]}

    def table(self):
        from rich.table import Table
        p = "random masks" if self.p is None else f"p = {self.p:g}"
        title = (f"{self.topology} topology ({p}): density {self.density:.4f} of the weights "
                 f"(target {self.target_density:g}, {self.allocation} allocation)")
        table = Table(title=title, header_style="bold")
        for col in ("layer", "kept", "density", "clustering", "C random", "path length", "L random", "sigma"):
            table.add_column(col, justify="left" if col == "layer" else "right", no_wrap=col in ("layer", "kept"))
        for r in [*self.layers, self.network]:
            dense = r.excluded
            table.add_row(r.name + (" (excluded: dense)" if dense else ""),
                          f"{r.weights:,}/{r.weights_total:,}", f"{r.density:.4f}",
                          *(["-"] * 5 if dense else [_fmt(r.clustering), _fmt(r.clustering_random),
                                                     _fmt(r.path_length), _fmt(r.path_length_random),
                                                     _fmt(r.sigma)]),
                          style="bold" if r.name == "network" else None)
        table.caption = (f"C: square clustering (a layered graph has no triangles); network omega "
                         f"{_fmt(self.omega)}; {self.nodes} units, {self.edges} edges, "
                         f"{100 * self.reachable:.1f}% of pairs connected")
        return table

    def print(self, console=None) -> None:
        if console is None:
            from rich.console import Console
            console = Console()
        console.print(self.table())


def _fmt(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _json_float(v: Any) -> Any:
    """JSON has no NaN: undefined measures are written as null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v
