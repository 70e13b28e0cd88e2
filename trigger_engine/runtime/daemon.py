"""The daemon: the composition root of ``trigger-engine run``.

It wires the parts together (store, source, poller, dispatcher, schedule, HTTP server,
metrics) and owns the process's lifecycle: start, ``run --once``, SIGHUP reload, signals
and shutdown. Polls run on a bounded pool of long-lived daemon threads (``[engine]
poll_workers``; :class:`~trigger_engine.threads.WorkerPool`): APScheduler's asyncio
executor cancels running jobs at shutdown, and nothing must wait for a thread that a stop
at once abandons. One poll per (account, trigger) is queued or running at a time. The
event loop never waits for the database or a file: every blocking call crosses to a
daemon thread (:mod:`trigger_engine.threads`).

Signals (:mod:`~trigger_engine.runtime.signals`) are safe at any moment: ``trigger-engine
run`` takes them before anything else starts, and hands them to the daemon on its loop
(:class:`Daemon` is their :class:`~trigger_engine.runtime.signals.Listener`). A SIGHUP
before the daemon serves is remembered and applied once it serves; one while it stops is
ignored; reloads are serialised and coalesced (one running, one waiting at most).

Stopping:

* **First SIGINT/SIGTERM:** no new poll and no new claim; deliveries in flight get
  ``[engine] shutdown_grace`` to finish and are recorded, polls in flight the rest of that
  same grace (a poll is one transaction: it commits whole or not at all); what did not
  finish is released (deliveries) or abandoned (polls) and the next start does it again.
  Polls queued but not started at the stop are dropped (the next start polls them).
  Every database wait of the stop has a deadline, the rest of the grace (at least
  :data:`~trigger_engine.delivery.dispatcher.STOP_DB_FLOOR`): with another session holding
  a lock on the engine's tables, what could not be recorded or released in time is logged
  and left for the next start (with SQLite it releases leftover claims at once; with
  PostgreSQL their leases expire). The HTTP server stops within
  :data:`~trigger_engine.ops.http_api.STOP_WITHIN`. ``trigger-engine run`` then exits 0.
  A stop before the daemon serves ends the start at its next step (exit 0).
* **Second signal:** stop at once. The main task is cancelled, in-flight requests are
  abandoned, what already finished is recorded if the database answers within a second,
  and :class:`StoppedAtOnce` (exit 1, one sentence on stderr) ends the command. Exit 1
  because work was abandoned; nothing is lost or corrupted: every transaction is atomic,
  and with SQLite the next start releases leftover claims and sends them at once, with
  the same ``webhook-id``.
* **Backstops:** whatever a thread waits on, the process is gone within the grace and
  :data:`~trigger_engine.runtime.signals.STOP_MARGIN` of the first signal, and within
  :data:`~trigger_engine.runtime.signals.AT_ONCE_WITHIN` of the second
  (:mod:`~trigger_engine.runtime.signals`).
* **SIGKILL / a crash** at any moment: the same as a stop at once, minus the recording.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from trigger_engine import __version__
from trigger_engine.clock import now
from trigger_engine.config import Account, Config, TriggerSettings
from trigger_engine.config.shape import config_digest, served_sinks
from trigger_engine.core import registry
from trigger_engine.core.division import Division, Job
from trigger_engine.core.engine_events import Subscribers
from trigger_engine.core.retry import is_failing
from trigger_engine.db.store import Store
from trigger_engine.delivery.dispatcher import (
    STOP_DB_FLOOR,
    Dispatcher,
    DrainReport,
    being_cancelled,
)
from trigger_engine.errors import RuntimeFailure, StoreLost, TriggerEngineError
from trigger_engine.ops import logs
from trigger_engine.ops.health import PROBE_TIMEOUT, Health, Probe, assess
from trigger_engine.ops.logs import get_logger
from trigger_engine.ops.metrics import Metrics
from trigger_engine.polling.poller import Poller
from trigger_engine.polling.source import Source
from trigger_engine.runtime import plan
from trigger_engine.runtime.signals import ProcessSignals, StoppedAtOnce, installed
from trigger_engine.states import PollOutcome, PollRefusal
from trigger_engine.threads import WorkerPool, in_daemon_thread
from trigger_engine.types import (
    AttemptOutcome,
    NodeView,
    PollClaim,
    PollReport,
    SinkSubscriptions,
    StoreFailure,
)

if TYPE_CHECKING:  # the serving daemon's alone, imported where it serves (``run --once``
    # loads neither APScheduler nor the HTTP server)
    from aiohttp import web
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = get_logger("trigger_engine.daemon")

__all__ = ["Daemon", "OnceReport", "StoppedAtOnce"]

RELOAD_READ_WITHIN = 10.0  # seconds a reload may take to read its file, then it is refused

_T = TypeVar("_T")


class _Phase(enum.Enum):
    """Where the daemon is in its life: what a signal means depends on it."""

    STARTING = "starting"  # until it serves: a SIGHUP waits, a stop ends the start
    SERVING = "serving"
    STOPPING = "stopping"  # a SIGHUP is ignored
    DONE = "done"  # run() is returning: nothing more is cancelled


class _StoppedStarting(Exception):
    """A stop came before the daemon served: the start ends at its next step."""


@dataclass
class OnceReport:
    """What ``run --once`` did: every poll, then the delivery drain."""

    polls: list[PollReport]
    delivery: DrainReport

    @property
    def ok(self) -> bool:
        """Whether every poll succeeded."""
        return all(p.ok for p in self.polls)


PollFuture = asyncio.Future[PollReport | None]


@dataclass(eq=False)
class _Serving:
    """What exists while the daemon serves (between start and stop)."""

    stop: asyncio.Event
    scheduler: AsyncIOScheduler
    dispatcher: Dispatcher
    workers: WorkerPool
    polls: dict[tuple[str, str], PollFuture] = field(default_factory=dict)
    reloading: asyncio.Lock = field(default_factory=asyncio.Lock)


class Daemon:
    """One engine process: polls on schedule, delivers continuously, until stopped."""

    def __init__(
        self,
        config: Config,
        store: Store,
        source: Source,
        *,
        on_poll: Callable[[PollReport], None] | None = None,
        on_attempt: Callable[[AttemptOutcome], None] | None = None,
        reload: Callable[[], Config] | None = None,
    ) -> None:
        self.on_poll = on_poll
        self.on_attempt = on_attempt
        self.reload = reload
        self.config = config
        self.store = store
        self.source = source
        # the sinks other live nodes serve, as the last heartbeat read them (the registry)
        self._remote: SinkSubscriptions = {}
        self.poller = Poller(config, store, source, remote_sinks=self._remote_sinks)
        self.owner = plan.node_name()
        # this node's share of the polls, among the live nodes with the same schedule
        # (read with each heartbeat); the jobs it gained whose turn passed, to poll now
        self.division = Division(self.owner)
        self._dividing = threading.Lock()  # a readiness probe's heartbeat and the scheduled one
        self._schedule_digest = plan.schedule_digest(config)
        self._job_keys = plan.job_keys(config)
        self._taken_over: list[Job] = []
        self.metrics = Metrics(
            functools.partial(store.sinks.stats, delivered=None),  # the backlog only
            now,
            quarantined=store.quarantine.counts,
            store_failures=store.db.activity.failures,
            triggers_failing=self._triggers_failing,
            known_sinks=self._known_sinks,
            search_backlog=store.search_index.backlog,
        )
        self._stop_requested_at: float | None = None  # loop time of the (first) stop
        self._serving: _Serving | None = None
        self._phase = _Phase.STARTING
        self._stop: asyncio.Event | None = None
        self._main: asyncio.Task[Any] | None = None
        self._at_once: str | None = None  # the signal that stopped the daemon at once
        self._signals: ProcessSignals | None = None
        self._reload_waiting = False  # a SIGHUP before serving, or behind a running reload
        # Sources: the one given is the caller's to close; one made by a reload is ours,
        # closed once it is replaced and no poll in flight uses it any more.
        self._given_source = source
        self._source_users: Counter[Source] = Counter()  # polls queued or running, by source
        self._retired: list[Source] = []  # replaced by a reload, still used by a poll
        # tasks of its own: reloads, heartbeats and retention sweeps in progress
        self._tasks: set[asyncio.Future[None]] = set()
        self._indexing = False  # a run of the search indexer is under way
        # account/trigger -> why the store failed its last poll (until one succeeds)
        self._store_failed_polls: dict[str, str] = {}
        self._probe: asyncio.Future[None] | None = None  # the health check's write
        self._fatal: RuntimeFailure | None = None  # why the daemon stops by itself
        # (account, trigger) -> until when it was backing off, as the last heartbeat read it
        self._backing_off: dict[tuple[str, str], datetime] = {}
        store.db.activity.on_change = self._store_changed
        store.set_subscribers(self._subscribers)  # who gets the engine's own events

    @property
    def grace(self) -> float:
        """``[engine] shutdown_grace``: how long a stop waits for work in flight."""
        return self.config.engine.shutdown_grace

    # ---------------------------------------------------------------- run --once

    async def run_once(
        self, progress: Callable[[str, int, int | None], None] | None = None
    ) -> OnceReport:
        """Poll every enabled trigger now (whatever backoff an earlier failure set),
        then deliver everything that is due now. ``progress(work, done, total)``: told of
        each poll (work ``polls``) and each delivery attempt (``deliveries``) as they end."""
        if self.store.dialect == "sqlite":  # one process (locked): leftovers of a killed one
            await in_daemon_thread(self._release_leftovers)
        self._warn_if_created_anew()
        await in_daemon_thread(self._read_registry)
        reports = []
        polls = plan.poll_jobs(self.config)
        for done, (account, trigger) in enumerate(polls):
            if progress is not None:
                progress("polls", done, len(polls))
            claim = await in_daemon_thread(self._claim, account, trigger, min_gap=None)
            if claim.refused is PollRefusal.PAUSED:
                log.info("poll.skipped_paused", account=account.name, trigger=trigger.name)
                continue
            if claim.fence is None:
                holder = claim.state.lease_owner if claim.state is not None else None
                reports.append(
                    PollReport(
                        account.name,
                        trigger.name,
                        ok=True,
                        outcome=PollOutcome.SKIPPED,
                        error=f"node {holder or '?'} is polling it",
                    )
                )
                continue
            reports.append(
                await in_daemon_thread(
                    self.poller.poll, account, trigger, fence=claim.fence, state=claim.state
                )
            )
        await in_daemon_thread(self.store.polls.release_leases, self.owner)
        attempted = 0
        due = 0
        if progress is not None:
            progress("polls", len(polls), len(polls))
            sinks = [s.name for s in self.config.sinks]
            due = await in_daemon_thread(self.store.deliveries.count_due, sinks, now())

        def _attempted(_outcome: AttemptOutcome) -> None:
            nonlocal attempted
            attempted += 1
            if progress is not None:
                progress("deliveries", attempted, max(due, attempted))

        async with Dispatcher(
            self.config, self.store, owner=self.owner, on_attempt=_attempted
        ) as dispatcher:
            delivery = await dispatcher.drain()
        await self._in_thread(  # a failure leaves the events in the backlog, still found
            functools.partial(self._index_search, plan.SEARCH_INDEX_ONCE_FOR),
            failed="search.index_failed",
        )
        await in_daemon_thread(self._prune)
        return OnceReport(reports, delivery)

    def _warn_if_created_anew(self) -> None:
        if self.store.db.replaced_lost_file:
            log.warning(
                "engine.database_created_anew",
                detail="the SQLite file was not there, though an engine ran on it before "
                "(its .lock file is): this new, empty file seeds every trigger again, and "
                "what was pending in the old one is not sent; restore the old file to "
                "send it",
            )

    def _claim(
        self,
        account: Account,
        trigger: TriggerSettings,
        *,
        min_gap: float | None,
        honour_backoff: bool = False,
        explain: bool = True,
    ) -> PollClaim:
        return self.store.polls.claim(
            account.name,
            trigger.name,
            owner=self.owner,
            now=now(),
            lease=plan.poll_lease(self.config, trigger),
            min_gap=min_gap,
            honour_backoff=honour_backoff,
            explain=explain,
        )

    def _prune(self) -> None:
        """The retention sweep: old, fully delivered events go (see ``EventRepository.prune``)."""
        cutoff = now() - timedelta(seconds=self.config.engine.retention)
        pruned = self.store.events.prune(cutoff)
        forgotten = self.store.quarantine.prune(cutoff)
        gone = self.store.nodes.prune(now() - timedelta(seconds=plan.NODES_KEPT_FOR))
        if gone:
            log.info("node.pruned", nodes=", ".join(gone), why="stopped or vanished a day ago")
        if pruned or forgotten:
            log.info(
                "retention.pruned",
                events=pruned,
                quarantined_items=forgotten,
                older_than=cutoff.isoformat(),
            )

    # ---------------------------------------------------------------- daemon

    async def run(
        self,
        *,
        ready: Callable[[], None] | None = None,
        stop_after: float | None = None,
        signals: ProcessSignals | None = None,
    ) -> None:
        """Until SIGINT/SIGTERM (or ``stop_after`` seconds), then stop gracefully (see the
        module's docstring). A second signal stops at once: raises :class:`StoppedAtOnce`.

        ``signals``: the process's, which ``trigger-engine run`` took before anything else;
        without, the daemon takes them for the time of the run (the demo, a benchmark)."""
        loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        self._stop = asyncio.Event()
        self._phase = _Phase.STARTING
        self._at_once = None
        self._stop_requested_at = None
        own = None
        if signals is None:
            signals = installed()
            if signals is None:
                signals = own = ProcessSignals().install()
        signals.grace = self.grace
        self._signals = signals
        if stop_after is not None:
            loop.call_later(stop_after, self._request_stop)
        try:
            with signals.attached(loop, self):
                try:
                    await self._serve(self._stop, ready)
                finally:
                    self._phase = _Phase.DONE  # from here on, a signal cancels nothing
        except asyncio.CancelledError:
            if self._at_once is None:
                raise  # cancelled by our caller, not by a signal
            raise StoppedAtOnce(self._at_once) from None
        except _StoppedStarting:
            log.info("engine.stopped", node=self.owner, before="serving")
            return
        finally:
            self._signals = None
            if own is not None:
                own.uninstall()
        if self._fatal is not None:
            raise self._fatal
        log.info("engine.stopped", node=self.owner)

    # ---------------------------------------------------------------- signals

    def signal_stop(self, signal_name: str) -> None:
        """The first SIGINT/SIGTERM (on the loop): stop gracefully; before the daemon
        serves, the start ends at its next step."""
        if self._stop is None or self._stop.is_set() or self._phase is _Phase.DONE:
            return
        if self._phase is _Phase.STARTING:
            log.info("engine.stopping", signal=signal_name, before="serving")
        else:
            log.info("engine.stopping", signal=signal_name, grace=f"{self.grace:g}s")
        self._request_stop()

    def signal_stop_now(self, signal_name: str) -> None:
        """The second (on the loop): stop at once. Cancelling the main task interrupts
        whatever it awaits, including the grace wait; Dispatcher._shutdown and
        _wait_for_polls see the cancellation and skip their waits."""
        main = self._main
        if self._phase is _Phase.DONE or self._at_once is not None or main is None:
            return
        log.warning("engine.stopping_now", signal=signal_name)
        self._at_once = signal_name
        main.cancel()

    def signal_reload(self) -> None:
        """SIGHUP (on the loop): reload; before the daemon serves, once it serves; while
        it stops, never."""
        if self.reload is None:
            log.info("config.reload_ignored", reason="the configuration was not read from a file")
        elif self._phase is _Phase.STARTING:
            if not self._reload_waiting:
                log.info("config.reload_deferred", until="the engine serves")
            self._reload_waiting = True
        elif self._phase is _Phase.SERVING and self._stop is not None and not self._stop.is_set():
            self._on_sighup()
        else:
            log.info("config.reload_ignored", reason="stopping")

    def _request_stop(self) -> None:
        stop = self._stop
        if stop is not None and not stop.is_set():
            self._stop_requested_at = asyncio.get_running_loop().time()
            if self._phase is _Phase.SERVING:
                self._phase = _Phase.STOPPING
            stop.set()

    async def _step(self, work: Awaitable[_T]) -> _T:
        """A start-up step. A stop that comes first ends the start (:class:`_StoppedStarting`);
        the step's thread, if it has one, is abandoned: a store call is one transaction."""
        stop = self._stop
        assert stop is not None
        future: asyncio.Future[_T] = asyncio.ensure_future(work)
        if stop.is_set():
            future.cancel()
            raise _StoppedStarting
        stopped = asyncio.ensure_future(stop.wait())
        either: set[asyncio.Future[Any]] = {future, stopped}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not future.done():
                future.cancel()
        if future.cancelled():
            raise _StoppedStarting
        return future.result()

    def _time_left(self) -> float:
        """Seconds a database wait of the stop may take: the rest of the grace, counted
        from the stop, and never less than STOP_DB_FLOOR."""
        loop = asyncio.get_running_loop()
        started = self._stop_requested_at if self._stop_requested_at is not None else loop.time()
        return max(STOP_DB_FLOOR, started + self.grace - loop.time())

    # ---------------------------------------------------------------- serving

    async def _serve(self, stop: asyncio.Event, ready: Callable[[], None] | None) -> None:
        # With SQLite this process is the only one: claims left in the database are
        # those of a process that was killed, so they are due again right now.
        if self.store.dialect == "sqlite":
            await self._step(in_daemon_thread(self._release_leftovers))
        self._warn_if_created_anew()
        await self._step(self._resume_auto_paused(why="start"))
        await self._step(in_daemon_thread(self._carried_over_backoff))

        from trigger_engine.runtime import jobs  # APScheduler: serving only

        async with Dispatcher(
            self.config, self.store, owner=self.owner, on_attempt=self._attempted
        ) as dispatcher:
            serving = _Serving(
                stop=stop,
                scheduler=jobs.make_scheduler(asyncio.get_running_loop()),
                dispatcher=dispatcher,
                workers=WorkerPool(plan.poll_workers(self.config, self.store.dialect), name="poll"),
            )
            self._serving = serving
            http: web.AppRunner | None = None
            try:
                jobs.schedule_polls(serving.scheduler, self.config, self._poll_job, first_run=now())
                await self._step(in_daemon_thread(self._heartbeat))
                jobs.schedule_housekeeping(
                    serving.scheduler,
                    prune=self._prune_job,
                    heartbeat=self._heartbeat_job,
                    index_search=self._index_search_job,
                    now=now(),
                )
                serving.scheduler.start()
                http = await self._start_http()  # no database: not raced
                if stop.is_set():
                    raise _StoppedStarting
                log.info(
                    "engine.started",
                    node=self.owner,
                    accounts=len(self.config.accounts),
                    polls=len(plan.poll_jobs(self.config)),
                    poll_workers=serving.workers.size,
                    sinks=len(self.config.sinks),
                    listen=self.config.engine.listen,
                )
                self._phase = _Phase.SERVING
                if self._reload_waiting:  # a SIGHUP came while starting: apply it now
                    self._reload_waiting = False
                    self._on_sighup()
                if ready is not None:
                    ready()
                await dispatcher.run(stop, grace=self.grace)
            finally:
                await self._stop_serving(serving, http)

    async def _stop_serving(self, serving: _Serving, http: web.AppRunner | None) -> None:
        """Everything after the dispatcher's stop, each wait bounded (module docstring)."""
        from trigger_engine.ops import http_api

        if self._phase is not _Phase.DONE:
            self._phase = _Phase.STOPPING
        if serving.scheduler.running:
            serving.scheduler.shutdown(wait=False)
        dropped = serving.workers.stop()
        if dropped:
            log.info("poll.dropped_at_stop", polls=dropped, next_start="polls them")
        await self._wait_for_polls(serving.polls)
        for task in list(self._tasks):
            task.cancel()  # a reload reading its file, a heartbeat: we are stopping
        at_once = being_cancelled()
        # the HTTP server stops while the node leaves (a request it waits for is cancelled
        # after STOP_WITHIN); stopping at once, it is left to the process's exit
        http_stopped = (
            None if http is None or at_once else asyncio.ensure_future(http_api.stop(http))
        )
        if not at_once:
            await self._within(
                in_daemon_thread(self._leave),
                "node.leave_skipped",
                "the next start (SQLite) or the leases' expiry (PostgreSQL)",
            )
        if http_stopped is not None and not await http_stopped:
            log.warning("http.stop_timed_out", within=f"{http_api.STOP_WITHIN:g}s")
        self._close_sources()
        self._serving = None

    async def _within(self, work: Awaitable[None], skipped: str, left_to: str) -> None:
        """A database wait of the stop, within :meth:`_time_left`; when it does not make
        it, one ``skipped`` log line saying who does the work instead (``left_to``)."""
        wait = self._time_left()
        try:
            await asyncio.wait_for(work, wait)
        except TimeoutError:
            log.warning(
                skipped, reason=f"the database did not answer within {wait:.3g}s", left_to=left_to
            )

    # ---------------------------------------------------------------- jobs

    def _poll_job(
        self,
        account: Account,
        trigger: TriggerSettings,
        *,
        retried: bool = False,
        taken_over: bool = False,
    ) -> None:
        """APScheduler's job, on the loop: queue the poll on a worker and return at once;
        one per (account, trigger) queued or running, and only this node's share of the
        polls when other live nodes run the same schedule. ``retried``: asked for by ``triggers
        retry``, so polled even if a poll of it started less than an interval ago."""
        serving = self._serving
        key = (account.name, trigger.name)
        if serving is None or serving.stop.is_set() or serving.workers.stopped:
            return
        if key in serving.polls or not self.division.owns(key):
            return  # already queued, or another live node's share (``self.division``)
        poller = self.poller  # this poll uses its source until it ends, whatever a reload does
        future = serving.workers.submit(
            self._poll_if_due, poller, account, trigger, retried=retried, taken_over=taken_over
        )
        serving.polls[key] = future
        self._source_users[poller.source] += 1
        future.add_done_callback(lambda _done: self._source_released(poller.source))
        future.add_done_callback(lambda done: self._polled(serving, key, done))

    def _poll_if_due(
        self,
        poller: Poller,
        account: Account,
        trigger: TriggerSettings,
        *,
        retried: bool = False,
        taken_over: bool = False,
    ) -> PollReport | None:
        """One scheduled poll, on a poll worker; None when the claim is refused: paused,
        backing off, or (several nodes) another node holds the lease or started a poll of
        it less than 90% of an interval ago. The claim checks all of that in its one
        statement. ``taken_over``: a poll of a node that left, whose turn passed; refused
        because that node still holds its lease (it died polling it), it is tried again at
        each heartbeat until the lease expires."""
        min_gap = None if retried else plan.MIN_GAP * trigger.interval
        # the reason costs a second round trip: read for the debug log, and for a takeover
        why = taken_over or log.enabled_for(logging.DEBUG)
        claim = self._claim(account, trigger, min_gap=min_gap, honour_backoff=True, explain=why)
        if claim.fence is None:
            if taken_over and claim.refused is PollRefusal.LEASED:
                self._taken_over.append((account.name, trigger.name))
            log.debug("poll.skipped", account=account.name, trigger=trigger.name, why=claim.refused)
            return None
        return poller.poll(account, trigger, fence=claim.fence, state=claim.state)

    def _source_released(self, source: Source) -> None:
        """A poll that used ``source`` ended (or was dropped before it started): a source
        a reload replaced is closed once no poll uses it any more."""
        self._source_users[source] -= 1
        if self._source_users[source] <= 0:
            del self._source_users[source]
            if source in self._retired:
                self._retired.remove(source)
                self._close_source(source)

    def _retire(self, source: Source) -> None:
        """A reload replaced ``source``: close it now, or when its last poll ends."""
        if self._source_users[source] > 0:
            self._retired.append(source)
        else:
            self._close_source(source)

    def _close_source(self, source: Source) -> None:
        if source is not self._given_source:  # the caller's: closed by the caller
            source.close()
            log.debug("source.closed", reason="replaced by a reload")

    def _close_sources(self) -> None:
        """At the stop: close the sources the daemon made that no poll uses any more (a
        poll abandoned on its thread keeps its own: the process exits under it)."""
        for source in [*self._retired, self.source]:
            if self._source_users[source] <= 0:
                self._close_source(source)
        self._retired = [s for s in self._retired if self._source_users[s] > 0]

    def _polled(self, serving: _Serving, key: tuple[str, str], future: PollFuture) -> None:
        serving.polls.pop(key, None)
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:  # a failed poll is a report; this is its claim failing
            log.error(
                "poll.error",
                account=key[0],
                trigger=key[1],
                error=str(error) or type(error).__name__,
            )
            report: PollReport | None = PollReport(
                key[0], key[1], ok=False, outcome=PollOutcome.STORE, error=str(error)
            )
        else:
            report = future.result()
        if report is None:
            return
        label = f"{report.account}/{report.trigger}"
        if report.outcome is PollOutcome.STORE:
            self._store_failed_polls[label] = report.error or "failed"
        elif report.outcome is not PollOutcome.LEASE_LOST:
            self._store_failed_polls.pop(label, None)
        self.metrics.observe_poll(report)
        if self.on_poll is not None:
            self.on_poll(report)
        if report.new_events:
            serving.dispatcher.notify()

    async def _wait_for_polls(self, polls: dict[tuple[str, str], PollFuture]) -> None:
        """Polls in flight at stop may finish within the grace (counted from the stop);
        one that does not is abandoned on its worker (a daemon thread): its transaction
        commits whole or, when the process exits first, not at all."""
        loop = asyncio.get_running_loop()
        started = self._stop_requested_at if self._stop_requested_at is not None else loop.time()
        running = {future for future in polls.values() if not future.done()}
        if running and not being_cancelled():
            left = max(0.0, started + self.grace - loop.time())
            await asyncio.wait(running, timeout=left)
        abandoned = sum(not future.done() for future in running)
        if abandoned:
            log.warning("poll.abandoned_in_flight", polls=abandoned)

    def _prune_job(self) -> None:
        serving = self._serving
        if serving is not None and not serving.stop.is_set():
            self._spawn(self._in_thread(self._prune, failed="retention.failed"))

    def _index_search(self, budget: float) -> None:
        """Move the payload search's backlog into its index (``db/search_index.py``),
        batch by batch, for ``budget`` seconds at most: the rest waits for the next run."""
        deadline = time.monotonic() + budget
        indexed = 0
        while time.monotonic() < deadline:
            moved = self.store.search_index.index_batch()
            if not moved:
                break
            indexed += moved
        if indexed:
            log.debug("search.indexed", events=indexed)

    def _index_search_job(self) -> None:
        serving = self._serving
        if serving is None or serving.stop.is_set() or self._indexing:
            return
        self._indexing = True

        async def index() -> None:
            try:
                await self._in_thread(
                    functools.partial(self._index_search, plan.SEARCH_INDEX_FOR),
                    failed="search.index_failed",
                )
            finally:
                self._indexing = False

        self._spawn(index())

    def _heartbeat_job(self) -> None:
        self._spawn(self._beat())

    async def _beat(self) -> None:
        """A heartbeat; first, with SQLite, make sure the file is still the one opened at
        the start: if it was deleted or replaced, stop (exit 1) so the supervisor sees."""
        try:
            await in_daemon_thread(self.store.db.check_file)
        except StoreLost as exc:
            self._stop_by_itself(exc)
            return
        await self._in_thread(self._heartbeat, failed="node.heartbeat_failed")
        retried: list[tuple[Account, TriggerSettings]] = []
        await self._in_thread(
            lambda: retried.extend(self._retried_triggers()), failed="poll.retry_check_failed"
        )
        for account, trigger in retried:  # on the loop, as the scheduler's own runs
            log.info("poll.retry_requested", account=account.name, trigger=trigger.name)
            self._poll_job(account, trigger, retried=True)
        self._poll_taken_over()

    def _poll_taken_over(self) -> None:
        """Queue the polls of the jobs this node took over whose turn passed (on the loop);
        their claims refuse any that the node leaving polled after all."""
        if not self._taken_over:
            return
        taken, self._taken_over = self._taken_over, []
        pairs = {(a.name, t.name): (a, t) for a, t in plan.poll_jobs(self.config)}
        for job in taken:
            pair = pairs.get(job)
            if pair is not None:
                self._poll_job(*pair, taken_over=True)

    def _stop_by_itself(self, reason: RuntimeFailure) -> None:
        """Stop as after a first signal, then exit 1 with ``reason``'s sentence."""
        serving = self._serving
        if self._fatal is not None or serving is None:
            return
        self._fatal = reason
        log.error("engine.stopping_on_failure", error=str(reason))
        self._request_stop()

    # ---------------------------------------------------------------- health

    def _store_changed(self, unit: str, failure: StoreFailure | None) -> None:
        """From any thread: a unit of work starts failing, or recovers."""
        if failure is None:
            log.info("store.recovered", unit=unit)
        else:
            log.error(
                "store.failing",
                unit=unit,
                kind="unreachable" if failure.transient else "refused",
                error=failure.reason,
            )

    def _triggers_failing(self) -> dict[tuple[str, str], bool]:
        """For the metrics: each configured trigger, failing or not (see ``is_failing``)."""
        states = {(s.account, s.trigger): s for s in self.store.polls.states()}
        moment = now()
        failing = {}
        for account, trigger in plan.poll_jobs(self.config):
            st = states.get((account.name, trigger.name))
            failing[(account.name, trigger.name)] = st is not None and is_failing(
                failures=st.consecutive_failures,
                failing_since=st.failing_since,
                now=moment,
                interval=trigger.interval,
            )
        return failing

    def _liveness(self) -> Health:
        serving = self._serving
        return assess(
            scheduler_running=serving is not None and bool(serving.scheduler.running),
            probe=None,
            activity=self.store.db.activity.snapshot(),
            failing_polls={},
        )

    async def _readiness(self) -> Health:
        """Liveness, plus one write (this node's heartbeat) within PROBE_TIMEOUT, plus
        what the units of work and the polls say (see ops.health)."""
        if self._probe is None or self._probe.done():  # one probe at a time
            self._probe = in_daemon_thread(self._heartbeat)
            # a probe that ends after its check gave up: its failure is read here
            self._probe.add_done_callback(lambda f: f.cancelled() or f.exception())
        probe = Probe()
        try:
            await asyncio.wait_for(asyncio.shield(self._probe), PROBE_TIMEOUT)
        except TimeoutError:
            probe = Probe(timed_out=True)
        except TriggerEngineError as exc:
            probe = Probe(error=str(exc))
        serving = self._serving
        return assess(
            scheduler_running=serving is not None and bool(serving.scheduler.running),
            probe=probe,
            activity=self.store.db.activity.snapshot(),
            failing_polls=dict(self._store_failed_polls),
        )

    async def _in_thread(self, work: Callable[[], None], *, failed: str) -> None:
        """``work`` in a daemon thread; a database failure is one ``failed`` log line."""
        try:
            await in_daemon_thread(work)
        except TriggerEngineError as exc:
            log.error(failed, error=str(exc))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task the daemon owns: cancelled, quietly, at the stop."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("engine.task_failed", error=str(error) or type(error).__name__)

    # ---------------------------------------------------------------- the node

    async def _start_http(self) -> web.AppRunner | None:
        listen = self.config.engine.listen
        if listen is None:
            return None
        from trigger_engine.ops.http_api import make_app, serve
        from trigger_engine.runtime import console

        for name, trigger in self.config.triggers.items():
            self.metrics.event_type_of(name, trigger.event)

        def mount(app: web.Application) -> None:
            # the console and the admin API (issue 15): served while the current
            # configuration has [console], so a reload turns it on or off, or changes its
            # token, without a restart (404 while off)
            console.mount(app, lambda: self.config, self.store, clock=now)

        app = make_app(
            self.metrics, readiness=self._readiness, liveness=self._liveness, mount=mount
        )
        try:
            return await serve(app, listen)
        except OSError as exc:
            raise RuntimeFailure(
                f"cannot listen on {listen} ([engine] listen): {exc.strerror}"
            ) from None

    def _release_leftovers(self) -> None:
        """SQLite: this process holds the file's lock, so every claim and lease in it is
        a leftover of a process that was killed: due again, and free, right now."""
        released = self.store.deliveries.release_claims()
        if released:
            log.info("delivery.recovered_in_flight", deliveries=released)
        self.store.polls.release_leases(None)

    async def _resume_auto_paused(self, *, why: str) -> None:
        resumed = await in_daemon_thread(self.store.polls.resume_auto_paused)
        for account_name, trigger_name in resumed:
            log.info("poll.resumed", account=account_name, trigger=trigger_name, why=why)

    def _carried_over_backoff(self) -> None:
        """At start: say which triggers are still backing off after failures before the
        start (a restart keeps a backoff: the cause may not be fixed), and how to retry now."""
        moment = now()
        current, _paused = self._backoffs(moment)
        self._backing_off = current
        for account, trigger in ((a.name, t.name) for a, t in plan.poll_jobs(self.config)):
            until = current.get((account, trigger))
            if until is None:
                continue
            log.warning(
                "poll.backoff_carried_over",
                account=account,
                trigger=trigger,
                until=until.isoformat(),
                hint=f"'trigger-engine triggers retry {account} {trigger}' polls it now",
            )

    def _backoffs(
        self, moment: datetime
    ) -> tuple[dict[tuple[str, str], datetime], set[tuple[str, str]]]:
        """The configured, unpaused triggers backing off at ``moment`` (until when), and
        the paused ones."""
        backing_off: dict[tuple[str, str], datetime] = {}
        paused: set[tuple[str, str]] = set()
        for st in self.store.polls.states():
            key = (st.account, st.trigger)
            if st.paused:
                paused.add(key)
            elif st.backoff_until is not None and st.backoff_until > moment:
                backing_off[key] = st.backoff_until
        return backing_off, paused

    def _retried_triggers(self) -> list[tuple[Account, TriggerSettings]]:
        """With each heartbeat: the triggers whose backoff someone cleared since the last
        one (``triggers retry``), which are then polled at once rather than at their next
        scheduled run. Reads one small table."""
        moment = now()
        current, paused = self._backoffs(moment)
        cleared = {
            key
            for key, until in self._backing_off.items()
            if until > moment and key not in current and key not in paused
        }
        self._backing_off = current
        return [
            (account, trigger)
            for account, trigger in plan.poll_jobs(self.config)
            if (account.name, trigger.name) in cleared
        ]

    def _heartbeat(self) -> None:
        """Say this node is alive, with the sinks it serves and its config's digest (the
        registry), and take in what the other live nodes serve: polls fan out to it."""
        moment = now()
        others = self.store.nodes.heartbeat(
            self.owner,
            version=__version__,
            now=moment,
            sinks=served_sinks(self.config),
            config_digest=config_digest(self.config),
            schedule_digest=self._schedule_digest,
        )
        self._take_registry(others, moment)

    def _read_registry(self) -> None:
        """``run --once``: what the live nodes serve, read once (it is no node itself, and
        polls every trigger: no division)."""
        moment = now()
        self._take_registry(self.store.nodes.live(moment), moment, divide=False)

    def _take_registry(
        self, others: list[NodeView], moment: datetime, *, divide: bool = True
    ) -> None:
        if self.store.dialect == "sqlite":
            # one process per file: another node's row is a killed process's, whatever
            # its heartbeat says (its config may have had a sink that is now removed)
            others = []
        remote = registry.served_by_live(others, moment, excluding=self.owner)
        own = set(served_sinks(self.config))
        elsewhere = sorted(set(remote) - own)
        if elsewhere != sorted(set(self._remote) - own):
            log.info(
                "node.remote_sinks",
                sinks=", ".join(elsewhere) or "none",
                detail="sinks that other live nodes serve and this one does not: events "
                "polled here get deliveries to them, which those nodes send",
            )
        self._remote = remote
        if divide:
            self._divide(others, moment)

    def _divide(self, others: list[NodeView], moment: datetime) -> None:
        """This node's share of the polls, among the live nodes with the same schedule
        (:mod:`~trigger_engine.core.division`); the jobs it gains from a node that left,
        whose turn came since their last poll, are polled at the next heartbeat's end
        (:meth:`_beat`), so a node that stops or dies delays its polls, never skips them."""
        peers = [
            node.name
            for node in others
            if node.alive(moment) and node.schedule_digest == self._schedule_digest
        ]
        division = self.division
        with self._dividing:
            division.me = self.owner
            was = (division.peers, division.mine is None)
            gained = division.update(self._job_keys, peers)
            changed = (division.peers, division.mine is None) != was
        if changed:
            log.info(
                "node.share",
                nodes=len(division.peers) + 1,
                polls=len(self._job_keys) if division.mine is None else len(division.mine),
                of_polls=len(self._job_keys),
                gained=len(gained),
            )
        if gained:
            due = self._turn_passed(gained, moment)
            if due:
                log.info("poll.taken_over", polls=len(due), why="their node left")
                self._taken_over.extend(due)

    def _turn_passed(self, gained: frozenset[Job], moment: datetime) -> list[Job]:
        """The jobs of ``gained`` not polled (by any node) within their interval of
        ``moment``: their turn came while the node that had them was leaving."""
        last = self.store.polls.last_polls()
        interval = {name: trigger.interval for name, trigger in self.config.triggers.items()}
        due = []
        for job in sorted(gained):
            polled = last.get(job)
            if polled is None or polled <= moment - timedelta(seconds=interval[job[1]]):
                due.append(job)
        return due

    def _remote_sinks(self) -> SinkSubscriptions:
        return self._remote

    def _subscribers(self) -> Subscribers:
        """Who receives the engine's own events: this node's sinks (the configuration
        now, reloads included) and those other live nodes serve."""
        return Subscribers(served_sinks(self.config), self._remote)

    def _known_sinks(self) -> set[str]:
        """The sinks some live node delivers to: this one's and the registry's."""
        return {s.name for s in self.config.sinks} | set(self._remote)

    def _leave(self) -> None:
        """A clean stop: give back the poll leases at once and say so."""
        try:
            self.store.polls.release_leases(self.owner)
            self.store.nodes.heartbeat(self.owner, version=__version__, now=now(), stopping=True)
        except TriggerEngineError as exc:
            log.warning("node.leave_failed", error=str(exc))

    def _attempted(self, outcome: AttemptOutcome) -> None:
        self.metrics.observe_attempt(outcome)
        if self.on_attempt is not None:
            self.on_attempt(outcome)

    # ---------------------------------------------------------------- reload (SIGHUP)

    def _on_sighup(self) -> None:
        """Reload in a task: reading the file and the store calls happen off the loop.
        Reloads are serialised, and coalesced: while one waits for the running one, a
        further SIGHUP adds nothing (the waiting one reads the file as it is by then)."""
        serving = self._serving
        if self.reload is None or serving is None or serving.stop.is_set():
            return
        if self._reload_waiting:
            log.debug("config.reload_coalesced")
            return
        self._reload_waiting = True
        self._spawn(self._reload(serving))

    async def _reload(self, serving: _Serving) -> None:
        assert self.reload is not None
        try:  # one reload at a time, in the order they came
            await serving.reloading.acquire()
        except asyncio.CancelledError:
            self._reload_waiting = False  # the one waiting: stopping
            raise
        try:
            self._reload_waiting = False  # from now on, a SIGHUP queues the next reload
            try:
                config = await asyncio.wait_for(in_daemon_thread(self.reload), RELOAD_READ_WITHIN)
            except TimeoutError:  # a file on a hung network mount: its thread is abandoned
                path = self.config.path or "the configuration file"
                log.error(
                    "config.reload_failed",
                    error=f"reading {path} took more than {RELOAD_READ_WITHIN:g}s",
                    keeping="the running config",
                )
                return
            except TriggerEngineError as exc:
                log.error("config.reload_failed", error=str(exc), keeping="the running config")
                return
            if self._serving is serving and not serving.stop.is_set():
                await self.apply(config)
        finally:
            serving.reloading.release()

    async def apply(self, config: Config) -> None:
        """Take a new configuration without a restart: accounts, triggers, intervals and
        sinks change; seen items, events and deliveries in flight are untouched. The
        database and the listen address need a restart."""
        serving = self._serving
        assert serving is not None, "apply() is for a running daemon"
        old = self.config
        if (
            config.database_url() != old.database_url()
            or config.engine.listen != old.engine.listen
            or config.engine.poll_workers != old.engine.poll_workers
        ):
            log.warning(
                "config.reload_partial",
                detail="engine.database, engine.listen and engine.poll_workers change at "
                "the next restart",
            )
        # before the new schedule's first polls: they must not find the trigger paused
        await self._resume_auto_paused(why="reload")
        if config.source != old.source:
            self._retire(self.source)  # closed now, or when the last poll using it ends
            self.source = Source(config.source)
        logs.REDACTION.update([*logs.REDACTION.secrets, *config.secrets()])
        self.config = config
        self._schedule_digest = plan.schedule_digest(config)
        self._job_keys = plan.job_keys(config)
        self.division.forget()  # every job until the heartbeat below divides them again
        if self._signals is not None:
            self._signals.grace = config.engine.shutdown_grace
        self.poller = Poller(config, self.store, self.source, remote_sinks=self._remote_sinks)
        serving.dispatcher.reconfigure(config)
        from trigger_engine.runtime import jobs  # loaded by _serve already

        jobs.schedule_polls(serving.scheduler, config, self._poll_job, first_run=now())
        for name, trigger in config.triggers.items():
            self.metrics.event_type_of(name, trigger.event)
        log.info(
            "config.reloaded",
            accounts=len(config.accounts),
            polls=len(plan.poll_jobs(config)),
            sinks=len(config.sinks),
        )
        self._heartbeat_job()  # the other nodes learn this node's sinks now
        serving.dispatcher.notify()
