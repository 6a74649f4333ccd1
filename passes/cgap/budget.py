"""Budgets: prune to a deployment target, not only to a parameter count.

A budget is ``METRIC=VALUE``: ``params=9500``, ``flops=0.5M``, ``fpga-latency=1.5ms``,
``fpga-energy=20uJ`` (DRAM + buffer energy of one inference on the FPGA cost model, with the
hardware TOML), or ``ort-latency=2ms`` (ONNX Runtime on this machine, batch ``@N``, default 1).

``budget_prune`` removes, step by step, the units with the lowest saliency per unit of budgeted
cost. The cost of a unit is the budget metric's drop when its group loses ``round_to`` units:
exact for parameters (``unit_params``) and FLOPs (each layer's MACs are linear in each of its
channel counts), and for the FPGA metrics the difference of the cost model's per-layer figures
for the affected layers at the current and the smaller width (``passes/fpga/from_graph.py``), so
a unit in a layer that is memory-bound or that sits just above a multiple of the MAC array's
``pof`` costs what it really costs. Costs are recomputed after every step, as widths change.
ONNX Runtime latency has no per-layer model: units are ranked by FLOPs per saliency and the
budget is checked by measuring the exported model, which is why it holds on the machine that
measured it. Each step removes the best options up to half of what the estimate says is still to
go, and one option once a single one would cross that half, so the last step takes one option:
the result lands under the budget by less than that one step's saving.
"""

from __future__ import annotations

import copy
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cgap_graph.errors import BadValue, CgapError
from cgap_graph.ir.flops import node_macs
from cgap_graph.ir.gc_pause import gc_paused
from cgap_graph.ir.graph import ChannelGraph
from cgap_graph.ir.values import TInfo
from cgap_graph.passes.cgap.prune import PruneReport, remove_units, unit_params
from cgap_graph.passes.cgap.saliency import Saliency, unit_scores
from cgap_graph.passes.cgap.widths import check_round_to
from cgap_graph.passes.export import export_onnx, median_run_seconds, session
from cgap_graph.passes.fpga.config import HwConfig
from cgap_graph.passes.fpga.cost import cost_workload
from cgap_graph.passes.fpga.from_graph import graph_workload
from cgap_graph.passes.fpga.graph import MacLayer
from cgap_graph.passes.fpga.schedule import search_schedule
from cgap_graph.passes.fpga.sparse import WeightStore

METRICS = ("params", "flops", "fpga-latency", "fpga-energy", "ort-latency")
_UNITS = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "s": 1.0, "ms": 1e-3, "us": 1e-6, "uJ": 1e-6, "mJ": 1e-3,
          "J": 1.0, "nJ": 1e-9}


@dataclass
class Budget:
    metric: str
    limit: float  # in base units: parameters, FLOPs, seconds, joules
    batch: int = 1
    hw: HwConfig = field(default_factory=HwConfig)

    def __str__(self) -> str:
        return f"{self.metric}={self.limit:g}" + (f"@{self.batch}" if self.metric == "ort-latency" else "")


def parse_budget(text: str, hw: HwConfig | None = None) -> Budget:
    """``params=9500``, ``flops=0.5M``, ``fpga-latency=1.5ms``, ``fpga-energy=20uJ``, ``ort-latency=2ms@64``."""
    m = re.fullmatch(r"\s*([a-z-]+)\s*=\s*([0-9.eE+-]+)\s*([a-zA-Z]*)\s*(?:@\s*(\d+))?\s*", text or "")
    if not m or m.group(1) not in METRICS or m.group(3) not in _UNITS:
        raise BadValue("budget", f"'{text}' is not METRIC=VALUE with METRIC one of {', '.join(METRICS)}, e.g. "
                       "params=9500, flops=0.5M, fpga-latency=1.5ms, fpga-energy=20uJ, ort-latency=2ms@1")
    try:
        value = float(m.group(2)) * _UNITS[m.group(3)]
    except ValueError:
        raise BadValue("budget", f"'{m.group(2)}' in '{text}' is not a number") from None
    if not np.isfinite(value) or value <= 0:
        raise BadValue("budget", f"the value in '{text}' must be a positive number")
    return Budget(m.group(1), value, int(m.group(4) or 1), hw or HwConfig())


# ---- measuring -----------------------------------------------------------------------------------------
def measure(cg: ChannelGraph, budget: Budget) -> float:
    """The model's value of the budget's metric, in base units."""
    if budget.metric == "params":
        return float(cg.param_count())
    if budget.metric == "flops":
        return float(cg.flops()) / cg.input_specs[0].shape[0]
    if budget.metric == "ort-latency":
        return ort_latency(cg, budget.batch)
    t = cost_workload(graph_workload(cg), budget.hw).totals()
    return t["latency_s"] if budget.metric == "fpga-latency" else (t["dram_energy_pj"] + t["buffer_energy_pj"]) * 1e-12


