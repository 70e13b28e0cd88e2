"""Delivery: claim due deliveries → build and sign the body → POST → record the attempt.

Runs on asyncio with one aiohttp session per process (httpx.AsyncClient collapses under
concurrency; see the design notes). Each sink has its own bound on deliveries in flight
(``max_in_flight``), so a slow or dead receiver only ever occupies its own slots and
never delays the other sinks. Attempts are recorded in batches, one transaction each.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

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
LEASE_MARGIN = 60.0  # a claim outlives the sink's timeout by this much
MAX_RESPONSE = 1024 * 1024  # bytes of a receiver's answer we read (and ignore)


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
        self.sinks = {s.name: s for s in config.sinks}
        self.policies = {s.name: RetryPolicy(schedule=s.retry.schedule) for s in config.sinks}
        self._in_flight: dict[str, int] = defaultdict(int)
        self._tasks: set[asyncio.Task[None]] = set()
        self._outcomes: list[AttemptOutcome] = []
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self.report = DrainReport()

    # -------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Dispatcher:
        self._loop = asyncio.get_running_loop()
        total = sum(s.max_in_flight for s in self.config.sinks) or 1
        connector = aiohttp.TCPConnector(limit=total, limit_per_host=0)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def notify(self) -> None:
        """Wake the dispatcher (new events were created); safe from any thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    # -------------------------------------------------------------- loops

    async def run(self, stop: asyncio.Event, *, grace: float) -> None:
        """Deliver continuously until ``stop`` is set; then let in-flight deliveries
        finish for up to ``grace`` seconds, record them, and release the rest."""
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                self._wake.clear()
                await self._flush()
                await self._launch()
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait(
                    {waker, stopper}, timeout=self.idle_wait, return_when=asyncio.FIRST_COMPLETED
                )
                waker.cancel()
        finally:
            stopper.cancel()
            await self._shutdown(grace)

    async def drain(self) -> DrainReport:
        """Deliver everything that is due now (``run --once``); retries that fall due
        later stay pending."""
        while True:
            self._wake.clear()
            await self._flush()
            launched = await self._launch()
            if not launched and not self._tasks and not self._outcomes:
                return self.report
            await self._wake.wait()

    async def _shutdown(self, grace: float) -> None:
        if self._tasks:
            log.info("delivery.shutdown_waiting", in_flight=len(self._tasks), grace=f"{grace:g}s")
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        await self._flush()
        released = await asyncio.to_thread(self.store.release_claims, self.owner)
        if released:
            log.warning("delivery.released_on_shutdown", deliveries=released)

    # -------------------------------------------------------------- steps

    async def _launch(self) -> int:
        assert self._session is not None, "use 'async with Dispatcher(...)'"
        capacity = {
            name: sink.max_in_flight - self._in_flight[name] for name, sink in self.sinks.items()
        }
        if not any(c > 0 for c in capacity.values()):
            return 0
        claimed = await asyncio.to_thread(
            self.store.claim_due,
            owner=self.owner,
            now=self.clock(),
            lease=max(s.timeout for s in self.sinks.values()) + LEASE_MARGIN,
            capacity=capacity,
        )
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
        await asyncio.to_thread(self.store.record_attempts, batch, owner=self.owner)
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
            self.policies[sink.name],
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
