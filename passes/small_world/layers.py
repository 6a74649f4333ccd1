"""The network as a layered graph of units, for Small-World masks (issue #6).

Nodes are *units*: the channels of a convolution, the neurons of a Linear layer, as the channel
graph groups them (a unit of a residual stream is one node, whoever writes or reads it), plus
the positions of tensors that belong to no group (the image channels of the model input).
Every Conv/Linear module is a layer whose mask has one entry per (output unit, input position):
``out x in/groups`` for a convolution (one entry per K x K kernel), ``out x in`` for a Linear.

Layers are connected by data flow, read from the channel analysis: conv2's input positions are
conv1's output units. A Linear after a flatten reads ``H*W`` positions per conv channel (LeNet-5's
fc1: 800 positions = 50 channels x 16); its mask stays per position (neuron to neuron), and in the
graph each position maps to its channel, so a fc1 neuron that reads any of a channel's 16 positions
is linked to that channel (one edge, however many positions). The lattice of such a layer runs
over the positions with the channel index fastest (see ``Layer.lattice_order``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch.fx as fx
from torch import nn

from cgap_graph.errors import CgapError
from cgap_graph.ir.graph import ChannelGraph
from cgap_graph.ir.values import TInfo

MASKABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class Layer:
    """One Conv/Linear module: its mask shape and the graph nodes its rows and columns touch."""

    name: str
    kind: str  # "conv" | "linear"
    out_units: int  # mask rows
    in_units: int  # mask columns: in_channels / groups, or in_features
    kernel: int  # weights per mask entry (prod of the kernel size; 1 for Linear)
    groups: int
    out_nodes: np.ndarray  # node of each output row
    in_nodes: np.ndarray  # node of each input position (in_channels or in_features)
    excluded: bool = False
    more_calls: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # a module called again

    @property
    def entries(self) -> int:
        return self.out_units * self.in_units

    @property
    def weights(self) -> int:
        return self.entries * self.kernel

    @property
    def mask_shape(self) -> tuple[int, int]:
        return self.out_units, self.in_units

    def column_nodes(self, in_nodes: np.ndarray | None = None) -> np.ndarray:
        """Node read by each mask entry, shape ``out x in_units`` (a grouped conv reads its group)."""
        in_nodes = self.in_nodes if in_nodes is None else in_nodes
        out_per_group = self.out_units // self.groups
        base = (np.arange(self.out_units) // out_per_group) * self.in_units
        return in_nodes[base[:, None] + np.arange(self.in_units)[None, :]]

    def lattice_order(self) -> np.ndarray:
        """Columns in lattice order: unit index fastest. A Linear after a flatten reads H*W positions of
        each channel; ordering them (position, channel) makes k neighbouring lattice slots k different
        channels at one position, so the lattice is local in the *unit* index space the graph measures
        (channel-major order would give each neuron k positions of one channel: a single graph edge)."""
        in_nodes = self.in_nodes[:self.in_units]  # the first group's columns (all groups alike)
        offset = np.zeros(self.in_units, dtype=np.int64)
        seen: dict[int, int] = {}
        for i, node in enumerate(in_nodes.tolist()):
            offset[i] = seen.get(node, 0)
            seen[node] = offset[i] + 1
        return np.lexsort((np.arange(self.in_units), offset))

    def calls(self):
        """(row nodes, entry nodes) of every call of the module: the edges its mask makes."""
        for out_nodes, in_nodes in [(self.out_nodes, self.in_nodes), *self.more_calls]:
            yield out_nodes, self.column_nodes(in_nodes)


@dataclass
class LayeredGraph:
    """Every maskable layer in graph order, and the names of the nodes they connect."""

    layers: list[Layer]
    node_names: list[str]

    @property
    def nodes(self) -> int:
        return len(self.node_names)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def masked(self) -> list[Layer]:
        return [layer for layer in self.layers if not layer.excluded]

    def total_weights(self) -> int:
        return sum(layer.weights for layer in self.layers)


class _Nodes:
    """Node ids for units and for positions outside every group."""

    def __init__(self, cg: ChannelGraph) -> None:
        self.cg = cg
        self.ids: dict[tuple, int] = {}
        self.names: list[str] = []
        self.group_names = {g.id: _group_name(g) for g in cg.groups}

    def _id(self, key: tuple, name: str) -> int:
        if key not in self.ids:
            self.ids[key] = len(self.names)
            self.names.append(name)
        return self.ids[key]

    def of(self, expr, tensor_name: str) -> np.ndarray:
        """The node of every position of a channel layout ``expr`` (one dimension of a tensor)."""
        t = self.cg.an.t
        width = t.width(expr)
        nodes = np.full(width, -1, dtype=np.int64)
        for leaf in dict.fromkeys(t.leaves(expr)):
            g = self.cg.group_of_space(leaf)
            ids = t.unit_ids(expr, g.space)
            for pos in np.nonzero(ids >= 0)[0]:
                u = int(ids[pos])
                nodes[pos] = self._id(("unit", g.id, u), f"{self.group_names[g.id]}:{u}")
        for pos in np.nonzero(nodes < 0)[0]:
            nodes[pos] = self._id(("pos", tensor_name, int(pos)), f"{tensor_name}:{int(pos)}")
        return nodes


def _group_name(g) -> str:
    """A group is named after its first producing module (``conv2``), else ``group<id>``."""
    for m in g.members:
        if m.kind == "param" and m.role == "produce":
            return m.target.rpartition(".")[0] or m.target
    return f"group{g.id}"


def _channel_expr(info, kind: str):
    if not isinstance(info, TInfo) or info.ndim == 0:
        return None
    return info.exprs[-1] if kind == "linear" else info.exprs[1] if info.ndim > 1 else None


def layered_graph(cg: ChannelGraph, exclude: Sequence[str] = ()) -> LayeredGraph:
    """The layered graph of a traced model; ``exclude`` names layers kept dense."""
    gm = cg.module
    modules = dict(gm.named_modules())
    nodes = _Nodes(cg)
    layers: dict[str, Layer] = {}
    for node in cg.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), MASKABLE):
            continue
        mod = modules[node.target]
        kind = "linear" if isinstance(mod, nn.Linear) else "conv"
        src = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        in_expr = _channel_expr(cg.an.vals.get(src), kind) if src is not None else None
        out_expr = _channel_expr(cg.an.vals.get(node), kind)
        if in_expr is None or out_expr is None:
            raise CgapError(f"layer '{node.target}': its input or output channels are unknown to the channel "
                            "analysis; exclude it (exclude=[...]) or report the model")
        in_nodes = nodes.of(in_expr, src.name)
        out_nodes = nodes.of(out_expr, node.name)
        w = mod.weight
        if len(out_nodes) != w.shape[0] or len(in_nodes) != w.shape[1] * getattr(mod, "groups", 1):
            raise CgapError(f"layer '{node.target}': the channel analysis disagrees with its weight shape "
                            f"{tuple(w.shape)}; exclude it (exclude=[...]) or report the model")
        if node.target in layers:  # a module called twice: its mask is shared, its edges are not
            layers[node.target].more_calls.append((out_nodes, in_nodes))
            continue
        layers[node.target] = Layer(
            name=node.target, kind=kind, out_units=w.shape[0], in_units=w.shape[1],
            kernel=int(np.prod(w.shape[2:])) if w.dim() > 2 else 1, groups=getattr(mod, "groups", 1),
            out_nodes=out_nodes, in_nodes=in_nodes)
    graph = LayeredGraph(list(layers.values()), nodes.names)
    check_exclude(graph, exclude)
    for layer in graph.layers:
        layer.excluded = layer.name in set(exclude)
    return graph


def check_exclude(graph: LayeredGraph, exclude: Sequence[str]) -> None:
    """Unknown names in ``exclude`` are a user error, not silently ignored."""
    if isinstance(exclude, str):
        raise CgapError(f"exclude must be a list of layer names, got the string '{exclude}'; use ['{exclude}']")
    known = [layer.name for layer in graph.layers]
    unknown = [n for n in exclude if n not in known]
    if unknown:
        raise CgapError(f"unknown layer '{unknown[0]}' in exclude; choose from {', '.join(known)}")
