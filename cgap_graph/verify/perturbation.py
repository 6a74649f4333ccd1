"""Oracle 4: for each producer (conv/linear output channel), add a large change to one channel
while every other channel-mixing layer is clamped to its baseline output, and compare which
consumer inputs change with the positions the groups predict. This does not use the channel
rules, only the graph's producers and consumers, so it catches a wrong coupling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from cgap_graph.ir.graph import ChannelGraph, flat_nodes
from cgap_graph.ir.values import TInfo
from cgap_graph.verify.inputs import random_inputs

_MIXING_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                   nn.Linear, nn.Embedding)
_MIXING_FUNCS = {F.linear, F.conv1d, F.conv2d, F.conv3d, F.embedding}
_CONTRACTIONS = {F.scaled_dot_product_attention, torch.matmul, torch.bmm, torch.einsum}


def _is_mixing(cg: ChannelGraph, node: fx.Node) -> bool:
    """A producer of a new channel space: its output is clamped during the check. Grouped
    convolutions keep their groups coupled from input to output, so they stay live."""
    if node.op == "call_module":
        mod = cg.module.get_submodule(node.target)
        return isinstance(mod, _MIXING_MODULES) and getattr(mod, "groups", 1) == 1
    if node.op == "call_function" and node.target in _MIXING_FUNCS:
        groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
        return groups == 1
    return False


def _is_producer(cg: ChannelGraph, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(cg.module.get_submodule(node.target), _MIXING_MODULES)
    return node.op == "call_function" and node.target in _MIXING_FUNCS


def _reach(start: fx.Node, clamped: set, t=None, vals=None, units=None) -> set:
    """Nodes whose values depend on ``start`` without passing through a clamped node. With
    ``units``, a piece taken out of a tensor (split, chunk, slice) is followed only if its
    layout holds every group of the perturbed position (q, k and v cut from one projection
    share the head group, but a change in q does not flow into k)."""
    import operator
    seen, stack = {start}, [start]
    while stack:
        n = stack.pop()
        for u in n.users:
            if (u.op == "call_method" and u.target == "size") or u.target is getattr:
                continue  # reads the shape, not the values
            if units and u.target is operator.getitem and isinstance(vals.get(u), TInfo):
                have = set()
                for e in vals[u].exprs:
                    have |= t.written_leaves(e)
                if not set(units) <= have:
                    continue
            if u not in seen:
                seen.add(u)
                if u not in clamped:
                    stack.append(u)
    return seen


def _channel_dim(node: fx.Node, val: TInfo, cg: ChannelGraph) -> int | None:
    """The dimension of a producer's output that holds its new channels."""
    if node.op == "call_module":
        mod = cg.module.get_submodule(node.target)
        if isinstance(mod, (nn.Linear, nn.Embedding)):
            return val.ndim - 1
        return val.ndim - len(mod.kernel_size) - 1
    if node.target in (F.linear, F.embedding):
        return val.ndim - 1
    return 1


class _ClampInterpreter(fx.Interpreter):
    """Replays a forward with every channel-mixing node's output fixed to its baseline value,
    except one injected change; norms across channels use baseline statistics."""

    def __init__(self, gm, base_out, stats, inject=None):
        super().__init__(gm)
        self.base_out = base_out
        self.stats = stats
        self.inject = inject
        self.seen: dict[str, torch.Tensor] = {}
        self.watch: set = set()

    def run_node(self, n):
        y = self._run(n)
        if n in self.watch:
            self.seen[n.name] = y
        return y

    def _run(self, n):
        if n.name in self.base_out:
            y = self.base_out[n.name]
            if self.inject is not None and self.inject[0] == n.name:
                # a change that varies over the other dimensions (a uniform shift can cancel,
                # e.g. in softmax over keys)
                y = y.clone()
                _, dim, pos, delta = self.inject
                idx = [slice(None)] * y.dim()
                idx[dim] = pos
                g = torch.Generator().manual_seed(1234)
                y[tuple(idx)] += delta * torch.randn(y[tuple(idx)].shape, generator=g)
            return y
        if n.name in self.stats:
            x = self.env[n.args[0]]
            mean, std, mod = self.stats[n.name]
            shape = mean.shape
            y = (x.reshape(shape[0], shape[1], -1) - mean) / std
            y = y.reshape(x.shape)
            if isinstance(mod, nn.LayerNorm):
                if mod.weight is not None:
                    y = y * mod.weight
                if mod.bias is not None:
                    y = y + mod.bias
            elif mod.affine:
                view = [1, -1] + [1] * (x.dim() - 2)
                y = y * mod.weight.view(view) + mod.bias.view(view)
            return y
        return super().run_node(n)


def _baseline(cg: ChannelGraph, inputs) -> dict[str, torch.Tensor]:
    env: dict[str, torch.Tensor] = {}

    class Rec(fx.Interpreter):
        def run_node(self, n):
            y = super().run_node(n)
            if isinstance(y, torch.Tensor):
                env[n.name] = y
            return y

    Rec(cg.module).run(*inputs)
    return env


