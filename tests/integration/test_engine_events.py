"""Operational events in the store, on SQLite and PostgreSQL: each is written in the
transaction of the state change it reports (both or neither), with one delivery per sink
whose ``events`` list names it, and none about a delivery of an engine event (no cascade)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from tests.integration.test_quarantine import cure, refuse_key
from trigger_engine.core.dedupe import key_items
from trigger_engine.core.engine_events import Subscribers
from trigger_engine.db.schema import deliveries, events
from trigger_engine.db.store import Store
from trigger_engine.errors import DatabaseError
from trigger_engine.states import DeliveryStatus, PollOutcome
from trigger_engine.types import AttemptOutcome, EventFilter

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)

# crm: item events only (no list); ops: every engine event; pager: pauses only
SINKS = {"crm": None, "ops": ("lead.new", "engine.*"), "pager": ("engine.trigger_paused",)}


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    s.set_subscribers(lambda: Subscribers(SINKS))
    yield s
    s.close()


def engine_rows(store: Store) -> list[dict[str, Any]]:
    """Every engine event, oldest first, with its parsed data and its deliveries' sinks."""
    with store.db.engine.connect() as conn:
        found = conn.execute(
            select(events).where(events.c.type.like("engine.%")).order_by(events.c.seq)
        ).all()
        out = []
        for row in found:
            sinks = sorted(
                conn.execute(
                    select(deliveries.c.sink).where(deliveries.c.event_id == row.id)
                ).scalars()
            )
            out.append(
                {
                    "id": row.id,
                    "type": row.type,
                    "account": row.account,
                    "trigger": row.trigger,
                    "key": row.item_key,
                    "data": orjson.loads(row.payload),
                    "sinks": sinks,
                }
            )
    return out


def fail(store: Store, minutes: float, **kw: Any) -> Any:
    at = T0 + timedelta(minutes=minutes)
    return store.polls.record_failure(
        "acme",
        "leads",
        outcome=PollOutcome.TRANSIENT,
        error="HTTP 503",
        backoff_until=at,
        now=at,
        interval=kw.get("interval", 300.0),
        pause_after=kw.get("pause_after", 3600.0),
        pause_after_failures=kw.get("pause_after_failures", 5),
    )


def poll(store: Store, items: list[Any], minutes: float = 0) -> Any:
    return store.polls.record(
        "acme",
        "leads",
        key_items(items, ["id"]),
        event_type="lead.new",
        emit_first=False,
        sinks=["crm", "ops"],
        now=T0 + timedelta(minutes=minutes),
    )


def refuse_engine_events(store: Store) -> None:
    """A database trigger that refuses every engine event: the write that makes one fails."""
    with store.db.engine.begin() as conn:
        if store.dialect == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER no_alerts BEFORE INSERT ON events WHEN NEW.type LIKE 'engine.%' "
                "BEGIN SELECT RAISE(ABORT, 'no alerts'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION no_alerts() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF left(NEW.type, 7) = 'engine.' THEN RAISE EXCEPTION 'no alerts' "
                "USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER no_alerts BEFORE INSERT ON events "
                "FOR EACH ROW EXECUTE FUNCTION no_alerts()"
            )


# ----------------------------------------------------------------------- triggers


def test_a_failing_trigger_is_reported_once_per_run_and_a_pause_to_its_subscribers(
    store: Store,
) -> None:
    poll(store, [{"id": "a"}])
    # interval 5 min: failing once the run spans more than 15 min; paused at 5 failures
    records = [fail(store, m) for m in (0, 5, 10, 16, 21)]
    assert [r.failing for r in records] == [False, False, False, True, False]
    assert [r.paused_reason is not None for r in records] == [False] * 4 + [False]
    found = engine_rows(store)
    assert [e["type"] for e in found] == ["engine.trigger_failing"]
    (failing,) = found
    assert (failing["account"], failing["trigger"], failing["sinks"]) == ("acme", "leads", ["ops"])
    assert failing["key"] == failing["id"]  # each occurrence is its own event
    assert failing["data"]["failures"] == 4
    assert failing["data"]["failing_since"] == "2026-12-01T10:00:00Z"

    # a success ends the run; the next run that lasts is reported again, and the rule
    # pauses the trigger at its fifth failure (an hour after the first): both written
    poll(store, [{"id": "a"}], minutes=30)
    records = [fail(store, 40 + m, pause_after_failures=5) for m in (0, 10, 20, 30, 60)]
    assert [r.failing for r in records] == [False, False, True, False, False]
    assert records[-1].paused_reason is not None
    state = store.polls.state("acme", "leads")
    assert state is not None and state.paused and state.paused_auto
    found = engine_rows(store)
    assert [e["type"] for e in found] == [
        "engine.trigger_failing",
        "engine.trigger_failing",
        "engine.trigger_paused",
    ]
    paused = found[-1]
    assert paused["sinks"] == ["ops", "pager"]  # crm (no events list) gets none
    assert paused["data"]["next"] == "trigger-engine triggers resume acme leads"
    assert paused["data"]["reason"] == f"trigger acme/leads was paused: {state.paused_reason}"
    # its deliveries are ordinary ones: pending, due at once
    (pending,) = store.events.list(EventFilter(event_ids=(paused["id"],)), limit=1)
    assert {d.status for d in pending.deliveries} == {DeliveryStatus.PENDING}


