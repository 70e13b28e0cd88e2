"""Progress of long work (``run --once``, ``backfill``, ``check``, ``replay``) on stderr.

On a terminal, a live display (rich) of each piece of work: what it is doing, how far it is,
for how long; it disappears when the command ends, leaving its ordinary output. Anywhere
else (a pipe, a file, a cron job), a plain log line ``progress`` (work, done, total) at most
every :data:`LOG_EVERY` seconds per piece of work and one when it ends, through the same
logging as everything else (``log_format = "json"`` too).

The engine reports through a plain callback, :data:`ProgressReport`, ``(work, done,
total)``: ``total`` None while unknown. It is called on the caller's thread (the event loop
for ``run --once``) once per item at most; both forms only note numbers there and draw or
log at their own pace, so a poll or a delivery is not slowed.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Protocol

from trigger_engine.ops.logs import get_logger

log = get_logger("trigger_engine.progress")

LOG_EVERY = 5.0  # seconds between two progress log lines of one piece of work


class Reporter(Protocol):
    """What a command reports its progress to."""

    def __call__(self, work: str, done: int, total: int | None) -> None:
        """``done`` of ``total`` (None: not known) units of ``work`` are done."""


class LogProgress:
    """Progress as log lines: one per :data:`LOG_EVERY` seconds per piece of work, and one
    when it completes if it was long enough to have logged before (short work is quiet)."""

    def __init__(
        self, every: float = LOG_EVERY, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.every = every
        self._monotonic = monotonic
        self._last: dict[str, float] = {}  # work -> when it started or last logged
        self._logged: set[str] = set()

    def __call__(self, work: str, done: int, total: int | None) -> None:
        """Log, when it is time or the work is complete."""
        moment = self._monotonic()
        complete = total is not None and done >= total
        last = self._last.setdefault(work, moment)
        if moment - last >= self.every or (complete and work in self._logged):
            self._last[work] = moment
            self._logged.add(work)
            log.info("progress", work=work, done=done, total=total)
        if complete:
            self._last.pop(work, None)
            self._logged.discard(work)


class RichProgress:
    """Progress as a live display on a terminal (rich), one line per piece of work."""

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=stream),
            transient=True,
            redirect_stderr=False,
            redirect_stdout=False,
        )
        self._tasks: dict[str, object] = {}

    def __call__(self, work: str, done: int, total: int | None) -> None:
        """Move the line of ``work`` (made at its first report)."""
        task = self._tasks.get(work)
        if task is None:
            task = self._tasks[work] = self._progress.add_task(work, total=total)
        self._progress.update(task, completed=done, total=total)  # type: ignore[arg-type]

    def start(self) -> None:
        """Show the display."""
        self._progress.start()

    def stop(self) -> None:
        """Take the display away."""
        self._progress.stop()


@contextmanager
def progress(stream: IO[str] | None = None) -> Iterator[Reporter]:
    """The reporter for a command: a live display when ``stream`` (stderr) is a terminal,
    log lines otherwise. While the display shows, log lines are printed above it."""
    out = sys.stderr if stream is None else stream
    if not out.isatty():
        yield LogProgress()
        return
    display = RichProgress(out)
    handlers = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and h.stream is out
    ]
    display.start()
    proxies = [(h, h.setStream(_Above(display))) for h in handlers]
    try:
        yield display
    finally:
        for handler, previous in proxies:
            if previous is not None:
                handler.setStream(previous)
        display.stop()


class _Above:
    """A stream for the log handler while the display shows: each line is printed above
    the display instead of through it."""

    def __init__(self, display: RichProgress) -> None:
        self._console = display._progress.console

    def write(self, text: str) -> int:
        """Print ``text`` (a log line) above the live display."""
        self._console.print(text.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered here."""
