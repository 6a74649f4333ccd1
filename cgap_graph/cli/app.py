"""The ``cgap-graph`` application: the commands, and ``main``, which turns every failure into one
line on stderr and an exit code (0 done, 2 bad input, 130 interrupted), never a traceback."""

from __future__ import annotations

import os
import signal
import sys
import threading
from inspect import cleandoc

import typer
from rich.table import Table

from cgap_graph import zoo
from cgap_graph.cli.common import console, say_error
from cgap_graph.cli.cost_cmd import cost
from cgap_graph.cli.demo_cmd import demo
from cgap_graph.cli.edit_cmds import grow, prune, seed_cmd
from cgap_graph.cli.export_cmd import export
from cgap_graph.cli.inspect_cmd import inspect
from cgap_graph.cli.train_cmd import train

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # help text is shown as written: [train] stays [train]
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Graph-IR structural surgery for PyTorch: find a model's coupled channel groups, and grow, prune and shrink "
         "them (Continuous Growth and Pruning).\n\nMODEL is a zoo name (see 'cgap-graph zoo'), a file saved by "
         "cgap-graph, a state dict with --arch module:factory, or a pickled model with --trust.",
)


def zoo_cmd():
    """List the built-in models (use their names as MODEL)."""
    table = Table(header_style="bold")
    for col in ("name", "input", "parameters", "description"):
        table.add_column(col, justify="right" if col == "parameters" else "left")
    for name, entry in zoo.ZOO.items():
        n = sum(p.numel() for p in zoo.build(name).parameters())
        table.add_row(name, "x".join(map(str, entry.input_shape)), f"{n:,}", entry.description)
    console.print(table)


for _fn, _name in ((inspect, "inspect"), (seed_cmd, "seed"), (grow, "grow"), (prune, "prune"), (train, "train"),
                   (export, "export"), (cost, "cost"), (demo, "demo"), (zoo_cmd, "zoo")):
    app.command(_name, help=cleandoc(_fn.__doc__ or ""))(_fn)


def _terminate(signum, frame):  # SIGTERM: stop like Ctrl-C, so temporary files are cleaned up
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns (and, from the console script, exits with) the exit code."""
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    try:
        code = app(args=argv, prog_name="cgap-graph", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        say_error("interrupted")
        return 130
    except typer.TyperException as exc:  # click's usage errors: unknown option, bad value, missing argument
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())
            return 0
        hint = f" (see 'cgap-graph {ctx.info_name} --help')" if ctx is not None and ctx.parent is not None else \
            " (see 'cgap-graph --help')"
        say_error(exc.format_message() + hint)
        return 2
    except Exception as exc:  # a bug: still one line, with the way to see more
        if os.environ.get("CGAP_DEBUG"):
            raise
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        say_error(f"internal error {type(exc).__name__}: {text[:300]} (a bug in cgap-graph; CGAP_DEBUG=1 shows the "
                  "traceback)")
        return 70
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def console_script() -> None:
    sys.exit(main())


__all__ = ["app", "console_script", "main"]