def test_store_failures_neither_pause_nor_alert(store: Store) -> None:
    poll(store, [{"id": "a"}])
    for m in range(0, 100, 10):
        store.polls.record_failure(
            "acme",
            "leads",
            outcome=PollOutcome.STORE,
            error="database is locked",
            backoff_until=None,
            now=T0 + timedelta(minutes=m),
        )
    assert engine_rows(store) == []


def test_the_pause_and_its_event_are_one_transaction(store: Store) -> None:
    poll(store, [{"id": "a"}])
    fail(store, 0, pause_after_failures=2, pause_after=60.0)
    refuse_engine_events(store)
    with pytest.raises(DatabaseError):
        fail(store, 5, pause_after_failures=2, pause_after=60.0)
    state = store.polls.state("acme", "leads")
    assert state is not None
    # nothing of the failed write stayed: not paused, and the failure itself not counted
    assert (state.paused, state.consecutive_failures) == (False, 1)
    assert engine_rows(store) == []


# ----------------------------------------------------------------------- sinks and deliveries


def attempt(store: Store, *, sink: str, status: int | None, dead: bool = False) -> list[str]:
    """Claim every due delivery to ``sink`` and record one attempt of each; returns the
    claimed events' ids."""
    claimed = store.deliveries.claim_due(
        owner="n", now=T0 + timedelta(hours=1), lease=60, capacity={sink: 100}
    )
    outcomes = []
    for d in claimed:
        gone = status == 410
        outcomes.append(
            AttemptOutcome(
                d.id,
                d.sink,
                d.event_id,
                d.attempts + 1,
                T0 + timedelta(hours=1),
                5,
                status,
                None if status == 200 else f"HTTP {status}",
                DeliveryStatus.DELIVERED
                if status == 200
                else DeliveryStatus.DEAD
                if dead or gone
                else DeliveryStatus.FAILED,
                next_attempt_at=None if dead or gone else T0,
                disable_sink="the receiver answered 410 Gone" if gone else None,
            )
        )
    store.deliveries.record_attempts(outcomes, owner="n")
    return [d.event_id for d in claimed]


def test_a_410_disables_a_sink_once_and_says_so(store: Store) -> None:
    poll(store, [])
    poll(store, [{"id": "b"}, {"id": "a"}], minutes=5)
    sent = attempt(store, sink="crm", status=410)  # both deliveries answer 410 in one batch
    assert len(sent) == 2
    found = engine_rows(store)
    assert [e["type"] for e in found] == ["engine.sink_disabled"]
    (disabled,) = found
    assert (disabled["account"], disabled["trigger"], disabled["sinks"]) == ("", "", ["ops"])
    assert disabled["data"]["sink"] == "crm"
    assert disabled["data"]["event_id"] in sent
    assert disabled["data"]["next"] == "trigger-engine sinks enable crm"
    # disabling it again by hand says nothing more; enabling then disabling says it again
    now = T0 + timedelta(hours=2)
    store.sinks.set_enabled("crm", False, reason="disabled by hand", now=now)
    assert len(engine_rows(store)) == 1
    store.sinks.set_enabled("crm", True, reason="", now=now)
    store.sinks.set_enabled("crm", False, reason="disabled by hand", now=now)
    found = engine_rows(store)
    assert [e["data"]["reason"] for e in found] == [
        "sink crm was disabled: the receiver answered 410 Gone",
        "sink crm was disabled: disabled by hand",
    ]


