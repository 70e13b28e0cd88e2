"""One item never stops a poll (issue 12): exact keys that any database can store, and the
quarantine for an item the database refuses or that cannot become an event; on SQLite and
PostgreSQL alike (``db_url``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from trigger_engine.core import events as core_events
from trigger_engine.core.dedupe import key_items
from trigger_engine.core.keys import ESCAPED_PREFIX, HASHED_PREFIX
from trigger_engine.db.schema import events, quarantine, seen_keys
from trigger_engine.db.store import Store
from trigger_engine.types import EventFilter, PollResult

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


def poll(store: Store, items: list[Any], *, minutes: int = 0, **kw: Any) -> PollResult:
    return store.polls.record(
        "acme",
        "leads",
        key_items(items, ["id"]),
        event_type="lead.new",
        emit_first=kw.get("emit", False),
        sinks=["crm"],
        now=T0 + timedelta(minutes=minutes),
    )


def rows(store: Store, query: Any) -> list[Any]:
    with store.db.engine.connect() as conn:
        return list(conn.execute(query).all())


def payloads(store: Store) -> dict[str, Any]:
    """Each item event's item, parsed exactly (big integers stay integers); the engine's
    own events (engine.item_quarantined) are left out."""
    found = rows(
        store,
        select(events.c.item_key, events.c.payload).where(events.c.type.not_like("engine.%")),
    )
    return {key: json.loads(text) for key, text in found}


def refuse_key(store: Store, key: str) -> None:
    """Make the database refuse one item's event, as a constraint would."""
    with store.db.engine.begin() as conn:
        if store.dialect == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON events "
                f"WHEN NEW.item_key = '{key}' BEGIN SELECT RAISE(ABORT, 'poisoned item'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.item_key = '{key}' THEN RAISE EXCEPTION 'poisoned item' "
                "USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON events "
                "FOR EACH ROW EXECUTE FUNCTION poison()"
            )


def cure(store: Store) -> None:
    with store.db.engine.begin() as conn:
        if store.dialect == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER poison")
        else:
            conn.exec_driver_sql("DROP TRIGGER poison ON events")


def test_an_item_the_database_refuses_is_quarantined_and_the_others_fire(store: Store) -> None:
    poll(store, [])  # the first poll seeds
    refuse_key(store, "poison")
    result = poll(store, [{"id": "b"}, {"id": "poison"}, {"id": "a"}], minutes=5)
    assert (result.new_events, result.quarantined) == (2, 1)
    assert result.newly_quarantined[0][0] == "poison"
    assert "poisoned item" in result.newly_quarantined[0][1]
    assert sorted(payloads(store)) == ["a", "b"]
    assert store.quarantine.counts() == {("acme", "leads"): 1}
    (view,) = store.quarantine.list(EventFilter(), limit=10)
    assert (view.key, view.polls) == ("poison", 1)
    assert "cannot be stored" in view.reason
    # not marked seen: the next poll tries it again, without a new log line
    again = poll(store, [{"id": "poison"}, {"id": "a"}], minutes=10)
    assert (again.new_events, again.quarantined, again.newly_quarantined) == (0, 1, ())
    assert store.quarantine.list(EventFilter(), limit=10)[0].polls == 2
    cure(store)
    cured = poll(store, [{"id": "poison"}, {"id": "a"}], minutes=15)
    assert (cured.new_events, cured.quarantined, cured.released) == (1, 0, 1)
    assert store.quarantine.counts() == {}
    assert poll(store, [{"id": "poison"}], minutes=20).new_events == 0  # fired exactly once
    assert sorted(payloads(store)) == ["a", "b", "poison"]


def test_a_poll_whose_only_new_item_is_refused_still_succeeds(store: Store) -> None:
    poll(store, [])
    refuse_key(store, "poison")
    result = poll(store, [{"id": "poison"}], minutes=5)
    assert (result.new_events, result.quarantined) == (0, 1)
    assert rows(store, select(func.count()).select_from(seen_keys)) == [(0,)]
    state = store.polls.state("acme", "leads")
    assert state is not None and state.last_outcome == "ok"


