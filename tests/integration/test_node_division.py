"""Nodes that run the same schedule on one PostgreSQL database divide its polls (issue 16,
target 3): each polls only its share, read from the heartbeats; a node that stops or dies
has its share taken over by the others within ``NODE_ALIVE_WITHIN`` + ``HEARTBEAT_EVERY``
of its last heartbeat, and the polls whose turn passed meanwhile are polled at once, by the
claim, never twice. Time is moved with freezegun; the heartbeats are called as the
scheduler calls them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from freezegun import freeze_time

from trigger_engine.clock import now
from trigger_engine.config import Config, config_from_dict
from trigger_engine.core.division import Job
from trigger_engine.db.store import Store
from trigger_engine.polling.source import Source
from trigger_engine.runtime import jobs, plan
from trigger_engine.runtime.daemon import Daemon, _Serving
from trigger_engine.threads import WorkerPool
from trigger_engine.types import NODE_ALIVE_WITHIN

pytestmark = pytest.mark.postgres

INTERVAL = 300.0
ACCOUNTS = [f"acct{i:02d}" for i in range(12)]


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    s = Store.open(pg_url)
    yield s
    s.close()


def make_config(db_url: str, *, campaigns: bool = True) -> Config:
    return config_from_dict(
        {
            "engine": {"database": db_url},
            "source": {"base_url": "http://alfred.test/api"},
            "accounts": [{"name": name, "api_key": f"key-{name}"} for name in ACCOUNTS],
            "triggers": {
                "leads": {"interval": f"{INTERVAL:g}s"},
                "campaigns": {"interval": f"{INTERVAL:g}s", "enabled": campaigns},
            },
            "sinks": [],
        }
    )


def node(config: Config, store: Store, name: str) -> Daemon:
    source = Source(
        config.source, transport=httpx.MockTransport(lambda _r: httpx.Response(200, json=[]))
    )
    daemon = Daemon(config, store, source)
    daemon.owner = name
    return daemon


def beat(daemon: Daemon, at: datetime) -> None:
    with freeze_time(at):
        daemon._heartbeat()


def poll_at(daemon: Daemon, job: Job, at: datetime) -> None:
    """``daemon`` polls ``job`` at ``at``, as its scheduler would (claim, then poll)."""
    config = daemon.config
    account = next(a for a in config.accounts if a.name == job[0])
    with freeze_time(at):
        report = daemon._poll_if_due(daemon.poller, account, config.triggers[job[1]])
    assert report is not None and report.ok


def pg_store_claim(daemon: Daemon, job: Job) -> Job:
    """``daemon`` claims ``job`` now, for a minute, and writes nothing (it dies polling)."""
    claim = daemon.store.polls.claim(job[0], job[1], owner=daemon.owner, now=now(), lease=60)
    assert claim.fence is not None
    return job


def queue_polls(daemon: Daemon, work: Any) -> set[tuple[str, str]]:
    """Run ``work(daemon)`` on a loop with the daemon's poll workers, as while it serves;
    returns the polls it queued, once they ended."""

    async def go() -> set[tuple[str, str]]:
        serving = _Serving(
            stop=asyncio.Event(),
            scheduler=jobs.make_scheduler(),
            dispatcher=None,  # type: ignore[arg-type]  # no poll here finds anything new
            workers=WorkerPool(2, name="poll"),
        )
        daemon._serving = serving
        try:
            work(daemon)
            queued = set(serving.polls)
            await asyncio.gather(*serving.polls.values())
            return queued
        finally:
            serving.workers.stop()
            daemon._serving = None

    return asyncio.run(go())


def test_two_nodes_divide_the_polls_and_each_queues_only_its_share(
    pg_url: str, store: Store
) -> None:
    config = make_config(pg_url)
    a, b = node(config, store, "node-a"), node(config, store, "node-b")
    every = plan.job_keys(config)
    t0 = now() - timedelta(hours=2)
    beat(a, t0)
    assert a.division.mine is None  # alone: every poll
    beat(b, t0)
    beat(a, t0 + timedelta(seconds=jobs.HEARTBEAT_EVERY))
    mine_a, mine_b = a.division.mine, b.division.mine
    assert mine_a is not None and mine_b is not None
    assert mine_a | mine_b == every and not mine_a & mine_b
    assert mine_a and mine_b

    def every_job(daemon: Daemon) -> None:
        for account, trigger in plan.poll_jobs(daemon.config):
            daemon._poll_job(account, trigger)

    assert queue_polls(a, every_job) == mine_a
    assert queue_polls(b, every_job) == mine_b


def two_nodes_dividing(config: Config, store: Store) -> tuple[Daemon, Daemon, datetime]:
    """Nodes a and b, each having heartbeaten once (at t0, two hours ago) and a again a
    second later, so that both see both: their shares divided. Returns (a, b, t0)."""
    a, b = node(config, store, "node-a"), node(config, store, "node-b")
    t0 = now() - timedelta(hours=2)
    beat(a, t0)
    beat(b, t0)
    beat(a, t0 + timedelta(seconds=1))
    return a, b, t0


def test_a_dead_nodes_share_is_taken_over_within_a_bounded_time_and_its_missed_turns_polled(
    pg_url: str,
    store: Store,
) -> None:
    a, b, t0 = two_nodes_dividing(make_config(pg_url), store)
    share_a, share_b = a.division.mine, b.division.mine
    assert share_a is not None and share_b is not None
    # every trigger was polled by its owner; b polled its share just before it died (at
    # t0), but for two triggers whose last poll was an interval ago: their turn comes
    # while b is dead and not yet known to be
    late = sorted(share_b)[:2]
    for job in sorted(share_a):
        poll_at(a, job, t0)
    for job in sorted(share_b):
        poll_at(b, job, t0 - timedelta(seconds=INTERVAL - 5) if job in late else t0)

    # b's last heartbeat was at t0; a beats every HEARTBEAT_EVERY: b still counts as
    # alive NODE_ALIVE_WITHIN after it, and a still leaves b's share to b
    beat(a, t0 + timedelta(seconds=NODE_ALIVE_WITHIN))
    assert a.division.mine == share_a and a._taken_over == []
    # the next heartbeat finds b's expired: a takes every poll over, and the two whose
    # turn passed are queued at once (the others keep their turn on a's schedule)
    taken_at = t0 + timedelta(seconds=NODE_ALIVE_WITHIN + jobs.HEARTBEAT_EVERY)
    beat(a, taken_at)
    assert a.division.mine is None
    assert a._taken_over == late
    # b died in the middle of a poll of the first: it holds that one's lease (claimed, not
    # written), so a's claim is refused until the lease expires, and it is tried again
    # at a's next heartbeat
    held = pg_store_claim(b, late[0])
    queued = queue_polls(a, Daemon._poll_taken_over)
    assert queued == set(late)
    assert a._taken_over == [held]
    b.store.polls.release_leases("node-b")  # the lease expires
    assert queue_polls(a, Daemon._poll_taken_over) == {held}
    assert a._taken_over == []
    for account, trigger in late:
        state = store.polls.state(account, trigger)
        assert state is not None and state.lease_owner == "node-a"
        assert state.last_poll_at is not None and state.last_poll_at > taken_at


def test_a_node_that_stops_cleanly_is_taken_over_at_the_next_heartbeat(
    pg_url: str, store: Store
) -> None:
    a, b, t0 = two_nodes_dividing(make_config(pg_url), store)
    share_b = b.division.mine
    assert a.division.mine is not None and share_b is not None
    with freeze_time(t0 + timedelta(seconds=5)):
        b._leave()  # a clean stop says so at once
    beat(a, t0 + timedelta(seconds=1 + jobs.HEARTBEAT_EVERY))
    assert a.division.mine is None
    # never polled: every job of b's is due, and queued at once
    assert set(a._taken_over) == share_b


def test_nodes_with_different_schedules_do_not_divide_them(pg_url: str, store: Store) -> None:
    """A node with a trigger disabled (or another interval) runs another schedule: were the
    polls divided, its share of that trigger would be polled by nobody."""
    a = node(make_config(pg_url), store, "node-a")
    b = node(make_config(pg_url, campaigns=False), store, "node-b")
    t0 = now() - timedelta(hours=2)
    beat(a, t0)
    beat(b, t0)
    beat(a, t0 + timedelta(seconds=1))
    assert a.division.mine is None and b.division.mine is None
