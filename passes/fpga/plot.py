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
    return _save(fig, out_png, title)


def plot_pareto(points: Mapping[str, tuple[float, CostReport]], out_png: str | Path,
                title: str | None = None) -> Path:
    """Accuracy against latency and against energy (DRAM + on-chip buffers), one point per model,
    the points on the Pareto front (no other model both faster/cheaper and more accurate) joined:
    the trade-off a deployment engineer picks from. ``points`` is ``{label: (accuracy, report)}``."""
    if not points:
        raise CgapError("nothing to plot: give at least one model with its accuracy")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    rows = [(label, acc, r.totals()) for label, (acc, r) in points.items()]
    for ax, (key, xlabel, scale) in zip(axes, (("latency_ms", "latency (ms)", 1.0),
                                               ("energy", "energy per inference (uJ)", 1e-6))):
        xs = [(t["dram_energy_pj"] + t["buffer_energy_pj"]) * scale if key == "energy" else t[key]
              for _, _, t in rows]
        ys = [100 * acc for _, acc, _ in rows]
        ax.scatter(xs, ys, zorder=3)
        for (label, _, _), x, y in zip(rows, xs, ys):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = sorted((x, y) for x, y in zip(xs, ys) if not any(x2 <= x and y2 > y or x2 < x and y2 >= y
                                                                 for x2, y2 in zip(xs, ys)))
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", alpha=0.6, zorder=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    return _save(fig, out_png, title)


def _save(fig, out_png: str | Path, title: str | None) -> Path:
    """Title, layout, an atomic PNG write, and the figure closed whatever happens."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_png)
    try:
        atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    finally:
        plt.close(fig)
    return out
