"""Held, not dead: a paused or disabled sink keeps its deliveries (``held``) and sends them in
order with their original webhook-ids when it is resumed or enabled; ``dead`` is only a
used-up schedule. And the circuit: a sink that is down gets probed, and its backlog falls due
the moment a probe succeeds. On SQLite and PostgreSQL (``db_url``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import func, select, update

from trigger_engine.core.circuit import DOWN_AFTER
from trigger_engine.core.dedupe import key_items
from trigger_engine.db.schema import attempts, deliveries, events
from trigger_engine.db.store import Store
from trigger_engine.delivery.dispatcher import Dispatcher
from trigger_engine.types import AttemptOutcome, DueDelivery, EventFilter

from .test_dispatcher import Receiver, make_config, serving

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


def fire(store: Store, *ids: str, sinks: tuple[str, ...] = ("crm",), now: datetime = T0) -> None:
    """Create one event per id (the first poll emits) with a delivery per sink."""
    store.polls.record(
        "acme",
        "leads",
        key_items([{"id": i} for i in ids], ["id"]),
        event_type="lead.new",
        emit_first=True,
        sinks=list(sinks),
        now=now,
    )


def table(store: Store, sink: str = "crm") -> list[tuple[str, str, int, str | None]]:
    """(event id, status, attempts, held_by) of the sink's deliveries, oldest first."""
    with store.db.engine.connect() as conn:
        query = (
            select(
                deliveries.c.event_id,
                deliveries.c.status,
                deliveries.c.attempts,
                deliveries.c.held_by,
            )
            .where(deliveries.c.sink == sink)
            .order_by(deliveries.c.id)
        )
        return [tuple(r) for r in conn.execute(query)]  # type: ignore[misc]


def outcome(d: DueDelivery, status: str, code: int | None, **kw: Any) -> AttemptOutcome:
    return AttemptOutcome(
        delivery_id=d.id,
        sink=d.sink,
        event_id=d.event_id,
        attempt=d.attempts + 1,
        started_at=kw.pop("at", T0),
        duration_ms=5,
        status_code=code,
        error=None if code and code < 300 else f"HTTP {code}",
        new_status=status,  # type: ignore[arg-type]
        **kw,
    )


def claim(store: Store, n: int = 10, now: datetime = T0, owner: str = "n") -> list[DueDelivery]:
    return store.deliveries.claim_due(owner=owner, now=now, lease=60, capacity={"crm": n})


# ----------------------------------------------------------------------- pause, resume


def test_pause_holds_due_and_new_deliveries_and_resume_sends_them_in_order(store: Store) -> None:
    fire(store, "a", "b")
    (a,) = claim(store, 1)
    later = T0 + timedelta(seconds=5)
    store.deliveries.record_attempts([outcome(a, "failed", 500, next_attempt_at=later)], owner="n")

    change = store.sinks.set_paused("crm", True, reason="paused by hand", now=T0)
    assert (change.held, change.paused, change.in_flight) == (2, True, 0)
    fire(store, "c", "d", now=T0 + timedelta(seconds=1))  # new ones while paused: held too
    ids = [row[0] for row in table(store)]
    assert [row[1:] for row in table(store)] == [
        ("held", 1, "sink"),
        ("held", 0, "sink"),
        ("held", 0, "sink"),
        ("held", 0, "sink"),
    ]
    assert claim(store, now=later + timedelta(hours=1)) == []  # never claimed
    stats = store.sinks.stats()["crm"]
    assert (stats.counts["held"], stats.paused, stats.paused_reason) == (
        4,
        True,
        "paused by hand",
    )

    resumed = store.sinks.set_paused("crm", False, reason="", now=T0 + timedelta(seconds=2))
    assert (resumed.released, resumed.paused) == (4, False)
    # due at once (the failed one too, before its own retry time), oldest first, same ids,
    # each with the attempts it had made
    got = claim(store, now=T0 + timedelta(seconds=2))
    assert [(d.event_id, d.attempts) for d in got] == list(zip(ids, [1, 0, 0, 0], strict=True))
    assert [row[1] for row in table(store)] == ["failed", "pending", "pending", "pending"]


