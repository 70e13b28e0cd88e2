"""Delivery: claim due deliveries → build and sign the body → POST → record the attempt.

Runs on asyncio with one aiohttp session per process (httpx.AsyncClient collapses under
concurrency; see the design notes). Each sink has its own bound on deliveries in flight
(``max_in_flight``), so a slow or dead receiver only ever occupies its own slots and
never delays the other sinks. Attempts are recorded in batches, one transaction each.

Stopping (see :meth:`Dispatcher.run`): no new claim once told to stop; deliveries in flight
get the grace period to finish and their outcomes are recorded; whatever did not finish
is released (lease cleared, still due), so the next start sends it at once, with the same
``webhook-id``. Cancelling the task that runs the dispatcher (a second signal) skips the
wait: in-flight requests are abandoned, and what can be recorded and released within
``STOP_AT_ONCE_DB_WAIT`` seconds is; anything else is released at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import ParamSpec, TypeVar

import aiohttp
import orjson

from trigger_engine import __version__
from trigger_engine.clock import isoformat_z
from trigger_engine.clock import now as clock_now
from trigger_engine.config import Config, Sink
from trigger_engine.logs import get_logger
from trigger_engine.retry import RetryPolicy, Verdict, decide, parse_retry_after
from trigger_engine.signing import secret_key, sign
from trigger_engine.store import DEAD, DELIVERED, FAILED, AttemptOutcome, DueDelivery, Store

log = get_logger("trigger_engine.delivery")

USER_AGENT = f"trigger-engine/{__version__}"
BATCH_WINDOW = 0.005  # seconds an attempt's outcome may wait to be recorded with others
MAX_RESPONSE = 1024 * 1024  # bytes of a receiver's answer we read (and ignore)
STOP_AT_ONCE_DB_WAIT = 1.0  # seconds a stop at once grants recording what finished

_P = ParamSpec("_P")
_T = TypeVar("_T")


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

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():  # else the caller stopped waiting (cancelled)
            outcome()

    def work() -> None:
        outcome: Callable[[], None]
        try:
            outcome = partial(future.set_result, fn(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting task, never lost in the thread
            outcome = partial(future.set_exception, exc)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, outcome)

    name = getattr(fn, "__name__", "call")
    threading.Thread(target=work, name=f"trigger-engine-{name}", daemon=True).start()
    return future


def being_cancelled() -> bool:
    """Whether the current task was asked to stop at once (``Task.cancel``)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def envelope(delivery: DueDelivery) -> bytes:
    """The default body: ``{"type", "timestamp", "account", "data"}``, with ``data`` the
    item exactly as stored (no re-encoding)."""
    return b'{"type":%s,"timestamp":%s,"account":%s,"data":%s}' % (
        orjson.dumps(delivery.event_type),
        orjson.dumps(isoformat_z(delivery.created_at)),
        orjson.dumps(delivery.account),
        delivery.payload,
    )


def body_for(sink: Sink, delivery: DueDelivery) -> bytes:
    return delivery.payload if sink.format == "raw" else envelope(delivery)


def headers_for(sink: Sink, delivery: DueDelivery, body: bytes, timestamp: int) -> dict[str, str]:
    headers = {name: value.get_secret_value() for name, value in sink.headers.items()}
    headers.update(
        {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(timestamp),
        }
    )
    if sink.secret is not None:
        key = secret_key(sink.secret.get_secret_value())
        headers["webhook-signature"] = sign(key, delivery.event_id, timestamp, body)
    return headers


@dataclass
class DrainReport:
    attempted: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0


