"""The poll workers: a bounded set of daemon threads, FIFO, that a stop never waits for."""

from __future__ import annotations

import asyncio
import threading

import pytest

from trigger_engine.threads import WorkerPool


class Gate:
    """Blocking calls that wait until the test lets them go, and say when they started."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.threads: set[str] = set()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)

    def call(self, name: str) -> str:
        with self._cond:
            self.started.append(name)
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()
        assert self._release.wait(10), "the test never released the gate"
        return name.upper()

    def wait_started(self, count: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.started) >= count, 10)

    def release(self) -> None:
        self._release.set()


async def started(gate: Gate, count: int) -> None:
    await asyncio.get_running_loop().run_in_executor(None, gate.wait_started, count)


def test_at_most_size_calls_run_at_once_in_order_on_daemon_threads() -> None:
    async def main() -> None:
        pool = WorkerPool(2, name="poll")
        gate = Gate()
        futures = [pool.submit(gate.call, f"p{i}") for i in range(5)]
        await started(gate, 2)
        assert sorted(gate.started) == ["p0", "p1"]  # the other three wait in the queue
        gate.release()
        assert await asyncio.gather(*futures) == ["P0", "P1", "P2", "P3", "P4"]
        assert sorted(gate.started[2:]) == ["p2", "p3", "p4"]
        assert gate.threads <= {"trigger-engine-poll-1", "trigger-engine-poll-2"}
        workers = [t for t in threading.enumerate() if t.name in gate.threads]
        assert workers and all(t.daemon for t in workers)
        pool.stop()

    asyncio.run(main())


def test_an_exception_reaches_the_awaiting_task() -> None:
    def fail() -> None:
        raise ValueError("the database failed")

    async def main() -> None:
        pool = WorkerPool(1, name="poll")
        with pytest.raises(ValueError, match="the database failed"):
            await pool.submit(fail)
        assert await pool.submit(lambda: 42) == 42  # the worker lives on
        pool.stop()

    asyncio.run(main())


def test_stop_drops_queued_calls_and_never_waits_for_a_running_one() -> None:
    gate = Gate()

    async def main() -> None:
        pool = WorkerPool(1, name="poll")
        running = pool.submit(gate.call, "running")
        queued = [pool.submit(gate.call, f"queued{i}") for i in range(3)]
        await started(gate, 1)
        assert pool.stop() == 3  # returns at once although "running" still blocks
        assert all(f.cancelled() for f in queued)
        assert not running.done()
        with pytest.raises(RuntimeError, match="stopped"):
            pool.submit(gate.call, "late")

    asyncio.run(main())  # ends with the worker still blocked: nothing joins it
    gate.release()
    assert gate.started == ["running"]


def test_a_call_cancelled_before_it_starts_does_not_run() -> None:
    gate = Gate()

    async def main() -> None:
        pool = WorkerPool(1, name="poll")
        first = pool.submit(gate.call, "first")
        second = pool.submit(gate.call, "second")
        third = pool.submit(gate.call, "third")
        await started(gate, 1)
        second.cancel()
        gate.release()
        assert await first == "FIRST" and await third == "THIRD"
        pool.stop()

    asyncio.run(main())
    assert gate.started == ["first", "third"]


def test_a_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least one"):
        WorkerPool(0, name="poll")
