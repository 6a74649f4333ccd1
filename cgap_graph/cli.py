"""The ``cgap-graph`` command line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import typer
from rich.console import Console

from . import zoo
from .errors import CgapError, InputShapeError
from .graph import trace
from .model_io import load_model

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Graph-IR structural surgery for PyTorch: find a model's coupled channel groups, and grow, "
         "prune and shrink them (Continuous Growth and Pruning).\n\n"
         "MODEL is a zoo name (see 'cgap-graph zoo'), a file saved by cgap-graph, a state dict with "
         "--arch module:factory, or a pickled model with --trust.",
    rich_markup_mode="rich",
)
console = Console()
err = Console(stderr=True, soft_wrap=True)  # one line per error, never wrapped

_DTYPES = {"float": torch.float32, "float32": torch.float32, "float16": torch.float16, "half": torch.float16,
           "bfloat16": torch.bfloat16, "long": torch.int64, "int64": torch.int64, "int": torch.int64}


def parse_shape(text: str) -> tuple[int, ...]:
    sep = "x" if "x" in text and "," not in text else ","
    try:
        shape = tuple(int(p) for p in text.split(sep))
    except ValueError:
        raise InputShapeError(f"--input-shape '{text}' is invalid: give comma-separated positive integers, "
                              "e.g. 1,3,32,32") from None
    if not shape or any(k <= 0 for k in shape):
        raise InputShapeError(f"--input-shape '{text}' is invalid: every size must be a positive integer, "
                              "e.g. 1,3,32,32")
    return shape


def parse_dtype(text: str) -> torch.dtype:
    if text not in _DTYPES:
        raise InputShapeError(f"--input-dtype '{text}' is unknown; use one of {', '.join(sorted(_DTYPES))}")
    return _DTYPES[text]


def _run(fn):
    """Run a command body: user errors become one red line and exit code 2."""
    try:
        return fn()
    except CgapError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]")
        raise typer.Exit(130) from None


def _load_and_trace(model: str, input_shape: list[str] | None, input_dtype: list[str] | None, arch: str | None,
                    arch_kwargs: str | None, trust: bool, width: float, leaf: list[str] | None):
    kwargs = {}
    if arch_kwargs:
        try:
            kwargs = json.loads(arch_kwargs)
        except json.JSONDecodeError as exc:
            raise CgapError(f"--arch-kwargs is not valid JSON ({exc.msg}); e.g. '{{\"num_classes\": 100}}'") from None
    loaded = load_model(model, arch=arch, arch_kwargs=kwargs, trust=trust, width=width)
    if input_shape:
        shapes = [parse_shape(s) for s in input_shape]
    elif loaded.input_shape is not None:
        shapes = [loaded.input_shape]
    else:
        raise InputShapeError(f"{model} does not say its input shape; pass --input-shape, e.g. 1,3,32,32")
    dtypes = [parse_dtype(d) for d in (input_dtype or ["float"])]
    if len(dtypes) == 1:
        dtypes = dtypes * len(shapes)
    if len(dtypes) != len(shapes):
        raise InputShapeError(f"{len(shapes)} --input-shape but {len(dtypes)} --input-dtype; give one per input")
    t0 = time.perf_counter()
    cg = trace(loaded.model, shapes, input_dtype=dtypes, leaf_modules=list(leaf or []))
    return loaded, cg, time.perf_counter() - t0


@app.command()
def inspect(
    model: str = typer.Argument(..., help="Zoo name or model file."),
    input_shape: list[str] | None = typer.Option(
        None, "--input-shape", "-s", help="Input shape, e.g. 1,3,32,32 (repeat for several inputs). "
        "Zoo models and cgap-graph files know theirs."),
    input_dtype: list[str] | None = typer.Option(None, "--input-dtype", help="float (default) or long (token ids)."),
    arch: str | None = typer.Option(None, "--arch", help="module:factory that builds the architecture of a "
                                       "state-dict file (imported from the current directory)."),
    arch_kwargs: str | None = typer.Option(None, "--arch-kwargs", help="JSON keyword arguments for --arch."),
    trust: bool = typer.Option(False, "--trust", help="Allow loading a pickled model (this runs code from the file)."),
    width: float = typer.Option(1.0, "--width", help="Width multiplier for zoo models."),
    leaf: list[str] | None = typer.Option(None, "--leaf", help="Keep this submodule opaque (its groups freeze)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    graph: Path | None = typer.Option(None, "--graph", help="Write the channel graph as GraphML to this file."),
    verify: bool = typer.Option(False, "--verify", help="Check every group by perturbing producers (slow)."),
):
    """Trace MODEL and print its channel groups, parameters and FLOPs.

    Each group is a set of coupled channels: pruning or growing one means changing every member
    (producer rows, consumer columns, norm parameters, reshapes) together. Example:

        cgap-graph inspect resnet56
        cgap-graph inspect model.pt --input-shape 1,3,224,224 --json
    """
    def body():
        loaded, cg, secs = _load_and_trace(model, input_shape, input_dtype, arch, arch_kwargs, trust, width, leaf)
        extra = {"model": model, "source": loaded.source, "analysis_seconds": round(secs, 4)}
        if graph is not None:
            cg.write_graphml(str(graph))
        check = None
        if verify:
            from .verify import perturbation_check
            check = perturbation_check(cg)
            extra["verify"] = {"unexpected": check.unexpected, "missing": check.missing, "checked": check.checked}
        if as_json:
            from .report import summary
            print(json.dumps(summary(cg, extra), indent=2))
            return
        from .report import print_inspect
        lines = [f"traced and analysed in {secs * 1e3:.1f} ms ({loaded.source})"]
        if graph is not None:
            lines.append(f"channel graph written to {graph}")
        print_inspect(cg, model, console, lines)
        if check is not None:
            if check.ok:
                console.print(f"[green]verify: all {check.checked} perturbation checks agree with the groups[/green]")
            else:
                for u in check.unexpected[:10]:
                    console.print(f"[red]verify: {u}[/red]")
                for m in check.missing[:10]:
                    console.print(f"[yellow]verify (over-coupled, safe): {m}[/yellow]")
    _run(body)


@app.command("zoo")
def zoo_cmd():
    """List the built-in models (use their names as MODEL)."""
    from rich.table import Table
    table = Table(header_style="bold")
    table.add_column("name")
    table.add_column("input")
    table.add_column("parameters", justify="right")
    table.add_column("description")
    for name, entry in zoo.ZOO.items():
        n = sum(p.numel() for p in zoo.build(name).parameters())
        table.add_row(name, "x".join(map(str, entry.input_shape)), f"{n:,}", entry.description)
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