class Dispatcher:
    """Sends due deliveries until told to stop. ``owner`` names this process's claims."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        owner: str,
        clock: Callable[[], datetime] = clock_now,
        rand: Callable[[], float] = random.random,
        idle_wait: float = 1.0,
        on_attempt: Callable[[AttemptOutcome], None] | None = None,
    ) -> None:
        self.on_attempt = on_attempt
        self.config = config
        self.store = store
        self.owner = owner
        self.clock = clock
        self.rand = rand
        self.idle_wait = idle_wait
        self.sinks: dict[str, Sink] = {}
        self.reconfigure(config)
        self._in_flight: dict[str, int] = defaultdict(int)
        self._tasks: set[asyncio.Task[None]] = set()
        self._outcomes: list[AttemptOutcome] = []
        self._wake = asyncio.Event()
        self._stop: asyncio.Event | None = None
        self._due_by: datetime | None = None  # drain: only what was due when it began
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self.report = DrainReport()

    # -------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Dispatcher:
        self._loop = asyncio.get_running_loop()
        # No global cap: each sink's max_in_flight bounds it (and a reload may add sinks).
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._abandon_in_flight()  # only left when the dispatcher itself was cancelled
        if self._session is not None:
            await self._session.close()

    def reconfigure(self, config: Config) -> None:
        """Take new sinks and settings (a reload). Attempts in flight finish with the sink
        settings they started with; a removed sink is no longer claimed for."""
        self.config = config
        self.sinks = {s.name: s for s in config.sinks}

    def notify(self) -> None:
        """Wake the dispatcher (new events were created); safe from any thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    # -------------------------------------------------------------- loops

    async def run(self, stop: asyncio.Event, *, grace: float) -> None:
        """Deliver continuously until ``stop`` is set; then claim nothing more, let
        in-flight deliveries finish for up to ``grace`` seconds, record them, and release
        the rest. If the task running this is cancelled (stop at once), in-flight
        deliveries are abandoned and released rather than waited for, and the
        cancellation propagates."""
        self._stop = stop
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                self._wake.clear()
                await self._flush()
                if stop.is_set():
                    break
                await self._launch()
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait(
                        {waker, stopper},
                        timeout=self.idle_wait,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waker.cancel()
                await self._batch_window()
        finally:
            stopper.cancel()
            await self._shutdown(grace)

    async def _batch_window(self) -> None:
        """With attempts still in flight, let a few more finish before recording: one
        transaction (one fsync) per batch, not per attempt (benchmarks/RESULTS.md)."""
        if self._tasks and len(self._outcomes) < len(self._tasks):
            await asyncio.sleep(BATCH_WINDOW)

    async def drain(self) -> DrainReport:
        """Deliver everything that is due now (``run --once``); retries that fall due
        later stay pending."""
        self._due_by = self.clock()
        while True:
            self._wake.clear()
            await self._flush()
            launched = await self._launch()
            if not launched and not self._tasks and not self._outcomes:
                return self.report
            await self._wake.wait()
            await self._batch_window()

    async def _shutdown(self, grace: float) -> None:
        try:
            if self._tasks and not being_cancelled():
                log.info(
                    "delivery.shutdown_waiting", in_flight=len(self._tasks), grace=f"{grace:g}s"
                )
                await asyncio.wait(set(self._tasks), timeout=grace)
        finally:
            # Reached with a CancelledError on its way when a second signal interrupted the
            # wait (or came before it): then nothing more is waited for.
            at_once = being_cancelled()
            abandoned = await self._abandon_in_flight()
            if abandoned:
                log.warning(
                    "delivery.abandoned_in_flight",
                    deliveries=abandoned,
                    reason="stopping at once" if at_once else f"grace of {grace:g}s exceeded",
                )
            if not at_once:
                await self._flush()
                released = await in_daemon_thread(self.store.release_claims, self.owner)
                if released:
                    log.warning("delivery.released_on_shutdown", deliveries=released)
            else:
                # Best effort, bounded: the database may be busy with a poll's transaction.
                # What is not recorded now was never committed, and is sent again (same
                # webhook-id) once the next start releases the claims.
                try:
                    released = await asyncio.wait_for(
                        self._flush_and_release(), STOP_AT_ONCE_DB_WAIT
                    )
                except Exception as exc:  # TimeoutError, or the database failing: same fate
                    log.warning(
                        "delivery.release_skipped",
                        reason=str(exc) or type(exc).__name__,
                        next_start="sends what was in flight again",
                    )
                else:
                    if released:
                        log.warning("delivery.released_on_shutdown", deliveries=released)

    async def _flush_and_release(self) -> int:
        await self._flush()
        return await in_daemon_thread(self.store.release_claims, self.owner)

    async def _abandon_in_flight(self) -> int:
        """Cancel the attempts still in flight; their claims stay until released. Returns
        how many there were."""
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)

    # -------------------------------------------------------------- steps

    async def _launch(self) -> int:
        assert self._session is not None, "use 'async with Dispatcher(...)'"
        capacity = {
            name: sink.max_in_flight - self._in_flight[name] for name, sink in self.sinks.items()
        }
        if not any(c > 0 for c in capacity.values()):
            return 0
        claimed = await in_daemon_thread(
            self.store.claim_due,
            owner=self.owner,
            now=self.clock(),
            # a claim outlives the longest attempt by [engine] lease: a node that dies
            # mid-delivery has its claims taken over that long after the attempt's timeout
            lease=max(s.timeout for s in self.sinks.values()) + self.config.engine.lease,
            capacity=capacity,
            due_by=self._due_by,
        )
        if self._stop is not None and self._stop.is_set():
            # Told to stop while claiming: send nothing new. The claims are released by
            # _shutdown, so these deliveries stay due for the next start.
            return 0
        for delivery in claimed:
            self._in_flight[delivery.sink] += 1
            task = asyncio.create_task(self._attempt(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claimed)

    async def _flush(self) -> None:
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        await in_daemon_thread(self.store.record_attempts, batch, owner=self.owner)
        for outcome in batch:
            if self.on_attempt is not None:
                self.on_attempt(outcome)
            self._in_flight[outcome.sink] -= 1
            self.report.attempted += 1
            if outcome.new_status == DELIVERED:
                self.report.delivered += 1
            elif outcome.new_status == DEAD:
                self.report.dead += 1
            else:
                self.report.failed += 1

    async def _attempt(self, delivery: DueDelivery) -> None:
        assert self._session is not None
        sink = self.sinks[delivery.sink]
        body = body_for(sink, delivery)
        started_at = self.clock()
        headers = headers_for(sink, delivery, body, int(started_at.timestamp()))
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        t0 = time.perf_counter()
        try:
            async with self._session.post(
                sink.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=sink.timeout),
                allow_redirects=False,
            ) as response:
                status = response.status
                retry_after = parse_retry_after(response.headers.get("retry-after"), started_at)
                await response.content.read(MAX_RESPONSE)
        except TimeoutError:
            error = f"timed out after {sink.timeout:g}s"
        except aiohttp.ClientError as exc:
            error = f"connection failed ({type(exc).__name__}: {exc})".replace(" ()", "")
        except Exception as exc:  # anything else still ends as a recorded, retried attempt:
            # a task dying here would keep its claim and its max_in_flight slot until restart
            error = f"failed ({type(exc).__name__}: {exc})".replace(" ()", "")
        duration_ms = int((time.perf_counter() - t0) * 1000)
        if status is not None and not 200 <= status < 300:
            error = f"HTTP {status}"
        self._outcomes.append(
            self._outcome(sink, delivery, started_at, duration_ms, status, error, retry_after)
        )
        self._wake.set()

    def _outcome(
        self,
        sink: Sink,
        delivery: DueDelivery,
        started_at: datetime,
        duration_ms: int,
        status: int | None,
        error: str | None,
        retry_after: float | None,
    ) -> AttemptOutcome:
        attempt = delivery.attempts + 1
        decision = decide(
            RetryPolicy(schedule=sink.retry.schedule),
            attempts=attempt,
            status=status,
            retry_after=retry_after,
            rand=self.rand,
        )
        context = {
            "sink": sink.name,
            "event_id": delivery.event_id,
            "attempt": attempt,
            "status": status,
            "duration_ms": duration_ms,
        }
        next_at: datetime | None = None
        disable: str | None = None
        if decision.verdict is Verdict.DELIVERED:
            new_status = DELIVERED
            log.debug("delivery.ok", **context)
        elif decision.verdict is Verdict.RETRY:
            assert decision.delay is not None
            new_status = FAILED
            next_at = self.clock() + timedelta(seconds=decision.delay)
            log.warning("delivery.retry", **context, error=error, retry_in=f"{decision.delay:.1f}s")
        elif decision.verdict is Verdict.GONE:
            new_status = DEAD
            disable = "the receiver answered 410 Gone"
            log.error("sink.disabled", **context, reason=disable)
        else:
            new_status = DEAD
            log.error("delivery.dead", **context, error=error)
        return AttemptOutcome(
            delivery_id=delivery.id,
            sink=sink.name,
            event_id=delivery.event_id,
            attempt=attempt,
            started_at=started_at,
            duration_ms=duration_ms,
            status_code=status,
            error=error,
            new_status=new_status,
            next_attempt_at=next_at,
            disable_sink=disable,
        )
