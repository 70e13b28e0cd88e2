"""The delivery pipeline (claim ahead, send, record in batches) against a real local
receiver (aiohttp, in this process) and the real store, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from trigger_engine.clock import now as clock_now
from trigger_engine.config import Config, config_from_dict
from trigger_engine.core.dedupe import key_items
from trigger_engine.db.schema import deliveries
from trigger_engine.db.store import Store
from trigger_engine.delivery.dispatcher import (
    CLAIM_AHEAD,
    PREFETCH_ROUNDS,
    Dispatcher,
    DrainReport,
)
from trigger_engine.errors import DatabaseError


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


def make_config(
    db_url: str, url: str = "", *, max_in_flight: int = 8, sinks: list[dict[str, Any]] | None = None
) -> Config:
    """One sink "crm" at ``url``, or the given ``sinks``."""
    return config_from_dict(
        {
            "engine": {"database": db_url},
            "source": {"base_url": "http://alfred.test/api"},
            "accounts": [{"name": "acme", "api_key": "alfred-key-77e1"}],
            "triggers": {"leads": {}},
            "sinks": sinks or [{"name": "crm", "url": url, "max_in_flight": max_in_flight}],
        }
    )


def make_events(store: Store, n: int, *, sink: str = "crm", account: str = "acme") -> None:
    items = [{"id": f"L{i:03d}"} for i in range(n)]
    result = store.polls.record(
        account,
        "leads",
        key_items(items, ["id"]),
        event_type="lead.new",
        emit_first=True,
        sinks=[sink],
        now=clock_now(),
    )
    assert result.deliveries == n


def states(store: Store) -> list[tuple[str, int, str | None]]:
    with store.db.engine.connect() as conn:
        query = select(deliveries.c.status, deliveries.c.attempts, deliveries.c.lease_owner)
        return [tuple(r) for r in conn.execute(query.order_by(deliveries.c.id))]  # type: ignore[misc]


class Receiver:
    """Counts requests per webhook-id and the most it had in flight at once; ``probe``
    runs at each request (to look at the database while the dispatcher is mid-way)."""

    def __init__(self, delay: float = 0.0, statuses: tuple[int, ...] = ()) -> None:
        self.delay = delay
        self.statuses = list(statuses)  # answered in turn, then 204
        self.ids: list[str] = []
        self.in_flight = 0
        self.peak = 0
        self.probe: Callable[[], None] | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            self.ids.append(request.headers["webhook-id"])
            if self.probe is not None:
                self.probe()
            await asyncio.sleep(self.delay)
            return web.Response(status=self.statuses.pop(0) if self.statuses else 204)
        finally:
            self.in_flight -= 1


@contextlib.asynccontextmanager
async def serving(rec: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield rec
    finally:
        await runner.cleanup()


def test_claims_ahead_within_bounds_and_delivers_each_event_once(store: Store, db_url: str) -> None:
    make_events(store, 40)
    receiver = Receiver(delay=0.01)
    queued: list[int] = []  # claimed, waiting in the sink's queue, at each request

    async def deliver() -> DrainReport:
        async with serving(receiver):
            config = make_config(db_url, receiver.url, max_in_flight=2)
            async with Dispatcher(config, store, owner="node-a") as dispatcher:
                receiver.probe = lambda: queued.append(len(dispatcher._lanes["crm"].queue))
                return await dispatcher.drain()

    report = asyncio.run(deliver())

    assert (report.attempted, report.delivered) == (40, 40)
    assert len(receiver.ids) == 40 == len(set(receiver.ids))
    assert receiver.peak == 2  # max_in_flight, and used
    # claims ahead by PREFETCH_ROUNDS rounds, or CLAIM_AHEAD seconds at the sink's pace
    # (2 in flight, 10 ms each: 200 a second at most; half again for a window's edges)
    assert max(queued) <= max(2 * PREFETCH_ROUNDS, 1.5 * 200 * CLAIM_AHEAD)
    assert max(queued) > 2  # ... and it does claim ahead
    assert states(store) == [("delivered", 1, None)] * 40


def test_a_claim_that_could_run_out_before_its_attempt_ends_is_given_back(
    store: Store, db_url: str
) -> None:
    """A delivery waits in the queue; if its lease no longer covers an attempt (timeout)
    plus its recording ([engine] lease), it is released unsent and claimed again."""
    make_events(store, 6)
    receiver = Receiver()
    config = make_config(db_url, "http://127.0.0.1:1/unused", max_in_flight=1)
    start = clock_now()
    jumped: list[datetime] = []

    def clock() -> datetime:
        # the first time a worker takes from the queue, the claim is 2 sink timeouts old
        if len(jumped) == 1:
            jumped.append(start)
            return start + timedelta(seconds=2 * config.sinks[0].timeout)
        return start + timedelta(seconds=len(jumped))

    released = []
    real_release = store.deliveries.release_claims

    def release_claims(owner: str | None = None, *, ids: Any = ()) -> int:
        released.append(list(ids))
        return real_release(owner, ids=ids)

    store.deliveries.release_claims = release_claims  # type: ignore[method-assign]

    async def deliver() -> DrainReport:
        async with serving(receiver):
            cfg = make_config(db_url, receiver.url, max_in_flight=1)
            async with Dispatcher(cfg, store, owner="node-a", clock=clock) as dispatcher:
                original_take = dispatcher._take

                def take(lane: Any) -> Any:
                    if not jumped:
                        jumped.append(start)
                    return original_take(lane)

                dispatcher._take = take  # type: ignore[method-assign]
                return await dispatcher.drain()

    report = asyncio.run(deliver())

    assert released[0] == [1]  # the first taken, when the clock jumped: given back unsent
    assert report.delivered == 6 and len(receiver.ids) == 6 == len(set(receiver.ids))
    assert states(store) == [("delivered", 1, None)] * 6


def test_stop_records_what_finished_and_releases_what_was_queued(store: Store, db_url: str) -> None:
    make_events(store, 10)
    receiver = Receiver(delay=0.2)

    async def deliver() -> None:
        stop, first = asyncio.Event(), asyncio.Event()
        receiver.probe = first.set
        async with serving(receiver):
            config = make_config(db_url, receiver.url, max_in_flight=1)
            async with Dispatcher(config, store, owner="node-a") as dispatcher:
                task = asyncio.create_task(dispatcher.run(stop, grace=5))
                await asyncio.wait_for(first.wait(), 10)
                stop.set()
                await asyncio.wait_for(task, 10)

    asyncio.run(deliver())
    assert len(receiver.ids) == 1
    assert states(store) == [("delivered", 1, None)] + [("pending", 0, None)] * 9


def test_a_retry_falls_due_on_time_while_another_sink_keeps_the_dispatcher_busy(
    store: Store, db_url: str
) -> None:
    """The busy sink always has outcomes waiting to be recorded; the other sink's retry
    (due 1 s after its failure) must still be claimed then, not when the busy one is done."""
    make_events(store, 200, sink="busy")
    make_events(store, 1, sink="flaky", account="other")
    busy, flaky = Receiver(delay=0.02), Receiver(statuses=(500,))
    busy_sent_at_retry: list[int] = []

    async def deliver() -> None:
        stop, retried = asyncio.Event(), asyncio.Event()

        def on_flaky() -> None:
            if len(flaky.ids) == 2:
                busy_sent_at_retry.append(len(busy.ids))
                retried.set()

        flaky.probe = on_flaky
        async with serving(busy), serving(flaky):
            config = make_config(
                db_url,
                sinks=[
                    {"name": "busy", "url": busy.url, "max_in_flight": 1},
                    {"name": "flaky", "url": flaky.url, "retry": {"schedule": ["1s"]}},
                ],
            )
            dispatcher = Dispatcher(config, store, owner="node-a", rand=lambda: 0.5, idle_wait=0.2)
            async with dispatcher:
                task = asyncio.create_task(dispatcher.run(stop, grace=5))
                await asyncio.wait_for(retried.wait(), 30)
                stop.set()
                await asyncio.wait_for(task, 10)

    asyncio.run(deliver())
    assert flaky.ids[0] == flaky.ids[1]  # the same webhook-id, retried
    (sent,) = busy_sent_at_retry
    assert 0 < sent < 200  # the busy sink was still at work when the retry went out


# ----------------------------------------------------------------- Store.run_now


@contextlib.contextmanager
def connection_held_elsewhere(store: Store) -> Iterator[None]:
    """Another thread holds SQLite's one connection in a transaction (as a poll does)."""
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with store.db.tx():
            inside.set()
            leave.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert inside.wait(10)
        yield
    finally:
        leave.set()
        holder.join()


