"""The process's signals (runtime/signals.py), with real signals sent to this process: what
comes before the daemon serves is kept for it, what comes while it serves reaches it on its
loop, and the backstops end the process (an injected ``exit`` here) whatever the main
thread is doing. Every wait is a condition with a deadline."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trigger_engine.runtime.signals import ProcessSignals, StoppedAtOnce, installed


class Exits:
    """An ``exit`` that records instead of ending pytest."""

    def __init__(self) -> None:
        self.codes: list[int] = []
        self.called = threading.Event()
        self.at = 0.0

    def __call__(self, code: int) -> None:
        self.at = time.monotonic()
        self.codes.append(code)
        self.called.set()


class Heard:
    """A listener that records what it is told, and on which thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.threads: set[int] = set()

    def signal_stop(self, signal_name: str) -> None:
        self._note("stop", signal_name)

    def signal_stop_now(self, signal_name: str) -> None:
        self._note("stop_now", signal_name)

    def signal_reload(self) -> None:
        self._note("reload")

    def _note(self, *call: str) -> None:
        self.calls.append(call)
        self.threads.add(threading.get_ident())


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


async def wait_on_loop(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


@pytest.fixture
def exits() -> Exits:
    return Exits()


@pytest.fixture
def said() -> list[str]:
    return []


@pytest.fixture
def taken(exits: Exits, said: list[str]) -> Iterator[ProcessSignals]:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signals = ProcessSignals(say=said.append, exit=exits, margin=0.2, at_once_within=0.3)
    signals.install()
    try:
        yield signals
    finally:
        signals.uninstall()
    assert {s: signal.getsignal(s) for s in before} == before  # given back as they were
    assert installed() is None


def test_signals_before_the_daemon_serves_are_kept_for_it_in_order(
    taken: ProcessSignals, exits: Exits
) -> None:
    taken.grace = 30
    os.kill(os.getpid(), signal.SIGHUP)  # its default action would end pytest
    os.kill(os.getpid(), signal.SIGHUP)
    os.kill(os.getpid(), signal.SIGTERM)
    wait_until(lambda: taken.stop_requested)  # the watcher takes them in order
    heard = Heard()

    async def serve() -> None:
        with taken.attached(asyncio.get_running_loop(), heard):
            await wait_on_loop(lambda: len(heard.calls) == 2)

    asyncio.run(serve())
    assert heard.calls == [("reload",), ("stop", "SIGTERM")]  # one reload: the file as it is
    assert heard.threads == {threading.get_ident()}  # on the loop, not the watcher's thread
    assert exits.codes == []


def test_while_serving_each_signal_reaches_the_daemon_on_its_loop(
    taken: ProcessSignals, exits: Exits
) -> None:
    taken.grace = 30
    heard = Heard()

    async def serve() -> None:
        with taken.attached(asyncio.get_running_loop(), heard):
            for signum, calls in [
                (signal.SIGHUP, 1),
                (signal.SIGHUP, 2),
                (signal.SIGINT, 3),
                (signal.SIGTERM, 4),
                (signal.SIGTERM, 4),  # a third stop: already stopping at once
            ]:
                os.kill(os.getpid(), signum)
                await wait_on_loop(lambda n=calls: len(heard.calls) >= n)  # type: ignore[misc]

    asyncio.run(serve())
    assert heard.calls == [
        ("reload",),
        ("reload",),
        ("stop", "SIGINT"),
        ("stop_now", "SIGTERM"),
    ]


def test_after_a_first_signal_the_process_ends_within_the_grace_and_the_margin(
    taken: ProcessSignals, exits: Exits, said: list[str]
) -> None:
    taken.grace = 0.3
    sent = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    assert exits.called.wait(5)
    assert 0.5 <= exits.at - sent < 1.5  # grace 0.3 s + margin 0.2 s
    assert exits.codes == [1]
    assert said == [
        "did not stop within [engine] shutdown_grace (0.3s) and 0.2s more after SIGTERM: "
        "stopped at once; work in flight was abandoned and is retried at the next start"
    ]


def test_after_a_second_signal_the_process_ends_at_once_whatever_the_main_thread_does(
    taken: ProcessSignals, exits: Exits, said: list[str], tmp_path: Path
) -> None:
    taken.grace = 30
    os.kill(os.getpid(), signal.SIGTERM)
    wait_until(lambda: taken.stop_requested)
    sent = time.monotonic()
    os.kill(os.getpid(), signal.SIGINT)
    # the main thread is blocked in SQLite's busy wait (C, where no Python handler runs)
    # for 2 s, as a stop under a foreign lock is: the backstop does not wait for it
    locker = sqlite3.connect(tmp_path / "db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    blocked = sqlite3.connect(tmp_path / "db", timeout=2, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        blocked.execute("BEGIN EXCLUSIVE")
    assert time.monotonic() - sent >= 2
    blocked.close()
    locker.close()
    assert exits.called.is_set()
    assert exits.at - sent < 1.0  # at_once_within: 0.3 s
    assert exits.codes == [1]
    assert said == [str(StoppedAtOnce("SIGINT"))]


def test_the_command_s_own_last_words_are_the_only_ones(
    taken: ProcessSignals, exits: Exits, said: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    taken.grace = 30
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGINT)
    taken.final_words("trigger-engine: error: stopped at once ...", 1)
    assert exits.called.wait(5)  # the interpreter's exit hangs (say): the backstop ends it
    assert capsys.readouterr().err == "trigger-engine: error: stopped at once ...\n"
    assert said == []  # the backstop's own sentence: not a second one
    assert exits.codes == [1]


def test_a_clean_return_keeps_its_exit_code_if_the_backstop_has_to_end_the_process(
    taken: ProcessSignals, exits: Exits, said: list[str]
) -> None:
    taken.grace = 0.1
    os.kill(os.getpid(), signal.SIGTERM)
    taken.finished(0)  # the command returned 0; then the interpreter's exit hangs
    assert exits.called.wait(5)
    assert exits.codes == [0]
    assert said == []


def test_a_sighup_after_the_daemon_served_is_ignored(taken: ProcessSignals, exits: Exits) -> None:
    heard = Heard()

    async def serve() -> None:
        with taken.attached(asyncio.get_running_loop(), heard):
            pass

    asyncio.run(serve())
    os.kill(os.getpid(), signal.SIGHUP)
    os.kill(os.getpid(), signal.SIGTERM)
    wait_until(lambda: taken.stop_requested)
    assert heard.calls == []
    assert exits.codes == []
