"""The delivery pipeline: claim due deliveries ahead → attempts (:mod:`.attempt`) → record.

Runs on asyncio with one aiohttp session per process (httpx.AsyncClient collapses under
concurrency; see the design notes). Each sink has its own bound on deliveries in flight
(``max_in_flight``), so a slow or dead receiver only ever occupies its own slots and
never delays the other sinks. Attempts are recorded in batches, one transaction each.

Stopping (see :meth:`Dispatcher.run`): no new claim once told to stop; deliveries in flight
get the grace period to finish and their outcomes are recorded; whatever did not finish
is released (lease cleared, still due), so the next start sends it at once, with the same
``webhook-id``. Every database wait of the stop ends with the grace (at least
``STOP_DB_FLOOR`` seconds each): with another session holding a lock on the deliveries,
what could not be recorded or released in time is logged and left to the next start
(SQLite releases leftover claims then; on PostgreSQL their leases expire), and sent again
with the same ``webhook-id``. Cancelling the task that runs the dispatcher (a second
signal) skips the wait: in-flight requests are abandoned, and what can be recorded and
released within ``STOP_AT_ONCE_DB_WAIT`` seconds is; anything else is left the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ParamSpec, TypeVar

import aiohttp

from trigger_engine.clock import now as clock_now
from trigger_engine.config import Config, Sink
from trigger_engine.core import retry
from trigger_engine.core.circuit import Change, SinkHealth, probe_interval
from trigger_engine.db.store import Store
from trigger_engine.delivery.attempt import attempt
from trigger_engine.errors import DatabaseError
from trigger_engine.ops.logs import get_logger
from trigger_engine.states import DeliveryStatus
from trigger_engine.threads import in_daemon_thread
from trigger_engine.types import AttemptOutcome, DueDelivery

log = get_logger("trigger_engine.delivery.dispatcher")

PREFETCH_ROUNDS = 4  # claim ahead: a sink's queue holds at least this many times max_in_flight
CLAIM_AHEAD = 0.1  # ... or, for a sink this fast, this many seconds of sending at its pace
MAX_QUEUE = 512  # ... but no more than this (unless PREFETCH_ROUNDS rounds are more)
PACE_WINDOW = 0.05  # seconds over which a sink's pace (attempts a second) is measured
RECORD_EVERY = 0.05  # seconds an attempt's outcome may wait to be recorded with others
RECORD_BATCH = 512  # ... or fewer, once this many are waiting
STOP_AT_ONCE_DB_WAIT = 1.0  # seconds a stop at once grants recording what finished
STOP_DB_FLOOR = 0.5  # seconds a database wait of a graceful stop gets, even past the grace

_P = ParamSpec("_P")
_T = TypeVar("_T")


def being_cancelled() -> bool:
    """Whether the current task was asked to stop at once (``Task.cancel``)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@dataclass
class DrainReport:
    """What a drain (``run --once``) attempted and how the attempts ended."""

    attempted: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0


def queue_depth(max_in_flight: int, pace: float) -> int:
    """How many claimed deliveries a sink's queue may hold: PREFETCH_ROUNDS rounds of
    ``max_in_flight``, or CLAIM_AHEAD seconds at ``pace`` (attempts a second) when that
    is more, up to MAX_QUEUE."""
    return max(max_in_flight * PREFETCH_ROUNDS, min(MAX_QUEUE, int(pace * CLAIM_AHEAD)))


class _Claimed:
    """A claimed delivery in a lane's queue. A plain class with slots: one per delivery
    sent, and a frozen dataclass's ``__init__`` costs several times as much."""

    __slots__ = ("delivery", "probe", "send_by")

    def __init__(self, delivery: DueDelivery, send_by: datetime, probe: bool = False) -> None:
        self.delivery = delivery
        # the claim's lease less the sink's timeout and [engine] lease: an attempt started
        # later might not be over and recorded before the lease runs out
        self.send_by = send_by
        self.probe = probe  # the probe of a sink that is down (core/circuit.py)


