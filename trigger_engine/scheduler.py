"""The daemon: APScheduler 3.11 polls every enabled trigger of every account on its
interval, while the dispatcher delivers continuously; SIGINT/SIGTERM stop it cleanly.

APScheduler's pitfalls are handled here (see the design notes): job defaults are set on
the scheduler (coalesce, a generous misfire grace), every request has a timeout, signal
handlers are ours, and a poll runs in a daemon thread of its own (``in_daemon_thread``)
that the job only starts: APScheduler's asyncio executor cancels running jobs at shutdown,
and nothing must wait for a thread that a stop at once abandons.

Stopping:

* **First SIGINT/SIGTERM:** no new poll and no new claim; deliveries in flight get
  ``[engine] shutdown_grace`` to finish and are recorded, polls in flight the rest of that
  same grace (a poll is one transaction: it commits whole or not at all); what did not
  finish is released (deliveries) or abandoned (polls) and the next start does it again.
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
from functools import partial

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from trigger_engine.clock import now
from trigger_engine.config import Account, Config, TriggerSettings
from trigger_engine.delivery import Dispatcher, DrainReport, being_cancelled, in_daemon_thread
from trigger_engine.errors import RuntimeFailure
from trigger_engine.logs import get_logger
from trigger_engine.poller import Poller, PollReport
from trigger_engine.source import Source
from trigger_engine.store import AttemptOutcome, Store

log = get_logger("trigger_engine.scheduler")


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
    ) -> None:
        self.on_poll = on_poll
        self.on_attempt = on_attempt
        self.config = config
        self.store = store
        self.source = source
        self.poller = Poller(config, store, source)
        self.owner = node_name()
        self._stop_requested_at: float | None = None  # loop time of the (first) stop

    # ---------------------------------------------------------------- run --once

    async def run_once(self) -> OnceReport:
        """Poll every enabled trigger now (whatever backoff an earlier failure set),
        then deliver everything that is due now."""
        await in_daemon_thread(self.store.release_claims)
        reports = []
        for account, trigger in poll_jobs(self.config):
            state = self.store.poll_state(account.name, trigger.name)
            if state is not None and state.paused:
                log.info("poll.skipped_paused", account=account.name, trigger=trigger.name)
                continue
            reports.append(await in_daemon_thread(self.poller.poll, account, trigger))
        async with Dispatcher(self.config, self.store, owner=self.owner) as dispatcher:
            delivery = await dispatcher.drain()
        return OnceReport(reports, delivery)

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
            released = await in_daemon_thread(self.store.release_claims)
            if released:
                log.info("delivery.recovered_in_flight", deliveries=released)

        async with Dispatcher(
            self.config, self.store, owner=self.owner, on_attempt=self.on_attempt
        ) as dispatcher:
            scheduler = AsyncIOScheduler(
                event_loop=asyncio.get_running_loop(),
                timezone="UTC",
                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            )
            polls: dict[tuple[str, str], PollFuture] = {}

            async def poll_job(account: Account, trigger: TriggerSettings) -> None:
                # Starts the poll and returns at once (never cancelled mid-poll by
                # scheduler.shutdown); one poll per (account, trigger) at a time.
                job = (account.name, trigger.name)
                if stop.is_set() or job in polls:
                    return
                future = in_daemon_thread(self._poll_if_due, account, trigger)
                polls[job] = future
                future.add_done_callback(partial(self._polled, polls, job, dispatcher))

            for account, trigger in poll_jobs(self.config):
                scheduler.add_job(
                    poll_job,
                    IntervalTrigger(seconds=trigger.interval, timezone="UTC"),
                    args=(account, trigger),
                    id=f"{account.name}/{trigger.name}",
                    name=f"poll {account.name}/{trigger.name}",
                    next_run_time=now(),
                )
            scheduler.start()
            log.info(
                "engine.started",
                node=self.owner,
                accounts=len(self.config.accounts),
                polls=len(poll_jobs(self.config)),
                sinks=len(self.config.sinks),
            )
            if ready is not None:
                ready()
            try:
                await dispatcher.run(stop, grace=self.grace)
            finally:
                scheduler.shutdown(wait=False)
                await self._wait_for_polls(polls)

    def _poll_if_due(self, account: Account, trigger: TriggerSettings) -> PollReport | None:
        """One scheduled poll, in its thread; None when paused or backing off."""
        state = self.store.poll_state(account.name, trigger.name)
        if state is not None and state.paused:
            return None
        if state is not None and state.backoff_until and state.backoff_until > now():
            log.debug("poll.backing_off", account=account.name, trigger=trigger.name)
            return None
        return self.poller.poll(account, trigger)

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
        if self.on_poll is not None:
            self.on_poll(report)
        if report.new_events:
            dispatcher.notify()

    async def _wait_for_polls(self, polls: dict[tuple[str, str], PollFuture]) -> None:
        """Polls in flight at stop may finish within the grace (counted from the stop);
        one that does not is abandoned in its daemon thread: its transaction commits
        whole or, when the process exits first, not at all."""
        loop = asyncio.get_running_loop()
        started = self._stop_requested_at if self._stop_requested_at is not None else loop.time()
        if polls and not being_cancelled():
            left = max(0.0, started + self.grace - loop.time())
            await asyncio.wait(set(polls.values()), timeout=left)
        if polls:
            log.warning("poll.abandoned_in_flight", polls=len(polls))
