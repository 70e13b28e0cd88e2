"""A fixed set of long-lived daemon threads that run blocking calls for the event loop.

The daemon's polls run here: a bounded number at a time, in the order they fell due, on
threads that live as long as the daemon (a thread per poll started thousands at once on
a large schedule, each waiting for the one SQLite connection; and every new thread gets
its own malloc arena).

Why not ``concurrent.futures.ThreadPoolExecutor`` (or ``loop.run_in_executor``): its
workers are joined at interpreter exit, and asyncio's default executor is joined again by
``asyncio.run()`` (without a timeout on 3.11). A worker blocked in an HTTP request (up to
``source.timeout``) or waiting for the database would then hold up a stop that must be
immediate. Nothing joins these threads: a stop drops the calls that have not started
(:meth:`WorkerPool.stop`), and whatever a worker is doing when the process exits is
abandoned; for a poll that is safe, its write is one transaction that commits whole or
not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True)
class _Call:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    run: Callable[[], Any]


class WorkerPool:
    """``size`` daemon threads, started on the first :meth:`submit`, taking calls from one
    FIFO queue. :meth:`submit` and :meth:`stop` are for the event loop's thread."""

    def __init__(self, size: int, *, name: str) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one thread")
        self.size = size
        self.name = name
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._stopped = False

    @property
    def stopped(self) -> bool:
        return self._stopped

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> asyncio.Future[_T]:
        """Queue ``fn(*args, **kwargs)``; await the returned future for its result or its
        exception. Cancelling the future before a worker takes the call drops the call;
        after, it only drops the result."""
        if self._stopped:
            raise RuntimeError(f"the {self.name} worker pool is stopped")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._queue.put(_Call(loop, future, partial(fn, *args, **kwargs)))
        if not self._threads:
            for number in range(1, self.size + 1):
                thread = threading.Thread(
                    target=self._work, name=f"trigger-engine-{self.name}-{number}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return future

    def stop(self) -> int:
        """Drop the calls that no worker has started (their futures are cancelled) and let
        each worker exit after its current call. Never waits. Returns how many calls were
        dropped."""
        self._stopped = True
        dropped = 0
        while True:
            try:
                call = self._queue.get_nowait()
            except queue.Empty:
                break
            if call is not None and call.future.cancel():
                dropped += 1
        for _ in self._threads:
            self._queue.put(None)
        return dropped

    def _work(self) -> None:
        while (call := self._queue.get()) is not None:
            # Read from another thread: at worst a call cancelled just now still runs,
            # and its result is dropped by _settle.
            if call.future.cancelled():
                continue
            outcome: Callable[[], None]
            try:
                outcome = partial(call.future.set_result, call.run())
            except BaseException as exc:  # handed to the awaiting task, never lost here
                outcome = partial(call.future.set_exception, exc)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                call.loop.call_soon_threadsafe(_settle, call.future, outcome)
            del call, outcome  # hold no result while waiting for the next call


def _settle(future: asyncio.Future[Any], outcome: Callable[[], None]) -> None:
    if not future.done():  # else the caller stopped waiting (cancelled)
        outcome()