@dataclass(eq=False)
class _Lane:
    """One sink's side of the pipeline: what is claimed and waiting, and the workers
    sending it (at most ``max_in_flight``)."""

    sink: Sink
    queue: deque[_Claimed] = field(default_factory=deque)
    workers: int = 0
    exhausted: bool = False  # the last claim found less than asked: nothing more due now
    closed: bool = False  # the sink was removed by a reload
    health: SinkHealth = field(init=False)  # up, or down and probed (this process's view)
    pace: float = 0.0  # attempts started a second, over the last PACE_WINDOW or more
    taken: int = 0  # attempts started since paced_at
    paced_at: float = 0.0  # loop time the pace was last measured
    # How many claimed deliveries may wait here (queue_depth): PREFETCH_ROUNDS rounds of
    # max_in_flight, or, when the sink is faster, CLAIM_AHEAD seconds of sending at its
    # pace, up to MAX_QUEUE. Claims of a fast sink are bigger and so fewer (one
    # transaction, and one commit, each), while what waits in the queue waits about
    # CLAIM_AHEAD seconds at most (benchmarks/RESULTS.md, "deliver"). Kept, not computed
    # at each take: set with the sink and at each measure of the pace.
    depth: int = field(init=False)

    def __post_init__(self) -> None:
        self.health = SinkHealth(probe_every=probe_interval(self.sink.retry.schedule))
        self.depth = queue_depth(self.sink.max_in_flight, self.pace)

    def serve(self, sink: Sink) -> None:
        """Take the sink's new settings (a reload)."""
        self.sink = sink
        self.exhausted = False
        self.health.probe_every = probe_interval(sink.retry.schedule)
        self.depth = queue_depth(sink.max_in_flight, self.pace)

    def measure(self, now: float) -> None:
        """Update the pace from the attempts started since the last measure, once
        PACE_WINDOW has passed (``now``: the loop's time), and the depth with it."""
        elapsed = now - self.paced_at
        if elapsed >= PACE_WINDOW:
            self.pace = self.taken / elapsed if self.paced_at else 0.0
            self.taken, self.paced_at = 0, now
            self.depth = queue_depth(self.sink.max_in_flight, self.pace)

    def wants(self) -> int:
        """How many more to claim now: none until the queue is down to half its depth."""
        if self.exhausted or self.closed or self.health.down or len(self.queue) > self.depth // 2:
            return 0
        return self.depth - len(self.queue)