def test_a_delivery_in_flight_when_paused_is_recorded_and_its_retry_is_held(
    store: Store,
) -> None:
    fire(store, "a", "b")
    a, b = claim(store, 2)
    change = store.sinks.set_paused("crm", True, reason="paused by hand", now=T0)
    assert (change.held, change.in_flight) == (0, 2)  # both in flight: left to finish
    held = store.deliveries.record_attempts(
        [
            outcome(a, "delivered", 204),
            outcome(b, "failed", 503, next_attempt_at=T0 + timedelta(seconds=5)),
        ],
        owner="n",
    )
    assert [row[1:] for row in table(store)] == [("delivered", 1, None), ("held", 1, "sink")]
    assert [(o.event_id, why) for o, why in held] == [(b.event_id, "sink paused")]


def test_a_paused_and_disabled_sink_is_sent_only_when_both_are_lifted(store: Store) -> None:
    fire(store, "a")
    store.sinks.set_paused("crm", True, reason="paused by hand", now=T0)
    store.sinks.set_enabled("crm", False, reason="disabled by hand", now=T0)
    enabled = store.sinks.set_enabled("crm", True, reason="", now=T0)
    assert (enabled.released, enabled.paused, enabled.disabled) == (0, True, False)
    assert table(store)[0][1] == "held"
    resumed = store.sinks.set_paused("crm", False, reason="", now=T0)
    assert resumed.released == 1
    assert table(store)[0][1] == "pending"


def test_a_410_disables_the_sink_and_holds_its_deliveries_until_enabled(store: Store) -> None:
    fire(store, "a", "b", "c")
    (a,) = claim(store, 1)
    store.deliveries.record_attempts(
        [outcome(a, "failed", 410, next_attempt_at=T0, disable_sink="410 Gone")], owner="n"
    )
    assert store.sinks.disabled() == {"crm"}
    fire(store, "d", now=T0 + timedelta(seconds=1))
    assert [row[1] for row in table(store)] == ["held"] * 4  # none dead
    assert claim(store) == []
    enabled = store.sinks.set_enabled("crm", True, reason="", now=T0 + timedelta(seconds=2))
    assert enabled.released == 4
    got = claim(store, now=T0 + timedelta(seconds=2))
    assert [d.event_id for d in got] == [row[0] for row in table(store)]
    assert got[0].attempts == 1


def test_flood_guard_holds_are_not_released_by_resume(store: Store) -> None:
    fire(store, "a")
    with store.db.engine.begin() as conn:
        conn.execute(update(deliveries).values(status="held", held_by="flood_guard"))
    store.sinks.set_paused("crm", True, reason="paused by hand", now=T0)
    assert store.sinks.set_paused("crm", False, reason="", now=T0).released == 0
    assert table(store)[0][1:] == ("held", 0, "flood_guard")


def test_replay_to_a_paused_sink_holds_and_to_a_disabled_sink_skips(store: Store) -> None:
    fire(store, "a", sinks=("crm", "ops"))
    for d in store.deliveries.claim_due(owner="n", now=T0, lease=60, capacity={"crm": 5, "ops": 5}):
        store.deliveries.record_attempts([outcome(d, "dead", 500)], owner="n")
    store.sinks.set_paused("crm", True, reason="paused by hand", now=T0)
    store.sinks.set_enabled("ops", False, reason="disabled by hand", now=T0)
    result = store.deliveries.replay(
        EventFilter(since=T0 - timedelta(hours=1)),
        known_sinks={"crm", "ops"},
        now=T0,
        dry_run=False,
    )
    assert (result.queued, result.held, result.skipped_disabled) == (1, 1, 1)
    assert table(store, "crm")[0][1:] == ("held", 0, "sink")
    assert table(store, "ops")[0][1] == "dead"


def test_retention_keeps_held_deliveries_however_old(store: Store) -> None:
    fire(store, "a", "b", now=T0)
    store.sinks.set_paused("crm", True, reason="paused by hand", now=T0)
    assert store.events.prune(T0 + timedelta(days=365)) == 0
    store.sinks.set_paused("crm", False, reason="", now=T0)
    for d in claim(store):
        store.deliveries.record_attempts([outcome(d, "delivered", 204)], owner="n")
    assert store.events.prune(T0 + timedelta(days=365)) == 2


# ----------------------------------------------------------------------- probes