class _Baseline:
    """Reference values for one random input: producer outputs, norm statistics, and every
    node's value recomputed through the same clamped interpreter (so untouched paths compare
    bit for bit)."""

    def __init__(self, cg: ChannelGraph, seed: int, clamped: set, watch: set) -> None:
        self.inputs = random_inputs(cg, seed=seed)
        env = _baseline(cg, self.inputs)
        self.producer_out = {n.name: env[n.name] for n in cg.graph.nodes if n.name in env}
        self.base_out = {n.name: env[n.name] for n in clamped}
        self.stats = _layer_norm_free_stats(cg, env)
        ref = _ClampInterpreter(cg.module, self.base_out, self.stats)
        ref.watch = watch | set(cg.graph.nodes)
        ref.run(*self.inputs)
        self.ref = ref.seen


@dataclass
class PerturbationReport:
    """Findings of :func:`perturbation_check`.

    ``unexpected``: a consumer input changed where no group predicts it (coupling the analysis
    missed: surgery could break the model). ``missing``: a group predicts a change that never
    happened (coupling stricter than needed: safe, but it limits what can be pruned)."""

    unexpected: list[str]
    missing: list[str]
    checked: int

    @property
    def ok(self) -> bool:
        return not self.unexpected and not self.missing


@torch.no_grad()
def perturbation_check(cg: ChannelGraph, positions_per_producer: int = 2, seed: int = 0) -> PerturbationReport:
    """Oracle 4 (see module docstring).

    A predicted change that is not observed is re-tried with other inputs and perturbation sizes
    first: a channel that a saturated activation silences for one input is coupled all the same."""
    gm = cg.module
    gm.eval()
    t = cg.an.t
    rng = np.random.default_rng(seed)
    producers = [n for n in cg.graph.nodes if _is_producer(cg, n) and isinstance(cg.an.vals.get(n), TInfo)]
    clamped = {n for n in producers if _is_mixing(cg, n)}
    observed_at = _observed_nodes(cg)
    obs_set = set(observed_at)
    baselines: list[_Baseline] = []

    def baseline(i: int) -> _Baseline:
        while len(baselines) <= i:
            baselines.append(_Baseline(cg, seed + len(baselines), clamped, obs_set))
        return baselines[i]

    report = PerturbationReport([], [], 0)
    for p in producers:
        val = cg.an.vals[p]
        cdim = _channel_dim(p, val, cg)
        e = val.exprs[cdim]
        leaves = set(t.leaves(e))
        if not leaves or leaves & set(t.frozen):
            continue  # only fully resizable channels: frozen ones never change width
        width = t.width(e)
        for pos in rng.choice(width, size=min(positions_per_producer, width), replace=False):
            units = {leaf: int(t.unit_ids(e, leaf)[pos]) for leaf in leaves}
            units = {leaf: u for leaf, u in units.items() if u >= 0}
            reach = _reach(p, clamped, t, cg.an.vals, _written_at(t, e, int(pos)))
            preds = {o.name: (_predicted(t, cg.an.vals[o], units) if o in reach else None) for o in observed_at}
            missing_at: dict[str, int] = {}
            for attempt, scale in ((0, 10.0), (0, 0.1), (1, 10.0), (2, 1.0)):
                b = baseline(attempt)
                changed = _changes(gm, b, p.name, cdim, int(pos), scale, obs_set)
                missing_at = _compare(cg, f"{p.name}[{pos}]", observed_at, preds, changed, b, report)
                if not missing_at:
                    break
            for name, k in missing_at.items():
                report.missing.append(f"{p.name}[{pos}] -> {name}: {k} predicted changes never observed")
    report.unexpected = list(dict.fromkeys(report.unexpected))
    return report


def _observed_nodes(cg: ChannelGraph) -> list[fx.Node]:
    """Where changes are looked for: the inputs of channel-mixing layers and contractions, the outputs."""
    observed_at = []
    for n in cg.graph.nodes:
        if _is_mixing(cg, n) or (n.op == "call_function" and n.target in _CONTRACTIONS):
            for a in n.args[:3] if n.target in _CONTRACTIONS else n.args[:1]:
                if isinstance(a, fx.Node) and isinstance(cg.an.vals.get(a), TInfo):
                    observed_at.append(a)
        if n.op == "output":
            for a in flat_nodes(n.args[0]):
                if isinstance(cg.an.vals.get(a), TInfo):
                    observed_at.append(a)
    return list(dict.fromkeys(observed_at))


def _changes(gm, b: _Baseline, producer: str, cdim: int, pos: int, scale: float, watch: set) -> dict:
    """Positions of every watched value that change when one producer channel is pushed both ways."""
    changed: dict[str, torch.Tensor] = {}
    base = dict(b.base_out)
    if producer not in base:
        base[producer] = b.producer_out[producer]
    for sign in (1.0, -1.0):
        interp = _ClampInterpreter(gm, base, b.stats, (producer, cdim, pos, sign * scale))
        interp.watch = watch
        interp.run(*b.inputs)
        for name, y in interp.seen.items():
            c = y != b.ref[name]  # untouched paths recompute bit-identical values
            changed[name] = c if name not in changed else changed[name] | c
    return changed