@pytest.mark.timeout(20)  # waiting would take the 30 s busy timeout
def test_run_now_runs_at_once_when_sqlite_is_free_and_never_waits_otherwise(
    tmp_path: Any,
) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'te.db'}")
    try:
        assert store.run_now(store.deliveries.release_claims) == (True, 0)

        # another process (here: another connection) holds the file's write lock
        other = sqlite3.connect(tmp_path / "te.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        assert store.run_now(store.deliveries.release_claims) == (False, None)
        other.execute("ROLLBACK")
        other.close()

        # another thread is using the connection (a poll's transaction)
        with connection_held_elsewhere(store):
            assert store.run_now(store.deliveries.release_claims) == (False, None)

        # and a call not made by run_now waits for other processes as before (set back
        # when such a call comes, not after every run_now)
        assert store.run_now(store.deliveries.release_claims) == (True, 0)
        with store.db.tx() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            assert driver.execute("PRAGMA busy_timeout").fetchone() == (30000,)
        # ... and run_now still never waits after it
        other = sqlite3.connect(tmp_path / "te.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        assert store.run_now(store.deliveries.release_claims) == (False, None)
        other.execute("ROLLBACK")
        other.close()
        with store.db.tx() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            assert driver.execute("PRAGMA busy_timeout").fetchone() == (30000,)
    finally:
        store.close()


def test_run_now_never_runs_on_postgresql(pg_url: str) -> None:
    store = Store.open(pg_url)
    try:
        assert store.run_now(store.deliveries.release_claims) == (False, None)
    finally:
        store.close()


def test_a_store_call_waits_for_the_sqlite_connection_within_a_bound(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trigger_engine.db.engine as db_engine

    monkeypatch.setattr(db_engine, "CONNECTION_WAIT", 0.05)
    store = Store.open(f"sqlite:///{tmp_path / 'te.db'}")
    with (
        connection_held_elsewhere(store),
        pytest.raises(DatabaseError, match=r"connection stayed busy for 0\.05s"),
    ):
        store.deliveries.release_claims()
    assert store.deliveries.release_claims() == 0  # free again
    store.close()


# ----------------------------------------------------------------- the database comes back


@pytest.mark.postgres
def test_delivery_goes_on_while_postgresql_backends_are_terminated(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator (or a failover) ends the engine's sessions again and again: every event
    still reaches the receiver, under its one webhook-id, and the dispatcher never gives up.

    The outage waits are shortened (the schedule's own steps reach 10 s): with a session
    ended every 20 ms, a slow machine fails a transaction several times in a row, and the
    real waits would spend the deadline waiting rather than delivering."""
    from sqlalchemy import create_engine, text

    import trigger_engine.core.retry as retry

    monkeypatch.setattr(retry, "STORE_OUTAGE_WAITS", (0.05, 0.1, 0.2))
    url = pg_url + "&application_name=te_dispatch"
    store = Store.open(url)
    store.db.retry_waits = (0.0, 0.05)
    make_events(store, 200)
    receiver = Receiver(delay=0.01)
    admin = create_engine(pg_url)
    killed = [0]
    stop_killing = threading.Event()

    def seen_by_admin() -> list[tuple[str, int, str | None]]:
        """The deliveries' states, read on a session the kill loop spares."""
        with admin.connect() as conn:
            query = select(deliveries.c.status, deliveries.c.attempts, deliveries.c.lease_owner)
            return [tuple(r) for r in conn.execute(query.order_by(deliveries.c.id))]  # type: ignore[misc]

    def kill_loop() -> None:
        with admin.connect() as conn:
            while not stop_killing.wait(0.02):
                killed[0] += conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'te_dispatch'"
                    )
                ).scalar_one()
                conn.commit()

    async def deliver() -> None:
        async with serving(receiver):
            config = make_config(url, receiver.url, max_in_flight=4)
            stop = asyncio.Event()
            async with Dispatcher(config, store, owner="node-a", idle_wait=0.05) as dispatcher:
                task = asyncio.create_task(dispatcher.run(stop, grace=5))
                killer = threading.Thread(target=kill_loop)
                killer.start()
                try:
                    for _ in range(1200):  # a deadline, not a bet: 60 s
                        if len(set(receiver.ids)) == 200 and all(
                            s == "delivered" for s, _, _ in await asyncio.to_thread(seen_by_admin)
                        ):
                            break
                        await asyncio.sleep(0.05)
                finally:
                    stop_killing.set()
                    killer.join()
                    stop.set()
                    await task

    try:
        asyncio.run(deliver())
        assert killed[0] > 0
        assert len(set(receiver.ids)) == 200  # every event, each under its own event id
        assert {s for s, _, _ in seen_by_admin()} == {"delivered"}
        assert all(owner is None for _, _, owner in seen_by_admin())
    finally:
        store.close()
        admin.dispose()


def test_a_drain_gives_up_on_a_database_that_stays_down(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run --once must end: after the outage waits, the failure reaches the command."""
    import trigger_engine.core.retry as retry

    monkeypatch.setattr(retry, "STORE_OUTAGE_WAITS", (0.0, 0.0))
    db_url = f"sqlite:///{tmp_path / 'te.db'}"
    store = Store.open(db_url)
    make_events(store, 1)
    with store.db.engine.connect() as conn:
        driver: Any = conn.connection.driver_connection
        driver.execute(
            f"PRAGMA max_page_count = {driver.execute('PRAGMA page_count').fetchone()[0]}"
        )
        driver.execute("PRAGMA query_only = 1")  # every write refused from now on

    async def drain() -> DrainReport:
        async with Dispatcher(
            make_config(db_url, "http://127.0.0.1:9/hook"), store, owner="n"
        ) as d:
            return await d.drain()

    with pytest.raises(DatabaseError, match="readonly"):
        asyncio.run(drain())
    store.close()
