"""The one way between the event loop and blocking code: daemon threads that hand their
result back to the loop, a new one per call (:func:`in_daemon_thread`), or a fixed set of
long-lived ones (:class:`WorkerPool`); both hand over through the same ``_run_for``.

Every blocking call the loop makes (a store transaction, reading the config file, a health
check's ping, rendering metrics) goes through here; nothing uses ``asyncio.to_thread`` or
an executor. The one exception is deliberate and measured: the dispatcher runs a store
call on the loop itself when SQLite can take it without waiting
(:meth:`trigger_engine.db.engine.Database.run_now`), which saves 120 us of GIL contention
per delivery; when it cannot, the call comes here.

The daemon's polls run on a pool: a bounded number at a time, in the order they fell due,
on threads that live as long as the daemon (a thread per poll started thousands at once on
a large schedule, each waiting for the one SQLite connection; and every new thread gets
its own malloc arena).

Why not ``concurrent.futures.ThreadPoolExecutor`` (or ``loop.run_in_executor``): its
workers are joined at interpreter exit, and asyncio's default executor is joined again by
``asyncio.run()`` (without a timeout on 3.11). A worker blocked in an HTTP request (up to
``source.timeout``) or waiting for the database would then hold up a stop that must be
immediate. Nothing joins these threads: a stop drops the calls that have not started
(:meth:`WorkerPool.stop`), and whatever a thread is doing when the process exits is
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
        """Whether stop() was called: no more submits."""
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
            if not call.future.cancelled():
                _run_for(call.loop, call.future, call.run)
            del call  # hold nothing while waiting for the next call


def in_daemon_thread(
    fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
) -> asyncio.Future[_T]:
    """Run the blocking ``fn`` in a new daemon thread; await the returned future.

    Why not ``asyncio.to_thread``: its threads belong to the loop's default executor, which
    ``asyncio.run()`` joins before returning (``loop.shutdown_default_executor``, without a
    timeout on 3.11), and ``concurrent.futures`` joins its workers again at interpreter exit.
    A poll blocked in its HTTP request (up to ``source.timeout``) or a store call waiting for
    the one SQLite connection would then hold up a stop that must be immediate. Nothing
    waits for a daemon thread, and abandoning one is safe for what runs here: a store call
    is one transaction, which SQLite (WAL, synchronous=FULL) or PostgreSQL applies whole or
    not at all when the process exits in the middle, exactly as after ``kill -9``; an
    abandoned request is retried. Cancelling the future does not stop the thread; its
    result is then dropped. (``os._exit`` was the alternative, and would also skip flushing
    logs and closing the database cleanly.) A thread per call costs ~0.1 ms, small next to
    the transaction it runs.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()
    name = getattr(fn, "__name__", "call")
    threading.Thread(
        target=_run_for,
        args=(loop, future, partial(fn, *args, **kwargs)),
        name=f"trigger-engine-{name}",
        daemon=True,
    ).start()
    return future


def _run_for(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], run: Callable[[], Any]
) -> None:
    """In a worker thread: run the call, and hand its result or exception to ``future``
    on ``loop`` (never lost in the thread)."""
    outcome: Callable[[], None]
    try:
        outcome = partial(future.set_result, run())
    except BaseException as exc:
        outcome = partial(future.set_exception, exc)
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_settle, future, outcome)


def _settle(future: asyncio.Future[Any], outcome: Callable[[], None]) -> None:
    if not future.done():  # else the caller stopped waiting (cancelled)
        outcome()
