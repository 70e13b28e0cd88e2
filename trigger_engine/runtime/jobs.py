"""The schedule: one APScheduler 3.11 job per (account, enabled trigger), with first runs
spread at a sustainable rate, plus the housekeeping jobs (retention, heartbeats).

APScheduler's pitfalls are handled here (see the design notes): job defaults are set on
the scheduler (coalesce, no misfire limit, one instance per job), so a busy process never
silently skips runs. Spreading: the first runs are spread, in config order, over the
shortest interval, at least :data:`START_RATE` polls a second (:func:`start_spacing`);
each job then keeps its own offset, so a large schedule polls at an even rate instead of
all at once. A reload keeps each unchanged job's place (its next run) and spreads only the
jobs it adds or whose interval it changes: reloads, however frequent, never push a job back.

Only the serving daemon imports this module (``run --once`` schedules nothing and never
loads APScheduler); what both need of the plan, the polls, workers and leases, is in
:mod:`trigger_engine.runtime.plan`.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from trigger_engine.config import Account, Config, TriggerSettings
from trigger_engine.runtime.plan import SEARCH_INDEX_EVERY, poll_jobs

PRUNE_EVERY = 3600.0  # seconds between retention sweeps
FIRST_PRUNE_AFTER = 60.0  # seconds from the start to the first retention sweep
HEARTBEAT_EVERY = 10.0  # seconds between a node's heartbeats
# The first scheduled heartbeat, this long after the start's: of nodes started together,
# the one whose start-up heartbeat came first saw none of the others, and polls their
# shares too (each poll a refused claim on one side) until it reads the registry again.
FIRST_HEARTBEAT_AFTER = 1.0
START_RATE = 20.0  # polls per second at least, when the first runs are spread out
HOUSEKEEPING = ("retention", "heartbeat", "search_index")  # the ids of the jobs not polls

PollJob = Callable[[Account, TriggerSettings], None]


class OnTheLoop(BaseExecutor):  # type: ignore[misc]  # apscheduler has no type hints
    """Runs each job's function at once, on the event loop's thread.

    Our jobs only hand work on (a poll to the poll workers, a heartbeat or a retention sweep
    to a task the daemon owns) and return, so they never block the loop. APScheduler's own
    asyncio executor would run them as tasks it owns and cancels at shutdown, logging a
    ``CancelledError`` traceback for a job that fell due in the same instant; here it has
    nothing of ours to cancel, and the daemon waits for (or abandons) its own work."""

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        try:
            events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
        except BaseException:
            self._run_job_error(job.id, *sys.exc_info()[1:])
        else:
            self._run_job_success(job.id, events)


def start_spacing(jobs: int, shortest_interval: float) -> float:
    """Seconds between the first runs of consecutive poll jobs: ``jobs`` spread evenly
    over the shortest interval, but never slower than ``START_RATE`` polls a second (a
    small config polls everything within a fraction of a second of the start)."""
    if jobs <= 1:
        return 0.0
    return min(shortest_interval / jobs, 1.0 / START_RATE)


def make_scheduler(loop: asyncio.AbstractEventLoop | None = None) -> AsyncIOScheduler:
    """An asyncio scheduler in UTC whose jobs run on the loop (:class:`OnTheLoop`),
    coalesce, never misfire and never overlap."""
    return AsyncIOScheduler(
        event_loop=loop,
        timezone="UTC",
        executors={"default": OnTheLoop()},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )


def schedule_polls(
    scheduler: AsyncIOScheduler, config: Config, job: PollJob, *, first_run: datetime
) -> None:
    """One ``job`` per (account, enabled trigger); the poll jobs of a previous config that
    this one does not have go.

    A job the scheduler already has with the same id (account and trigger) and the same
    interval keeps its place: its next run and its offset stay, only its arguments (the
    account's and the trigger's new settings) change. So a reload, however often it comes,
    never pushes a poll back, and the triggers late in the spread are polled as surely as
    the first ones. The others (new, or with a new interval) are spread from ``first_run``:
    the ``i``-th of them (in config order) first runs at ``first_run + i *
    start_spacing(...)``, then every interval from there.
    """
    wanted = {
        f"{account.name}/{trigger.name}": (account, trigger)
        for account, trigger in poll_jobs(config)
    }
    kept: set[str] = set()
    for old in scheduler.get_jobs():
        if old.id in HOUSEKEEPING:
            continue
        pair = wanted.get(old.id)
        if pair is None or not _same_interval(old, pair[1]) or old.next_run_time is None:
            old.remove()
            continue
        old.modify(args=pair)
        kept.add(old.id)
    fresh = [(job_id, pair) for job_id, pair in wanted.items() if job_id not in kept]
    if not fresh:
        return
    spacing = start_spacing(len(fresh), min(trigger.interval for _, (_, trigger) in fresh))
    for i, (job_id, (account, trigger)) in enumerate(fresh):
        first = first_run + timedelta(seconds=i * spacing)
        scheduler.add_job(
            job,
            IntervalTrigger(seconds=trigger.interval, start_date=first, timezone="UTC"),
            args=(account, trigger),
            id=job_id,
            name=f"poll {job_id}",
            next_run_time=first,
        )


def _same_interval(job: Any, trigger: TriggerSettings) -> bool:
    """Whether a poll job runs every ``trigger.interval`` (compared as its IntervalTrigger
    holds it: a timedelta, to the microsecond)."""
    return bool(job.trigger.interval == timedelta(seconds=trigger.interval))


def schedule_housekeeping(
    scheduler: AsyncIOScheduler,
    *,
    prune: Callable[[], None],
    heartbeat: Callable[[], None],
    index_search: Callable[[], None],
    now: datetime,
) -> None:
    """The retention sweep (first a minute after the start, then hourly), heartbeats
    (the first :data:`FIRST_HEARTBEAT_AFTER` after ``now``, then every
    :data:`HEARTBEAT_EVERY`) and the search indexer."""
    scheduler.add_job(
        prune,
        IntervalTrigger(seconds=PRUNE_EVERY, timezone="UTC"),
        id="retention",
        next_run_time=now + timedelta(seconds=FIRST_PRUNE_AFTER),
    )
    scheduler.add_job(
        heartbeat,
        IntervalTrigger(seconds=HEARTBEAT_EVERY, timezone="UTC"),
        id="heartbeat",
        next_run_time=now + timedelta(seconds=FIRST_HEARTBEAT_AFTER),
    )
    scheduler.add_job(
        index_search,
        IntervalTrigger(seconds=SEARCH_INDEX_EVERY, timezone="UTC"),
        id="search_index",
    )
