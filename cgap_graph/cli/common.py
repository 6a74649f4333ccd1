"""What every command shares: the consoles, one-line errors, option definitions and the one
model loader (``ModelRequest``), so that every command reads MODEL the same way."""

from __future__ import annotations

import functools
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import typer
from rich.console import Console
from rich.text import Text

from cgap_graph.errors import BadValue, CgapError, InputShapeError
from cgap_graph.io.model_io import LoadedModel, load_model
from cgap_graph.ir.graph import ChannelGraph, trace

console = Console(highlight=False, soft_wrap=True)  # long lines stay whole (logs, grep)
err = Console(stderr=True, soft_wrap=True, highlight=False)  # one line per message, never wrapped

MAX_INPUT_SIZE = 1 << 20  # per dimension
MAX_INPUT_ELEMENTS = 1 << 31  # per input

MODEL_ARG = typer.Argument(..., metavar="MODEL", help="A zoo name (see 'cgap-graph zoo'), a file saved by cgap-graph, "
                           "a state dict (with --arch) or a pickled model (with --trust).")
OUTPUT = typer.Option(..., "-o", "--output", metavar="FILE", help="Where to write the result (never over MODEL).")
INPUT_SHAPE = typer.Option(None, "--input-shape", "-s", metavar="SHAPE", help="Input shape, e.g. 1,3,32,32 (repeat "
                           "the option for a model with several inputs). Zoo models and cgap-graph files know theirs.")
INPUT_DTYPE = typer.Option(None, "--input-dtype", metavar="DTYPE", help="float (default) or long (token ids); one per "
                           "--input-shape, or one for all.")
ARCH = typer.Option(None, "--arch", metavar="MODULE:FACTORY", help="The code that builds the architecture of a "
                    "state-dict file, imported from the current directory, e.g. mymodels:resnet18.")
ARCH_KWARGS = typer.Option(None, "--arch-kwargs", metavar="JSON", help="Keyword arguments for --arch as a JSON "
                           "object, e.g. '{\"num_classes\": 100}'.")
TRUST = typer.Option(False, "--trust", help="Allow a pickled model. Loading a pickle runs code from the file: use it "
                     "only for files you trust (a state dict with --arch needs no trust).")
WIDTH = typer.Option(1.0, "--width", metavar="W", help="Width multiplier of a zoo model (0.125: a seed as in the "
                     "paper).")
DEVICE = typer.Option("cpu", "--device", metavar="DEVICE", help="cpu (default) or cuda[:N].")
ZOO_WIDTH = typer.Option(1.0, "--zoo-width", metavar="W", help="Width of the zoo reference model.")

_DTYPES = {"float": torch.float32, "float32": torch.float32, "float16": torch.float16, "half": torch.float16,
           "bfloat16": torch.bfloat16, "long": torch.int64, "int64": torch.int64, "int": torch.int64}


# ---- messages --------------------------------------------------------------------------------------------
def say_error(message: str) -> None:
    """One line on stderr; the message is printed as text (brackets stay)."""
    err.print(Text.assemble(("error: ", "bold red"), " ".join(str(message).split())))


def say_warning(message: str) -> None:
    err.print(Text.assemble(("warning: ", "bold yellow"), " ".join(str(message).split())))


def note(message: str) -> None:
    console.print(Text.assemble(("note: ", "yellow"), message))


def describe(exc: CgapError) -> str:
    """A library error in the words of the command line (``beta`` -> ``--beta``)."""
    if isinstance(exc, BadValue):
        return f"--{exc.param.replace('_', '-')} {exc.problem}"
    return str(exc)


def run_command(body: Callable[[], Any], *, on_interrupt: str = "") -> Any:
    """Run a command body: user errors become one line and exit code 2, never a traceback."""
    try:
        return body()
    except CgapError as exc:
        say_error(describe(exc))
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        say_error("interrupted" + (f"; {on_interrupt}" if on_interrupt else ""))
        raise typer.Exit(130) from None
    except MemoryError:
        say_error("out of memory; try a smaller model, --width or --batch-size")
        raise typer.Exit(2) from None
    except OSError as exc:  # disk full, permission denied, a file that vanished ...
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        say_error(f"{where}{exc.strerror or exc}")
        raise typer.Exit(2) from None


# ---- option parsing -----------------------------------------------------------------------------------------
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
    n = 1
    for k in shape:
        n *= k
    if max(shape) > MAX_INPUT_SIZE or n > MAX_INPUT_ELEMENTS:
        raise InputShapeError(f"--input-shape '{text}' is too large: at most {MAX_INPUT_SIZE:,} per dimension and "
                              f"{MAX_INPUT_ELEMENTS:,} elements in all")
    return shape


def parse_dtype(text: str) -> torch.dtype:
    if text not in _DTYPES:
        raise InputShapeError(f"--input-dtype '{text}' is unknown; use one of {', '.join(sorted(_DTYPES))}")
    return _DTYPES[text]