def ort_latency(cg: ChannelGraph, batch: int = 1, repeats: int = 20) -> float:
    """Median ONNX Runtime latency of the model at ``batch`` (one thread), exported on the fly."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        export_onnx(cg.module, [s.shape for s in cg.input_specs], path, check=False)
        sess = session(path, threads=1)
        feed = {i.name: torch.randn(batch, *s.shape[1:]).numpy() for i, s in zip(sess.get_inputs(), cg.input_specs)}
        return median_run_seconds(sess, feed, repeats)


# ---- per-unit costs ----------------------------------------------------------------------------------------
@dataclass
class _Layer:
    """A conv/linear layer as the costs see it: MACs and the layouts of its channel dimensions."""

    node: str
    macs: int
    cin: tuple
    cout: tuple
    depthwise: bool


def _layers(cg: ChannelGraph) -> list[_Layer]:
    gm = cg.module
    out = []
    for node in cg.graph.nodes:
        if node.op != "call_module":
            continue
        mod = gm.get_submodule(node.target)
        d = -1 if isinstance(mod, nn.Linear) else 1 if isinstance(mod, nn.modules.conv._ConvNd) else None
        x, y = cg.an.vals.get(node.args[0]) if node.args else None, cg.an.vals.get(node)
        if d is None or not isinstance(x, TInfo) or not isinstance(y, TInfo):
            continue
        depthwise = getattr(mod, "groups", 1) > 1 and mod.groups == getattr(mod, "in_channels", 0)
        out.append(_Layer(node.name, node_macs(node, gm.get_submodule), x.exprs[d], y.exprs[d], depthwise))
    return out


def _shares(t, layer: _Layer, space: int, width: int) -> tuple[float, float]:
    """Input and output channels of ``layer`` that one unit of the group holds."""
    fin = float((t.unit_ids(layer.cin, space) >= 0).sum()) / max(1, width)
    fout = float((t.unit_ids(layer.cout, space) >= 0).sum()) / max(1, width)
    return fin, fout


def unit_costs(cg: ChannelGraph, budget: Budget, step: int = 1) -> dict[int, float]:
    """What removing ``step`` units of each prunable group saves in the budget's metric."""
    groups = [g for g in cg.groups if g.prunable and g.width > step]
    if budget.metric == "params":
        return {g.id: step * unit_params(cg, g.id) for g in groups}
    layers, t = _layers(cg), cg.an.t
    if budget.metric in ("flops", "ort-latency"):  # MACs are linear in each channel count
        batch = cg.input_specs[0].shape[0]
        costs = {}
        for g in groups:
            total = 0.0
            for layer in layers:
                fin, fout = _shares(t, layer, g.space, g.width)
                total += layer.macs * ((0.0 if layer.depthwise else fin / t.width(layer.cin)) +
                                       fout / t.width(layer.cout))
            costs[g.id] = 2.0 * step * total / batch
        return costs
    return _fpga_unit_costs(cg, budget, groups, layers, step)


def _fpga_unit_costs(cg: ChannelGraph, budget: Budget, groups, layers: list[_Layer], step: int) -> dict[int, float]:
    """Cost-model figures of the affected layers at the current width against ``step`` fewer units."""
    work = {layer.name: layer for layer in graph_workload(cg).layers}
    base = {name: _figure(layer, budget) for name, layer in work.items()}
    t = cg.an.t
    costs = {}
    for g in groups:
        saved = 0.0
        for layer in layers:
            mac = work.get(layer.node)
            if mac is None:
                continue
            fin, fout = _shares(t, layer, g.space, g.width)
            if fin or fout:
                smaller = _resized(mac, mac.nif - round(step * fin), mac.nof - round(step * fout), layer.depthwise)
                saved += base[layer.node] - _figure(smaller, budget)
        costs[g.id] = max(saved, 0.0)
    return costs


def _resized(layer: MacLayer, nif: int, nof: int, depthwise: bool) -> MacLayer:
    new = copy.copy(layer)
    new.nif, new.nof = max(1, nif), max(1, nof)
    if depthwise:
        new.groups = new.nof
    new.out_elems = layer.out_elems * new.nof // max(1, layer.nof)
    return new


def _figure(layer: MacLayer, budget: Budget) -> float:
    c = search_schedule(layer, budget.hw, WeightStore(layer, budget.hw))
    return c.latency_s if budget.metric == "fpga-latency" else (c.dram_energy_pj + c.buffer_energy_pj) * 1e-12


