"""Progress of long work, on stderr: a rich bar on a terminal, the notebook's own bar in Jupyter, and otherwise (a
log file, a pipe, a CI job, a script's captured stderr) one plain line every ``$CURATE_PROGRESS_SECONDS`` (default
10) with rows done / total, rate and ETA, so that a ten-minute select is never silent. ``CURATE_QUIET=1`` or the
CLI's ``-q`` silences it.

The work in flight when Ctrl-C arrives is remembered (``take_interrupted``): the CLI turns the interrupt into one
line saying how far it got and how to resume.
"""

from __future__ import annotations

import html
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from curate.errors import CurateError

console = Console(stderr=True)

QUIET_ENV = "CURATE_QUIET"
INTERVAL_ENV = "CURATE_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 10.0
_NOTEBOOK_REFRESH = 0.25  # seconds between redraws of a notebook bar: each redraw is a message to the frontend

_quiet: bool | None = None  # the CLI's -q; None leaves CURATE_QUIET in charge
_interrupted: Task | None = None


@dataclass
class Task:
    """One piece of long work: what it is, how many units it has (None: unknown) and how many are done."""

    description: str
    total: int | None
    done: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        """``scoring gsm8k@v1: 120/1319 (9%), 12.0/s, ETA 1m40s``: what a log shows."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            pct = 100 * self.done / self.total
            eta = _duration((self.total - self.done) / rate) if rate > 0 else "?"
            return f"{self.description}: {self.done}/{self.total} ({pct:.0f}%), {rate:.1f}/s, ETA {eta}"
        return f"{self.description}: {self.done} done, {rate:.1f}/s, {_duration(elapsed)} elapsed"

    def progress_text(self) -> str:
        """``120/1319``, or ``120`` when the total is unknown."""
        return f"{self.done}/{self.total}" if self.total is not None else str(self.done)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def set_quiet(quiet: bool | None) -> None:
    """Silence progress (True), show it (False), or leave it to ``$CURATE_QUIET`` (None)."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    """Whether progress is silenced: ``set_quiet``, else ``$CURATE_QUIET`` set to anything but 0/false/no."""
    if _quiet is not None:
        return _quiet
    return os.environ.get(QUIET_ENV, "").strip().lower() not in ("", "0", "false", "no")


def interval() -> float:
    """Seconds between two plain progress lines (``$CURATE_PROGRESS_SECONDS``, default 10)."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise CurateError(f"{INTERVAL_ENV} must be a number of seconds >= 0, got {raw!r}")
    return value


def take_interrupted() -> Task | None:
    """The outermost work a ``KeyboardInterrupt`` went through since the last call (then forgotten)."""
    global _interrupted
    task, _interrupted = _interrupted, None
    return task


def _in_notebook() -> bool:
    # Jupyter's stderr is no terminal, so the notebook gets its own bar rather than log lines.
    return console.is_jupyter


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(n)`` callable that moves one progress display.

    Example:
        >>> with progress("scoring", 10) as advance:
        ...     advance(10)
    """
    global _interrupted
    task = Task(description, total)
    if is_quiet():
        show, close = _counter(task), None
    elif _in_notebook():
        show, close = _notebook(task)
    elif sys.stderr.isatty():
        show, close = None, None
    else:
        show, close = _lines(task, interval())
    try:
        if show is None:
            with _rich_bar(task) as show:
                yield show
        else:
            yield show
            if close is not None:
                close()
    except KeyboardInterrupt:
        _interrupted = task  # an enclosing piece of work overwrites this when the interrupt reaches it
        raise


def _counter(task: Task) -> Callable[[int], None]:
    def advance(n: int = 1) -> None:
        task.done += n

    return advance


@contextmanager
def _rich_bar(task: Task) -> Iterator[Callable[[int], None]]:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as bar:
        tid = bar.add_task(task.description, total=task.total)

        def advance(n: int = 1) -> None:
            task.done += n
            bar.advance(tid, n)

        yield advance


def _lines(task: Task, every: float) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A plain line on stderr every ``every`` seconds while work advances, and a last one if any was printed."""
    last = task.started
    printed = False

    def write(line: str) -> None:
        # sys.stderr at call time: redirections made after import (pytest, a notebook, a log handler) apply.
        print(line, file=sys.stderr, flush=True)

    def advance(n: int = 1) -> None:
        nonlocal last, printed
        task.done += n
        now = time.monotonic()
        if now - last >= every:
            last, printed = now, True
            write(task.line())

    def close() -> None:
        if printed:
            elapsed = time.monotonic() - task.started
            write(f"{task.description}: {task.progress_text()} done in {_duration(elapsed)}")

    return advance, close


def _notebook(task: Task) -> tuple[Callable[[int], None], Callable[[], None]]:
    """An HTML ``<progress>`` bar updated in place through IPython's display handle (no widget library needed),
    with the same line as plain text for frontends that show no HTML."""
    from IPython.display import display

    def render(line: str) -> dict[str, str]:
        bar = f'<progress value="{task.done}" max="{task.total}" style="width:30em"></progress> ' if task.total else ""
        return {"text/plain": line, "text/html": f"<div>{bar}<code>{html.escape(line)}</code></div>"}

    handle = display(render(task.line()), raw=True, display_id=True)
    last = task.started

    def advance(n: int = 1) -> None:
        nonlocal last
        task.done += n
        now = time.monotonic()
        if now - last >= _NOTEBOOK_REFRESH:
            last = now
            handle.update(render(task.line()), raw=True)

    def close() -> None:
        elapsed = _duration(time.monotonic() - task.started)
        handle.update(render(f"{task.description}: {task.progress_text()} done in {elapsed}"), raw=True)

    return advance, close