def _compare(cg: ChannelGraph, where: str, observed_at, preds, changed, b: _Baseline,
             report: PerturbationReport) -> dict[str, int]:
    """Observed against predicted changes; unexpected ones go to the report, missing ones are returned."""
    t = cg.an.t
    missing_at: dict[str, int] = {}
    for o in observed_at:
        ov = cg.an.vals[o]
        if not any(t.has_space(ex) for ex in ov.exprs):
            continue  # no channel dimension: nothing positional to compare
        if any(leaf in t.frozen for ex in ov.exprs for leaf in t.leaves(ex)):
            continue  # a layout with frozen groups: nothing there can change width
        report.checked += 1
        got = changed[o.name]
        keep_dims = [d for d in range(ov.ndim) if t.has_space(ov.exprs[d])]
        other = tuple(d for d in range(ov.ndim) if d not in keep_dims)
        got_red = got.any(dim=other).numpy() if other else got.numpy()
        got_red = got_red & _live_mask(t, ov)  # ignore positions of frozen groups
        pred = preds[o.name]
        if pred is None:
            if got.any():
                report.unexpected.append(f"{where} changes {o.name}, which shares no group with it")
            continue
        extra = int((got_red & ~pred).sum())
        if extra:
            report.unexpected.append(f"{where} -> {o.name}: {extra} changed positions that no group predicts")
        # a position that is exactly zero in the reference (a dead ReLU channel) cannot show a
        # change, however it is coupled: it is unobservable, not missing
        ref = b.ref[o.name]
        live = (ref != 0).any(dim=other).numpy() if other else (ref != 0).numpy()
        missing = int((pred & ~got_red & live).sum())
        if missing:
            missing_at[o.name] = missing
    return missing_at


def _written_at(t, e, pos: int) -> set:
    """Written ids of the leaves that position ``pos`` of layout ``e`` belongs to."""
    e0 = e
    out = set()

    def walk(x, p):
        tag = x[0]
        if tag == "S":
            r = t.find(x[1])
            ref = t._refined.get(r)
            if ref is None:
                out.add(x[1])
            else:
                walk(ref, p)
        elif tag == "C":
            for part in x[1]:
                w = t.width(part)
                if p < w:
                    walk(part, p)
                    return
                p -= w
        elif tag == "P":
            widths = [t.width(f) for f in x[1]]
            for f, w in zip(reversed(x[1]), reversed(widths)):
                walk(f, p % w)
                p //= w
    walk(e0, pos)
    return out


def _live_mask(t, ov: TInfo) -> np.ndarray:
    keep_dims = [d for d in range(ov.ndim) if t.has_space(ov.exprs[d])]
    masks = []
    for d in keep_dims:
        e = ov.exprs[d]
        m = np.zeros(t.width(e), dtype=bool)
        for leaf in set(t.leaves(e)):
            if leaf not in t.frozen:
                m |= t.unit_ids(e, leaf) >= 0
        masks.append(m)
    if not masks:
        return np.ones((), dtype=bool)
    out = masks[0]
    for m in masks[1:]:
        out = np.logical_and.outer(out, m)
    return out


def _predicted(t, ov: TInfo, units: dict[int, int]) -> np.ndarray | None:
    keep_dims = [d for d in range(ov.ndim) if t.has_space(ov.exprs[d])]
    shared = [leaf for leaf in units if any(leaf in set(t.leaves(ov.exprs[d])) for d in keep_dims)]
    if not shared:
        return None
    masks = []
    for d in keep_dims:
        e = ov.exprs[d]
        m = np.ones(t.width(e), dtype=bool)
        for leaf in shared:
            ids = t.unit_ids(e, leaf)
            if (ids >= 0).any():
                m &= ids == units[leaf]
        masks.append(m)
    out = masks[0]
    for m in masks[1:]:
        out = np.logical_and.outer(out, m)
    return out



def _layer_norm_free_stats(cg: ChannelGraph, env: dict) -> dict:
    """Baseline statistics of norms that mix channels, as (mean, std, module) per node."""
    stats = {}
    for n in cg.graph.nodes:
        if n.op != "call_module" or not isinstance(n.args[0], fx.Node):
            continue
        mod = cg.module.get_submodule(n.target)
        x = env.get(n.args[0].name)
        if x is None:
            continue
        if isinstance(mod, nn.LayerNorm):
            k = len(mod.normalized_shape)
            rows = int(np.prod(x.shape[:-k])) if x.dim() > k else 1
            xs = x.reshape(rows, 1, -1)
            stats[n.name] = (xs.mean(-1, keepdim=True), torch.sqrt(xs.var(-1, unbiased=False, keepdim=True) + mod.eps),
                             mod)
        elif isinstance(mod, nn.GroupNorm):
            xs = x.reshape(x.shape[0], mod.num_groups, -1)
            stats[n.name] = (xs.mean(-1, keepdim=True), torch.sqrt(xs.var(-1, unbiased=False, keepdim=True) + mod.eps),
                             mod)
    return stats