# ---- the pass ------------------------------------------------------------------------------------------------
@dataclass
class BudgetReport:
    budget: str
    before: float
    after: float
    met: bool
    steps: int
    last_removed: int = 0  # units the last step removed (one option: ``round_to`` units of one group)
    last_saving: float = 0.0  # what the last step saved, measured
    removed: dict[int, int] = field(default_factory=dict)
    prune: list[PruneReport] = field(default_factory=list)


@gc_paused
def budget_prune(cg: ChannelGraph, sal: Saliency, budget: Budget, *, round_to: int = 1, fold: bool = True,
                 max_steps: int = 200) -> BudgetReport:
    """Prune until ``measure(cg, budget) <= budget.limit`` (see module docstring)."""
    step = check_round_to(round_to)
    before = current = measure(cg, budget)
    report = BudgetReport(str(budget), before, before, before <= budget.limit, 0)
    if step > 1 and current > budget.limit:  # first onto multiples of the step, the weakest units going
        sal = unit_scores(cg, sal) if not sal.units else sal
        dead = {g.id: [int(u) for u in np.argsort(sal.units[g.id], kind="stable")[:g.width % step]]
                for g in cg.groups if g.prunable and g.width > step and g.width % step and g.id in sal.units}
        if dead:
            report.prune.append(remove_units(cg, dead, fold=fold))
            sal = _after_removal(sal, dead, cg)
            current = measure(cg, budget)
    while current > budget.limit and report.steps < max_steps:
        sal = unit_scores(cg, sal) if not sal.units else sal
        dead = _choose(cg, sal, budget, step, _gap_in_cost_units(cg, budget, current))
        if not dead:
            break
        rep = remove_units(cg, dead, fold=fold)
        report.prune.append(rep)
        for gid, units in dead.items():
            report.removed[gid] = report.removed.get(gid, 0) + len(units)
        sal = _after_removal(sal, dead, cg)
        previous, current = current, measure(cg, budget)
        report.steps += 1
        report.last_removed, report.last_saving = sum(map(len, dead.values())), previous - current
    report.after, report.met = current, current <= budget.limit
    if not report.met and report.steps >= max_steps:
        raise CgapError(f"cannot prune to {budget} in {max_steps} steps: the model stops at {current:.4g}; "
                        "raise the budget or max_steps")
    if not report.met:
        raise CgapError(f"cannot prune to {budget}: the model stops at {current:.4g} (every group at its smallest "
                        f"width{'' if step == 1 else f' in multiples of {step}'}); raise the budget")
    return report


def _gap_in_cost_units(cg: ChannelGraph, budget: Budget, current: float) -> float:
    """How far the model is over the budget, in the units :func:`unit_costs` speaks. ``ort-latency``
    units are costed in FLOPs (there is no per-layer CPU model), so its gap in seconds becomes the
    same share of the model's FLOPs: latency taken as proportional to FLOPs for the step size only;
    the next measurement still decides."""
    gap = current - budget.limit
    if budget.metric != "ort-latency":
        return gap
    return gap / current * float(cg.flops()) / cg.input_specs[0].shape[0]


def _choose(cg: ChannelGraph, sal: Saliency, budget: Budget, step: int, gap: float) -> dict[int, list[int]]:
    """The cheapest-per-saliency units, up to half the remaining gap (at least one step)."""
    costs = unit_costs(cg, budget, step)
    options = []
    for gid, cost in costs.items():
        if cost <= 0 or gid not in sal.units:
            continue
        order = np.argsort(sal.units[gid], kind="stable")
        for k in range(0, cg.group(gid).width - step, step):
            units = order[k:k + step]
            options.append((float(sal.units[gid][units].sum()) / cost, gid, [int(u) for u in units], cost))
    options.sort(key=lambda o: o[0])
    dead: dict[int, list[int]] = {}
    saved = 0.0
    for _ratio, gid, units, cost in options:
        if dead and saved + cost > gap / 2:  # near the budget: one option per step
            break
        if len(dead.get(gid, [])) + len(units) >= cg.group(gid).width:
            continue
        dead.setdefault(gid, []).extend(units)
        saved += cost
    return {gid: sorted(us) for gid, us in dead.items()}


def _after_removal(sal: Saliency, dead: dict[int, list[int]], cg: ChannelGraph) -> Saliency:
    """Unit scores of the survivors, reindexed (the weights moved with the surgery)."""
    for gid, units in dead.items():
        keep = np.ones(len(sal.units[gid]), dtype=bool)
        keep[units] = False
        sal.units[gid] = sal.units[gid][keep]
    return sal


__all__ = ["METRICS", "Budget", "BudgetReport", "budget_prune", "measure", "parse_budget", "unit_costs"]
