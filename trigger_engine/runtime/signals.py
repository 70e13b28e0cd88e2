"""SIGINT, SIGTERM and SIGHUP for ``trigger-engine run``: safe at any moment of the process.

``trigger-engine run`` takes them first thing (:func:`process_signals`, called by the command
line before it imports the engine, reads the configuration or opens the database) and keeps
them until the process exits, so that no signal ever meets its default action (for SIGHUP
and SIGTERM: the end of the process, without a word):

* **before the daemon serves** (imports, the configuration, the database and its
  migrations, the start-up steps): a SIGHUP is remembered, and the daemon reloads once it
  serves; a SIGINT/SIGTERM ends the start, and the command exits 0 (nothing was polled or
  claimed yet).
* **while it serves**, each signal is handed to the daemon on its event loop
  (:class:`Listener`): the first SIGINT/SIGTERM stops it gracefully, the second at once;
  a SIGHUP reloads the configuration.
* **while it stops** (and after), a SIGHUP is ignored.

How: each of the three gets a Python handler that does nothing (so the default action
never runs), and ``signal.set_wakeup_fd`` has the interpreter write each signal's number to
a socket that one daemon thread, the *watcher*, reads. Whichever thread the kernel delivers
a signal to, and whatever the main thread is blocked on (SQLite's busy wait, a lock, a
join), the watcher sees it at once; it hands it to the daemon's loop with
``call_soon_threadsafe``. (A Python handler alone runs only when the main thread next runs
Python code; ``loop.add_signal_handler`` puts the default action back when the loop closes,
so a late SIGHUP would end the process.)

**Backstops**, kept by the watcher for the same reason: once a first SIGINT/SIGTERM came, the
process is gone within ``[engine] shutdown_grace`` + :data:`STOP_MARGIN`; once a second
came, within :data:`AT_ONCE_WITHIN`. The daemon's own stop ends well inside both (every
database wait at the stop has a deadline); a backstop is for what no deadline reaches (a
thread that ``asyncio.run`` or the interpreter joins at exit). When one fires, it flushes
the logs, prints one sentence and calls ``os._exit(1)``: what was in flight is abandoned, as
after ``kill -9``, and done again at the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from trigger_engine.errors import RuntimeFailure
from trigger_engine.ops.logs import get_logger

if TYPE_CHECKING:  # only named: the command line imports this module before anything else
    import asyncio
    import socket

log = get_logger("trigger_engine.signals")

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOPS = (signal.SIGINT, signal.SIGTERM)
DEFAULT_GRACE = 30.0  # [engine] shutdown_grace's default, until the configuration is read
STOP_MARGIN = 5.0  # seconds past the grace before the first signal's backstop ends the process
AT_ONCE_WITHIN = 1.5  # seconds from the second signal to its backstop: the 1 s best effort, and
# half a second (delivery/dispatcher.py STOP_AT_ONCE_DB_WAIT)
FLUSH_WITHIN = 0.5  # seconds a backstop gives flushing the logs and printing its sentence


class StoppedAtOnce(RuntimeFailure):
    """A second SIGINT/SIGTERM stopped the daemon without waiting for work in flight
    (exit 1: work was abandoned; the next start does it again)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(
            f"stopped at once by a second signal ({signal_name}): work in flight was "
            "abandoned and is retried at the next start"
        )


def past_the_grace(signal_name: str, grace: float, margin: float) -> str:
    """The sentence of the first signal's backstop."""
    return (
        f"did not stop within [engine] shutdown_grace ({grace:g}s) and {margin:g}s more "
        f"after {signal_name}: stopped at once; work in flight was abandoned and is retried "
        "at the next start"
    )


class Listener(Protocol):
    """What the daemon does with a signal, called on its event loop."""

    def signal_stop(self, signal_name: str) -> None:
        """The first SIGINT/SIGTERM: stop gracefully."""

    def signal_stop_now(self, signal_name: str) -> None:
        """The second: stop at once."""

    def signal_reload(self) -> None:
        """SIGHUP: reload the configuration (or ignore it while stopping)."""


