"""The daemon: the composition root of ``trigger-engine run``.

It wires the parts together (store, source, poller, dispatcher, schedule, HTTP server,
metrics) and owns the process's lifecycle: start, ``run --once``, SIGHUP reload, signals
and shutdown. Polls run on a bounded pool of long-lived daemon threads (``[engine]
poll_workers``; :class:`~trigger_engine.threads.WorkerPool`): APScheduler's asyncio
executor cancels running jobs at shutdown, and nothing must wait for a thread that a stop
at once abandons. One poll per (account, trigger) is queued or running at a time. The
event loop never waits for the database or a file: every blocking call crosses to a
daemon thread (:mod:`trigger_engine.threads`).

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
import signal
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from trigger_engine import __version__
from trigger_engine.clock import now
from trigger_engine.config import Account, Config, TriggerSettings
from trigger_engine.db.store import Store
from trigger_engine.delivery.dispatcher import Dispatcher, DrainReport, being_cancelled
from trigger_engine.errors import RuntimeFailure, TriggerEngineError
from trigger_engine.ops import http_api, logs
from trigger_engine.ops.http_api import make_app, serve
from trigger_engine.ops.logs import get_logger
from trigger_engine.ops.metrics import Metrics
from trigger_engine.polling.poller import Poller
from trigger_engine.polling.source import Source
from trigger_engine.runtime import jobs
from trigger_engine.threads import WorkerPool, in_daemon_thread
from trigger_engine.types import (
    AttemptOutcome,
    PollClaim,
    PollOutcome,
    PollRefusal,
    PollReport,
)

log = get_logger("trigger_engine.daemon")


class StoppedAtOnce(RuntimeFailure):
    """A second SIGINT/SIGTERM stopped the daemon without waiting for work in flight
    (exit 1: work was abandoned; the next start does it again)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(
            f"stopped at once by a second signal ({signal_name}): work in flight was "
            "abandoned and is retried at the next start"
        )


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
        self.poller = Poller(config, store, source)
        self.owner = jobs.node_name()
        self.metrics = Metrics(store.sinks.stats, now, quarantined=store.quarantine.counts)
        self._stop_requested_at: float | None = None  # loop time of the (first) stop
        self._serving: _Serving | None = None
        # Sources: the one given is the caller's to close; one made by a reload is ours,
        # closed once it is replaced and no poll in flight uses it any more.
        self._given_source = source
        self._source_users: Counter[Source] = Counter()  # polls queued or running, by source
        self._retired: list[Source] = []  # replaced by a reload, still used by a poll
        # tasks of its own: reloads, heartbeats and retention sweeps in progress
        self._tasks: set[asyncio.Future[None]] = set()

    @property
    def grace(self) -> float:
        """``[engine] shutdown_grace``: how long a stop waits for work in flight."""
        return self.config.engine.shutdown_grace

    # ---------------------------------------------------------------- run --once

    async def run_once(self) -> OnceReport:
        """Poll every enabled trigger now (whatever backoff an earlier failure set),
        then deliver everything that is due now."""
        if self.store.dialect == "sqlite":  # one process (locked): leftovers of a killed one
            await in_daemon_thread(self._release_leftovers)
        reports = []
        for account, trigger in jobs.poll_jobs(self.config):
            claim = await in_daemon_thread(self._claim, account, trigger, min_gap=None)
            if claim.refused is PollRefusal.PAUSED:
                log.info("poll.skipped_paused", account=account.name, trigger=trigger.name)
                continue
            if claim.fence is None:
                reports.append(
                    PollReport(
                        account.name,
                        trigger.name,
                        ok=True,
                        outcome=PollOutcome.SKIPPED,
                        error=f"node {claim.state.lease_owner or '?'} is polling it",
                    )
                )
                continue
            reports.append(
                await in_daemon_thread(
                    self.poller.poll, account, trigger, fence=claim.fence, state=claim.state
                )
            )
        await in_daemon_thread(self.store.polls.release_leases, self.owner)
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
        return self.store.polls.claim(
            account.name,
            trigger.name,
            owner=self.owner,
            now=now(),
            lease=jobs.poll_lease(self.config, trigger),
            min_gap=min_gap,
            honour_backoff=honour_backoff,
        )

    def _prune(self) -> None:
        """The retention sweep: old, fully delivered events go (see ``EventRepository.prune``)."""
        cutoff = now() - timedelta(seconds=self.config.engine.retention)
        pruned = self.store.events.prune(cutoff)
        forgotten = self.store.quarantine.prune(cutoff)
        if pruned or forgotten:
            log.info(
                "retention.pruned",
                events=pruned,
                quarantined_items=forgotten,
                older_than=cutoff.isoformat(),
            )

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

    async def _serve(self, stop: asyncio.Event, ready: Callable[[], None] | None) -> None:
        # With SQLite this process is the only one: claims left in the database are
        # those of a process that was killed, so they are due again right now.
        if self.store.dialect == "sqlite":
            await in_daemon_thread(self._release_leftovers)
        await self._resume_auto_paused(why="start")

        async with Dispatcher(
            self.config, self.store, owner=self.owner, on_attempt=self._attempted
        ) as dispatcher:
            serving = _Serving(
                stop=stop,
                scheduler=jobs.make_scheduler(asyncio.get_running_loop()),
                dispatcher=dispatcher,
                workers=WorkerPool(jobs.poll_workers(self.config, self.store.dialect), name="poll"),
            )
            self._serving = serving
            jobs.schedule_polls(serving.scheduler, self.config, self._poll_job, first_run=now())
            await in_daemon_thread(self._heartbeat)
            jobs.schedule_housekeeping(
                serving.scheduler, prune=self._prune_job, heartbeat=self._heartbeat_job, now=now()
            )
            serving.scheduler.start()
            http = await self._start_http(serving.scheduler)
            log.info(
                "engine.started",
                node=self.owner,
                accounts=len(self.config.accounts),
                polls=len(jobs.poll_jobs(self.config)),
                poll_workers=serving.workers.size,
                sinks=len(self.config.sinks),
                listen=self.config.engine.listen,
            )
            if ready is not None:
                ready()
            try:
                await dispatcher.run(stop, grace=self.grace)
            finally:
                serving.scheduler.shutdown(wait=False)
                dropped = serving.workers.stop()
                if dropped:
                    log.info("poll.dropped_at_stop", polls=dropped, next_start="polls them")
                await self._wait_for_polls(serving.polls)
                for task in list(self._tasks):
                    task.cancel()  # a reload reading its file, a heartbeat: we are stopping
                if not being_cancelled():
                    await in_daemon_thread(self._leave)
                if http is not None and not await http_api.stop(http):
                    log.warning("http.stop_timed_out", within=f"{http_api.STOP_WITHIN:g}s")
                self._close_sources()
                self._serving = None

    # ---------------------------------------------------------------- jobs

    def _poll_job(self, account: Account, trigger: TriggerSettings) -> None:
        """APScheduler's job, on the loop: queue the poll on a worker and return at once;
        one per (account, trigger) queued or running."""
        serving = self._serving
        key = (account.name, trigger.name)
        if serving is None or serving.stop.is_set() or serving.workers.stopped:
            return
        if key in serving.polls:
            return
        poller = self.poller  # this poll uses its source until it ends, whatever a reload does
        future = serving.workers.submit(self._poll_if_due, poller, account, trigger)
        serving.polls[key] = future
        self._source_users[poller.source] += 1
        future.add_done_callback(lambda _done: self._source_released(poller.source))
        future.add_done_callback(lambda done: self._polled(serving, key, done))

    def _poll_if_due(
        self, poller: Poller, account: Account, trigger: TriggerSettings
    ) -> PollReport | None:
        """One scheduled poll, on a poll worker; None when the claim is refused: paused,
        backing off, or (several nodes schedule every trigger) another node holds the
        lease or started a poll of it less than 90% of an interval ago. The claim checks
        all of that in its one transaction."""
        claim = self._claim(
            account, trigger, min_gap=jobs.MIN_GAP * trigger.interval, honour_backoff=True
        )
        if claim.fence is None:
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
        if error is not None:  # a failed poll is a report; this is the store failing
            log.error(
                "poll.error",
                account=key[0],
                trigger=key[1],
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

    def _heartbeat_job(self) -> None:
        self._spawn(self._in_thread(self._heartbeat, failed="node.heartbeat_failed"))

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
        released = self.store.deliveries.release_claims()
        if released:
            log.info("delivery.recovered_in_flight", deliveries=released)
        self.store.polls.release_leases(None)

    async def _resume_auto_paused(self, *, why: str) -> None:
        resumed = await in_daemon_thread(self.store.polls.resume_auto_paused)
        for account_name, trigger_name in resumed:
            log.info("poll.resumed", account=account_name, trigger=trigger_name, why=why)

    def _heartbeat(self) -> None:
        self.store.nodes.heartbeat(self.owner, version=__version__, now=now())

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
        """Reload in a task: reading the file and the store calls happen off the loop."""
        serving = self._serving
        if self.reload is None or serving is None or serving.stop.is_set():
            return
        self._spawn(self._reload(serving))

    async def _reload(self, serving: _Serving) -> None:
        assert self.reload is not None
        async with serving.reloading:  # one reload at a time, in the order they came
            try:
                config = await in_daemon_thread(self.reload)
            except TriggerEngineError as exc:
                log.error("config.reload_failed", error=str(exc), keeping="the running config")
                return
            if self._serving is serving and not serving.stop.is_set():
                await self.apply(config)

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
        self.poller = Poller(config, self.store, self.source)
        serving.dispatcher.reconfigure(config)
        jobs.schedule_polls(serving.scheduler, config, self._poll_job, first_run=now())
        for name, trigger in config.triggers.items():
            self.metrics.event_type_of(name, trigger.event)
        log.info(
            "config.reloaded",
            accounts=len(config.accounts),
            polls=len(jobs.poll_jobs(config)),
            sinks=len(config.sinks),
        )
        serving.dispatcher.notify()
