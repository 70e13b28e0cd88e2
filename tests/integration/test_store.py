"""The store's contract, run against SQLite and PostgreSQL alike (``db_url``)."""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import event, func, select

from trigger_engine.core.dedupe import key_items
from trigger_engine.core.events import item as item_of
from trigger_engine.db import events as event_rows
from trigger_engine.db.schema import attempts, deliveries, events, seen_keys, sink_state
from trigger_engine.db.store import Store
from trigger_engine.errors import DatabaseError
from trigger_engine.types import AttemptOutcome

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


def leads(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "person": {"name": f"Lead {i}"}} for i in ids]


def poll(store: Store, items: list[Any], *, emit: bool = False, sinks=("crm",), now=T0, **kw: Any):
    return store.polls.record(
        kw.get("account", "acme"),
        kw.get("trigger", "leads"),
        key_items(items, ["id"]),
        event_type="lead.new",
        emit_first=emit,
        sinks=list(sinks),
        now=now,
    )


def count(store: Store, table: Any, *where: Any) -> int:
    with store.db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def rows(store: Store, query: Any) -> list[Any]:
    with store.db.engine.connect() as conn:
        return list(conn.execute(query).all())


# ----------------------------------------------------------------------- polls


def test_seeding_first_poll_remembers_everything_and_fires_nothing(store: Store) -> None:
    result = poll(store, leads("a", "b", "c"))
    assert (result.first_poll, result.remembered, result.new_events) == (True, 3, 0)
    assert count(store, events) == 0
    assert count(store, seen_keys, seen_keys.c.seeded) == 3
    state = store.polls.state("acme", "leads")
    assert state is not None and state.seeded_at == T0 and state.items_known == 3


def test_later_polls_fire_only_new_items_once_each(store: Store) -> None:
    poll(store, leads("a", "b"))
    second = poll(store, leads("d", "c", "a", "b"), sinks=("crm", "ops"))
    assert (second.first_poll, second.new_events, second.deliveries) == (False, 2, 4)
    third = poll(store, leads("d", "c", "a", "b"), sinks=("crm", "ops"))
    assert third.new_events == 0
    # oldest first: the API lists newest first, so "c" (listed after "d") is older
    keys = [r.item_key for r in rows(store, select(events.c.item_key).order_by(events.c.seq))]
    assert keys == ["c", "d"]
    assert count(store, deliveries, deliveries.c.status == "pending") == 4


