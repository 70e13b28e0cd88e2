"""Database round trips of a poll on PostgreSQL, counted (a structural check, not a timing).

At 10,000 accounts x 3 triggers every 5 minutes, every round trip of a poll is paid 100
times a second (benchmarks/RESULTS.md, "schedule on PostgreSQL"). What a poll costs, once
its trigger is seeded and nothing is new: the claim, one statement in autocommit (1); the
poll's write, one transaction: BEGIN, the fence check (which also reads the quarantine
flag and writes the poll's state), the seen keys, COMMIT (4). A poll that finds new items
writes its state's count of known items too. A refused claim: the claim alone (1), as the
daemon's scheduled polls ask it; the claim and one read of the state to say why (2), as
``run --once`` and the debug log ask it. Pooled connections are pinged only after sitting
idle.

Also here, on both databases: two nodes racing for one poll, exactly one wins.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text

from trigger_engine.core.dedupe import key_items
from trigger_engine.db import engine as db_engine
from trigger_engine.db.store import Store
from trigger_engine.types import Fence, PollResult

T0 = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
ITEMS = [{"id": f"lead-{i}"} for i in range(10)]


class RoundTrips:
    """Round trips to the server: statements, the BEGIN psycopg sends before the first
    statement of a transaction, COMMIT/ROLLBACK that end one, pings (benchmarks/schedule.py
    --trace counts the same way)."""

    def __init__(self, store: Store) -> None:
        self.counts: Counter[str] = Counter()
        engine = store.db.engine

        def in_transaction(conn: Any) -> bool:
            return bool(conn.connection.driver_connection.info.transaction_status != 0)

        @event.listens_for(engine, "before_cursor_execute")
        def _statement(conn: Any, *_args: Any) -> None:
            driver = conn.connection.driver_connection
            if not driver.autocommit and driver.info.transaction_status == 0:
                self.counts["begin"] += 1
            self.counts["statement"] += 1

        @event.listens_for(engine, "commit")
        def _commit(conn: Any) -> None:
            if in_transaction(conn):
                self.counts["commit"] += 1

        @event.listens_for(engine, "rollback")
        def _rollback(conn: Any) -> None:
            if in_transaction(conn):
                self.counts["rollback"] += 1

        ping = engine.dialect.do_ping

        def counted_ping(dbapi_connection: Any) -> Any:
            self.counts["ping"] += 1
            return ping(dbapi_connection)

        engine.dialect.do_ping = counted_ping  # type: ignore[method-assign]

    def total(self) -> int:
        return sum(self.counts.values())

    def take(self) -> Counter[str]:
        counts, self.counts = self.counts, Counter()
        return counts


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    with Store.open(pg_url, pool_size=4) as store:
        yield store


def claim(
    store: Store, owner: str, at: datetime, *, gap: float | None = 270, explain: bool = True
) -> Fence | None:
    return store.polls.claim(
        "acme",
        "leads",
        owner=owner,
        now=at,
        lease=30,
        min_gap=gap,
        honour_backoff=True,
        explain=explain,
    ).fence


def write(store: Store, fence: Fence, at: datetime, items: list[Any] = ITEMS) -> PollResult:
    return store.polls.record(
        "acme",
        "leads",
        key_items(items, ["id"]),
        event_type="lead.new",
        emit_first=False,
        sinks=["crm"],
        now=at,
        fence=fence,
    )


@pytest.mark.postgres
def test_a_steady_poll_costs_five_round_trips_and_a_refused_claim_one(pg_store: Store) -> None:
    trips = RoundTrips(pg_store)
    first = claim(pg_store, "node-a", T0)
    assert first is not None
    assert trips.take() == {"statement": 1}  # the claim: one statement, autocommit
    assert write(pg_store, first, T0).first_poll
    seeding = trips.take()
    assert seeding["begin"] == seeding["commit"] == 1 and "ping" not in seeding

    later = T0 + timedelta(seconds=300)
    steady = claim(pg_store, "node-a", later)
    assert steady is not None
    result = write(pg_store, steady, later)
    assert (result.first_poll, result.new_events) == (False, 0)
    # claim 1; BEGIN, fence check + quarantine flag + the poll's state, seen keys, COMMIT
    assert trips.take() == {"statement": 3, "begin": 1, "commit": 1}
    state = pg_store.polls.state("acme", "leads")
    assert state is not None
    assert (state.last_poll_at, state.last_success_at, state.items_known) == (later, later, 10)
    trips.take()

    # leased by node-a, and too soon: the claim alone; the state to say why, when asked
    refused = pg_store.polls.claim(
        "acme", "leads", owner="node-b", now=later, lease=30, min_gap=270, explain=False
    )
    assert (refused.fence, refused.state, refused.refused) == (None, None, None)
    assert trips.take() == {"statement": 1}
    assert claim(pg_store, "node-b", later) is None
    assert trips.take() == {"statement": 2}

    # a poll that finds a new item writes its count of known items as well (and its
    # event, its delivery)
    newer = later + timedelta(seconds=300)
    fence = claim(pg_store, "node-a", newer)
    assert fence is not None
    trips.take()
    assert write(pg_store, fence, newer, [{"id": "lead-new"}, *ITEMS]).new_events == 1
    wrote = trips.take()
    assert wrote["statement"] > 3
    state = pg_store.polls.state("acme", "leads")
    assert state is not None and (state.last_poll_at, state.items_known) == (newer, 11)


@pytest.mark.postgres
def test_a_connection_is_pinged_only_after_sitting_idle(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = RoundTrips(pg_store)
    assert claim(pg_store, "node-a", T0) is not None
    assert claim(pg_store, "node-a", T0 + timedelta(seconds=300)) is not None
    assert trips.take()["ping"] == 0  # in use a moment ago: no ping
    monkeypatch.setattr(db_engine, "PING_IDLE_AFTER", 0.0)  # every connection counts as idle
    assert claim(pg_store, "node-a", T0 + timedelta(seconds=600)) is not None
    assert trips.take() == {"ping": 1, "statement": 1}


@pytest.mark.postgres
def test_an_idle_connection_the_server_dropped_is_replaced_before_use(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert claim(pg_store, "node-a", T0) is not None
    with pg_store.db.engine.connect() as conn:  # the pooled connection's server process
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    killer = create_engine(pg_store.db.engine.url)
    try:
        with killer.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    finally:
        killer.dispose()
    monkeypatch.setattr(db_engine, "PING_IDLE_AFTER", 0.0)
    failures: list[str] = []
    monkeypatch.setattr(
        pg_store.db.activity, "failed", lambda unit, *_a, **_k: failures.append(unit)
    )
    # the ping at checkout finds it dead: a new connection, and the claim never fails
    assert claim(pg_store, "node-a", T0 + timedelta(seconds=300)) is not None
    assert failures == []


@pytest.mark.parametrize("first", [True, False], ids=["first claim", "later claim"])
def test_two_nodes_racing_for_one_poll_exactly_one_wins(db_url: str, first: bool) -> None:
    with Store.open(db_url, pool_size=4) as store:
        if not first:  # a trigger polled once, whose next poll is due
            seed = claim(store, "node-0", T0, gap=None)
            assert seed is not None
            write(store, seed, T0)
            store.polls.release_leases("node-0")
        at = T0 + timedelta(seconds=300)
        for round_ in range(10):
            start = threading.Barrier(2)

            def race(owner: str, at: datetime = at, start: Any = start) -> Fence | None:
                start.wait()
                return claim(store, owner, at)

            with ThreadPoolExecutor(2) as pool:
                fences = list(pool.map(race, ["node-a", "node-b"]))
            won = [f for f in fences if f is not None]
            assert len(won) == 1, (round_, fences)
            write(store, won[0], at)
            store.polls.release_leases(won[0].owner)
            at += timedelta(seconds=300)
