"""How the daemon lays out its poll jobs: first runs spread at a sustainable rate, and
the pool of poll workers sized by the database."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from trigger_engine.config import Config, config_from_dict
from trigger_engine.db.store import Store
from trigger_engine.runtime.jobs import (
    FIRST_HEARTBEAT_AFTER,
    HEARTBEAT_EVERY,
    START_RATE,
    make_scheduler,
    schedule_housekeeping,
    schedule_polls,
    start_spacing,
)
from trigger_engine.runtime.plan import poll_workers

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("jobs", "interval", "spacing"),
    [
        (1, 300.0, 0.0),  # one job: now
        (3, 300.0, 1 / START_RATE),  # a small config: everything within 0.1 s
        (1_000, 300.0, 1 / START_RATE),  # 50 s at START_RATE, not all at once
        (3_000, 30.0, 0.01),  # 100 polls/s: spread evenly over the interval
        (30_000, 300.0, 0.01),
    ],
)
def test_start_spacing(jobs: int, interval: float, spacing: float) -> None:
    assert start_spacing(jobs, interval) == pytest.approx(spacing)


def make_config(tmp_path: Path, accounts: int, **engine: Any) -> Config:
    return config_from_dict(
        {
            "engine": {"database": f"sqlite:///{tmp_path}/te.db", **engine},
            "accounts": [{"name": f"acct{i}", "api_key": "k"} for i in range(accounts)],
            "triggers": {"leads": {"interval": "30s"}, "campaigns": {"interval": "15m"}},
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path}/te.db")
    yield s
    s.close()


def first_runs(scheduler: AsyncIOScheduler) -> dict[str, datetime]:
    return {job.id: job.next_run_time for job in scheduler.get_jobs()}


def _noop(*_args: Any) -> None:
    return None


def schedule(config: Config, at: datetime, scheduler: AsyncIOScheduler | None = None) -> Any:
    scheduler = scheduler or AsyncIOScheduler(timezone="UTC")  # not started: jobs laid out
    schedule_polls(scheduler, config, _noop, first_run=at)
    return scheduler


def test_first_runs_are_spread_in_config_order_and_keep_their_offset(
    tmp_path: Path, store: Store
) -> None:
    config = make_config(tmp_path, 600)  # 1,200 jobs over the shortest interval, 30 s
    scheduler = schedule(config, T0)
    runs = first_runs(scheduler)
    spacing = 30.0 / 1200
    assert runs["acct0/leads"] == T0
    assert runs["acct0/campaigns"] == T0 + timedelta(seconds=spacing)
    assert runs["acct599/campaigns"] == T0 + timedelta(seconds=1199 * spacing)
    assert max(runs.values()) < T0 + timedelta(seconds=30)
    job = scheduler.get_job("acct1/leads")
    assert job is not None  # later runs keep the job's offset: every interval from its first
    assert job.trigger.get_next_fire_time(runs["acct1/leads"], T0) == runs[
        "acct1/leads"
    ] + timedelta(seconds=30)


def test_a_reload_keeps_the_place_of_every_unchanged_job(tmp_path: Path, store: Store) -> None:
    scheduler = schedule(make_config(tmp_path, 3), T0)
    before = first_runs(scheduler)
    assert before["acct2/campaigns"] == T0 + timedelta(seconds=5 * 0.05)
    # a reload seven minutes later: acct1 is gone, acct0 and acct2 unchanged
    later = T0 + timedelta(minutes=7)
    config = make_config(tmp_path, 3)
    config = config.model_copy(update={"accounts": [config.accounts[0], config.accounts[2]]})
    schedule(config, later, scheduler)
    assert first_runs(scheduler) == {
        job_id: run for job_id, run in before.items() if not job_id.startswith("acct1/")
    }
    job = scheduler.get_job("acct2/leads")
    assert job is not None
    account, trigger = job.args  # the new config's settings, at the old place
    assert account is config.accounts[1]
    assert trigger is config.triggers["leads"]


def test_a_reload_spreads_only_new_jobs_and_changed_intervals(tmp_path: Path, store: Store) -> None:
    scheduler = schedule(make_config(tmp_path, 2), T0)
    later = T0 + timedelta(minutes=7)
    config = make_config(tmp_path, 3)  # acct2 is new
    leads = config.triggers["leads"].model_copy(update={"interval": 60.0})  # was 30 s
    config = config.model_copy(update={"triggers": {**config.triggers, "leads": leads}})
    schedule(config, later, scheduler)
    spacing = start_spacing(4, 60.0)  # the four jobs that move: three leads, acct2/campaigns
    assert first_runs(scheduler) == {
        "acct0/leads": later,
        "acct0/campaigns": T0 + timedelta(seconds=0.05),  # kept
        "acct1/leads": later + timedelta(seconds=spacing),
        "acct1/campaigns": T0 + timedelta(seconds=0.15),  # kept
        "acct2/leads": later + timedelta(seconds=2 * spacing),
        "acct2/campaigns": later + timedelta(seconds=3 * spacing),
    }
    job = scheduler.get_job("acct1/leads")
    assert job is not None
    assert job.trigger.interval == timedelta(seconds=60)


def test_reloads_more_often_than_the_spread_still_run_every_job() -> None:
    """The fault this guards against: every reload re-spread the first runs from "now", so
    with reloads every 50 ms the jobs placed later than 50 ms into the spread never ran."""
    config = config_from_dict(
        {
            "accounts": [{"name": f"acct{i}", "api_key": "k"} for i in range(10)],
            "triggers": {t: {"interval": "5m"} for t in ("leads", "campaigns", "connections")},
        }
    )
    ran: set[str] = set()

    def poll(account: Any, trigger: Any) -> None:
        ran.add(f"{account.name}/{trigger.name}")

    async def main() -> int:
        scheduler = make_scheduler(asyncio.get_running_loop())
        schedule_polls(scheduler, config, poll, first_run=datetime.now(UTC))
        scheduler.start()
        reloads = 0
        deadline = asyncio.get_running_loop().time() + 10
        try:  # 30 jobs, 50 ms apart: the last runs 1.45 s after the first
            while len(ran) < 30 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
                schedule_polls(scheduler, config, poll, first_run=datetime.now(UTC))
                reloads += 1
        finally:
            scheduler.shutdown(wait=False)
        return reloads

    reloads = asyncio.run(main())
    assert len(ran) == 30, f"after {reloads} reloads, never ran: {30 - len(ran)} jobs"
    assert reloads >= 20  # the reloads did come faster than the spread


def test_a_heartbeat_a_second_after_the_start_then_every_ten_seconds() -> None:
    """Nodes started together: the one whose start-up heartbeat came first learns of the
    others a second later, not ten (until then it polls their shares too)."""
    scheduler = make_scheduler()
    schedule_housekeeping(
        scheduler, prune=lambda: None, heartbeat=lambda: None, index_search=lambda: None, now=T0
    )
    job = scheduler.get_job("heartbeat")
    first = T0 + timedelta(seconds=FIRST_HEARTBEAT_AFTER)
    assert job.next_run_time == first
    assert FIRST_HEARTBEAT_AFTER < HEARTBEAT_EVERY
    later = job.trigger.get_next_fire_time(first, first + timedelta(microseconds=1))
    assert later == first + timedelta(seconds=HEARTBEAT_EVERY)


def test_poll_workers_default_by_database_or_as_configured(tmp_path: Path, store: Store) -> None:
    config = make_config(tmp_path, 1)
    assert poll_workers(config, store.dialect) == 4  # SQLite
    config = make_config(tmp_path, 1, poll_workers=12)
    assert poll_workers(config, store.dialect) == 12


def test_jobs_run_on_the_loop_at_once_and_a_stop_cancels_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job due in the same instant as the stop: APScheduler's asyncio executor would have
    made it a task of its own and cancelled it, logging a CancelledError traceback."""
    ran: list[int] = []

    async def main() -> None:
        scheduler = make_scheduler(asyncio.get_running_loop())
        scheduler.add_job(lambda: ran.append(threading.get_ident()), next_run_time=T0)
        scheduler.start()
        for _ in range(100):  # loop turns, not time: the scheduler's wakeup runs the job
            if ran:
                break
            await asyncio.sleep(0)
        scheduler.shutdown(wait=False)
        for _ in range(10):
            await asyncio.sleep(0)

    with caplog.at_level(logging.DEBUG, logger="apscheduler"):
        asyncio.run(main())
    assert ran == [threading.get_ident()]  # on the loop's own thread
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
