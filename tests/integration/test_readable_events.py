"""Events you can read, on SQLite and PostgreSQL: the payload search (case-insensitive,
combined with the other filters, indexed or bounded), one event with every attempt and the
start of each answer (at most 1 KB, through a real POST), unknown ids and stored types,
``triggers retry``'s backoff clearing, and old nodes pruned."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from tests.receiver import Answer, Receiver
from trigger_engine.config import Sink
from trigger_engine.core.dedupe import key_items
from trigger_engine.db import events as events_module
from trigger_engine.db.migrate import alembic_config
from trigger_engine.db.search_index import search_index
from trigger_engine.db.store import Store
from trigger_engine.delivery.attempt import attempt
from trigger_engine.states import RESPONSE_BODY_KEPT, DeliveryStatus
from trigger_engine.types import AttemptOutcome, EventFilter

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
SINKS = ("crm", "ops")

LEADS = [
    {"id": "1", "name": "Shaban Ali", "company": "Acme GmbH", "email": "shaban@acme.test"},
    {"id": "2", "name": "Émilie Dupont", "company": "Société Générale", "email": "e@sg.test"},
    {"id": "3", "name": "Olga Smirnova", "company": "Kaspersky", "email": "olga@k.test"},
    {"id": "4", "name": "100% Bob_Smith", "company": "Acme Ltd", "email": "bob@acme.test"},
]


# stores whose events are indexed as soon as they are written (see ``fire``)
_INDEXED_AT_ONCE: set[int] = set()


@pytest.fixture(
    params=[
        (windows, state)
        for windows in ("index-only", "small-windows", "windows")
        for state in ("indexed", "backlog")
    ],
    ids=lambda p: "-".join(p),
)
def store(
    db_url: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    """A store whose search answers through the index alone, through windows of the newest
    1 and 2 events and then the index, or through the default windows (wider than these
    tests' data: the scan reads them all); the events it is given indexed at once, or left
    in the search's backlog (as between two runs of the indexer)."""
    windows, state = request.param
    sizes = {"index-only": (), "small-windows": (1, 2), "windows": events_module.SEARCH_WINDOWS}
    monkeypatch.setattr(events_module, "SEARCH_WINDOWS", sizes[windows])
    s = Store.open(db_url)
    if state == "indexed":
        _INDEXED_AT_ONCE.add(id(s))
    yield s
    _INDEXED_AT_ONCE.discard(id(s))
    s.close()


def index_all(store: Store) -> int:
    """Run the search indexer until its backlog is empty; the events it indexed."""
    done = 0
    while moved := store.search_index.index_batch(limit=3):
        done += moved
    return done


def migrate(db_url: str, revision: str, step: Callable[[Config, str], None]) -> None:
    """Alembic's ``step`` (``command.upgrade`` or ``downgrade``) to ``revision``."""
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            step(alembic_config(conn), revision)
    finally:
        engine.dispose()


def fire(
    store: Store,
    items: list[dict[str, Any]],
    *,
    account: str = "acme",
    trigger: str = "leads",
    event_type: str = "lead.new",
    now: datetime = T0,
) -> None:
    store.polls.record(
        account,
        trigger,
        key_items(items, ["id"]),
        event_type=event_type,
        emit_first=True,
        sinks=list(SINKS),
        now=now,
    )
    if id(store) in _INDEXED_AT_ONCE:
        index_all(store)


def keys(store: Store, term: str, f: EventFilter | None = None, limit: int = 50) -> list[str]:
    page = store.events.search(f or EventFilter(), term, limit=limit)
    return [e.item_key for e in page.events]


def newest_first(store: Store, *wanted: str) -> list[str]:
    """``wanted`` in the order ``events`` lists them (newest first)."""
    return [e.item_key for e in store.events.list(EventFilter(), limit=50) if e.item_key in wanted]


def test_the_search_finds_the_payloads_holding_the_text_ignoring_case(store: Store) -> None:
    fire(store, LEADS)
    assert keys(store, "shaban ali") == ["1"]
    assert keys(store, "SHABAN") == ["1"]
    assert keys(store, "émilie") == ["2"]  # beyond ASCII too
    assert keys(store, "ÉMILIE DUPONT") == ["2"]
    assert keys(store, "acme") == newest_first(store, "1", "4")
    assert keys(store, "olga@k.test") == ["3"]
    assert keys(store, "nobody-has-this") == []
    # LIKE's wildcards are plain characters in a search
    assert keys(store, "100%") == ["4"]
    assert keys(store, "bob_smith") == ["4"]
    assert keys(store, "%") == ["4"]
    assert keys(store, "_") == ["4"]
    # a phrase quote is a plain character as well (JSON escapes it in the payload)
    assert keys(store, '"name"') == newest_first(store, "1", "2", "3", "4")
    assert keys(store, "acme", limit=1) == newest_first(store, "1", "4")[:1]


def test_the_search_combines_with_the_other_filters(store: Store) -> None:
    fire(store, LEADS[:2], now=T0)
    fire(store, [{"id": "9", "name": "Shaban Ali", "company": "Other"}], account="globex")
    fire(
        store,
        [{"id": "c1", "name": "Shaban Ali's campaign"}],
        trigger="campaigns",
        event_type="campaign.new",
        now=T0 + timedelta(hours=1),
    )
    assert keys(store, "shaban") == ["c1", "9", "1"]
    assert keys(store, "shaban", EventFilter(accounts=("globex",))) == ["9"]
    assert keys(store, "shaban", EventFilter(types=("campaign.new",))) == ["c1"]
    assert keys(store, "shaban", EventFilter(since=T0 + timedelta(minutes=30))) == ["c1"]
    assert keys(store, "shaban", EventFilter(until=T0 + timedelta(minutes=30))) == ["9", "1"]
    assert keys(store, "shaban", EventFilter(statuses=("delivered",))) == []
    assert keys(store, "shaban", EventFilter(statuses=("pending",), sinks=("crm",))) == [
        "c1",
        "9",
        "1",
    ]
    assert keys(store, "shaban", EventFilter(sinks=("elsewhere",))) == []


def test_an_index_serves_the_search_and_a_short_term_is_bounded(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for lead in LEADS:  # one poll each: lead 4 is the newest
        fire(store, [lead])
    indexed = store.events.search(EventFilter(), "acme", limit=50)
    assert indexed.indexed and indexed.bounded_at is None  # migration 0009 made the index
    # a term under 3 characters: trigrams cannot serve it, the newest events are read
    monkeypatch.setattr(events_module, "SEARCH_SCAN_BOUND", 2)
    short = store.events.search(EventFilter(), "sh", limit=50)
    assert not short.indexed
    assert short.events == []  # only leads 3 and 4 were read: neither holds "sh"
    assert short.bounded_at == 2  # and it says that older ones were left out
    found = store.events.search(EventFilter(), "ol", limit=1)
    assert [e.item_key for e in found.events] == ["3"]
    assert found.bounded_at is None  # the page is full: nothing is missing from it


def test_events_written_before_the_search_index_are_found(db_url: str) -> None:
    """An upgrade from 0008 (the migration before the index) indexes the events already there."""
    migrate(db_url, "0008", command.upgrade)
    with Store.open(db_url, upgrade=False) as old:
        fire(old, LEADS[:1])
    with Store.open(db_url) as store:
        assert keys(store, "SHABAN") == ["1"]
        fire(store, LEADS[1:2])
        assert keys(store, "émilie") == ["2"]
        # and a pruned event leaves the index with it (SQLite: the delete trigger)
        assert store.events.prune(T0 + timedelta(days=1)) == 0  # not delivered: kept
    migrate(db_url, "0008", command.downgrade)
    migrate(db_url, "head", command.upgrade)


def test_one_event_shows_its_payload_and_every_attempt_with_the_answer(store: Store) -> None:
    big = {"id": "big", "n": 18446744073709551617, "name": "Zoë"}
    fire(store, [big])
    (event,) = store.events.list(EventFilter(), limit=10)
    answers = iter(
        [
            Answer(status=500, body=b"x" * 5000),  # more than a KB: the first KB is kept
            Answer(status=200, body=b"\xff\x00ok \x1b[2J"),  # undecodable, a NUL, an escape
        ]
    )
    with Receiver(lambda _r: next(answers)) as receiver:
        crm = Sink(name="crm", url=receiver.url)  # type: ignore[call-arg]
        for number in (1, 2):
            (due,) = store.deliveries.claim_due(
                owner="n",
                now=T0 + timedelta(hours=number),
                lease=60,
                capacity={"crm": 10},
            )
            outcome = asyncio.run(_attempt(crm, due, T0 + timedelta(hours=number)))
            store.deliveries.record_attempts([outcome], owner="n")
    detail = store.events.detail(event.id)
    assert detail is not None
    assert detail.event.id == event.id
    assert '"n":18446744073709551617' in detail.payload
    first, second = detail.attempts["crm"]
    assert (first.attempt, first.status_code, first.error) == (
        1,
        500,
        "HTTP 500 Internal Server Error",
    )
    assert first.response_body == "x" * RESPONSE_BODY_KEPT
    assert first.started_at == T0 + timedelta(hours=1)
    assert (second.attempt, second.status_code, second.error) == (2, 200, None)
    assert second.response_body == "\ufffd\ufffdok \x1b[2J"
    assert detail.attempts["ops"] == ()
    assert [d.sink for d in detail.event.deliveries] == ["crm", "ops"]
    assert store.events.detail("evt_doesnotexist") is None


async def _attempt(sink: Sink, due: Any, moment: datetime) -> AttemptOutcome:
    async with aiohttp.ClientSession() as session:
        return await attempt(session, sink, due, clock=lambda: moment, rand=lambda: 0.5)


def test_unknown_event_ids_and_stored_types(store: Store) -> None:
    fire(store, LEADS[:1])
    fire(store, [{"id": "x"}], trigger="old", event_type="old.thing")
    known = store.events.list(EventFilter(), limit=10)[0].id
    assert store.events.missing([known, "evt_a", "evt_b", "evt_a"]) == ["evt_a", "evt_b"]
    assert store.events.missing([known]) == []
    assert store.events.types() == ["lead.new", "old.thing"]


def test_triggers_retry_clears_the_backoff_and_keeps_the_failures(store: Store) -> None:
    assert store.polls.clear_backoff("acme", "leads") is None  # never polled
    store.polls.record_failure(
        "acme",
        "leads",
        outcome="transient",
        error="HTTP 500",
        backoff_until=T0 + timedelta(hours=1),
        now=T0,
    )
    before = store.polls.clear_backoff("acme", "leads")
    assert before is not None and before.backoff_until == T0 + timedelta(hours=1)
    after = store.polls.state("acme", "leads")
    assert after is not None
    assert after.backoff_until is None
    assert after.consecutive_failures == 1  # still failing until a poll succeeds


def test_nodes_stopped_or_vanished_a_day_ago_are_pruned(store: Store) -> None:
    day = timedelta(days=1)
    store.nodes.heartbeat("stopped-old", version="1", now=T0 - day - timedelta(minutes=1))
    store.nodes.heartbeat(
        "stopped-old", version="1", now=T0 - day - timedelta(seconds=1), stopping=True
    )
    store.nodes.heartbeat("stopped-recent", version="1", now=T0 - timedelta(hours=23))
    store.nodes.heartbeat(
        "stopped-recent", version="1", now=T0 - timedelta(hours=23), stopping=True
    )
    store.nodes.heartbeat("vanished-old", version="1", now=T0 - day - timedelta(seconds=1))
    store.nodes.heartbeat("vanished-recent", version="1", now=T0 - timedelta(hours=2))
    store.nodes.heartbeat("alive", version="1", now=T0)
    assert store.nodes.prune(T0 - day) == ["stopped-old", "vanished-old"]
    assert [v.name for v in store.nodes.views(T0)] == [
        "alive",
        "stopped-recent",
        "vanished-recent",
    ]
    assert store.nodes.prune(T0 - day) == []


def test_the_search_index_is_there_on_both_databases(db_url: str) -> None:
    """Migrations 0009 and 0012 made the index and its backlog here (FTS5 with trigrams;
    pg_trgm on a table of its own): the search at a million events relies on it
    (benchmarks/search.py)."""
    with Store.open(db_url) as store, store.db.tx() as conn:
        assert search_index(conn) is not None
        if conn.dialect.name == "postgresql":  # 0009's index on events.payload is gone
            assert not conn.execute(
                text(
                    "SELECT 1 FROM pg_indexes WHERE indexname = 'ix_events_payload_trgm' "
                    "AND schemaname = ANY (current_schemas(false))"
                )
            ).all()


def indexed_count(store: Store) -> int:
    """The events the search index holds (SQLite: FTS5's per-document sizes)."""
    table = "events_search_docsize" if store.dialect == "sqlite" else "events_search"
    with store.db.tx() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_a_poll_writes_no_index_the_indexer_does_it_afterwards(db_url: str) -> None:
    """The trigram index costs ~100x the event row: a poll's transaction only adds its
    events to the backlog; the indexer moves them into the index, oldest first, in
    batches, and the search finds them before and after."""
    with Store.open(db_url) as store:
        fire(store, LEADS)
        assert store.search_index.backlog() == 4
        assert indexed_count(store) == 0
        assert keys(store, "acme") == newest_first(store, "1", "4")
        assert store.search_index.index_batch(limit=3) == 3
        assert (store.search_index.backlog(), indexed_count(store)) == (1, 3)
        assert keys(store, "acme") == newest_first(store, "1", "4")  # one indexed, one not
        assert store.search_index.index_batch(limit=3) == 1
        assert store.search_index.index_batch(limit=3) == 0  # nothing left
        assert (store.search_index.backlog(), indexed_count(store)) == (0, 4)
        assert keys(store, "acme") == newest_first(store, "1", "4")
        assert keys(store, "ÉMILIE") == ["2"]


def test_the_backlog_too_is_read_up_to_a_bound_and_the_page_says_so(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog larger than SEARCH_SCAN_BOUND (after a first poll of 100,000 leads, say)
    is read newest first up to the bound; a page it could not fill says so."""
    monkeypatch.setattr(events_module, "SEARCH_WINDOWS", ())
    monkeypatch.setattr(events_module, "SEARCH_SCAN_BOUND", 2)
    with Store.open(db_url) as store:
        for lead in LEADS:  # one poll each: lead 1 is the oldest
            fire(store, [lead])
        missed = store.events.search(EventFilter(), "shaban", limit=10)
        assert (missed.events, missed.bounded_at) == ([], 2)
        full = store.events.search(EventFilter(), "acme", limit=1)  # lead 4, the newest
        assert ([e.item_key for e in full.events], full.bounded_at) == (["4"], None)
        index_all(store)
        found = store.events.search(EventFilter(), "shaban", limit=10)
        assert ([e.item_key for e in found.events], found.bounded_at) == (["1"], None)


def test_pruning_takes_events_out_of_the_index_and_the_backlog_alike(store: Store) -> None:
    """An indexed event and one still in the backlog are pruned alike: neither is left in
    the index or the backlog (SQLite: an FTS5 'delete' only for what it holds)."""
    fire(store, LEADS[:2])
    store.search_index.index_batch(limit=1)  # lead 1 indexed (or both, indexed at once)
    fire(store, LEADS[2:])
    claimed = store.deliveries.claim_due(
        owner="n", now=T0, lease=60, capacity={s: 100 for s in SINKS}
    )
    delivered = DeliveryStatus.DELIVERED
    store.deliveries.record_attempts(
        [AttemptOutcome(d.id, d.sink, d.event_id, 1, T0, 5, 200, None, delivered) for d in claimed],
        owner="n",
    )
    assert store.events.prune(T0 + timedelta(days=1)) == 4
    assert (store.search_index.backlog(), indexed_count(store)) == (0, 0)
    fire(store, [{"id": "5", "name": "Shaban Again"}])
    index_all(store)
    assert keys(store, "shaban") == ["5"]
    assert indexed_count(store) == 1
    if store.dialect == "sqlite":  # the FTS5 table agrees with its content, row for row
        with store.db.tx() as conn:
            conn.execute(
                text("INSERT INTO events_search(events_search) VALUES ('integrity-check')")
            )


def test_an_upgrade_from_0011_and_back_keeps_every_event_findable(db_url: str) -> None:
    """0011 indexed in the poll's transaction. After 0012, SQLite's events stay indexed
    and PostgreSQL's enter the backlog (its index moved to a table of its own); back to
    0011, every event is in 0011's index again."""
    migrate(db_url, "0011", command.upgrade)
    with Store.open(db_url, upgrade=False) as old:
        fire(old, LEADS[:2])
    with Store.open(db_url) as store:
        waiting = 0 if store.dialect == "sqlite" else 2
        assert store.search_index.backlog() == waiting
        assert keys(store, "ÉMILIE") == ["2"]
        fire(store, LEADS[2:3])  # lead 3 waits in the backlog
        assert keys(store, "olga") == ["3"]
    migrate(db_url, "0011", command.downgrade)
    with Store.open(db_url, upgrade=False) as old, old.db.tx() as conn:
        if old.dialect == "sqlite":  # in 0009's FTS5 table, rebuilt
            found = conn.execute(
                text(
                    "SELECT rowid FROM events_search WHERE events_search MATCH '\"olga\" OR shaban'"
                )
            ).all()
            assert len(found) == 2
        else:  # 0009's index on events.payload, made again
            assert conn.execute(
                text(
                    "SELECT 1 FROM pg_indexes WHERE indexname = 'ix_events_payload_trgm' "
                    "AND schemaname = ANY (current_schemas(false))"
                )
            ).all()