def test_a_disabled_alert_sink_gets_its_own_alert_as_a_waiting_delivery(store: Store) -> None:
    store.sinks.set_enabled("ops", False, reason="disabled by hand", now=T0)
    (disabled,) = engine_rows(store)
    assert disabled["sinks"] == ["ops"]
    (view,) = store.events.list(EventFilter(event_ids=(disabled["id"],)), limit=1)
    assert view.deliveries[0].status != DeliveryStatus.PENDING  # never sent while disabled


def test_a_dead_delivery_is_reported_and_a_dead_report_is_not(store: Store) -> None:
    poll(store, [])
    poll(store, [{"id": "a"}], minutes=5)
    attempt(store, sink="crm", status=500, dead=True)  # the schedule is used up
    (dead,) = engine_rows(store)
    assert dead["type"] == "engine.delivery_dead"
    assert (dead["account"], dead["trigger"], dead["sinks"]) == ("acme", "leads", ["ops"])
    assert dead["data"]["sink"] == "crm" and dead["data"]["key"] == "a"
    assert dead["data"]["last_error"] == "HTTP 500"
    assert (
        dead["data"]["next"]
        == f"trigger-engine replay --event {dead['data']['event_id']} --sink crm"
    )
    # ops (the alert sink) dies too: its lead.new delivery is reported (to ops itself), and
    # its deliveries of engine events, reported again and again, never are
    for _ in range(5):
        attempt(store, sink="ops", status=500, dead=True)
    found = engine_rows(store)
    about = [(e["data"].get("event_type"), e["data"].get("sink")) for e in found[1:]]
    assert about == [("lead.new", "ops")]
    assert len(found) == 2  # no cascade: nothing about the dead alerts themselves
    with store.db.engine.connect() as conn:
        statuses = set(
            conn.execute(select(deliveries.c.status).where(deliveries.c.sink == "ops")).scalars()
        )
    assert statuses == {DeliveryStatus.DEAD}  # everything to ops is settled: the loop ended


def test_a_retry_is_not_reported(store: Store) -> None:
    poll(store, [])
    poll(store, [{"id": "a"}], minutes=5)
    attempt(store, sink="crm", status=500)
    attempt(store, sink="crm", status=200)
    assert engine_rows(store) == []


# ----------------------------------------------------------------------- quarantine


def test_an_item_quarantined_is_reported_the_first_time_only(store: Store) -> None:
    poll(store, [])
    refuse_key(store, "poison")
    first = poll(store, [{"id": "b"}, {"id": "poison"}], minutes=5)
    assert first.quarantined == 1
    (held,) = engine_rows(store)
    assert held["type"] == "engine.item_quarantined"
    assert (held["account"], held["trigger"], held["sinks"]) == ("acme", "leads", ["ops"])
    assert held["data"]["key"] == "poison" and "poisoned item" in held["data"]["reason"]
    again = poll(store, [{"id": "poison"}], minutes=10)
    assert again.quarantined == 1 and len(engine_rows(store)) == 1
    cure(store)
    poll(store, [{"id": "poison"}], minutes=15)
    assert len(engine_rows(store)) == 1


def test_a_poll_that_quarantines_many_items_makes_a_bounded_number_of_events(
    store: Store,
) -> None:
    poll(store, [])
    # the database refuses the events of 30 items: each is quarantined
    with store.db.engine.begin() as conn:
        if store.dialect == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.item_key LIKE 'p%' "
                "BEGIN SELECT RAISE(ABORT, 'poisoned item'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF left(NEW.item_key, 1) = 'p' THEN RAISE EXCEPTION 'poisoned item' "
                "USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON events "
                "FOR EACH ROW EXECUTE FUNCTION poison()"
            )
    result = poll(store, [{"id": f"p{i}"} for i in range(30)], minutes=5)
    assert result.quarantined == 30
    found = engine_rows(store)
    assert len(found) == 21  # 20 one by one, then one that counts the other 10
    assert found[-1]["data"]["more"] == 10


def test_the_quarantine_and_its_event_are_one_transaction(store: Store) -> None:
    poll(store, [])
    refuse_key(store, "poison")
    refuse_engine_events(store)
    with pytest.raises(DatabaseError):
        poll(store, [{"id": "b"}, {"id": "poison"}], minutes=5)
    assert store.quarantine.counts() == {}
    assert store.events.list(EventFilter(), limit=10) == []  # "b" was not written either
