"""The daemon: APScheduler 3.11 polls every enabled trigger of every account on its
interval, while the dispatcher delivers continuously; SIGINT/SIGTERM stop it cleanly.

APScheduler's pitfalls are handled here (see the design notes): job defaults are set on
the scheduler (coalesce, a generous misfire grace), every request has a timeout, signal
handlers are ours, and a job only queues its poll for a bounded pool of long-lived daemon
threads (``[engine] poll_workers``; :class:`~trigger_engine.runtime.threads.WorkerPool`):
APScheduler's asyncio executor cancels running jobs at shutdown, and nothing must wait for
a thread that a stop at once abandons. One poll per (account, trigger) is queued or running
at a time.

Spreading: the first runs are spread, in config order, over the shortest interval, at
least :data:`START_RATE` polls a second (:func:`start_spacing`); each job then keeps its
own offset, so a large schedule polls at an even rate instead of all at once. A reload
(SIGHUP) spreads the new schedule the same way.

Stopping:

* **First SIGINT/SIGTERM:** no new poll and no new claim; deliveries in flight get
  ``[engine] shutdown_grace`` to finish and are recorded, polls in flight the rest of that
  same grace (a poll is one transaction: it commits whole or not at all); what did not
  finish is released (deliveries) or abandoned (polls) and the next start does it again.
  Polls queued but not started at the stop are dropped (the next start polls them).
  ``trigger-engine run`` then exits 0.
* **Second signal:** stop at once. The main task is cancelled, in-flight requests are
  abandoned, what already finished is recorded if the database answers within a second,
  and :class:`StoppedAtOnce` (exit 1, one sentence on stderr) ends the command. Exit 1
  because work was abandoned; nothing is lost or corrupted: every transaction is atomic,
  and with SQLite the next start releases leftover claims and sends them at once, with
  the same ``webhook-id``.
* **SIGKILL / a crash** at any moment: the same as a stop at once, minus the recording.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from trigger_engine import __version__
from trigger_engine.clock import now
from trigger_engine.config import Account, Config, TriggerSettings
from trigger_engine.db.store import AttemptOutcome, PollClaim, Store
from trigger_engine.delivery.dispatcher import Dispatcher, DrainReport, being_cancelled
from trigger_engine.errors import RuntimeFailure, TriggerEngineError
from trigger_engine.ops import logs
from trigger_engine.ops.http_api import make_app, serve
from trigger_engine.ops.logs import get_logger
from trigger_engine.ops.metrics import Metrics
from trigger_engine.polling.poller import Poller, PollReport
from trigger_engine.polling.source import Source
from trigger_engine.runtime.threads import WorkerPool, in_daemon_thread

log = get_logger("trigger_engine.runtime.daemon")

PRUNE_EVERY = 3600.0  # seconds between retention sweeps
HEARTBEAT_EVERY = 10.0  # seconds between a node's heartbeats
MIN_GAP = 0.9  # a trigger is not polled again before this fraction of its interval
START_RATE = 20.0  # polls per second at least, when the first runs are spread out
# Default [engine] poll_workers: SQLite has one connection (its transactions queue up
# anyway; the workers overlap HTTP waits), PostgreSQL a pool of 5 (+10 overflow).
POLL_WORKERS = {"sqlite": 4, "postgresql": 8}


def start_spacing(jobs: int, shortest_interval: float) -> float:
    """Seconds between the first runs of consecutive poll jobs: ``jobs`` spread evenly
    over the shortest interval, but never slower than ``START_RATE`` polls a second (a
    small config polls everything within a fraction of a second of the start)."""
    if jobs <= 1:
        return 0.0
    return min(shortest_interval / jobs, 1.0 / START_RATE)


def node_name() -> str:
    """Who holds a claim: host and pid, unique among live processes."""
    return f"{socket.gethostname()}:{os.getpid()}"


def poll_jobs(config: Config) -> list[tuple[Account, TriggerSettings]]:
    """Every (account, trigger) to poll: each enabled trigger of each account."""
    return [
        (account, trigger)
        for account in config.accounts
        for trigger in config.triggers.values()
        if trigger.enabled
    ]


class StoppedAtOnce(RuntimeFailure):
    """A second SIGINT/SIGTERM stopped the daemon without waiting for work in flight
    (exit 1: work was abandoned; the next start does it again)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(
            f"stopped at once by a second signal ({signal_name}): work in flight was "
            "abandoned and is retried at the next start"
        )


