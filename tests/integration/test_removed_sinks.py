"""A sink removed from the configuration with deliveries still waiting (issue 13, item 6):
``sinks drop`` deletes them, or first queues their events to another sink, and refuses
while a live node serves the sink. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from trigger_engine.core.dedupe import key_items
from trigger_engine.db.schema import attempts, deliveries
from trigger_engine.db.store import Store
from trigger_engine.states import DeliveryStatus
from trigger_engine.types import AttemptOutcome, EventFilter

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
LATER = T0 + timedelta(hours=1)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """Six leads L0-L5 with a delivery each to crm and to "old" (since removed): old's are
    delivered (L0), failed with a retry due (L1), dead (L2), claimed by a node that vanished
    (L3), pending (L4) and held (L5); L4 has a delivery to "backup" already."""
    s = Store.open(db_url)
    try:
        make_history(s)
        yield s
    finally:
        s.close()


def make_history(s: Store) -> None:
    s.polls.record(
        "acme",
        "leads",
        key_items([{"id": f"L{i}"} for i in range(6)], ["id"]),
        event_type="lead.new",
        emit_first=True,
        sinks=["crm", "old"],
        now=T0,
    )
    ids = event_ids(s)
    claimed = {
        d.event_id: d
        for d in s.deliveries.claim_due(owner="n", now=T0, lease=60, capacity={"old": 6})
    }
    attempted = [
        AttemptOutcome(claimed[ids[key]].id, "old", ids[key], 1, T0, 5, code, err, status, due)
        for key, code, err, status, due in [
            ("L0", 200, None, DeliveryStatus.DELIVERED, None),
            ("L1", 500, "HTTP 500", DeliveryStatus.FAILED, LATER),
            ("L2", 410, "HTTP 410", DeliveryStatus.DEAD, None),
        ]
    ]
    s.deliveries.record_attempts(attempted, owner="n")
    s.deliveries.release_claims("n")
    with s.db.engine.begin() as conn:
        old = deliveries.c.sink == "old"
        conn.execute(
            update(deliveries)
            .where(old, deliveries.c.event_id == ids["L3"])
            .values(lease_owner="vanished-node", lease_expires_at=LATER)
        )
        conn.execute(
            update(deliveries)
            .where(old, deliveries.c.event_id == ids["L5"])
            .values(status=DeliveryStatus.HELD, next_attempt_at=None)
        )
        conn.execute(
            insert(deliveries).values(
                event_id=ids["L4"], sink="backup", status="pending", created_at=T0
            )
        )


def event_ids(store: Store) -> dict[str, str]:
    return {e.item_key: e.id for e in store.events.list(EventFilter(), limit=100)}


def rows(store: Store, sink: str) -> list[tuple[Any, ...]]:
    """(item key, status, next_attempt_at) of each delivery to ``sink``, by id."""
    keys = {v: k for k, v in event_ids(store).items()}
    with store.db.engine.connect() as conn:
        found = conn.execute(
            select(deliveries.c.event_id, deliveries.c.status, deliveries.c.next_attempt_at)
            .where(deliveries.c.sink == sink)
            .order_by(deliveries.c.id)
        ).all()
    return [(keys[e], status, due) for e, status, due in found]


def attempts_of(store: Store, sink: str) -> int:
    with store.db.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(attempts.join(deliveries, deliveries.c.id == attempts.c.delivery_id))
                .where(deliveries.c.sink == sink)
            ).scalar_one()
        )


WAITING = {"pending": 2, "failed": 1, "held": 1, "dead": 1}


def test_drop_deletes_the_waiting_deliveries_and_keeps_the_delivered(store: Store) -> None:
    before = {sink: rows(store, sink) for sink in ("crm", "old", "backup")}
    dry = store.deliveries.drop_sink("old", now=LATER, dry_run=True)
    assert (dict(dry.dropped), dry.total, dry.queued) == (WAITING, 5, 0)
    assert {sink: rows(store, sink) for sink in before} == before  # a dry run changes nothing

    done = store.deliveries.drop_sink("old", now=LATER)
    assert (dict(done.dropped), done.total, done.served_by) == (WAITING, 5, ())
    assert rows(store, "old") == [("L0", "delivered", None)]
    assert attempts_of(store, "old") == 1  # the delivered one's; the others' went with them
    assert rows(store, "crm") == before["crm"] and rows(store, "backup") == before["backup"]
    assert store.sinks.stats()["old"].counts == {
        "pending": 0,
        "failed": 0,
        "delivered": 1,
        "dead": 0,
        "held": 0,
    }
    again = store.deliveries.drop_sink("old", now=LATER)
    assert again.total == 0


def test_drop_to_another_sink_queues_each_event_once_due_now(store: Store) -> None:
    dry = store.deliveries.drop_sink("old", to="backup", now=LATER, dry_run=True)
    assert (dry.total, dry.queued, dry.already_there) == (5, 4, 1)
    assert rows(store, "backup") == [("L4", "pending", None)]

    order = [key for key, status, _due in rows(store, "old") if status != "delivered"]
    done = store.deliveries.drop_sink("old", to="backup", now=LATER)
    assert (done.total, done.queued, done.already_there, done.to) == (5, 4, 1, "backup")
    # same events (same webhook-id), due now, in the order of the old deliveries; L4's
    # own delivery to backup is left as it was
    assert rows(store, "backup") == [("L4", "pending", None)] + [
        (key, "pending", LATER) for key in order if key != "L4"
    ]
    assert sorted(order) == ["L1", "L2", "L3", "L4", "L5"]
    assert rows(store, "old") == [("L0", "delivered", None)]
    claimed = store.deliveries.claim_due(owner="n", now=LATER, lease=60, capacity={"backup": 10})
    keys = {v: k for k, v in event_ids(store).items()}
    assert sorted(keys[d.event_id] for d in claimed) == ["L1", "L2", "L3", "L5"]
    assert all(d.attempts == 0 for d in claimed)


def test_drop_is_refused_while_a_live_node_serves_the_sink(store: Store) -> None:
    before = rows(store, "old")
    store.nodes.heartbeat("node-b", version="0.1.0", now=LATER, sinks={"old": None})
    refused = store.deliveries.drop_sink("old", to="backup", now=LATER + timedelta(seconds=5))
    assert (refused.served_by, refused.total, refused.queued) == (("node-b",), 0, 0)
    assert rows(store, "old") == before
    # once node-b stopped (or vanished: 30 s without a heartbeat), the sink is removed
    stale = LATER + timedelta(seconds=31)
    assert store.deliveries.drop_sink("old", now=stale, dry_run=True).total == 5
    store.nodes.heartbeat("node-b", version="0.1.0", now=LATER, stopping=True)
    assert store.deliveries.drop_sink("old", now=LATER).total == 5


def test_the_sink_names_the_database_knows(store: Store) -> None:
    assert store.sinks.stored_names() == ["backup", "crm", "old"]
    assert store.sinks.stored("old") and not store.sinks.stored("nope")
    store.sinks.set_enabled("paused-one", False, reason="by hand", now=T0)
    assert store.sinks.stored("paused-one")
    assert "paused-one" in store.sinks.stored_names()