def test_a_seeding_first_poll_quarantines_what_it_cannot_remember(store: Store) -> None:
    with store.db.engine.begin() as conn:
        if store.dialect == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON seen_keys "
                "WHEN NEW.key = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned item'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.key = 'poison' THEN RAISE EXCEPTION 'poisoned item' "
                "USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON seen_keys "
                "FOR EACH ROW EXECUTE FUNCTION poison()"
            )
    result = poll(store, [{"id": "x"}, {"id": "poison"}])
    assert (result.first_poll, result.remembered, result.quarantined) == (True, 1, 1)


@pytest.mark.parametrize(
    ("raw", "stored_prefix"),
    [
        ("nul\x00inside", ESCAPED_PREFIX),  # PostgreSQL's text refuses NUL
        ("emoji cut \ud83d", ESCAPED_PREFIX),  # no UTF-8 encoding exists
        ("x" * 5000, HASHED_PREFIX),  # beyond a PostgreSQL index entry
    ],
)
def test_keys_no_database_holds_as_they_are_fire_once_with_the_item_exact(
    store: Store, raw: str, stored_prefix: str
) -> None:
    poll(store, [])
    item = {"id": raw, "person": {"name": raw}}
    result = poll(store, [item, {"id": "plain"}], minutes=5)
    assert (result.new_events, result.quarantined) == (2, 0)
    stored = {k for (k,) in rows(store, select(seen_keys.c.key))}
    (odd,) = stored - {"plain"}
    assert odd.startswith(stored_prefix)
    assert len(odd.encode()) <= 512
    assert payloads(store)[odd] == item  # forwarded with the values it arrived with
    assert poll(store, [item], minutes=10).new_events == 0  # the same key again: seen
    # a different key of the same kind stays a different item
    other = {"id": raw + "!"}
    assert poll(store, [other], minutes=15).new_events == 1


def test_integer_ids_beyond_64_bits_stay_distinct_and_exact(store: Store) -> None:
    poll(store, [])
    items = [{"id": 2**64 + 1, "n": 2**70}, {"id": 2**64 + 2, "n": -(2**70)}]
    assert poll(store, items, minutes=5).new_events == 2
    found = payloads(store)
    assert found[str(2**64 + 1)] == items[0]
    assert found[str(2**64 + 2)] == items[1]


def test_an_item_nested_deeper_than_orjson_writes_fires(store: Store) -> None:
    poll(store, [])
    deep: Any = "bottom"
    for _ in range(400):
        deep = {"d": deep}
    item = {"id": "deep", "tree": deep}
    assert poll(store, [item, {"id": "flat"}], minutes=5).new_events == 2
    assert payloads(store)["deep"] == item


def test_an_item_too_large_for_an_event_waits_in_quarantine_until_it_shrinks(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core_events, "MAX_ITEM_BYTES", 4096)
    poll(store, [])
    big = {"id": "big", "notes": "n" * 5000}
    result = poll(store, [big, {"id": "small"}], minutes=5)
    assert (result.new_events, result.quarantined) == (1, 1)
    assert "MiB an event may hold" in result.newly_quarantined[0][1]
    assert rows(store, select(quarantine.c.key)) == [("big",)]
    shrunk = {"id": "big", "notes": "short now"}
    assert poll(store, [shrunk], minutes=10).new_events == 1
    assert payloads(store)["big"] == shrunk
    assert store.quarantine.counts() == {}


def test_quarantined_items_older_than_retention_are_forgotten(store: Store) -> None:
    poll(store, [])
    refuse_key(store, "poison")
    poll(store, [{"id": "poison"}, {"id": "a"}], minutes=5)
    assert store.quarantine.prune(T0) == 0  # seen after the cutoff: kept
    assert store.quarantine.prune(T0 + timedelta(days=1)) == 1