def test_a_probe_is_the_oldest_due_delivery_else_the_soonest_due_one(store: Store) -> None:
    fire(store, "a", "b", "c")
    got = claim(store, 3)
    retry = {0: 300, 1: 60, 2: 600}
    store.deliveries.record_attempts(
        [
            outcome(d, "failed", 503, next_attempt_at=T0 + timedelta(seconds=retry[i]))
            for i, d in enumerate(got)
        ],
        owner="n",
    )
    # nothing due at T0+10s: the one due soonest, early
    probe = store.deliveries.claim_probe("crm", owner="n", now=T0 + timedelta(seconds=10), lease=60)
    assert probe is not None
    assert (probe.event_id, probe.early) == (got[1].event_id, True)
    # a failed early probe leaves its schedule as it was, counted as a probe
    store.deliveries.record_attempts(
        [
            outcome(
                probe,
                "failed",
                503,
                next_attempt_at=probe.next_attempt_at,
                early_probe=True,
                at=T0 + timedelta(seconds=10),
            )
        ],
        owner="n",
    )
    with store.db.engine.connect() as conn:
        row = conn.execute(
            select(deliveries.c.attempts, deliveries.c.probes, deliveries.c.next_attempt_at).where(
                deliveries.c.id == probe.id
            )
        ).one()
    assert tuple(row) == (2, 1, T0 + timedelta(seconds=60))
    # at T0+400s two are due: the oldest of them
    due = store.deliveries.claim_probe("crm", owner="n", now=T0 + timedelta(seconds=400), lease=60)
    assert due is not None and (due.event_id, due.early) == (got[0].event_id, False)
    assert due.probes == 0
    # a paused sink is not probed
    store.sinks.set_paused("crm", True, reason="paused by hand", now=T0)
    assert store.deliveries.claim_probe("crm", owner="n", now=T0, lease=60) is None


def test_due_now_makes_every_waiting_delivery_due_at_once(store: Store) -> None:
    fire(store, "a", "b", "c")
    got = claim(store, 3)
    store.deliveries.record_attempts(
        [outcome(d, "failed", 503, next_attempt_at=T0 + timedelta(minutes=5)) for d in got],
        owner="n",
    )
    assert claim(store, now=T0 + timedelta(seconds=1)) == []
    assert store.deliveries.due_now("crm", T0 + timedelta(seconds=1)) == 3
    again = claim(store, now=T0 + timedelta(seconds=1))
    assert [d.event_id for d in again] == [d.event_id for d in got]


# ----------------------------------------------------------------------- the dispatcher


