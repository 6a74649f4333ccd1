"""``cgap-graph inspect``: a model's channel groups, parameters and FLOPs."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cgap_graph.cli.common import MODEL_OPTIONS, ModelRequest, console, run_command, with_options
from cgap_graph.cli.report import print_inspect, summary
from cgap_graph.io.outputs import check_output
from cgap_graph.verify import perturbation_check


@with_options(req=MODEL_OPTIONS)
def inspect(
    req: ModelRequest,
    leaf: list[str] | None = typer.Option(None, "--leaf", metavar="MODULE", help="Keep this submodule opaque "
                                          "(its groups freeze); repeat for several."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    graph: Path | None = typer.Option(None, "--graph", metavar="FILE", help="Write the channel graph as GraphML "
                                      "to FILE."),
    verify: bool = typer.Option(False, "--verify", help="Check every group by perturbing producers (slow; needs "
                                "real weights)."),
):
    """Trace MODEL and print its channel groups, parameters and FLOPs.

    Each group is a set of coupled channels: pruning or growing one means changing every member
    (producer rows, consumer columns, norm parameters, reshapes) together. Zoo models are
    analysed without weights (meta tensors), so even very wide ones need little memory.

    \b
        cgap-graph inspect resnet56
        cgap-graph inspect model.pt --input-shape 1,3,224,224 --json
        cgap-graph inspect vgg19 --width 30          # 18G parameters, analysed in seconds
    """
    req.leaf = list(leaf or [])
    model = req.model

    def body():
        if graph is not None:
            check_output(graph, req.inputs, flag="--graph")
        loaded, cg, secs = req.trace(shape_only=not verify)
        extra = {"model": model, "source": loaded.source, "analysis_seconds": round(secs, 4)}
        if graph is not None:
            cg.write_graphml(str(graph))
        check = None
        if verify:
            check = perturbation_check(cg)
            extra["verify"] = {"unexpected": check.unexpected, "missing": check.missing, "checked": check.checked}
        if as_json:
            print(json.dumps(summary(cg, extra), indent=2))
            return
        lines = [f"traced and analysed in {secs * 1e3:.1f} ms ({loaded.source})"]
        if graph is not None:
            lines.append(f"channel graph written to {graph}")
        print_inspect(cg, model, console, lines)
        if check is not None:
            _print_check(check)
    run_command(body)


def _print_check(check) -> None:
    from rich.markup import escape
    if check.ok:
        console.print(f"[green]verify: all {check.checked} perturbation checks agree with the groups[/green]")
        return
    for u in check.unexpected[:10]:
        console.print(f"[red]verify: {escape(str(u))}[/red]")
    for m in check.missing[:10]:
        console.print(f"[yellow]verify (over-coupled, safe): {escape(str(m))}[/yellow]")
