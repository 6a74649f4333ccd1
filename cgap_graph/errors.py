"""Error types. Each carries a one-line message that names the problem and the fix."""

from __future__ import annotations

import math


class CgapError(Exception):
    """Base class: a problem with the user's input, reported on one line without a traceback."""


class TraceError(CgapError):
    """The model's forward cannot be traced into a graph."""


class ModelLoadError(CgapError):
    """A model file cannot be loaded (missing, corrupt, untrusted pickle, wrong architecture)."""


class SurgeryError(CgapError):
    """A channel selection cannot be applied (frozen group, bad indices, failed validation)."""


class InputShapeError(CgapError):
    """The given input shape does not fit the model."""


class BadValue(CgapError):
    """A numeric or named setting out of its range. ``param`` is the setting's Python name; the
    command line shows it as its flag (``beta`` -> ``--beta``)."""

    def __init__(self, param: str, problem: str) -> None:
        super().__init__(f"{param.replace('_', '-')} {problem}")
        self.param = param
        self.problem = problem


def check_number(param: str, value: float, lo: float | None = None, hi: float | None = None, *,
                 lo_open: bool = False, hi_open: bool = False, meaning: str = "") -> float:
    """``value`` finite and within the bounds, else :class:`BadValue` that says the range and meaning."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        if lo is not None and hi is not None:
            rng = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        elif lo is not None:
            rng = f"{'>' if lo_open else '>='} {lo:g}"
        elif hi is not None:
            rng = f"{'<' if hi_open else '<='} {hi:g}"
        else:
            rng = "a finite number"
        if isinstance(value, float) and not math.isfinite(value) and rng != "a finite number":
            rng = "a finite number " + rng.removeprefix("in ")
        raise BadValue(param, f"must be {rng}{f' ({meaning})' if meaning else ''}, got {value}")
    return value
