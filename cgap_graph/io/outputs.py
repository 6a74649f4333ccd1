"""One rule for every path cgap-graph writes: never an input, never an existing run by accident.

``check_output`` refuses an output that is one of the inputs, whichever way it is named (the same
path, a symbolic link to it, or a hard link: the same file on disk), and one whose folder is
missing or read-only, before any work starts. ``check_run_dir`` does the same for a training run's
folder: every file the run writes is checked against the inputs, and a folder that already holds a
run is refused unless the run is resumed or ``overwrite`` is given. The writes themselves go
through ``atomic.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cgap_graph.errors import CgapError


class OutputError(CgapError):
    """An output path that would lose data, or cannot be written."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: same path after resolving links, or same inode."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return pa.resolve() == pb.resolve()


def check_output(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), *,
                 flag: str = "-o") -> Path:
    """Refuse an output that would replace an input or cannot be written (see module docstring)."""
    path = Path(out)
    for i in inputs:
        if i is not None and same_file(path, i):
            raise OutputError(f"{flag} {out} is the input file {i}; choose another {flag} (inputs are never "
                              "overwritten)")
    if path.is_dir():
        raise OutputError(f"{flag} {out} is a directory; give a file name, e.g. {Path(out) / 'model.pt'}")
    parent = path.parent
    if not parent.exists():
        raise OutputError(f"cannot write {out}: folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise OutputError(f"cannot write {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {out}: folder {parent} is not writable; choose another {flag}")
    return path


def run_markers(out: Path) -> list[str]:
    """Files that show a folder holds a run."""
    return [n for n in ("checkpoint.pt", "metrics.jsonl", "summary.json", "settings.json") if (out / n).exists()]


def check_run_dir(out: str | os.PathLike, writes: Sequence[str], inputs: Iterable[str | os.PathLike | None], *,
                  resume: bool, overwrite: bool, create: bool = True) -> Path:
    """Make the run folder ``out`` (if needed; ``create=False`` only checks) after checking that
    none of the files the run ``writes`` is an input and that an existing run is only continued
    on purpose."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise OutputError(f"--out {out} is a file; give a folder for the run (it holds {', '.join(writes[:3])} ...)")
    inputs = [i for i in inputs if i is not None]
    for name in writes:
        for i in inputs:
            if same_file(path / name, i):
                raise OutputError(f"the run would write {path / name}, which is the input {i}; choose another --out")
    markers = run_markers(path) if path.is_dir() else []
    if markers and not resume and not overwrite:
        raise OutputError(f"--out {out} already holds a run ({', '.join(markers)}); continue it with --resume, "
                          "or start again with --overwrite (its files are replaced)")
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write the run folder {out}: it cannot be created ({exc.strerror}); choose another "
                          "--out") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to the run folder {out} (not writable); choose another --out")
    return path


__all__ = ["OutputError", "check_output", "check_run_dir", "run_markers", "same_file"]
