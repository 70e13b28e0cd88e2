"""The daemon: APScheduler 3.11 polls every enabled trigger of every account on its
interval, while the dispatcher delivers continuously; SIGINT/SIGTERM stop it cleanly.

APScheduler's pitfalls are handled here (see the design notes): job defaults are set on
the scheduler (coalesce, one instance per job, a generous misfire grace), every request
has a timeout, signal handlers are ours, and polls run in worker threads that shutdown
waits for, rather than in the asyncio executor, which would cancel them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from trigger_engine.clock import now
from trigger_engine.config import Account, Config, TriggerSettings
from trigger_engine.delivery import Dispatcher, DrainReport
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
        self._poll_lock = threading.Lock()

    # ---------------------------------------------------------------- run --once

    async def run_once(self) -> OnceReport:
        """Poll every enabled trigger now (whatever backoff an earlier failure set),
        then deliver everything that is due now."""
        self.store.release_claims()
        reports = []
        for account, trigger in poll_jobs(self.config):
            state = self.store.poll_state(account.name, trigger.name)
            if state is not None and state.paused:
                log.info("poll.skipped_paused", account=account.name, trigger=trigger.name)
                continue
            reports.append(await asyncio.to_thread(self.poller.poll, account, trigger))
        async with Dispatcher(self.config, self.store, owner=self.owner) as dispatcher:
            delivery = await dispatcher.drain()
        return OnceReport(reports, delivery)

    # ---------------------------------------------------------------- daemon

    async def run(
        self, *, ready: Callable[[], None] | None = None, stop_after: float | None = None
    ) -> None:
        """Until SIGINT/SIGTERM (or ``stop_after`` seconds). A second signal stops at once
        (work in flight is then released for the next start, never half-recorded)."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        if stop_after is not None:
            loop.call_later(stop_after, stop.set)
        signals_seen = 0

        def on_signal(signum: int) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen == 1:
                log.info("engine.stopping", signal=signal.Signals(signum).name)
                stop.set()
            else:
                log.warning("engine.stopping_now", signal=signal.Signals(signum).name)
                for task in asyncio.all_tasks(loop):
                    if task is not asyncio.current_task(loop):
                        task.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)

        # With SQLite this process is the only one: claims left in the database are
        # those of a process that was killed, so they are due again right now.
        if self.store.dialect == "sqlite":
            released = self.store.release_claims()
            if released:
                log.info("delivery.recovered_in_flight", deliveries=released)

        async with Dispatcher(
            self.config, self.store, owner=self.owner, on_attempt=self.on_attempt
        ) as dispatcher:
            scheduler = AsyncIOScheduler(
                event_loop=loop,
                timezone="UTC",
                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            )
            in_flight: set[asyncio.Future[PollReport]] = set()

            async def poll_job(account: Account, trigger: TriggerSettings) -> None:
                if stop.is_set():
                    return
                state = self.store.poll_state(account.name, trigger.name)
                if state is not None and state.paused:
                    return
                if state is not None and state.backoff_until and state.backoff_until > now():
                    log.debug("poll.backing_off", account=account.name, trigger=trigger.name)
                    return
                future = asyncio.ensure_future(
                    asyncio.to_thread(self.poller.poll, account, trigger)
                )
                in_flight.add(future)
                try:
                    report = await asyncio.shield(future)
                finally:
                    in_flight.discard(future)
                if self.on_poll is not None:
                    self.on_poll(report)
                if report.new_events:
                    dispatcher.notify()

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
                await dispatcher.run(stop, grace=self.config.engine.shutdown_grace)
            finally:
                scheduler.shutdown(wait=False)
                if in_flight:
                    # A poll is one transaction: let it finish rather than abandon it.
                    with contextlib.suppress(Exception):
                        await asyncio.wait(in_flight, timeout=self.config.engine.shutdown_grace)
        log.info("engine.stopped", node=self.owner)
