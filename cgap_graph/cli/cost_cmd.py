"""``cgap-graph cost``: FPGA cost of ONNX models (see ``passes/fpga/cost.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cgap_graph.cli.common import console, run_command
from cgap_graph.errors import CgapError
from cgap_graph.io.atomic import atomic_write_text
from cgap_graph.io.outputs import check_output
from cgap_graph.passes.fpga.config import load_hw_config
from cgap_graph.passes.fpga.cost import cost_onnx, plot_compare, reports_to_csv
from cgap_graph.passes.fpga.plot import plot_pareto


def cost(
    model: list[Path] = typer.Argument(..., metavar="MODEL.onnx...", help="One or more .onnx files; with "
                                       "several, a comparison table follows (the first is the baseline)."),
    config: Path | None = typer.Option(None, "--config", help="TOML file of hardware parameters, e.g. pof = 32 "
                                       "(see docs/fpga_cost.md); unset keys keep the paper's setup."),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON instead of tables."),
    csv: Path | None = typer.Option(None, "--csv", help="Write every layer of every model to this CSV file."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a bar chart comparing the models (PNG): "
                                     "buffer energy, DRAM energy, latency, as in the paper's Fig. 8."),
    sparse: bool = typer.Option(False, "--unstructured", help="Short for --sparsity unstructured."),
    sparsity: str = typer.Option("dense", "--sparsity", help="How the zero weights in the file count: dense "
                                 "(not at all), unstructured (stored compressed where smaller, sparse_format; "
                                 "compute unchanged) or kernel (zero kernels skipped in compute and storage: "
                                 "Small-World models)."),
    pareto: Path | None = typer.Option(None, "--pareto", metavar="PNG", help="Write accuracy against latency and "
                                       "energy, one point per model (the accuracy from --accuracy, else from the "
                                       "summary.json of the run folder the file lies in)."),
    accuracy: str | None = typer.Option(None, "--accuracy", metavar="A,B,...", help="Test accuracy of each model "
                                        "for --pareto, in order (0.99 or 99%)."),
):
    """Estimate on-chip buffer energy, DRAM energy and latency of one inference of MODEL on an FPGA.

    An analytical model after Ma et al. (IEEE TCAD 2019), the one the CGaP paper uses (Sec. VI):
    16-bit fixed point, 512-bit DRAM words, 300 MHz, 19.2 GB/s, a 4x4x64 MAC array, 4 MiB of
    buffers; each Conv/Gemm/MatMul layer gets the tiling with the lowest latency that fits the
    buffers. Equations, defaults and their sources: docs/fpga_cost.md. Examples:

    \b
        cgap-graph cost vgg16.onnx
        cgap-graph cost dense.onnx shrunk.onnx --plot fig8.png --csv layers.csv
        cgap-graph cost magnitude_pruned.onnx --unstructured --json
        cgap-graph cost small_world.onnx --sparsity kernel
        cgap-graph cost model.onnx --config fpga.toml     # e.g. pof = 32, freq_mhz = 200
    """
    run_command(lambda: _cost_body(model, config, as_json, csv, plot, "unstructured" if sparse else sparsity, console,
                                   pareto, accuracy))


def _accuracies(models: list[Path], text: str | None) -> list[float]:
    """Accuracy per model: given, or the ``summary.json`` of the run folder holding the file."""
    if text:
        try:
            values = [float(v.strip().rstrip("%")) / (100 if v.strip().endswith("%") else 1) for v in text.split(",")]
        except ValueError:
            raise CgapError(f"--accuracy '{text}' must be numbers separated by commas, e.g. 0.991,0.987") from None
        if len(values) != len(models):
            raise CgapError(f"--accuracy gives {len(values)} values for {len(models)} models; give one per model")
        return values
    out = []
    for m in models:
        summary = m.parent / "summary.json"
        try:
            out.append(float(json.loads(summary.read_text())["test_accuracy"]))
        except (OSError, ValueError, KeyError, TypeError):
            raise CgapError(f"no accuracy for {m}: {summary} is missing or has no test_accuracy; give "
                            "--accuracy") from None
    return out


def _labels(paths: list[Path]) -> list[str]:
    """File stems, or the full paths where two stems clash."""
    stems = [p.stem for p in paths]
    return [s if stems.count(s) == 1 else str(p) for s, p in zip(stems, paths)]


def _cost_body(models: list[Path], config: Path | None, as_json: bool, csv: Path | None, plot: Path | None,
               mode: str, console: Console, pareto: Path | None = None, accuracy: str | None = None) -> None:
    if not models:
        raise CgapError("give at least one .onnx file, e.g. cgap-graph cost model.onnx")
    for path in models:
        if path.is_dir():
            raise CgapError(f"{path} is a directory; give .onnx files (e.g. {path}/*.onnx)")
    accuracies = _accuracies(models, accuracy) if pareto is not None else None
    for out, flag in ((csv, "--csv"), (plot, "--plot"), (pareto, "--pareto")):
        if out is not None:
            check_output(out, [*models, config], flag=flag)
    cfg = load_hw_config(config)
    reports = {label: cost_onnx(path, cfg, sparsity_mode=mode, name=label)
               for label, path in zip(_labels(models), models)}
    if csv is not None:
        atomic_write_text(csv, reports_to_csv(reports))
    if plot is not None:
        plot_compare(reports, plot, title=f"FPGA cost ({mode} weights)")
    if pareto is not None:
        plot_pareto({label: (acc, r) for (label, r), acc in zip(reports.items(), accuracies)}, pareto,
                    title="accuracy against FPGA cost")
    if as_json:
        dicts = [r.to_dict() for r in reports.values()]
        data = dicts[0] if len(dicts) == 1 else {"reports": dicts, "comparison": _comparison(reports)}
        print(json.dumps(data, indent=2))
        return
    for report in reports.values():
        _print_report(report, console)
    if len(reports) > 1:
        _print_comparison(reports, console)
    for path, what in ((csv, "per-layer CSV"), (plot, "comparison chart"), (pareto, "Pareto plot")):
        if path is not None:
            console.print(f"wrote {what} to {path}", markup=False)


_METRICS = [("latency_ms", "latency ms"), ("dram_energy_pj", "DRAM energy uJ"),
            ("buffer_energy_pj", "buffer energy uJ"), ("dram_bytes", "DRAM MB"), ("macs", "MMACs")]
_SCALE = {"latency_ms": 1.0, "dram_energy_pj": 1e-6, "buffer_energy_pj": 1e-6, "dram_bytes": 1e-6, "macs": 1e-6}


def _comparison(reports: dict) -> list[dict]:
    """Totals of every model and their change against the first (the baseline)."""
    base = next(iter(reports.values())).totals()
    rows = []
    for label, report in reports.items():
        t = report.totals()
        row = {"model": label}
        for key, _ in _METRICS:
            row[key] = t[key]
            row[f"{key}_change_pct"] = 100.0 * (t[key] / base[key] - 1) if base[key] else None
        rows.append(row)
    return rows


def _short(name: str, op: str) -> str:
    """'/layers/layers.0/conv1/Conv' -> 'layers/layers.0/conv1' (exporter names end in the op)."""
    name = name.lstrip("/")
    return name[: -len(op) - 1] if name.endswith("/" + op) else name


def _print_report(report, console: Console) -> None:
    cfg = report.config
    title = (f"{report.model}: {report.sparsity_mode} weights, {cfg.pox}x{cfg.poy}x{cfg.pof} MACs at "
             f"{cfg.freq_mhz:g} MHz, {cfg.dram_bandwidth_gbs:g} GB/s")
    table = Table(title=title, header_style="bold", title_justify="left")
    for col in ("layer", "op", "shape", "schedule", "cycles", "latency us", "DRAM KB", "buffer acc.",
                "buffer uJ", "DRAM uJ"):
        text = col in ("layer", "op", "shape", "schedule")
        table.add_column(col, justify="left" if text else "right", overflow="fold", no_wrap=not text)
    for c in report.layers:
        op = "+".join([c.op, *c.fused])
        sched = "" if c.schedule is None else f"{c.schedule.toy}x{c.schedule.tof} {c.schedule.order} x{c.tiles}"
        if not c.fits:
            sched += " [red](too big)[/red]"
        if c.weight_format != "dense":
            sched += f" [cyan]{c.weight_format}[/cyan]"
        table.add_row(escape(_short(c.name, c.op)), escape(op), c.shape, sched, f"{c.compute_cycles:,}",
                      f"{c.latency_s * 1e6:,.1f}",
                      f"{c.dram_bytes / 1024:,.1f}", f"{c.buffer_accesses:,}", f"{c.buffer_energy_pj * 1e-6:,.2f}",
                      f"{c.dram_energy_pj * 1e-6:,.2f}")
    t = report.totals()
    table.add_row("[bold]total[/bold]", "", f"{t['macs'] / 1e6:,.1f} MMACs", "", f"{t['compute_cycles']:,.0f}",
                  f"[bold]{t['latency_s'] * 1e6:,.1f}[/bold]", f"{t['dram_bytes'] / 1024:,.1f}",
                  f"{t['buffer_accesses']:,.0f}", f"[bold]{t['buffer_energy_pj'] * 1e-6:,.2f}[/bold]",
                  f"[bold]{t['dram_energy_pj'] * 1e-6:,.2f}[/bold]")
    console.print(table)
    for s in report.skipped:
        console.print(f"[yellow]skipped[/yellow] {escape(str(s))}")


def _print_comparison(reports: dict, console: Console) -> None:
    table = Table(title="comparison (change against the first model)", header_style="bold", title_justify="left")
    table.add_column("model")
    for _, label in _METRICS:
        table.add_column(label, justify="right")
    for row in _comparison(reports):
        cells = []
        for key, _ in _METRICS:
            value = f"{row[key] * _SCALE[key]:,.3f}"
            pct = row[f"{key}_change_pct"]
            if pct is not None and abs(pct) >= 0.05:
                value += f" ({pct:+.1f}%)"
            cells.append(value)
        table.add_row(escape(row["model"]), *cells)
    console.print(table)
