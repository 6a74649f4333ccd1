"""``cgap-graph export``: MODEL to a checked ONNX file for deployment tools."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from cgap_graph.cli.common import MODEL_OPTIONS, ModelRequest, choice, console, run_command, with_options
from cgap_graph.errors import check_number
from cgap_graph.io.outputs import check_output
from cgap_graph.passes.export import export_onnx


@with_options(req=MODEL_OPTIONS)
def export(
    req: ModelRequest,
    output: Path = typer.Option(..., "-o", "--output", metavar="FILE", help="The .onnx file to write."),
    opset: int = typer.Option(18, "--opset", metavar="N", help="ONNX opset (18: the exporter's own; 17-23 accepted)."),
    exporter: str = typer.Option("auto", "--exporter", metavar="WHICH", help="auto (torch.export-based, falling "
                                 "back to the TorchScript exporter if it fails), dynamo or legacy."),
    no_shrink: bool = typer.Option(False, "--no-shrink", help="Keep masked (all-zero) units in the file."),
    static_batch: bool = typer.Option(False, "--static-batch", help="Fix the batch axis instead of a dynamic one."),
    tolerance: float = typer.Option(1e-4, "--tolerance", metavar="TOL", help="Max |ONNX Runtime - PyTorch| "
                                    "accepted, relative to the outputs' magnitude when above 1."),
):
    """Export MODEL to ONNX for deployment tools, checked end to end.

    Masked units (all-zero filters) are removed first, so the file holds the small model.
    The file has a dynamic batch axis and passes the ONNX checker; ONNX Runtime runs it against
    PyTorch, the max difference is printed, and above --tolerance nothing is written. Widths and
    the model's CGaP history go into the file's metadata (onnx.load(f).metadata_props).

    \b
        cgap-graph export runs/lenet5-mnist/model.pt -o lenet5.onnx
        cgap-graph export resnet56 -o resnet56.onnx --opset 20
    """
    model = req.model

    def body():
        check_number("tolerance", tolerance, 0.0, 1.0, lo_open=True, meaning="relative to the outputs")
        choice(exporter, "--exporter", ("auto", "dynamo", "legacy"))
        check_output(output, req.inputs)
        loaded, cg, _ = req.trace()
        meta = dict(loaded.meta)
        meta.setdefault("source", model)
        rep = export_onnx(cg, None, output, opset=opset, meta=meta, shrink=not no_shrink, exporter=exporter,
                          tolerance=tolerance, dynamic_batch=not static_batch, inputs=req.inputs)
        console.print(f"[bold]export {escape(model)}[/bold]: {rep.exporter} exporter, opset {rep.opset}, "
                      f"{'dynamic' if rep.dynamic_batch else 'fixed'} batch axis, {rep.params:,} parameters")
        console.print("widths: " + ", ".join(f"{k.removesuffix('.weight[0]')} {v}" for k, v in rep.widths.items()),
                      markup=False)
        for k, n in rep.removed.items():
            console.print(f"shrunk {n} masked unit(s) of {k}", markup=False)
        for n in rep.notes:
            console.print(f"[yellow]note:[/yellow] {escape(n)}")
        console.print(f"ONNX checker: ok; ONNX Runtime vs PyTorch: max |diff| {rep.max_abs_diff:.2e} on outputs "
                      f"up to {rep.output_scale:.3g} (tolerance {rep.tolerance:g} x max(1, |output|))")
        console.print(f"wrote {escape(str(output))}")
    run_command(body)