class Dispatcher:
    """Sends due deliveries until told to stop. ``owner`` names this process's claims.

    A pipeline, so that no step waits for another (benchmarks/RESULTS.md, "deliver"):

    * **claim ahead**: each sink has a local queue of claimed deliveries, refilled (one
      transaction for all sinks) when it falls to half its depth: ``PREFETCH_ROUNDS``
      times ``max_in_flight``, or ``CLAIM_AHEAD`` seconds at a fast sink's pace;
    * **send**: up to ``max_in_flight`` workers per sink take from the queue, so a slot
      is reused the moment its request ends;
    * **record**: outcomes are recorded in batches, one transaction each, at most
      ``RECORD_EVERY`` seconds after the first of a batch (or ``RECORD_BATCH`` at once).

    One coroutine (:meth:`_pump`) claims and records; each database call runs at once
    when SQLite is free this instant, else in a thread (:meth:`_store`).
    A claim's lease covers its wait in the queue: twice the longest sink timeout plus
    ``[engine] lease``; a delivery whose lease would run out before its attempt could be
    recorded is given back unsent rather than sent late (another node may take it then).
    """

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
        self.store = store
        self.owner = owner
        self.clock = clock
        self.rand = rand
        self.idle_wait = idle_wait
        self._lanes: dict[str, _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._outcomes: list[AttemptOutcome] = []
        self._first_outcome_at = 0.0  # loop time of the oldest unrecorded outcome
        self._record_now = False  # an outcome disables a sink: record it before claiming
        self._poked_at = 0.0  # loop time every sink was last asked to claim again
        self._give_back: list[int] = []  # claimed, not sent: to release
        self._came_back: set[str] = set()  # sinks up again: their waiting deliveries due now
        self._wake = asyncio.Event()
        self._stopping = False  # no new attempt starts
        self._due_by: datetime | None = None  # drain: only what was due when it began
        self._stop_event: asyncio.Event | None = None  # run(): set when told to stop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self.report = DrainReport()
        # SQLite: a batch of outcomes is recorded in the claim's transaction (one commit,
        # whose fsync holds the loop, instead of two). PostgreSQL: apart, as two shorter
        # transactions (in threads, never holding the loop), which fare better when
        # sessions are being ended (a failover)
        self._merge_records = store.db.dialect == "sqlite"
        self.reconfigure(config)

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
        settings they started with; a removed sink is no longer claimed for, and what
        was claimed for it and not sent is given back."""
        self.config = config
        sinks = {s.name: s for s in config.sinks}
        for name, lane in list(self._lanes.items()):
            if name not in sinks:
                lane.closed = True
                self._give_back.extend(c.delivery.id for c in lane.queue)
                lane.queue.clear()
                del self._lanes[name]
        for name, sink in sinks.items():
            if name in self._lanes:
                self._lanes[name].serve(sink)
            else:
                self._lanes[name] = _Lane(sink)
        # a claim outlives the longest attempt by [engine] lease, plus one attempt's time
        # of waiting in the queue (see _take): a node that dies with deliveries claimed
        # has them taken over that long after the claim
        longest = max((s.timeout for s in config.sinks), default=0.0)
        self._lease = 2 * longest + config.engine.lease
        self._poke()

    def notify(self) -> None:
        """Wake the dispatcher (new events were created); safe from any thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._poke)

    def _poke(self) -> None:
        """Something may be due: claim for every sink again."""
        for lane in self._lanes.values():
            lane.exhausted = False
        if self._loop is not None:
            self._poked_at = self._loop.time()
        self._wake.set()

    # -------------------------------------------------------------- loops

    async def run(self, stop: asyncio.Event, *, grace: float) -> None:
        """Deliver continuously until ``stop`` is set; then claim nothing more, let
        in-flight deliveries finish for up to ``grace`` seconds, record them, and release
        the rest (claimed and not sent included). Every wait of the stop ends with the
        grace, counted from the stop (a store call still running then is abandoned:
        module docstring). If the task running this is cancelled (stop at once),
        in-flight deliveries are abandoned and released rather than waited for, and the
        cancellation propagates."""
        loop = asyncio.get_running_loop()
        pump = asyncio.ensure_future(self._pump(stop))
        stopping = asyncio.ensure_future(stop.wait())
        deadline: float | None = None
        try:
            await asyncio.wait({pump, stopping}, return_when=asyncio.FIRST_COMPLETED)
            deadline = loop.time() + grace
            if not pump.done():
                # it ends at its next step, unless a store call holds it (a lock)
                await asyncio.wait({pump}, timeout=grace)
        finally:
            stopping.cancel()
            if deadline is None:
                deadline = loop.time() + grace
            if not pump.done():
                pump.cancel()  # stopping at once, or a store call past the grace
                await asyncio.gather(pump, return_exceptions=True)
                if not being_cancelled():
                    log.warning(
                        "delivery.store_wait_abandoned",
                        grace=f"{grace:g}s",
                        left_to="the next start: what it was recording is sent again",
                    )
            await self._shutdown(grace, deadline)
        if not pump.cancelled():
            pump.result()  # the pump's own failure, if it failed

    async def drain(self) -> DrainReport:
        """Deliver everything that is due now (``run --once``); retries that fall due
        later stay pending."""
        self._due_by = self.clock()
        await self._pump(None)
        return self.report

    async def _pump(self, stop: asyncio.Event | None) -> None:
        """Record, give back, claim, wait; until ``stop`` (or, draining, until nothing
        due is left and everything sent is recorded)."""
        assert self._loop is not None, "use 'async with Dispatcher(...)'"
        loop = self._loop
        self._stop_event = stop
        stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
        try:
            while stopper is None or not stopper.done():
                self._wake.clear()
                if self._give_back:  # first: a 410 recorded below makes due ones dead
                    await self._release_given_back()
                flush_due = bool(self._outcomes) and (
                    self._record_now
                    or len(self._outcomes) >= RECORD_BATCH
                    or loop.time() >= self._first_outcome_at + RECORD_EVERY
                    or not self._tasks
                )
                # a batch due while a claim is due too goes with the claim, in its
                # transaction (_claim); recorded alone first when it must be before what
                # follows (a sink disabled, or come back: its waiting ones due now)
                if flush_due and (
                    not self._merge_records
                    or self._record_now
                    or self._came_back
                    or not self._wants()
                ):
                    await self._flush()
                    flush_due = False
                if self._came_back:
                    await self._make_due_now()
                if self._due_by is None and loop.time() >= self._poked_at + self.idle_wait:
                    # every idle_wait, even while busy: a sink whose queue ran dry may have
                    # retries due by now; one paused meanwhile sends nothing more
                    await self._drop_held_queues()
                    self._poke()
                if stopper is not None and stopper.done():
                    break
                if await self._claim(flush_due=flush_due):
                    continue
                if stop is None and self._idle():
                    return
                timeout = self.idle_wait
                if self._due_by is None:
                    timeout = max(0.0, self._poked_at + self.idle_wait - loop.time())
                if self._outcomes:
                    record_in = self._first_outcome_at + RECORD_EVERY - loop.time()
                    timeout = max(0.0, min(timeout, record_in))
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait(
                        {waker} if stopper is None else {waker, stopper},
                        timeout=timeout,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waker.cancel()
        finally:
            if stopper is not None:
                stopper.cancel()

    def _idle(self) -> bool:
        return not (
            self._tasks
            or self._outcomes
            or self._give_back
            or any(lane.queue or lane.wants() for lane in self._lanes.values())
        )

    def _wants(self) -> bool:
        """Whether a sink's queue is low enough to claim for."""
        return any(lane.wants() > 0 for lane in self._lanes.values())

    async def _claim(self, *, flush_due: bool = False) -> int:
        """Top up the queues that are low (a sink that is down gets its probe instead);
        start workers. The outcomes waiting to be recorded are recorded in the claim's
        transaction, before it (``record_and_claim``: one commit instead of two); with
        nothing to claim, they are recorded alone if ``flush_due``. Returns how many
        were claimed."""
        probed = await self._claim_probes()
        assert self._loop is not None
        at = self._loop.time()
        for paced in self._lanes.values():
            paced.measure(at)
        wanted = {name: n for name, lane in self._lanes.items() if (n := lane.wants()) > 0}
        if not wanted:
            if flush_due:
                await self._flush()
            return probed
        now = self.clock()
        if self._outcomes and self._merge_records:
            batch = self._take_outcomes()
            try:
                held, claimed = await self._store(
                    self.store.deliveries.record_and_claim,
                    batch,
                    owner=self.owner,
                    now=now,
                    lease=self._lease,
                    capacity=wanted,
                    due_by=self._due_by,
                )
            except BaseException:
                self._outcomes[:0] = batch  # not recorded: kept for the stop's last try
                raise
            self._recorded(batch, held)
        else:
            claimed = await self._store(
                self.store.deliveries.claim_due,
                owner=self.owner,
                now=now,
                lease=self._lease,
                capacity=wanted,
                due_by=self._due_by,
            )
        lanes = self._lanes
        send_by = {name: self._send_by(lanes[name].sink, now) for name in wanted if name in lanes}
        got: dict[str, int] = defaultdict(int)
        for delivery in claimed:
            lane = self._lanes.get(delivery.sink)
            if lane is None or self._stopping:  # removed by a reload meanwhile, or stopping
                self._give_back.append(delivery.id)
                continue
            lane.queue.append(_Claimed(delivery, send_by[delivery.sink]))
            got[delivery.sink] += 1
        for name, n in wanted.items():
            lane = self._lanes.get(name)
            if lane is None:
                continue
            if got[name] < n:
                lane.exhausted = True
            self._start_workers(lane)
        return len(claimed) + probed

    async def _claim_probes(self) -> int:
        """For each sink that is down and whose probe is due: claim one delivery and send
        it alone (core/circuit.py). Not while draining (``run --once`` attempts what is
        due, once). Returns how many were claimed."""
        if self._due_by is not None or self._stopping:
            return 0
        now = self.clock()
        probed = 0
        for lane in list(self._lanes.values()):
            if lane.closed or lane.queue or not lane.health.may_probe(now):
                continue
            lane.health.probe_started()
            delivery = await self._store(
                self.store.deliveries.claim_probe,
                lane.sink.name,
                owner=self.owner,
                now=now,
                lease=self._lease,
            )
            if self._lanes.get(lane.sink.name) is not lane or self._stopping:
                if delivery is not None:
                    self._give_back.append(delivery.id)
                lane.health.probe_abandoned(now)
                continue
            if delivery is None:  # nothing waits (or the sink is paused): look again later
                lane.health.probe_abandoned(now)
                self._poke_at(lane)
                continue
            lane.queue.append(_Claimed(delivery, self._send_by(lane.sink, now), probe=True))
            log.info(
                "sink.probe",
                sink=lane.sink.name,
                event_id=delivery.event_id,
                probe=lane.health.probes,
                early=delivery.early,
            )
            probed += 1
            self._start_workers(lane)
        return probed

    def _poke_at(self, lane: _Lane) -> None:
        """Wake the pump when the lane's next probe is due."""
        wait = lane.health.seconds_to_probe(self.clock())
        if wait is not None and self._loop is not None:
            self._loop.call_later(wait, self._poke)

    async def _make_due_now(self) -> None:
        """The sinks that came back: every delivery waiting for them is due now."""
        sinks, self._came_back = self._came_back, set()
        now = self.clock()
        for name in sorted(sinks):
            moved = await self._store(self.store.deliveries.due_now, name, now)
            log.info("sink.backlog_due", sink=name, deliveries=moved)
        self._poke()

    async def _drop_held_queues(self) -> None:
        """Give back what is claimed and not sent for a sink paused or disabled since
        (by hand, or by another node's 410): held, it waits for its sink. Attempts in
        flight finish and are recorded."""
        if not any(lane.queue for lane in self._lanes.values()):
            return
        holding = await self._store(self.store.sinks.holding)
        for name in holding:
            lane = self._lanes.get(name)
            if lane is not None and lane.queue:
                if any(c.probe for c in lane.queue):
                    lane.health.probe_abandoned(self.clock())
                self._give_back.extend(c.delivery.id for c in lane.queue)
                lane.queue.clear()
                lane.exhausted = True

    def _start_workers(self, lane: _Lane) -> None:
        while lane.queue and lane.workers < lane.sink.max_in_flight and not self._stopping:
            lane.workers += 1
            task = asyncio.create_task(self._work(lane))
            self._tasks.add(task)
            task.add_done_callback(self._worker_done)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._wake.set()  # record now; a drain may be over

    async def _work(self, lane: _Lane) -> None:
        """Send what the lane's queue holds, one at a time, until it is empty; each
        outcome is queued for recording (:meth:`_attempted`)."""
        try:
            assert self._session is not None
            session, clock, rand = self._session, self.clock, self.rand
            while (claimed := self._take(lane)) is not None:
                sink = lane.sink
                outcome = await attempt(session, sink, claimed.delivery, clock=clock, rand=rand)
                self._attempted(sink, outcome, probe=claimed.probe)
        finally:
            lane.workers -= 1

    def _send_by(self, sink: Sink, claimed_at: datetime) -> datetime:
        """When an attempt to ``sink`` claimed at ``claimed_at`` must start at the latest:
        the claim's lease runs out ``self._lease`` after the claim, and before then the
        attempt (its timeout) and its recording ([engine] lease) must be over."""
        lease = self._lease - sink.timeout - self.config.engine.lease
        return claimed_at + timedelta(seconds=lease)

    def _take(self, lane: _Lane) -> _Claimed | None:
        low = lane.depth // 2
        while (
            lane.queue
            and not lane.closed
            and not self._stopping
            and lane.workers <= lane.sink.max_in_flight  # a reload may have lowered it
        ):
            claimed = lane.queue.popleft()
            if len(lane.queue) == low and not lane.exhausted:
                self._wake.set()  # time to claim more
            # the attempt (timeout) and its recording ([engine] lease) must fit in the
            # claim; if not, give it back unsent: it is claimed again, with a new lease
            if self.clock() > claimed.send_by:
                self._give_back.append(claimed.delivery.id)
                if claimed.probe:
                    lane.health.probe_abandoned(self.clock())
                self._wake.set()
                continue
            lane.taken += 1
            return claimed
        return None

    async def _store(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """A store call: here, at once, when the database is free this instant (SQLite;
        see ``Store.run_now``), else in a daemon thread; so the loop never waits for the
        database, and a claim or a batch of records costs no GIL contention.

        While the database fails (unreachable, or refusing), the call is tried again after
        each wait of :func:`~trigger_engine.core.retry.outage_wait`, until it succeeds or
        the dispatcher is stopping (then the failure goes up: what it would have written
        is released at the next start, or when its lease runs out). A drain (``run
        --once``) gives up after one round of those waits."""
        failures = 0
        while True:
            try:
                ran, result = self.store.run_now(fn, *args, **kwargs)
                if ran:
                    await asyncio.sleep(0)  # as after a thread: let the tasks it woke run
                    return result  # type: ignore[return-value]
                return await in_daemon_thread(fn, *args, **kwargs)
            except DatabaseError as exc:
                failures += 1
                draining = self._stop_event is None
                if (
                    self._stopping
                    or self._stop_requested()
                    or (draining and failures > len(retry.STORE_OUTAGE_WAITS))
                ):
                    raise
                wait = retry.outage_wait(failures)
                log.warning(
                    "delivery.store_failed",
                    error=str(exc),
                    failures=failures,
                    retry_in=f"{wait:g}s",
                )
                await self._pause(wait)

    def _stop_requested(self) -> bool:
        return self._stop_event is not None and self._stop_event.is_set()

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the dispatcher is told to stop meanwhile."""
        if self._stop_event is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    async def _release_given_back(self) -> None:
        ids, self._give_back = self._give_back, []
        await self._store(self.store.deliveries.release_claims, self.owner, ids=ids)

    async def _shutdown(self, grace: float, deadline: float) -> None:
        """No new attempt; wait for those in flight until ``deadline`` (loop time); then
        record what finished and release every claim, within the time left (at least
        STOP_DB_FLOOR), or within STOP_AT_ONCE_DB_WAIT when stopping at once."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        try:
            if self._tasks and not being_cancelled():
                log.info(
                    "delivery.shutdown_waiting", in_flight=len(self._tasks), grace=f"{grace:g}s"
                )
                await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - loop.time()))
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
            for lane in self._lanes.values():
                lane.queue.clear()  # claimed, never sent: released with the rest below
            self._give_back.clear()
            # Bounded: the database may be busy with a poll's transaction, or locked by
            # another session. What is not recorded now was never committed, and is sent
            # again (same webhook-id) once the next start or the lease's expiry frees it.
            wait = STOP_AT_ONCE_DB_WAIT if at_once else max(STOP_DB_FLOOR, deadline - loop.time())
            try:
                released = await asyncio.wait_for(self._flush_and_release(), wait)
            except TimeoutError:
                log.warning(
                    "delivery.release_skipped",
                    reason=f"the database did not answer within {wait:.3g}s",
                    next_start="sends what was in flight again",
                )
            except Exception as exc:  # the database failing: the same fate
                log.warning(
                    "delivery.release_skipped",
                    reason=str(exc) or type(exc).__name__,
                    next_start="sends what was in flight again",
                )
            else:
                if released:
                    log.info("delivery.released_on_shutdown", deliveries=released)

    async def _flush_and_release(self) -> int:
        await self._flush()
        return await self._store(self.store.deliveries.release_claims, self.owner)

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

    def _take_outcomes(self) -> list[AttemptOutcome]:
        """The outcomes waiting to be recorded, to record now."""
        batch, self._outcomes = self._outcomes, []
        self._record_now = False
        return batch

    async def _flush(self) -> None:
        if not self._outcomes:
            return
        batch = self._take_outcomes()
        try:
            held = await self._store(self.store.deliveries.record_attempts, batch, owner=self.owner)
        except BaseException:
            self._outcomes[:0] = batch  # not recorded: kept for the stop's last try
            raise
        self._recorded(batch, held)

    def _recorded(
        self, batch: list[AttemptOutcome], held: list[tuple[AttemptOutcome, str]]
    ) -> None:
        """What follows a recorded batch: the held retries logged, the report counted,
        ``on_attempt`` told, and a wake-up for the soonest retry."""
        for outcome, why in held:
            log.info(
                "delivery.held",
                sink=outcome.sink,
                event_id=outcome.event_id,
                attempt=outcome.attempt,
                reason=why,
                sent_when="the sink is resumed or enabled",
            )
        soonest: datetime | None = None
        report, on_attempt = self.report, self.on_attempt
        report.attempted += len(batch)
        for outcome in batch:
            if on_attempt is not None:
                on_attempt(outcome)
            if outcome.new_status == DeliveryStatus.DELIVERED:
                report.delivered += 1
            elif outcome.new_status == DeliveryStatus.DEAD:
                report.dead += 1
            else:
                report.failed += 1
                when = outcome.next_attempt_at
                if when is not None and (soonest is None or when < soonest):
                    soonest = when
        if soonest is not None and self._due_by is None and self._loop is not None:
            # a retry due before the next idle check: claim for it on time
            delay = (soonest - self.clock()).total_seconds()
            if delay < self.idle_wait:
                self._loop.call_later(max(0.0, delay), self._poke)

    def _attempted(self, sink: Sink, outcome: AttemptOutcome, *, probe: bool = False) -> None:
        """What follows one attempt: the sink's circuit fed, and the outcome queued for
        recording. (Called by the worker, not awaited: one coroutine less to resume at
        every step of a request.)"""
        self._observe(sink, outcome, probe=probe)
        if outcome.disable_sink is not None:
            lane = self._lanes.get(sink.name)
            if lane is not None:  # gone: send nothing more of what is queued for it
                self._give_back.extend(c.delivery.id for c in lane.queue)
                lane.queue.clear()
                lane.exhausted = True
            self._record_now = True  # before any claim: the sink is disabled only then
            self._wake.set()
        if not self._outcomes:
            assert self._loop is not None
            self._first_outcome_at = self._loop.time()
            self._wake.set()  # so that the pump times the batch
        self._outcomes.append(outcome)
        if len(self._outcomes) >= RECORD_BATCH:
            self._wake.set()

    def _observe(self, sink: Sink, outcome: AttemptOutcome, *, probe: bool) -> None:
        """Feed the sink's circuit (core/circuit.py): down after failures in a row (what
        is claimed and not sent is given back; one probe per step from then on), up again
        at the first success (everything waiting falls due now). Not while draining."""
        lane = self._lanes.get(sink.name)
        if lane is None or self._due_by is not None:
            return
        failed = outcome.new_status != DeliveryStatus.DELIVERED and outcome.sink_down
        if not failed and not probe and lane.health.steady:
            return  # the common case (one clock read less a delivery)
        now = self.clock()
        change = lane.health.observe(failed=failed, probe=probe, now=now)
        if change is Change.WENT_DOWN:
            self._give_back.extend(c.delivery.id for c in lane.queue)
            lane.queue.clear()
            log.warning(
                "sink.down",
                sink=sink.name,
                failures=lane.health.failures,
                last_error=outcome.error,
                probe_every=f"{lane.health.probe_every:g}s",
            )
            self._wake.set()
        elif change is Change.CAME_BACK:
            log.info("sink.recovered", sink=sink.name, probes=lane.health.probes)
            self._came_back.add(sink.name)
            self._wake.set()
        if lane.health.down and not lane.health.probing:
            self._poke_at(lane)