class _Backstop(NamedTuple):
    at: float  # the clock's time at which it fires
    sentence: str


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ProcessSignals:
    """The process's SIGINT, SIGTERM and SIGHUP, from :meth:`install` on (see the module).

    ``say`` prints the backstop's sentence as the command line prints an error; ``exit``
    ends the process (``os._exit``: nothing waits for a thread, nothing runs at exit);
    tests inject both, and ``margin``/``at_once_within``.
    """

    def __init__(
        self,
        *,
        say: Callable[[str], None] = _stderr,
        exit: Callable[[int], object] = os._exit,
        margin: float = STOP_MARGIN,
        at_once_within: float = AT_ONCE_WITHIN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.margin = margin
        self.at_once_within = at_once_within
        self._say = say
        self._exit = exit
        self._clock = clock
        self._lock = threading.Lock()
        self._grace = DEFAULT_GRACE
        self._stops: list[str] = []  # the names of the SIGINT/SIGTERM received, in order
        self._first_stop_at: float | None = None
        self._reload_pending = False  # a SIGHUP came before the daemon served
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: Listener | None = None
        self._served = False  # a daemon was attached: SIGHUP is now only for it
        self._backstop: _Backstop | None = None
        self._exiting = False  # a backstop is ending the process
        self._code: int | None = None  # the command's exit code, once it is known
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None
        self._watcher: threading.Thread | None = None

    # ------------------------------------------------------------ install

    def install(self) -> ProcessSignals:
        """Take the three signals (main thread only); returns self."""
        global _installed
        if _installed is not None:
            raise RuntimeError("the process's signals are already taken")
        import socket  # here, not at the top: --help imports this module and needs none

        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._reader, self._writer = reader, writer
        self._previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
        # the wakeup fd first: from the first handler on, every signal reaches the watcher
        self._previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        for signum in SIGNALS:
            signal.signal(signum, _noted)
        self._watcher = threading.Thread(
            target=self._watch, name="trigger-engine-signals", daemon=True
        )
        self._watcher.start()
        _installed = self
        return self

    def uninstall(self) -> None:
        """Give the signals back as they were (for a daemon run inside another program,
        such as the demo or a test); the command line keeps them until the process exits."""
        global _installed
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        signal.set_wakeup_fd(self._previous_fd)
        with self._lock:
            self._loop = self._listener = None
            self._backstop = None
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.send(b"\0")  # the watcher wakes, finds the writer closed, ends
            self._writer.close()
        if self._watcher is not None:
            self._watcher.join(5)
        if self._reader is not None:
            self._reader.close()
        if _installed is self:
            _installed = None

    # ------------------------------------------------------------ what the command sees

    @property
    def grace(self) -> float:
        """``[engine] shutdown_grace``: the first signal's backstop is this + ``margin``."""
        return self._grace

    @grace.setter
    def grace(self, seconds: float) -> None:
        with self._lock:
            self._grace = seconds
            if self._first_stop_at is not None and len(self._stops) == 1:
                self._arm_first_stop(self._stops[0], replace=True)
        self._wake()

    @property
    def stop_requested(self) -> bool:
        """Whether a SIGINT/SIGTERM came."""
        with self._lock:
            return bool(self._stops)

    @contextlib.contextmanager
    def attached(self, loop: asyncio.AbstractEventLoop, listener: Listener) -> Iterator[None]:
        """Hand the signals to ``listener`` on ``loop`` while the block runs; what came
        before (a remembered SIGHUP, a stop) is handed over at once, in order."""
        with self._lock:
            self._loop, self._listener, self._served = loop, listener, True
            if self._reload_pending:
                self._reload_pending = False
                self._forward(listener.signal_reload)
            if self._stops:
                self._forward(listener.signal_stop, self._stops[0])
            if len(self._stops) >= 2:
                self._forward(listener.signal_stop_now, self._stops[1])
        try:
            yield
        finally:
            with self._lock:
                self._loop = self._listener = None

    def final_words(self, line: str, code: int) -> None:
        """Print the command's last line (an error sentence) and note its exit code; when a
        backstop is already ending the process with a sentence of its own, wait for it.
        From now on the three signals are ignored (:meth:`finished`)."""
        self._quiet()
        with self._lock:
            if not self._exiting:
                self._code = code
                _stderr(line)
                return
        threading.Event().wait()  # the backstop ends the process in a moment

    def finished(self, code: int) -> None:
        """The command returned ``code``: a backstop that fires now (the interpreter's exit
        hangs on a thread) ends the process with that code, without a sentence. From now on
        the three signals are ignored: the interpreter's exit puts the default action back
        for each signal that has a Python handler (for SIGHUP and SIGTERM: the end of the
        process, exit code -1 or -15 for a stop that went well), but leaves ignored ones
        ignored. An armed backstop still holds."""
        self._quiet()
        with self._lock:
            if not self._exiting:
                self._code = code

    def _quiet(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                signal.signal(signum, signal.SIG_IGN)

    # ------------------------------------------------------------ the watcher

    def _wake(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.send(b"\0")

    def _watch(self) -> None:
        reader = self._reader
        assert reader is not None
        import select  # the watcher's only: see install()

        waiting = select.poll()
        waiting.register(reader, select.POLLIN)
        while True:
            with self._lock:
                backstop = self._backstop
            timeout = None if backstop is None else max(0.0, backstop.at - self._clock())
            try:
                readable = waiting.poll(None if timeout is None else timeout * 1000)
            except (OSError, ValueError):  # closed by uninstall
                return
            if readable:
                try:
                    data = reader.recv(256)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                if not data:  # the writer was closed: uninstalled
                    return
                for signum in data:
                    if signum:  # 0: a wake-up, to look at the backstop again
                        self._received(signum)
            elif backstop is not None and self._clock() >= backstop.at:
                self._expire(backstop)

    def _received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        with self._lock:
            listener = self._listener
            if signum == signal.SIGHUP:
                if listener is not None:
                    self._forward(listener.signal_reload)
                elif not self._served:
                    self._reload_pending = True  # the daemon reloads once it serves
                else:
                    log.info("config.reload_ignored", signal=name, reason="stopping")
                return
            self._stops.append(name)
            if len(self._stops) == 1:
                self._first_stop_at = self._clock()
                self._arm_first_stop(name)
                if listener is not None:
                    self._forward(listener.signal_stop, name)
            elif len(self._stops) == 2:
                self._arm(self._clock() + self.at_once_within, str(StoppedAtOnce(name)))
                if listener is not None:
                    self._forward(listener.signal_stop_now, name)

    def _arm_first_stop(self, name: str, *, replace: bool = False) -> None:
        assert self._first_stop_at is not None
        at = self._first_stop_at + self._grace + self.margin
        sentence = past_the_grace(name, self._grace, self.margin)
        if replace:
            self._backstop = _Backstop(at, sentence)
        else:
            self._arm(at, sentence)

    def _arm(self, at: float, sentence: str) -> None:
        """Fire at ``at`` unless an earlier backstop is armed."""
        if self._backstop is None or at < self._backstop.at:
            self._backstop = _Backstop(at, sentence)

    def _forward(self, fn: Callable[..., None], *args: str) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                loop.call_soon_threadsafe(fn, *args)

    def _expire(self, backstop: _Backstop) -> None:
        with self._lock:
            if self._backstop is not backstop or self._exiting:
                return  # replaced meanwhile (a second signal, a new grace)
            self._exiting = True
            code = self._code
        # The main thread may hold a lock of the logging or stderr machinery for ever:
        # flush and print in a thread of their own, and exit whether they finish or not.
        last = threading.Thread(
            target=self._last_words,
            args=(None if code is not None else backstop.sentence,),
            name="trigger-engine-exit",
            daemon=True,
        )
        last.start()
        last.join(FLUSH_WITHIN)
        self._exit(1 if code is None else code)

    def _last_words(self, sentence: str | None) -> None:
        with contextlib.suppress(Exception):
            for handler in logging.getLogger().handlers:
                handler.flush()
            if sentence is not None:
                self._say(sentence)
            sys.stdout.flush()
            sys.stderr.flush()


def _noted(_signum: int, _frame: FrameType | None) -> None:
    """The Python handler of the three signals: nothing; the watcher acts on them."""


_installed: ProcessSignals | None = None


def installed() -> ProcessSignals | None:
    """The process's :class:`ProcessSignals`, if something took the signals."""
    return _installed


def process_signals(say: Callable[[str], None] = _stderr) -> ProcessSignals:
    """The process's :class:`ProcessSignals`, taking the signals now if nothing has (main
    thread only; ``say`` prints a backstop's sentence as the command line prints an
    error). ``trigger-engine run`` calls it first thing and never gives them back."""
    return _installed if _installed is not None else ProcessSignals(say=say).install()


def final_words(line: str, code: int) -> None:
    """Print the command's last line on stderr: through the process's signals when they
    are taken (a backstop and the command never both print one), else directly."""
    if _installed is not None:
        _installed.final_words(line, code)
    else:
        _stderr(line)


def finished(code: int) -> None:
    """The command returned ``code`` (see :meth:`ProcessSignals.finished`)."""
    if _installed is not None:
        _installed.finished(code)
