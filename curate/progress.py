"""Rich progress bars for long work; quiet when stderr is not a terminal or CURATE_QUIET is set."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


@contextmanager
def progress(description: str, total: int | None):
    """Yield an ``advance(n)`` callable that moves one progress bar.

    Example:
        >>> with progress("scoring", 10) as advance:   # doctest: +SKIP
        ...     advance(10)
    """
    disabled = bool(os.environ.get("CURATE_QUIET")) or not sys.stderr.isatty()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disabled,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
