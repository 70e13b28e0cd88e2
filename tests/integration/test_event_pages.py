"""The console's events pages on SQLite and PostgreSQL (``EventRepository.page``), with the
bounds made small (an index naming at most 4 events is read exactly; otherwise the newest
10 events before the cursor): paging on from each page's ``next_cursor`` gives exactly the
events the unbounded list gives, in the same order, each once, across the scan's
boundaries; a page the scan did not fill says how far back it looked (``scanned_to``: the
time of the oldest event read, the one ``next_cursor`` names); filters combine."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, create_engine, text

from trigger_engine.core.dedupe import key_items
from trigger_engine.db import events as events_module
from trigger_engine.db.events import EventPage
from trigger_engine.db.store import Store
from trigger_engine.types import EventFilter, EventView

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
N = 60


def kind(i: int) -> tuple[str, str]:
    """Event ``i``'s (type, account)."""
    return ("campaign.new" if i % 7 == 0 else "lead.new"), ("initech" if i % 5 == 0 else "acme")


@pytest.fixture
def store(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """N events, one a minute, each with a delivery to crm and to ops: crm's dead for
    every 9th event, ops's dead for events 10, 20 and 30, the rest delivered."""
    monkeypatch.setattr(events_module, "PAGE_EXACT_UP_TO", 4)
    monkeypatch.setattr(events_module, "PAGE_SCAN", 10)
    s = Store.open(db_url)
    for i in range(N):
        event_type, account = kind(i)
        s.polls.record(
            account,
            "leads",
            key_items([{"id": str(i), "name": "Lead Rarename" if i == 33 else "Lead"}], ["id"]),
            event_type=event_type,
            emit_first=True,
            sinks=["crm", "ops"],
            now=T0 + timedelta(minutes=i),
        )
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE deliveries SET status = 'delivered'"))
        for sink, keys in (("crm", [str(i) for i in range(0, N, 9)]), ("ops", ["10", "20", "30"])):
            conn.execute(
                text(
                    "UPDATE deliveries SET status = 'dead' WHERE sink = :sink AND event_id IN "
                    "(SELECT id FROM events WHERE item_key IN :keys)"
                ).bindparams(bindparam("keys", expanding=True)),
                {"sink": sink, "keys": keys},
            )
    engine.dispose()
    yield s
    s.close()


def walk(store: Store, f: EventFilter, *, limit: int, search: str | None = None) -> list[EventPage]:
    """Every page, from the first, following next_cursor to the end."""
    pages = [store.events.page(f, limit=limit, search=search)]
    while pages[-1].next_cursor is not None:
        assert len(pages) < 200, "paging does not end"
        after = dataclasses.replace(f, before=pages[-1].next_cursor)
        pages.append(store.events.page(after, limit=limit, search=search))
    return pages


def keys(found: list[EventView]) -> list[str]:
    return [e.item_key for e in found]


def expected(store: Store, f: EventFilter) -> list[str]:
    return keys(store.events.list(f, limit=N + 1))


FILTERS = {
    "none": EventFilter(),
    "status dead (7 events: scanned)": EventFilter(statuses=("dead",)),
    "sink ops, status dead (3: exact)": EventFilter(sinks=("ops",), statuses=("dead",)),
    "type campaign.new (9: scanned)": EventFilter(types=("campaign.new",)),
    "account initech (12: scanned)": EventFilter(accounts=("initech",)),
    "type and status": EventFilter(types=("lead.new",), statuses=("dead",)),
    "account and sink status": EventFilter(
        accounts=("initech",), sinks=("crm",), statuses=("dead", "delivered")
    ),
    "since (20 minutes: scanned)": EventFilter(since=T0 + timedelta(minutes=N - 20)),
    "until (3 events: exact)": EventFilter(until=T0 + timedelta(minutes=3)),
    "type nobody has": EventFilter(types=("connection.new",)),
}


@pytest.mark.parametrize("limit", [1, 3, 50])
@pytest.mark.parametrize("name", list(FILTERS))
def test_paging_on_gives_exactly_the_unbounded_list(store: Store, name: str, limit: int) -> None:
    f = FILTERS[name]
    pages = walk(store, f, limit=limit)
    got = [k for p in pages for k in keys(p.events)]
    assert got == expected(store, f)
    assert all(len(p.events) <= limit for p in pages)


def test_a_sparse_filter_says_how_far_back_each_page_looked(store: Store) -> None:
    """Dead crm deliveries: events 54, 45, 36, 27, ... (every 9th); the newest 10 events
    (59..50) hold one, so the first page stops at event 50 and says so."""
    f = EventFilter(statuses=("dead",), sinks=("crm",))
    first = store.events.page(f, limit=3)
    assert keys(first.events) == ["54"]
    assert first.scanned_to == T0 + timedelta(minutes=50)
    (oldest_read,) = store.events.list(EventFilter(item_key="50", accounts=("initech",)), limit=1)
    assert first.next_cursor == oldest_read.id
    pages = walk(store, f, limit=3)
    assert [k for p in pages for k in keys(p.events)] == ["54", "45", "36", "27", "18", "9", "0"]
    assert pages[-1].next_cursor is None and pages[-1].scanned_to is None


def test_a_full_page_continues_from_its_last_event_without_a_bound(store: Store) -> None:
    first = store.events.page(EventFilter(), limit=3)
    assert keys(first.events) == ["59", "58", "57"]
    assert first.scanned_to is None
    assert first.next_cursor == first.events[-1].id


def test_a_filter_an_index_names_few_events_for_is_read_exactly(store: Store) -> None:
    """ops's dead deliveries (3 events): found across the whole table at once, no bound."""
    page = store.events.page(EventFilter(sinks=("ops",), statuses=("dead",)), limit=50)
    assert keys(page.events) == ["30", "20", "10"]
    assert page.next_cursor is None and page.scanned_to is None


@pytest.mark.parametrize(
    ("f", "term", "want"),
    [
        (EventFilter(), "rarename", ["33"]),
        (EventFilter(sinks=("ops",), statuses=("dead",)), "lead", ["30", "20", "10"]),
        (EventFilter(sinks=("ops",), statuses=("dead",)), "rarename", []),
        (EventFilter(statuses=("dead",), sinks=("crm",)), "lead", ["54", "45", "36"]),
    ],
)
def test_search_combines_with_the_filters(
    store: Store, f: EventFilter, term: str, want: list[str]
) -> None:
    page = store.events.page(f, limit=3, search=term)
    assert keys(page.events) == want
    assert page.scanned_to is None