PollFuture = asyncio.Future[PollReport | None]


@dataclass
class OnceReport:
    polls: list[PollReport]
    delivery: DrainReport

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.polls)


class Engine:
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
        self.poller = Poller(config, store, source)
        self.owner = node_name()
        self.metrics = Metrics(store.sink_stats, now)
        self._stop_requested_at: float | None = None  # loop time of the (first) stop
        self._scheduler: AsyncIOScheduler | None = None
        self._old_sources: list[Source] = []

    # ---------------------------------------------------------------- run --once

    async def run_once(self) -> OnceReport:
        """Poll every enabled trigger now (whatever backoff an earlier failure set),
        then deliver everything that is due now."""
        if self.store.dialect == "sqlite":  # one process (locked): leftovers of a killed one
            await in_daemon_thread(self._release_leftovers)
        reports = []
        for account, trigger in poll_jobs(self.config):
            claim = self._claim(account, trigger, min_gap=None)
            if claim.refused == "paused":
                log.info("poll.skipped_paused", account=account.name, trigger=trigger.name)
                continue
            if claim.fence is None:
                reports.append(
                    PollReport(
                        account.name,
                        trigger.name,
                        ok=True,
                        outcome="skipped",
                        error=f"node {claim.state.lease_owner or '?'} is polling it",
                    )
                )
                continue
            reports.append(
                await in_daemon_thread(
                    self.poller.poll, account, trigger, fence=claim.fence, state=claim.state
                )
            )
        await in_daemon_thread(self.store.release_poll_leases, self.owner)
        async with Dispatcher(self.config, self.store, owner=self.owner) as dispatcher:
            delivery = await dispatcher.drain()
        await in_daemon_thread(self._prune)
        return OnceReport(reports, delivery)

    def _claim(
        self,
        account: Account,
        trigger: TriggerSettings,
        *,
        min_gap: float | None,
        honour_backoff: bool = False,
    ) -> PollClaim:
        return self.store.claim_poll(
            account.name,
            trigger.name,
            owner=self.owner,
            now=now(),
            lease=self.poll_lease(trigger),
            min_gap=min_gap,
            honour_backoff=honour_backoff,
        )

    @property
    def poll_workers(self) -> int:
        """How many polls run at once: ``[engine] poll_workers``, else by database."""
        configured = self.config.engine.poll_workers
        return configured if configured is not None else POLL_WORKERS.get(self.store.dialect, 4)

    def poll_lease(self, trigger: TriggerSettings) -> float:
        """How long a poll lease lasts: ``[engine] lease`` beyond the longest the requests
        of one poll may take, so that a slow poll is not taken over while it runs."""
        pages = trigger.pagination.max_pages if trigger.pagination else 1
        return self.config.engine.lease + self.config.source.timeout * pages

    def _prune(self) -> None:
        """The retention sweep: old, fully delivered events go (see ``Store.prune``)."""
        cutoff = now() - timedelta(seconds=self.config.engine.retention)
        pruned = self.store.prune(cutoff)
        if pruned:
            log.info("retention.pruned", events=pruned, older_than=cutoff.isoformat())

    # ---------------------------------------------------------------- daemon

    async def run(
        self, *, ready: Callable[[], None] | None = None, stop_after: float | None = None
    ) -> None:
        """Until SIGINT/SIGTERM (or ``stop_after`` seconds), then stop gracefully (see the
        module's docstring). A second signal stops at once: raises :class:`StoppedAtOnce`."""
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        stop = asyncio.Event()
        signals: list[str] = []
        self._stop_requested_at = None

        def request_stop() -> None:
            if not stop.is_set():
                self._stop_requested_at = loop.time()
                stop.set()

        def on_signal(signum: int) -> None:
            name = signal.Signals(signum).name
            signals.append(name)
            if len(signals) == 1:
                log.info("engine.stopping", signal=name, grace=f"{self.grace:g}s")
                request_stop()
            elif len(signals) == 2 and main is not None:
                log.warning("engine.stopping_now", signal=name)
                # Cancelling the main task interrupts whatever it awaits, including the
                # grace wait; Dispatcher._shutdown and _wait_for_polls see the cancellation
                # and skip their waits. Later signals: already stopping at once.
                main.cancel()

        if stop_after is not None:
            loop.call_later(stop_after, request_stop)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        if self.reload is not None:
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        try:
            await self._serve(stop, ready)
        except asyncio.CancelledError:
            if len(signals) < 2:
                raise  # cancelled by our caller, not by a signal
            raise StoppedAtOnce(signals[1]) from None
        log.info("engine.stopped", node=self.owner)

    @property
    def grace(self) -> float:
        return self.config.engine.shutdown_grace

    async def _serve(self, stop: asyncio.Event, ready: Callable[[], None] | None) -> None:
        # With SQLite this process is the only one: claims left in the database are
        # those of a process that was killed, so they are due again right now.
        if self.store.dialect == "sqlite":
            await in_daemon_thread(self._release_leftovers)

        resumed = await in_daemon_thread(self.store.resume_auto_paused)
        for account_name, trigger_name in resumed:
            log.info("poll.resumed", account=account_name, trigger=trigger_name, why="start")

        async with Dispatcher(
            self.config, self.store, owner=self.owner, on_attempt=self._attempted
        ) as dispatcher:
            scheduler = AsyncIOScheduler(
                event_loop=asyncio.get_running_loop(),
                timezone="UTC",
                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            )
            polls: dict[tuple[str, str], PollFuture] = {}
            workers = WorkerPool(self.poll_workers, name="poll")

            async def poll_job(account: Account, trigger: TriggerSettings) -> None:
                # Queues the poll and returns at once (never cancelled mid-poll by
                # scheduler.shutdown); one poll per (account, trigger) queued or running.
                job = (account.name, trigger.name)
                if stop.is_set() or workers.stopped or job in polls:
                    return
                future = workers.submit(self._poll_if_due, account, trigger)
                polls[job] = future
                future.add_done_callback(partial(self._polled, polls, job, dispatcher))

            async def prune_job() -> None:
                if not stop.is_set():
                    try:
                        await in_daemon_thread(self._prune)
                    except TriggerEngineError as exc:
                        log.error("retention.failed", error=str(exc))

            self._scheduler = scheduler
            self._poll_job = poll_job
            self._dispatcher = dispatcher
            self._schedule_polls(first_run=now())

            async def heartbeat_job() -> None:
                try:
                    await in_daemon_thread(self._heartbeat)
                except TriggerEngineError as exc:
                    log.error("node.heartbeat_failed", error=str(exc))

            await in_daemon_thread(self._heartbeat)
            scheduler.add_job(
                prune_job,
                IntervalTrigger(seconds=PRUNE_EVERY, timezone="UTC"),
                id="retention",
                next_run_time=now() + timedelta(seconds=60),
            )
            scheduler.add_job(
                heartbeat_job,
                IntervalTrigger(seconds=HEARTBEAT_EVERY, timezone="UTC"),
                id="heartbeat",
            )
            scheduler.start()
            http = await self._start_http(scheduler)
            log.info(
                "engine.started",
                node=self.owner,
                accounts=len(self.config.accounts),
                polls=len(poll_jobs(self.config)),
                poll_workers=workers.size,
                sinks=len(self.config.sinks),
                listen=self.config.engine.listen,
            )
            if ready is not None:
                ready()
            try:
                await dispatcher.run(stop, grace=self.grace)
            finally:
                scheduler.shutdown(wait=False)
                dropped = workers.stop()
                if dropped:
                    log.info("poll.dropped_at_stop", polls=dropped, next_start="polls them")
                await self._wait_for_polls(polls)
                if not being_cancelled():
                    await in_daemon_thread(self._leave)
                if http is not None:
                    await http.cleanup()
                for old in self._old_sources:
                    old.close()
                self._scheduler = None

    def _schedule_polls(self, *, first_run: datetime) -> None:
        """One job per (account, enabled trigger); the jobs of a previous config go. Job
        ``i`` (in config order) first runs at ``first_run + i * start_spacing(...)``, then
        every interval from there."""
        assert self._scheduler is not None
        for job in self._scheduler.get_jobs():
            if job.id not in ("retention", "heartbeat"):
                job.remove()
        jobs = poll_jobs(self.config)
        if not jobs:
            return
        spacing = start_spacing(len(jobs), min(trigger.interval for _, trigger in jobs))
        for i, (account, trigger) in enumerate(jobs):
            first = first_run + timedelta(seconds=i * spacing)
            self._scheduler.add_job(
                self._poll_job,
                IntervalTrigger(seconds=trigger.interval, start_date=first, timezone="UTC"),
                args=(account, trigger),
                id=f"{account.name}/{trigger.name}",
                name=f"poll {account.name}/{trigger.name}",
                next_run_time=first,
            )

    async def _start_http(self, scheduler: AsyncIOScheduler) -> web.AppRunner | None:
        listen = self.config.engine.listen
        if listen is None:
            return None
        for name, trigger in self.config.triggers.items():
            self.metrics.event_type_of(name, trigger.event)
        app = make_app(
            self.metrics,
            scheduler_running=lambda: bool(scheduler.running),
            ping_database=self.store.ping,
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
        released = self.store.release_claims()
        if released:
            log.info("delivery.recovered_in_flight", deliveries=released)
        self.store.release_poll_leases(None)

    def _heartbeat(self) -> None:
        self.store.heartbeat(self.owner, version=__version__, now=now())

    def _leave(self) -> None:
        """A clean stop: give back the poll leases at once and say so."""
        try:
            self.store.release_poll_leases(self.owner)
            self.store.heartbeat(self.owner, version=__version__, now=now(), stopping=True)
        except TriggerEngineError as exc:
            log.warning("node.leave_failed", error=str(exc))

    def _attempted(self, outcome: AttemptOutcome) -> None:
        self.metrics.observe_attempt(outcome)
        if self.on_attempt is not None:
            self.on_attempt(outcome)

    # ---------------------------------------------------------------- reload (SIGHUP)

    def _on_sighup(self) -> None:
        if self.reload is None or self._scheduler is None:
            return
        try:
            config = self.reload()
        except TriggerEngineError as exc:
            log.error("config.reload_failed", error=str(exc), keeping="the running config")
            return
        self.apply(config)

    def apply(self, config: Config) -> None:
        """Take a new configuration without a restart: accounts, triggers, intervals and
        sinks change; seen items, events and deliveries in flight are untouched. The
        database and the listen address need a restart."""
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
        if config.source != old.source:
            self._old_sources.append(self.source)
            self.source = Source(config.source)
        logs.REDACTION.update([*logs.REDACTION.secrets, *config.secrets()])
        self.config = config
        self.poller = Poller(config, self.store, self.source)
        self._dispatcher.reconfigure(config)
        self._schedule_polls(first_run=now())
        for account_name, trigger_name in self.store.resume_auto_paused():
            log.info("poll.resumed", account=account_name, trigger=trigger_name, why="reload")
        for name, trigger in config.triggers.items():
            self.metrics.event_type_of(name, trigger.event)
        log.info(
            "config.reloaded",
            accounts=len(config.accounts),
            polls=len(poll_jobs(config)),
            sinks=len(config.sinks),
        )
        self._dispatcher.notify()

    def _poll_if_due(self, account: Account, trigger: TriggerSettings) -> PollReport | None:
        """One scheduled poll, on a poll worker; None when the claim is refused: paused,
        backing off, or (several nodes schedule every trigger) another node holds the
        lease or started a poll of it less than 90% of an interval ago. The claim checks
        all of that in its one transaction."""
        claim = self._claim(
            account, trigger, min_gap=MIN_GAP * trigger.interval, honour_backoff=True
        )
        if claim.fence is None:
            log.debug("poll.skipped", account=account.name, trigger=trigger.name, why=claim.refused)
            return None
        return self.poller.poll(account, trigger, fence=claim.fence, state=claim.state)

    def _polled(
        self,
        polls: dict[tuple[str, str], PollFuture],
        job: tuple[str, str],
        dispatcher: Dispatcher,
        future: PollFuture,
    ) -> None:
        polls.pop(job, None)
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:  # a failed poll is a report; this is the store failing
            log.error(
                "poll.error",
                account=job[0],
                trigger=job[1],
                error=str(error) or type(error).__name__,
            )
            return
        report = future.result()
        if report is None:
            return
        self.metrics.observe_poll(report)
        if self.on_poll is not None:
            self.on_poll(report)
        if report.new_events:
            dispatcher.notify()

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
