"""What the database has been doing, for ``/healthz``: the units of work running now (and
since when, retries included), and those whose last run failed. Thread-safe: every store
call in every thread reports here; the health check reads an
:class:`~trigger_engine.types.ActivitySnapshot`.

A unit of work is named by its repository method (``DeliveryRepository.record_attempts``);
it counts as failing from a failed run until its next successful one.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator

from trigger_engine.types import ActivitySnapshot, StoreFailure


class Activity:
    """The running and failing units of work of one database."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens = itertools.count()
        self._open: dict[int, float] = {}
        self._failing: dict[str, StoreFailure] = {}
        self._failures: dict[str, int] = {}  # unit -> failed runs since the start
        # told when a unit starts failing (its failure) or recovers (None)
        self.on_change: Callable[[str, StoreFailure | None], None] | None = None

    @contextlib.contextmanager
    def open(self) -> Iterator[None]:
        """Count one unit of work as running while the block runs."""
        token = next(self._tokens)
        with self._lock:
            self._open[token] = self.clock()
        try:
            yield
        finally:
            with self._lock:
                del self._open[token]

    def failed(self, unit: str, reason: str, *, transient: bool = False) -> None:
        """A run of ``unit`` failed."""
        with self._lock:
            before = self._failing.get(unit)
            self._failing[unit] = StoreFailure(
                unit=unit,
                reason=reason,
                transient=transient,
                since=before.since if before else self.clock(),
                failures=(before.failures if before else 0) + 1,
            )
            failure = self._failing[unit]
            self._failures[unit] = self._failures.get(unit, 0) + 1
        if before is None and self.on_change is not None:
            self.on_change(unit, failure)

    def succeeded(self, unit: str) -> None:
        """A run of ``unit`` succeeded: it is not failing any more."""
        if unit not in self._failing:  # the common case, without the lock
            return
        with self._lock:
            was = self._failing.pop(unit, None)
        if was is not None and self.on_change is not None:
            self.on_change(unit, None)

    def failures(self) -> dict[str, int]:
        """Failed runs per unit of work since the start (a counter, for the metrics)."""
        with self._lock:
            return dict(self._failures)

    def snapshot(self) -> ActivitySnapshot:
        """What is open and what is failing now."""
        at = self.clock()
        with self._lock:
            oldest = min(self._open.values(), default=None)
            failing = tuple(sorted(self._failing.values(), key=lambda f: f.unit))
        return ActivitySnapshot(
            at=at, longest_open=0.0 if oldest is None else max(0.0, at - oldest), failing=failing
        )
