"""FPGA cost pass: on-chip buffer energy, DRAM energy and latency of one inference of any ONNX CNN.

The CGaP paper (Sec. VI, Fig. 8) evaluates its models with the analytical FPGA performance model
of Ma et al. ("Performance modeling for CNN inference accelerators on FPGA", IEEE TCAD 2019);
this pass is a re-implementation of that kind of model, documented in docs/fpga_cost.md:

    report = cost_onnx("model.onnx")                          # dense, the paper's FPGA setup
    report = cost_onnx("model.onnx", load_hw_config("my.toml"), sparsity_mode="unstructured")
    print(report.totals()); report.to_csv(); plot_compare({"dense": r1, "shrunk": r2}, "fig8.png")

Steps: read the graph into MAC layers with their fused ops and memory-bound passes
(``fpga_graph``), search each layer's tiling under the buffer capacities (``fpga_schedule``),
count weight bytes dense or with scattered zeros (``fpga_sparse``), and sum.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from cgap_graph.errors import CgapError
from cgap_graph.passes.fpga.config import HwConfig, load_hw_config
from cgap_graph.passes.fpga.graph import MacLayer, Workload, load_onnx
from cgap_graph.passes.fpga.plot import plot_compare
from cgap_graph.passes.fpga.schedule import LayerCost, Schedule, cost_layer, cost_memory_pass, search_schedule
from cgap_graph.passes.fpga.sparse import WeightStore
from cgap_graph.passes.fpga.workload import read_workload

SPARSITY_MODES = ("dense", "unstructured", "kernel")

__all__ = ["CostReport", "HwConfig", "LayerCost", "Schedule", "cost_layer", "cost_onnx", "cost_workload",
           "load_hw_config", "plot_compare", "reports_to_csv", "search_schedule"]

CSV_COLUMNS = [
    "name", "op", "shape", "fused", "macs", "toy", "tof", "order", "tiles", "fits", "compute_cycles",
    "latency_cycles", "latency_s", "dram_read_bytes", "dram_write_bytes", "dram_words", "dram_transfers",
    "pixel_buffer_accesses", "weight_buffer_accesses", "output_buffer_accesses", "buffer_energy_pj",
    "dram_energy_pj", "mac_energy_pj", "weight_format", "weight_zero_fraction", "note",
]
_SUMMED = ["macs", "compute_cycles", "latency_cycles", "latency_s", "dram_read_bytes", "dram_write_bytes",
           "dram_words", "dram_transfers", "pixel_buffer_accesses", "weight_buffer_accesses",
           "output_buffer_accesses", "buffer_energy_pj", "dram_energy_pj", "mac_energy_pj"]


@dataclass
class CostReport:
    """Per-layer costs of one model on one accelerator, in execution order."""

    model: str
    config: HwConfig
    sparsity_mode: str
    layers: list[LayerCost]
    skipped: list[str] = field(default_factory=list)

    def totals(self) -> dict[str, float]:
        """Sums over layers (layers run one after another, so latencies add), plus ms and bytes."""
        t: dict[str, float] = {k: sum(getattr(c, k) for c in self.layers) for k in _SUMMED}
        t["latency_ms"] = t["latency_s"] * 1e3
        t["dram_bytes"] = t["dram_read_bytes"] + t["dram_write_bytes"]
        t["buffer_accesses"] = t["pixel_buffer_accesses"] + t["weight_buffer_accesses"] + t["output_buffer_accesses"]
        t["layers"] = len(self.layers)
        return t

    def to_dict(self) -> dict:
        return {"model": self.model, "sparsity_mode": self.sparsity_mode, "config": self.config.to_dict(),
                "totals": self.totals(), "layers": [c.to_dict() for c in self.layers], "skipped": list(self.skipped)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def rows(self) -> list[dict]:
        """One flat dict per layer, with the CSV columns."""
        out = []
        for c in self.layers:
            d = {k: getattr(c, k) for k in CSV_COLUMNS if hasattr(c, k) and k not in ("fused",)}
            s = c.schedule
            d.update(fused="+".join(c.fused), toy=s.toy if s else "", tof=s.tof if s else "",
                     order=s.order if s else "")
            out.append(d)
        return out

    def to_csv(self) -> str:
        return reports_to_csv({self.model: self})


def reports_to_csv(reports: dict[str, CostReport]) -> str:
    """One CSV of every layer of several reports, with a ``model`` column first."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["model", *CSV_COLUMNS], lineterminator="\n")
    writer.writeheader()
    for name, report in reports.items():
        for row in report.rows():
            writer.writerow({"model": name, **row})
    return buf.getvalue()


def cost_workload(work: Workload, config: HwConfig | None = None, *, sparsity_mode: str = "dense") -> CostReport:
    """Cost every layer of an already-read workload (see ``fpga_graph.read_workload``)."""
    cfg = config or HwConfig()
    if sparsity_mode not in SPARSITY_MODES:
        raise CgapError(f"sparsity mode '{sparsity_mode}' is unknown; use dense, unstructured or kernel")
    costs = []
    for layer in work.layers:
        if isinstance(layer, MacLayer):
            store = WeightStore(layer, cfg, sparse=sparsity_mode == "unstructured", kernel=sparsity_mode == "kernel")
            costs.append(search_schedule(layer, cfg, store))
        else:
            costs.append(cost_memory_pass(layer, cfg))
    return CostReport(work.name, cfg, sparsity_mode, costs, list(work.skipped))


def cost_onnx(model: str | Path | onnx.ModelProto, config: HwConfig | None = None, *,
              sparsity_mode: str = "dense", name: str | None = None) -> CostReport:
    """Cost one inference of an ONNX model (a path or a loaded ModelProto) on the accelerator.

    ``sparsity_mode="unstructured"`` stores each layer's scattered zero weights compressed where
    that is smaller (``HwConfig.sparse_format``); compute is unchanged, as on any dense MAC array.
    ``sparsity_mode="kernel"`` skips input channels whose kernels are zero on every lane and stores
    only non-zero kernels (Small-World masks; ``fpga_sparse``).
    """
    if sparsity_mode not in SPARSITY_MODES:
        raise CgapError(f"sparsity mode '{sparsity_mode}' is unknown; use dense, unstructured or kernel")
    proto, default_name = load_onnx(model)
    work = read_workload(proto, name or default_name, want_weights=True)
    return cost_workload(work, config, sparsity_mode=sparsity_mode)