class Outage(Receiver):
    """A receiver that answers 503 while ``down``, counting what it got meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.while_down = 0
        self.delivered: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        if self.down:
            self.while_down += 1
            return web.Response(status=503)
        self.delivered.append(request.headers["webhook-id"])
        return web.Response(status=204)


def test_a_down_sink_is_probed_once_per_step_and_drained_when_it_returns(
    store: Store, db_url: str
) -> None:
    """Schedule 1s then 5m: without probes the backlog would wait five minutes."""
    fire(store, *[f"L{i:02d}" for i in range(20)], now=datetime.now(UTC))
    order = [row[0] for row in table(store)]
    rec = Outage()
    rec.down = True
    figures: dict[str, float] = {}

    async def scenario() -> None:
        async with serving(rec):
            config = make_config(
                db_url,
                sinks=[
                    {
                        "name": "crm",
                        "url": rec.url,
                        "max_in_flight": 4,
                        "retry": {"schedule": ["1s", "5m"]},
                    }
                ],
            )
            stop = asyncio.Event()
            async with Dispatcher(config, store, owner="node-a", idle_wait=0.2) as dispatcher:
                task = asyncio.create_task(dispatcher.run(stop, grace=2))
                lane = dispatcher._lanes["crm"]
                deadline = time.monotonic() + 10
                while not lane.health.down:
                    assert time.monotonic() < deadline, "the sink never went down"
                    await asyncio.sleep(0.02)
                down_at = time.monotonic()
                await asyncio.sleep(4.0)  # down for a while: probes, one per 1s step
                figures["down_for"] = time.monotonic() - down_at
                figures["requests_while_down"] = rec.while_down
                figures["probes"] = lane.health.probes
                rec.down = False
                back = time.monotonic()
                while len(set(rec.delivered)) < 20:
                    assert time.monotonic() < back + 10, "the backlog was not sent in time"
                    await asyncio.sleep(0.02)
                figures["backlog_after_return"] = time.monotonic() - back
                stop.set()
                await task

    asyncio.run(scenario())
    print(
        f"\ncircuit: {figures['requests_while_down']:.0f} requests while down "
        f"({figures['probes']:.0f} probes in {figures['down_for']:.1f}s), backlog of 20 "
        f"delivered {figures['backlog_after_return']:.2f}s after the receiver returned"
    )
    # the first burst before it could tell (max_in_flight, and the next ones those workers
    # took before the DOWN_AFTER-th failure came in), then at most one per 1s step
    burst = 4 + DOWN_AFTER - 1
    assert figures["requests_while_down"] <= burst + figures["down_for"] / 1.0 + 1
    assert figures["backlog_after_return"] < 3.0  # one step (1s) and the sending
    assert len(rec.delivered) == 20 and rec.delivered[0] in order
    assert [row[1] for row in table(store)] == ["delivered"] * 20


def test_a_410_through_the_dispatcher_holds_and_enable_sends_once(
    store: Store, db_url: str
) -> None:
    fire(store, "a", "b", "c", now=datetime.now(UTC))
    rec = Receiver(statuses=(410,))

    async def run_once() -> None:
        async with serving(rec):
            config = make_config(db_url, rec.url, max_in_flight=1)
            async with Dispatcher(config, store, owner="node-a") as dispatcher:
                await dispatcher.drain()

    asyncio.run(run_once())
    assert [row[1] for row in table(store)] == ["held"] * 3
    assert len(rec.ids) == 1
    store.sinks.set_enabled("crm", True, reason="", now=datetime.now(UTC))
    asyncio.run(run_once())
    assert [row[1] for row in table(store)] == ["delivered"] * 3
    # the 410'd one again (same webhook-id), then the other two, once each
    assert rec.ids[1:] == [row[0] for row in table(store)]
    with store.db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(attempts)).scalar_one() == 4
        types = conn.execute(select(events.c.type).order_by(events.c.type)).scalars().all()
    # the three items, and the engine's own event saying the sink was disabled (once)
    assert types == ["engine.sink_disabled", "lead.new", "lead.new", "lead.new"]


# ----------------------------------------------------------------------- the migration


def test_0006_holds_what_an_older_version_made_dead_for_a_disabled_sink(db_url: str) -> None:
    """At 0005: a disabled sink with a delivery made dead by the disable, one dead after its
    schedule, and one held by the flood guard. Upgraded: the first is held for the sink
    (enabling sends it), the others keep their status; the flood guard's is marked so."""
    from alembic import command
    from sqlalchemy import create_engine, text

    from trigger_engine.db.migrate import alembic_config

    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0005")
            conn.execute(
                text(
                    "INSERT INTO events (id, type, account, trigger, item_key, payload, created_at)"
                    " VALUES (:id, 'lead.new', 'acme', 'leads', :key, '{}', :at)"
                ),
                [{"id": f"evt_{i}", "key": str(i), "at": T0} for i in range(3)],
            )
            conn.execute(
                text(
                    "INSERT INTO deliveries (event_id, sink, status, last_error, created_at)"
                    " VALUES (:e, 'crm', :s, :err, :at)"
                ),
                [
                    {"e": "evt_0", "s": "dead", "err": "sink disabled: by hand", "at": T0},
                    {"e": "evt_1", "s": "dead", "err": "HTTP 500", "at": T0},
                    {"e": "evt_2", "s": "held", "err": "held by the flood guard", "at": T0},
                ],
            )
            conn.execute(
                text("INSERT INTO sink_state (name, disabled) VALUES ('crm', :t)"), {"t": True}
            )
        with Store.open(db_url) as store:
            assert [row[1:] for row in table(store)] == [
                ("held", 0, "sink"),
                ("dead", 0, None),
                ("held", 0, "flood_guard"),
            ]
            assert store.sinks.set_enabled("crm", True, reason="", now=T0).released == 1
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0005")
            command.upgrade(alembic_config(conn), "head")
    finally:
        engine.dispose()