def _statements(store: Store, work: Any) -> list[str]:
    """The SQL statements ``work()`` sends to the database."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        sent.append(" ".join(statement.split()))

    event.listen(store.db.engine, "before_cursor_execute", record)
    try:
        work()
    finally:
        event.remove(store.db.engine, "before_cursor_execute", record)
    return sent


def test_a_poll_reads_only_its_own_keys_and_status_reads_no_seen_key(store: Store) -> None:
    """What keeps a poll's cost flat from 10,000 to 1,000,000 seen keys
    (benchmarks/seen.py): a poll looks its keys up by primary key, never reading or
    counting the trigger's whole seen set; ``items_known`` is a counter, so the status
    reads do not touch the seen set at all."""
    poll(store, leads(*(f"k{i}" for i in range(300))))
    result: list[Any] = []
    polled = _statements(
        store, lambda: result.append(poll(store, leads("new", *(f"k{i}" for i in range(99)))))
    )
    assert result[0].new_events == 1
    on_seen = [s for s in polled if "seen_keys" in s]
    reads = [s for s in on_seen if s.upper().startswith("SELECT")]
    assert reads, polled
    for statement in reads:
        assert re.search(r'\bkey"? IN \(', statement, re.IGNORECASE), statement
    assert not [s for s in on_seen if "count(" in s.lower()]

    def status() -> None:
        store.polls.states()
        store.sinks.stats()
        store.quarantine.counts()
        store.nodes.views(T0)

    assert not [s for s in _statements(store, status) if "seen_keys" in s]
    state = store.polls.state("acme", "leads")
    assert state is not None and state.items_known == 301


def test_emit_first_poll_fires_everything(store: Store) -> None:
    result = poll(store, leads("a", "b"), emit=True)
    assert (result.first_poll, result.new_events, result.remembered) == (True, 2, 0)
    assert count(store, seen_keys, seen_keys.c.seeded) == 0


def test_empty_first_poll_still_counts_as_the_first(store: Store) -> None:
    assert poll(store, []).first_poll is True
    result = poll(store, leads("a"))
    assert (result.first_poll, result.new_events) == (False, 1)


def test_duplicate_keys_in_one_response_fire_once(store: Store) -> None:
    poll(store, [])
    result = poll(store, leads("a", "a", "b", "a"))
    assert result.new_events == 2
    assert count(store, events) == 2


def test_event_keeps_the_item_exactly_and_accounts_are_separate(store: Store) -> None:
    item = {"id": "ACoAA1", "name": "Zoë Łukasiewicz", "nested": {"n": [1, 2.5, None]}}
    poll(store, [], account="acme")
    poll(store, [], account="globex")
    poll(store, [item], account="acme")
    poll(store, [item], account="globex")
    payloads = rows(store, select(events.c.account, events.c.payload).order_by(events.c.seq))
    assert [p.account for p in payloads] == ["acme", "globex"]
    assert all(orjson.loads(p.payload) == item for p in payloads)


def test_disabled_sink_gets_held_deliveries_not_pending(store: Store) -> None:
    store.sinks.set_enabled("ops", False, reason="by hand", now=T0)
    poll(store, [])
    poll(store, leads("a"), sinks=("crm", "ops"))
    statuses = dict(rows(store, select(deliveries.c.sink, deliveries.c.status)))
    assert statuses == {"crm": "pending", "ops": "held"}


def test_a_failure_inside_the_poll_transaction_keeps_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    poll(store, [])

    def boom(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("crash between keys and events")

    monkeypatch.setattr(event_rows, "insert_events", boom)
    with pytest.raises(RuntimeError):
        poll(store, leads("a", "b"))
    assert count(store, seen_keys) == 0
    assert count(store, events) == 0
    monkeypatch.undo()
    assert poll(store, leads("a", "b")).new_events == 2  # the next poll repairs it


def test_poll_failure_changes_only_the_poll_state(store: Store) -> None:
    poll(store, leads("a"))
    failures = [
        store.polls.record_failure(
            "acme", "leads", outcome="transient", error="HTTP 500", backoff_until=T0, now=T0
        )
        for _ in range(3)
    ]
    # the run of failures began at T0
    assert [(f.failures, f.since) for f in failures] == [(1, T0), (2, T0), (3, T0)]
    state = store.polls.state("acme", "leads")
    assert state is not None
    assert (state.last_outcome, state.last_error, state.items_known) == ("transient", "HTTP 500", 1)
    assert poll(store, leads("a")).first_poll is False
    state = store.polls.state("acme", "leads")
    assert state is not None and state.consecutive_failures == 0 and state.backoff_until is None


def test_concurrent_polls_cannot_fire_an_item_twice(db_url: str) -> None:
    stores = [Store.open(db_url) for _ in range(4)]
    try:
        poll(stores[0], [])
        barrier = threading.Barrier(len(stores))
        items = leads(*[f"k{i}" for i in range(300)])

        def worker(s: Store) -> None:
            barrier.wait()
            poll(s, items)

        threads = [threading.Thread(target=worker, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert count(stores[0], events) == 300
        assert count(stores[0], deliveries) == 300
    finally:
        for s in stores:
            s.close()


def test_a_large_poll_costs_a_handful_of_statements_per_thousand_items(store: Store) -> None:
    statements: list[str] = []

    @event.listens_for(store.db.engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement)

    poll(store, leads(*[f"seed{i}" for i in range(10_000)]))
    poll(store, leads(*[f"new{i}" for i in range(20_000)]), sinks=("crm", "ops"))
    assert count(store, events) == 20_000
    assert count(store, deliveries) == 40_000
    assert len(statements) <= 5 * 30  # 30 thousand items polled


# ----------------------------------------------------------------------- deliveries


def _outcome(d: Any, status: str, *, code: int | None = 200, at: datetime = T0, **kw: Any):
    return AttemptOutcome(
        delivery_id=d.id,
        sink=d.sink,
        event_id=d.event_id,
        attempt=d.attempts + 1,
        started_at=at,
        duration_ms=12,
        status_code=code,
        error=None if code == 200 else f"HTTP {code}",
        new_status=status,
        **kw,
    )


def test_claims_go_oldest_first_within_each_sinks_capacity(store: Store) -> None:
    poll(store, [])
    poll(store, leads("c", "b", "a"), sinks=("crm", "ops"))
    claimed = store.deliveries.claim_due(
        owner="n1", now=T0, lease=60, capacity={"crm": 2, "ops": 1}
    )
    by_sink = {
        s: [orjson.loads(item_of(d))["id"] for d in claimed if d.sink == s] for s in ("crm", "ops")
    }
    assert by_sink == {"crm": ["a", "b"], "ops": ["a"]}
    # leased deliveries are not claimed again; the rest are
    again = store.deliveries.claim_due(owner="n2", now=T0, lease=60, capacity={"crm": 5, "ops": 5})
    assert sorted((d.sink, orjson.loads(item_of(d))["id"]) for d in again) == [
        ("crm", "c"),
        ("ops", "b"),
        ("ops", "c"),
    ]
    # an expired lease makes a delivery claimable again
    later = store.deliveries.claim_due(
        owner="n3", now=T0 + timedelta(seconds=61), lease=60, capacity={"crm": 5}
    )
    assert len(later) == 3


def test_not_due_and_disabled_sinks_are_not_claimed(store: Store) -> None:
    poll(store, [], now=T0)
    poll(store, leads("a"), sinks=("crm", "ops"), now=T0 + timedelta(seconds=10))
    assert (
        store.deliveries.claim_due(owner="n", now=T0, lease=60, capacity={"crm": 5, "ops": 5}) == []
    )
    store.sinks.set_enabled("ops", False, reason="by hand", now=T0)
    claimed = store.deliveries.claim_due(
        owner="n", now=T0 + timedelta(seconds=10), lease=60, capacity={"crm": 5, "ops": 5}
    )
    assert [d.sink for d in claimed] == ["crm"]


def test_recording_attempts_moves_deliveries_through_their_states(store: Store) -> None:
    poll(store, [])
    poll(store, leads("c", "b", "a"))
    a, b, c = store.deliveries.claim_due(owner="n", now=T0, lease=60, capacity={"crm": 3})
    retry_at = T0 + timedelta(seconds=5)
    store.deliveries.record_attempts(
        [
            _outcome(a, "delivered"),
            _outcome(b, "failed", code=500, next_attempt_at=retry_at),
            _outcome(c, "dead", code=500),
        ],
        owner="n",
    )
    got = {r.id: r for r in rows(store, select(deliveries))}
    assert (got[a.id].status, got[a.id].delivered_at, got[a.id].lease_owner) == (
        "delivered",
        T0,
        None,
    )
    assert (got[b.id].status, got[b.id].next_attempt_at, got[b.id].last_status_code) == (
        "failed",
        retry_at,
        500,
    )
    assert (got[c.id].status, got[c.id].attempts) == ("dead", 1)
    assert count(store, attempts) == 3
    assert rows(store, select(sink_state.c.last_success_at)) == [(T0,)]
    # the failed one comes back when due, with its attempt count
    assert store.deliveries.next_due_at(["crm"]) == retry_at
    (again,) = store.deliveries.claim_due(owner="n", now=retry_at, lease=60, capacity={"crm": 3})
    assert (again.id, again.attempts) == (b.id, 1)


def test_a_gone_receiver_disables_the_sink_and_holds_its_queue(store: Store) -> None:
    poll(store, [])
    poll(store, leads("b", "a"))
    (first,) = store.deliveries.claim_due(owner="n", now=T0, lease=60, capacity={"crm": 1})
    store.deliveries.record_attempts(
        [
            _outcome(
                first,
                "failed",
                code=410,
                next_attempt_at=T0,
                disable_sink="the receiver answered 410 Gone",
            )
        ],
        owner="n",
    )
    assert store.sinks.disabled() == {"crm"}
    assert count(store, deliveries, deliveries.c.status == "held") == 2
    assert count(store, deliveries, deliveries.c.status == "dead") == 0
    change = store.sinks.set_enabled("crm", True, reason="", now=T0)
    assert store.sinks.disabled() == set()
    assert change.released == 2
    again = store.deliveries.claim_due(owner="n", now=T0, lease=60, capacity={"crm": 5})
    assert [(d.event_id, d.attempts) for d in again] == [
        (first.event_id, 1),
        (again[1].event_id, 0),
    ]


def test_an_attempt_recorded_by_a_former_lease_holder_does_not_move_the_delivery(
    store: Store,
) -> None:
    poll(store, [])
    poll(store, leads("a"))
    (d,) = store.deliveries.claim_due(owner="old", now=T0, lease=1, capacity={"crm": 1})
    later = T0 + timedelta(seconds=5)
    (taken,) = store.deliveries.claim_due(owner="new", now=later, lease=60, capacity={"crm": 1})
    assert taken.id == d.id
    store.deliveries.record_attempts([_outcome(d, "dead", code=500)], owner="old")
    (row,) = rows(store, select(deliveries.c.status, deliveries.c.lease_owner))
    assert tuple(row) == ("pending", "new")
    assert count(store, attempts) == 1  # the attempt happened and is recorded


def test_release_claims_makes_in_flight_deliveries_due_again(store: Store) -> None:
    poll(store, [])
    poll(store, leads("b", "a"))
    store.deliveries.claim_due(owner="n1", now=T0, lease=600, capacity={"crm": 1})
    store.deliveries.claim_due(owner="n2", now=T0, lease=600, capacity={"crm": 1})
    assert store.deliveries.release_claims("n1") == 1
    assert len(store.deliveries.claim_due(owner="n3", now=T0, lease=600, capacity={"crm": 5})) == 1
    assert store.deliveries.release_claims() == 2


# ----------------------------------------------------------------------- files and errors


def test_sqlite_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "te.db"
    Store.open(f"sqlite:///{path}").close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_unreachable_database_is_a_one_sentence_error_without_password() -> None:
    with pytest.raises(DatabaseError) as info:
        Store.open("postgresql+psycopg://bob:hunter2@127.0.0.1:1/nope?connect_timeout=2")
    message = str(info.value)
    assert "hunter2" not in message
    assert message.startswith(
        "cannot use the database postgresql+psycopg://bob:***@127.0.0.1:1/nope"
    )
    assert "\n" not in message
