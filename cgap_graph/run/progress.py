"""The live progress bar of a training epoch: samples, running loss and metric, elapsed time and
ETA. Only on a terminal; elsewhere (logs, CI, pipes) the loop prints one plain line per epoch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def epoch_bar(console, title: str, total: int, metric: str) -> Iterator[Callable[[int, float, float], None]]:
    """A bar for one epoch; yields ``advance(samples, loss, metric_value)`` for every batch."""
    with Progress(TextColumn(title), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}  {task.fields[metric]}"), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("train", total=total, loss="-", metric=metric)

        def advance(n: int, loss: float, value: float) -> None:
            shown = f"{100 * value:.2f}%" if metric == "accuracy" else f"{value:.4g}"
            bar.update(task, advance=n, loss=f"{loss:.4f}", metric=f"{metric} {shown}")
        yield advance


__all__ = ["epoch_bar"]
