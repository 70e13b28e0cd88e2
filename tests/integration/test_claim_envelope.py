"""The claim builds each delivery's envelope in SQL (db/queries.py): its bytes must be the
ones ``core.events.envelope`` makes from the delivery's fields, which the signature covers,
on SQLite and PostgreSQL, whatever the type, the account and the item hold."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from sqlalchemy import select, update

from trigger_engine.config import Sink
from trigger_engine.core import events, slack
from trigger_engine.core.dedupe import key_items
from trigger_engine.db.schema import events as events_table
from trigger_engine.db.store import Store
from trigger_engine.delivery.attempt import body_for
from trigger_engine.types import DueDelivery

# quotes, backslashes, control characters (NUL only in an item: PostgreSQL's text refuses
# it), non-ASCII, line separators
AWKWARD = 'a"b\\c\x01\x08\t\n\x0c\r\x1f\x7f é ☃ 😀 \u2028\u2029/'
# ... and what the envelope's data follows, as an account and a type may hold it
TRICKY = AWKWARD + ',"data":{"x":1}}'
ENVELOPE_SINK = Sink(name="crm", url="https://h.example.com/")
RAW_SINK = Sink(name="crm", url="https://h.example.com/", format="raw")
SLACK_SINK = Sink(name="crm", url="https://hooks.example.com/services/T0/B0/x", format="slack")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


def claim_all(store: Store, now: datetime) -> list[DueDelivery]:
    return store.deliveries.claim_due(owner="me", now=now, lease=60, capacity={"crm": 100})


def stored_items(store: Store) -> dict[str, bytes]:
    """Each event's item as the events table holds it, by event id."""
    with store.db.tx() as conn:
        rows = conn.execute(select(events_table.c.id, events_table.c.payload))
        return {row.id: row.payload.encode() for row in rows}


def rebuilt(delivery: DueDelivery, item: bytes) -> bytes:
    """The envelope made in Python from the delivery's own fields and the stored item."""
    return events.envelope(dataclasses.replace(delivery, envelope=None, payload=item))


def test_the_claimed_envelope_is_byte_for_byte_the_one_python_makes(store: Store) -> None:
    created = datetime(2026, 11, 27, 7, 0, 59, 999_999, tzinfo=UTC)  # not rounded up
    items = [
        {"id": "plain", "name": "Ada"},
        {"id": "awkward", "text": AWKWARD + "\x00", "big": 12345678901234567890123, "x": 1.5e300},
        {"id": "nested", "a": [{"b": None, "c": True}], "e": {}},
    ]
    for account, event_type in (("acme", "lead.new"), (TRICKY, f"type {TRICKY}"), ("", "x")):
        store.polls.record(
            account or "nobody",
            "leads",
            key_items(items, ["id"]),
            event_type=event_type,
            emit_first=True,
            sinks=["crm"],
            now=created,
        )
        if not account:  # an engine event about no account is stored with ""
            with store.db.tx() as conn:
                conn.execute(
                    update(events_table)
                    .where(events_table.c.account == "nobody")
                    .values(account="")
                )
    claimed = claim_all(store, created)
    stored = stored_items(store)
    assert len(claimed) == 9
    for delivery in claimed:
        assert delivery.envelope is not None
        assert delivery.payload is None  # read once, in the envelope
        item = stored[delivery.event_id]
        assert delivery.envelope == rebuilt(delivery, item)
        # the item cut out of the envelope (a raw or slack sink's) is the stored one,
        # whatever the type and account before it hold
        assert events.item(delivery) == item
        assert events.body(delivery, raw=True) == item
        # what each kind of sink is sent (delivery/attempt.py, body_for)
        assert body_for(ENVELOPE_SINK, delivery) == delivery.envelope
        assert body_for(RAW_SINK, delivery) == item
        slack_text = orjson.loads(body_for(SLACK_SINK, delivery))["text"]
        assert slack_text == slack.slack_text(delivery.event_type, delivery.account or "", item)
        body = orjson.loads(delivery.envelope)
        assert body["timestamp"] == "2026-11-27T07:00:59Z"
        assert body["account"] == (delivery.account or None)
        assert body["type"] == delivery.event_type
        assert body["data"] == orjson.loads(events.item(delivery))
    assert {orjson.loads(d.envelope or b"")["account"] for d in claimed} == {
        "acme",
        TRICKY,
        None,
    }


def test_a_probe_and_a_test_event_build_the_envelope_when_they_are_sent(store: Store) -> None:
    now = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    store.polls.record(
        "acme",
        "leads",
        key_items([{"id": "L1"}], ["id"]),
        event_type="lead.new",
        emit_first=True,
        sinks=["crm"],
        now=now,
    )
    probe = store.deliveries.claim_probe("crm", owner="me", now=now, lease=60)
    assert probe is not None and probe.envelope is None
    assert orjson.loads(events.envelope(probe)) == {
        "type": "lead.new",
        "timestamp": "2026-11-27T07:00:00Z",
        "account": "acme",
        "data": {"id": "L1"},
    }
    test_event = events.engine_test_event("crm", now)
    assert test_event.envelope is None
    assert orjson.loads(events.envelope(test_event))["account"] is None
