"""The paper's figures for a run: parameters over epochs (Fig. 5), final widths vs the reference (Fig. 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cgap_graph.io.atomic import atomic_write  # noqa: E402


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def plot_params(metrics: list[dict[str, Any]], path: Path) -> None:
    """Parameters at the end of each epoch, with growth and pruning steps marked."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = [m["epoch"] for m in metrics]
    params = [m["params"] for m in metrics]
    ax.plot(epochs, params, marker="o", ms=3, color="tab:blue")
    for m in metrics:
        if m["phase"] in ("grow", "grow+prune"):
            ax.axvline(m["epoch"], color="tab:green", alpha=0.25)
        if m["phase"] in ("prune", "grow+prune"):
            ax.axvline(m["epoch"], color="tab:red", alpha=0.25)
    ax.set_xlabel("epoch")
    ax.set_ylabel("parameters")
    ax.set_title("model size during CGaP (green: growth, red: pruning)")
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_widths(labels: list[str], final: list[int], reference: list[int | None], path: Path) -> None:
    """Final width of every resizable group next to the reference model's."""
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(labels) + 2), 3.5))
    xs = range(len(labels))
    ref = [r if r is not None else 0 for r in reference]
    ax.bar([x - 0.2 for x in xs], ref, width=0.4, label="reference", color="tab:gray")
    ax.bar([x + 0.2 for x in xs], final, width=0.4, label="CGaP", color="tab:blue")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("channels / neurons")
    ax.set_title("final widths")
    ax.legend()
    _save(fig, path)
