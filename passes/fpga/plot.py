"""Bar charts comparing FPGA cost reports, like Fig. 8 of the CGaP paper: on-chip buffer access
energy, DRAM access energy and latency, one panel each."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cgap_graph.errors import CgapError  # noqa: E402
from cgap_graph.io.atomic import atomic_write  # noqa: E402

if TYPE_CHECKING:
    from cgap_graph.passes.fpga.cost import CostReport

PANELS = [("buffer_energy_pj", "on-chip buffer access energy (pJ)"),
          ("dram_energy_pj", "DRAM access energy (pJ)"),
          ("latency_ms", "latency (ms)")]


def plot_compare(reports: Mapping[str, CostReport] | Mapping[str, Mapping[str, CostReport]],
                 out_png: str | Path, title: str | None = None) -> Path:
    """Write a PNG with one panel per metric. ``reports`` is ``{label: report}`` (one bar each) or,
    as in Fig. 8, ``{model: {scheme: report}}`` (a group of bars per model, one colour per scheme)."""
    if not reports:
        raise CgapError("nothing to plot: give at least one cost report")
    first = next(iter(reports.values()))
    groups = reports if isinstance(first, Mapping) else {label: {"": r} for label, r in reports.items()}
    schemes = list(dict.fromkeys(s for g in groups.values() for s in g))
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS) + max(0, len(groups) - 2), 3.8))
    width = 0.8 / len(schemes)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, label) in zip(axes, PANELS):
        for j, scheme in enumerate(schemes):
            xs, ys = [], []
            for i, group in enumerate(groups.values()):
                if scheme in group:
                    xs.append(i + (j - (len(schemes) - 1) / 2) * width)
                    ys.append(group[scheme].totals()[key])
            ax.bar(xs, ys, width, label=scheme, color=colors[j % len(colors)])
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(list(groups), rotation=15, ha="right")
        ax.set_title(label, fontsize=10)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
        ax.grid(axis="y", alpha=0.3)
    if schemes != [""]:
        axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_png)
    try:
        atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    finally:
        plt.close(fig)
    return out