def parse_json_object(text: str | None, flag: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CgapError(f"{flag} is not valid JSON ({exc.msg}); e.g. '{{\"num_classes\": 100}}'") from None
    if not isinstance(value, dict):
        raise CgapError(f"{flag} must be a JSON object of keyword arguments, e.g. '{{\"num_classes\": 100}}'")
    return value


def parse_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise CgapError(f"--device '{device}' is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CgapError(f"--device {device}: no CUDA device is available here; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise CgapError(f"--device {device}: only cpu and cuda are supported")
    return dev


def choice(value: str, flag: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise CgapError(f"{flag} must be {', '.join(allowed[:-1])} or {allowed[-1]}, got '{value}'")
    return value


# ---- the one model loader --------------------------------------------------------------------------------------
@dataclass
class ModelRequest:
    """MODEL and the options that say how to read it, shared by every command."""

    model: str
    input_shape: list[str] | None = None
    input_dtype: list[str] | None = None
    arch: str | None = None
    arch_kwargs: str | None = None
    trust: bool = False
    width: float = 1.0
    leaf: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> list[str]:
        """Files this request reads (outputs must never replace them)."""
        return [self.model] if self.model and Path(self.model).exists() else []

    def load(self, shape_only: bool = False) -> LoadedModel:
        kwargs = parse_json_object(self.arch_kwargs, "--arch-kwargs")
        loaded = load_model(self.model, arch=self.arch, arch_kwargs=kwargs, trust=self.trust, width=self.width,
                            shape_only=shape_only)
        if loaded.source == "pickle":
            say_warning(f"{self.model} is a pickle: loading it ran code from the file (allowed by --trust)")
        return loaded

    def shapes(self, loaded: LoadedModel, fallback: tuple[int, ...] | None = None) -> list[tuple[int, ...]]:
        if self.input_shape:
            return [parse_shape(s) for s in self.input_shape]
        if loaded.input_shape is not None:
            return [tuple(loaded.input_shape)]
        if fallback is not None:
            return [fallback]
        raise InputShapeError(f"{self.model or self.arch} does not say its input shape; pass --input-shape, "
                              "e.g. 1,3,32,32")

    def dtypes(self, n: int) -> list[torch.dtype]:
        dtypes = [parse_dtype(d) for d in (self.input_dtype or ["float"])]
        if len(dtypes) == 1:
            dtypes = dtypes * n
        if len(dtypes) != n:
            raise InputShapeError(f"{n} --input-shape but {len(dtypes)} --input-dtype; give one per input")
        return dtypes

    def trace(self, shape_only: bool = False) -> tuple[LoadedModel, ChannelGraph, float]:
        """Load and trace; ``shape_only`` builds zoo models without weights (meta device)."""
        loaded = self.load(shape_only)
        shapes = self.shapes(loaded)
        dtypes = self.dtypes(len(shapes))
        t0 = time.perf_counter()
        # the loaded model is this command's own copy, read from disk: the edits may change it
        cg = trace(loaded.model, shapes, input_dtype=dtypes, leaf_modules=list(self.leaf), inplace=True)
        return loaded, cg, time.perf_counter() - t0


__all__ = ["ARCH", "ARCH_KWARGS", "DEVICE", "INPUT_DTYPE", "INPUT_SHAPE", "MODEL_ARG", "ModelRequest", "TRUST",
           "WIDTH", "choice", "console", "describe", "err", "note", "parse_device", "parse_dtype",
           "parse_json_object", "parse_shape", "run_command", "say_error", "say_warning"]


# ---- shared option groups -------------------------------------------------------------------------------------
def keyword(name: str, default: Any, annotation: Any) -> inspect.Parameter:
    """A keyword parameter for a generated command signature."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def model_params(width: Any = WIDTH, width_name: str = "width") -> list[inspect.Parameter]:
    """MODEL and the options that say how to read it (``--width``, or ``--zoo-width`` for seed)."""
    return [keyword("model", MODEL_ARG, str), keyword("input_shape", INPUT_SHAPE, list[str] | None),
            keyword("input_dtype", INPUT_DTYPE, list[str] | None),
            keyword("arch", ARCH, str | None), keyword("arch_kwargs", ARCH_KWARGS, str | None),
            keyword("trust", TRUST, bool), keyword(width_name, width, float)]


def with_options(**groups: tuple[list[inspect.Parameter], Callable[..., Any]]) -> Callable:
    """Give a command shared option groups: each ``name=(params, build)`` appends ``params`` to the
    command's options and passes ``build(**their values)`` as the argument ``name``. One definition
    of each option serves every command."""
    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values()
                  if p.name not in groups]
        for group, _ in groups.values():
            params += group

        @functools.wraps(fn)
        def command(**kw: Any) -> Any:
            for name, (group, build) in groups.items():
                kw[name] = build(**{p.name: kw.pop(p.name) for p in group})
            return fn(**kw)
        command.__signature__ = inspect.Signature(params)
        del command.__wrapped__
        command.__annotations__ = {}
        return command
    return deco


MODEL_OPTIONS = (model_params(), ModelRequest)
SEED_MODEL_OPTIONS = (model_params(ZOO_WIDTH, "zoo_width"),
                      lambda zoo_width, **kw: ModelRequest(width=zoo_width, **kw))
