"""Events (``events``) and the delivery rows created with them: the outbox.

:func:`insert_events` runs inside a poll's (or a backfill's) transaction, so an item's
seen key, its event and one delivery per subscribed sink are written together or not at
all. The repository reads them back (``events``) and prunes what is fully delivered.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    column,
    delete,
    exists,
    func,
    insert,
    literal_column,
    select,
    table,
)
from sqlalchemy.sql.elements import ColumnElement

from trigger_engine.core.events import new_event_id
from trigger_engine.db.engine import CASEFOLD, CHUNK, Database, chunks, units_of_work
from trigger_engine.db.schema import (
    SEARCH_TABLE,
    attempts,
    deliveries,
    events,
    search_backlog,
)
from trigger_engine.db.search_index import search_index
from trigger_engine.db.sinks import holding_sinks
from trigger_engine.states import DeliveryStatus, HoldKind
from trigger_engine.types import AttemptView, DeliveryView, EventDetail, EventFilter, EventView

# events --search: the newest events a search reads at most when no index can serve it
# (a term under 3 characters, which trigrams cannot index; SQLite without FTS5; PostgreSQL
# without pg_trgm). The answer says when older events were left unsearched.
SEARCH_SCAN_BOUND = 200_000
SEARCH_INDEXED_FROM = 3  # characters: the shortest term a trigram index serves
# The newest events read before the index is asked, in turn: a common term fills its page
# there (the index would list every event holding it: a second at a million on SQLite).
SEARCH_WINDOWS = (5_000, 50_000)

# The console's events pages (:meth:`EventRepository.page`) stay fast at millions of events:
# a filter is answered exactly when one of its indexed parts (the deliveries' status or
# sink, the type, the account, the time range, the ids) names at most PAGE_EXACT_UP_TO
# events; otherwise only the newest PAGE_SCAN events before the cursor are read, and the
# page says how far back it looked and continues from there.
PAGE_EXACT_UP_TO = 5_000
PAGE_SCAN = 20_000

_fts = table(SEARCH_TABLE, column("rowid"))  # SQLite
_pg_search = table(SEARCH_TABLE, column("seq"), column("payload"))  # PostgreSQL


@dataclass(frozen=True)
class SearchPage:
    """The events a payload search found, newest first, and, when it read only the newest
    ``SEARCH_SCAN_BOUND`` events (no index could serve it) and older ones exist, that bound."""

    events: list[EventView]
    bounded_at: int | None = None
    indexed: bool = True


@dataclass(frozen=True)
class EventPage:
    """One page of events, newest first. ``next_cursor``: the event id the next (older)
    page continues before, None at the end. ``scanned_to``: when the page read only the
    newest :data:`PAGE_SCAN` events before its cursor and did not fill, the time of the
    oldest event it read (older events were not looked at: ``next_cursor`` goes on from
    there). ``bounded_at`` and ``indexed``: a search's, as in :class:`SearchPage`."""

    events: list[EventView]
    next_cursor: str | None
    scanned_to: datetime | None = None
    bounded_at: int | None = None
    indexed: bool = True


def insert_events(
    conn: Connection,
    account: str,
    trigger: str,
    event_type: str,
    items: Sequence[tuple[str, str]],
    sinks: Sequence[str],
    now: datetime,
    *,
    held: str | None = None,
    ids: Sequence[str] | None = None,
) -> tuple[int, int]:
    """Events for ``items`` (key, the item's JSON text) and a delivery per sink: pending
    (due now); held by the flood guard (with ``held`` as the reason) until a replay; or
    held for a paused or disabled sink until it is resumed or enabled. ``ids``: the
    events' ids, one per item (default: new ones). Returns (events, deliveries) created."""
    holding = holding_sinks(conn)
    created = 0
    given = None if ids is None else iter(ids)
    for chunk in chunks(items):
        event_rows = []
        delivery_rows = []
        for key, payload in chunk:
            event_id = new_event_id() if given is None else next(given)
            event_rows.append(
                {
                    "id": event_id,
                    "type": event_type,
                    "account": account,
                    "trigger": trigger,
                    "item_key": key,
                    "payload": payload,
                    "created_at": now,
                }
            )
            for sink in sinks:
                hold: HoldKind | None = None
                note: str | None = None
                if held is not None:  # first: only a replay sends what the guard held
                    hold, note = HoldKind.FLOOD_GUARD, held
                elif sink in holding:
                    hold, note = HoldKind.SINK, holding[sink]
                delivery_rows.append(
                    {
                        "event_id": event_id,
                        "sink": sink,
                        "status": DeliveryStatus.PENDING if hold is None else DeliveryStatus.HELD,
                        "held_by": hold,
                        "next_attempt_at": now if hold is None else None,
                        "last_error": note,
                        "created_at": now,
                    }
                )
        conn.execute(insert(events), event_rows)
        if delivery_rows:
            conn.execute(insert(deliveries), delivery_rows)
        created += len(delivery_rows)
    return len(items), created


def event_conditions(f: EventFilter, *, unindexed: bool = False) -> list[ColumnElement[bool]]:
    """The event-level part of a filter, as WHERE conditions on ``events``. ``unindexed``
    (SQLite): the type, account and key written so that no index can serve them (``col ||
    ''``), for a read that must walk ``seq`` (SQLite's planner, without statistics, would
    rather walk the type's index through every event of that type)."""
    conds: list[ColumnElement[bool]] = []

    def col(c: Any) -> Any:
        return c.concat("") if unindexed else c

    if f.event_ids:
        conds.append(events.c.id.in_(f.event_ids))
    if f.since is not None:
        conds.append(events.c.created_at >= f.since)
    if f.until is not None:
        conds.append(events.c.created_at < f.until)
    if f.types:
        conds.append(col(events.c.type).in_(f.types))
    if f.accounts:
        conds.append(col(events.c.account).in_(f.accounts))
    if f.item_key is not None:
        conds.append(col(events.c.item_key) == f.item_key)
    if f.before is not None:  # keyset on seq: as fast on page 1,000 as on page 1
        cursor = select(events.c.seq).where(events.c.id == f.before).scalar_subquery()
        conds.append(events.c.seq < cursor)
    return conds


def delivery_conditions(f: EventFilter, *, unindexed: bool = False) -> list[ColumnElement[bool]]:
    """The delivery-level part of a filter, as WHERE conditions on ``deliveries``;
    ``unindexed``: written so that no index serves them (see :func:`_filtered`)."""
    conds: list[ColumnElement[bool]] = []
    sink = deliveries.c.sink.concat("") if unindexed else deliveries.c.sink
    status = deliveries.c.status.concat("") if unindexed else deliveries.c.status
    if f.sinks:
        conds.append(sink.in_(f.sinks))
    if f.statuses:
        conds.append(status.in_(f.statuses))
    return conds


@units_of_work
class EventRepository:
    """Reads events with their deliveries; prunes the fully delivered ones."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def list(self, f: EventFilter, *, limit: int) -> list[EventView]:
        """Events matching ``f``, newest first, each with all its deliveries."""
        sqlite = self.db.dialect == "sqlite"
        query = _filtered(_SUMMARY, f, sqlite=sqlite).order_by(events.c.seq.desc()).limit(limit)
        with self.db.tx() as conn:
            return _views(conn, conn.execute(query).all())

    def page(self, f: EventFilter, *, limit: int, search: str | None = None) -> EventPage:
        """One page of the events matching ``f`` (and holding ``search`` in their payload,
        when given), newest first, before ``f.before``: the console's and the admin API's
        events list, fast at millions of events.

        Exact when an index names at most :data:`PAGE_EXACT_UP_TO` events for a part of
        the filter (say ``status=dead``): those are read and filtered. Otherwise, without a
        search, only the newest :data:`PAGE_SCAN` events before the cursor are read; a page
        they do not fill says so (``scanned_to``) and its ``next_cursor`` continues below
        them, so paging on reads every event exactly once. With a search and no small
        part, :meth:`search` answers (its own bounds)."""
        with self.db.tx() as conn:
            upper: int | None = None
            if f.before is not None:
                upper = conn.execute(
                    select(events.c.seq).where(events.c.id == f.before)
                ).scalar_one_or_none()
                if upper is None:
                    return EventPage([], None)
            rest = dataclasses.replace(f, before=None)
            contains = (
                None if search is None else events.c.payload.icontains(search, autoescape=True)
            )
            seqs = self._candidates(conn, rest)
            if seqs is not None:
                if upper is not None:
                    seqs = [s for s in seqs if s < upper]
                return self._exact(conn, rest, seqs, limit, contains)
        if search is not None:
            found = self.search(f, search, limit=limit + 1)
            more = len(found.events) > limit
            shown = found.events[:limit]
            return EventPage(
                shown,
                shown[-1].id if more else None,
                bounded_at=found.bounded_at,
                indexed=found.indexed,
            )
        with self.db.tx() as conn:
            return self._scan(conn, rest, upper, limit)

    def _candidates(self, conn: Connection, f: EventFilter) -> builtins.list[int] | None:
        """The ``seq`` of every event that may match ``f``, when an index names at most
        :data:`PAGE_EXACT_UP_TO` of them for one part of it; None when none does."""
        bound = PAGE_EXACT_UP_TO + 1
        probes: builtins.list[Select[Any]] = []
        if f.event_ids:
            probes.append(select(events.c.seq).where(events.c.id.in_(f.event_ids[:bound])))
        delivery_conds = delivery_conditions(f)
        if delivery_conds:
            ids = list(
                conn.execute(
                    select(deliveries.c.event_id).where(*delivery_conds).distinct().limit(bound)
                ).scalars()
            )
            if len(ids) < bound:
                found: builtins.list[int] = []
                for chunk in chunks(ids):
                    found += conn.execute(
                        select(events.c.seq).where(events.c.id.in_(chunk))
                    ).scalars()
                return found
        if f.types:
            probes.append(select(events.c.seq).where(events.c.type.in_(f.types)))
        if f.accounts:
            probe = select(events.c.seq).where(events.c.account.in_(f.accounts))
            if f.item_key is not None:
                probe = probe.where(events.c.item_key == f.item_key)
            probes.append(probe)
        if f.since is not None or f.until is not None:
            probe = select(events.c.seq)
            if f.since is not None:
                probe = probe.where(events.c.created_at >= f.since)
            if f.until is not None:
                probe = probe.where(events.c.created_at < f.until)
            probes.append(probe)
        for probe in probes:
            seqs = list(conn.execute(probe.limit(bound)).scalars())
            if len(seqs) < bound:
                return seqs
        return None

    def _exact(
        self,
        conn: Connection,
        f: EventFilter,
        seqs: Sequence[int],
        limit: int,
        contains: ColumnElement[bool] | None,
    ) -> EventPage:
        """The page among the events ``seqs`` (at most PAGE_EXACT_UP_TO): the candidates
        newest first, in batches that grow (a page is usually filled by the first), until
        the page and one more are found or the candidates run out."""
        ordered = sorted(seqs, reverse=True)
        matching: builtins.list[int] = []
        start, size = 0, 2 * (limit + 1)
        while start < len(ordered) and len(matching) <= limit:
            batch = ordered[start : start + size]
            query = _filtered([events.c.seq], f, sqlite=self.db.dialect == "sqlite").where(
                events.c.seq.in_(batch)
            )
            if contains is not None:
                query = query.where(contains)
            matching += sorted(conn.execute(query).scalars(), reverse=True)
            start, size = start + size, min(4 * size, CHUNK)
        shown = matching[:limit]
        rows = conn.execute(
            select(*_SUMMARY).where(events.c.seq.in_(shown)).order_by(events.c.seq.desc())
        ).all()
        more = len(matching) > limit
        return EventPage(_views(conn, rows), rows[-1].id if more and rows else None)

    def _scan(self, conn: Connection, f: EventFilter, upper: int | None, limit: int) -> EventPage:
        """The page among the newest PAGE_SCAN events below ``upper`` (all: None)."""
        below = [] if upper is None else [events.c.seq < upper]
        floor = conn.execute(
            select(events.c.seq)
            .where(*below)
            .order_by(events.c.seq.desc())
            .offset(PAGE_SCAN - 1)
            .limit(1)
        ).scalar_one_or_none()
        window = below if floor is None else [*below, events.c.seq >= floor]
        sqlite = self.db.dialect == "sqlite"
        query = (
            _filtered(_SUMMARY, f, sqlite=sqlite, unindexed=sqlite)
            .where(*window)
            .order_by(events.c.seq.desc())
            .limit(limit + 1)
        )
        rows = conn.execute(query).all()
        if len(rows) > limit:
            return EventPage(_views(conn, rows[:limit]), rows[limit - 1].id)
        if floor is None:  # it read every event below the cursor
            return EventPage(_views(conn, rows), None)
        last = conn.execute(
            select(events.c.id, events.c.created_at).where(events.c.seq == floor)
        ).one()
        return EventPage(_views(conn, rows), last.id, scanned_to=last.created_at)

    def search(self, f: EventFilter, term: str, *, limit: int) -> SearchPage:
        """Events matching ``f`` whose payload (its JSON text) contains ``term``, ignoring
        case, newest first, each with all its deliveries.

        On SQLite the newest :data:`SEARCH_WINDOWS` events are read first, in turn (a term
        most events hold fills the page there, in milliseconds, where the FTS5 index would
        list every event holding it); when they do not fill the page (and on PostgreSQL at
        once), the trigram index answers for the events it holds (SQLite: the FTS5 table;
        PostgreSQL: the pg_trgm GIN index on ``events_search`` under ``ILIKE``), fast for a
        term few events hold, and the events still in its backlog (written, not yet
        indexed: ``db/search_index.py``) are read, the newest :data:`SEARCH_SCAN_BOUND` of
        them at most. Without an index (a term under 3 characters, or none made) only the
        newest :data:`SEARCH_SCAN_BOUND` events are read. Either way the page says so when
        older events were left out."""
        with self.db.tx() as conn:
            index = search_index(conn)
            indexed = index is not None and len(term) >= SEARCH_INDEXED_FROM
            # two statements: SQLite reads max() or min() from the index, not both at once
            top = conn.execute(select(func.max(events.c.seq))).scalar_one_or_none()
            first = conn.execute(select(func.min(events.c.seq))).scalar_one_or_none()
            if top is None or first is None:
                return SearchPage([], indexed=indexed)
            sqlite = self.db.dialect == "sqlite"
            base = (
                _filtered((*_SUMMARY, events.c.seq), f, sqlite=sqlite)
                .order_by(events.c.seq.desc())
                .limit(limit)
            )
            contains = events.c.payload.icontains(term, autoescape=True)
            # The windows serve SQLite, whose FTS5 index would list every event holding a
            # common term; PostgreSQL's planner weighs the GIN index against reading the
            # newest events itself (pg_trgm's estimates), and its windows, which could not
            # use the index (on a table of its own), cost 150 ms at a million events
            # (benchmarks/RESULTS.md). SQLite's lower() folds ASCII only: a window scan
            # could miss "Émilie" for "ÉMILIE", which the FTS5 index (Unicode folding) finds.
            windows: tuple[int, ...] = ()
            if index == SEARCH_TABLE and term.isascii():
                windows = SEARCH_WINDOWS
            if not indexed:
                windows = (SEARCH_SCAN_BOUND,)
            rows: Sequence[Any] = []
            for window in windows:
                rows = conn.execute(base.where(events.c.seq > top - window, contains)).all()
                if len(rows) >= limit or top - window < first:  # full, or it read them all
                    return SearchPage(_views(conn, rows), indexed=indexed)
            if not indexed:  # the newest SEARCH_SCAN_BOUND read, older ones left out
                return SearchPage(_views(conn, rows), bounded_at=SEARCH_SCAN_BOUND, indexed=indexed)
            if index == SEARCH_TABLE:
                phrase = '"' + term.replace('"', '""') + '"'
                in_index = base.join(_fts, _fts.c.rowid == events.c.seq).where(
                    literal_column(SEARCH_TABLE).op("MATCH")(phrase)
                )
            else:
                in_index = base.join(_pg_search, _pg_search.c.seq == events.c.seq).where(
                    _pg_search.c.payload.ilike(_like(term), escape="\\")
                )
            if sqlite and not term.isascii():  # lower() would fold ASCII only
                contains = getattr(func, CASEFOLD)(events.c.payload).contains(
                    term.casefold(), autoescape=True
                )
            # the backlog's newest SEARCH_SCAN_BOUND events at most (it holds a few seconds
            # of events while the indexer keeps up; more after an upgrade to 0012 on
            # PostgreSQL, or a first poll that fired 100,000 leads, until it catches up),
            # read as a range of seq: without one, a planner that cannot know the backlog
            # is small would read every event and look each up in it
            below = conn.execute(
                select(search_backlog.c.seq)
                .order_by(search_backlog.c.seq.desc())
                .offset(SEARCH_SCAN_BOUND)
                .limit(1)
            ).scalar_one_or_none()
            oldest = conn.execute(select(func.min(search_backlog.c.seq))).scalar_one_or_none()
            queries = [in_index]
            if oldest is not None:
                low = oldest if below is None else below + 1
                queries.append(
                    base.join(search_backlog, search_backlog.c.seq == events.c.seq).where(
                        events.c.seq >= low, search_backlog.c.seq >= low, contains
                    )
                )
            found = [row for query in queries for row in conn.execute(query).all()]
            found.sort(key=lambda r: r.seq, reverse=True)
            page = found[:limit]
            # events left unread could belong on the page only when it did not fill up
            bounded = below is not None and len(page) < limit
            return SearchPage(
                _views(conn, page),
                bounded_at=SEARCH_SCAN_BOUND if bounded else None,
                indexed=indexed,
            )

    def detail(self, event_id: str) -> EventDetail | None:
        """One event with its payload and every delivery with every attempt (oldest
        first); None when there is no such event."""
        with self.db.tx() as conn:
            row = conn.execute(
                select(*_SUMMARY, events.c.payload).where(events.c.id == event_id)
            ).first()
            if row is None:
                return None
            (view,) = _views(conn, [row])
            by_sink: dict[str, list[AttemptView]] = {d.sink: [] for d in view.deliveries}
            for a in conn.execute(
                select(deliveries.c.sink, attempts)
                .join(deliveries, deliveries.c.id == attempts.c.delivery_id)
                .where(deliveries.c.event_id == event_id)
                .order_by(deliveries.c.sink, attempts.c.attempt, attempts.c.id)
            ):
                by_sink.setdefault(a.sink, []).append(
                    AttemptView(
                        attempt=a.attempt,
                        started_at=a.started_at,
                        duration_ms=a.duration_ms,
                        status_code=a.status_code,
                        error=a.error,
                        response_body=a.response_body,
                    )
                )
        return EventDetail(
            event=view,
            payload=row.payload,
            attempts={sink: tuple(found) for sink, found in by_sink.items()},
        )

    def missing(self, event_ids: Sequence[str]) -> builtins.list[str]:
        """Those of ``event_ids`` that name no stored event, in the order given."""
        known: set[str] = set()
        with self.db.tx() as conn:
            for chunk in chunks(list(dict.fromkeys(event_ids))):
                known.update(
                    conn.execute(select(events.c.id).where(events.c.id.in_(chunk))).scalars()
                )
        return [i for i in dict.fromkeys(event_ids) if i not in known]

    def types(self) -> builtins.list[str]:
        """The event types stored (for a "did you mean"; reads every event, so a command
        asks only when a type it was given is not configured)."""
        with self.db.tx() as conn:
            return sorted(conn.execute(select(events.c.type).distinct()).scalars())

    def prune(self, cutoff: datetime) -> int:
        """Delete events older than ``cutoff`` whose every delivery is delivered (and
        their deliveries and attempts). Pending, failed, held (a paused or disabled sink's
        included, however long it waits) and dead deliveries, and the seen keys, are never
        touched. Returns the number of events deleted."""
        undelivered = exists().where(
            deliveries.c.event_id == events.c.id,
            deliveries.c.status != DeliveryStatus.DELIVERED,
        )
        deleted = 0
        while True:
            with self.db.tx() as conn:
                ids = list(
                    conn.execute(
                        select(events.c.id)
                        .where(events.c.created_at < cutoff, ~undelivered)
                        .limit(CHUNK)
                    ).scalars()
                )
                if not ids:
                    return deleted
                delivery_ids = select(deliveries.c.id).where(deliveries.c.event_id.in_(ids))
                conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(delivery_ids)))
                conn.execute(delete(deliveries).where(deliveries.c.event_id.in_(ids)))
                conn.execute(delete(events).where(events.c.id.in_(ids)))
                deleted += len(ids)


# What ``events`` shows of an event (its payload is read only by ``events show``).
_SUMMARY = (
    events.c.id,
    events.c.type,
    events.c.account,
    events.c.trigger,
    events.c.item_key,
    events.c.created_at,
)


def _filtered(
    columns: Sequence[Any], f: EventFilter, *, sqlite: bool = False, unindexed: bool = False
) -> Select[Any]:
    """SELECT ``columns`` of the events matching ``f`` (an event matches the delivery part
    of ``f`` when one of its deliveries does); ``unindexed``: see :func:`event_conditions`.

    ``sqlite``: the delivery part, a correlated EXISTS, is written so that SQLite looks an
    event's deliveries up by ``event_id`` (its unique index): without statistics its planner
    would walk the status index instead, through every delivered row for each event."""
    query = select(*columns).where(*event_conditions(f, unindexed=unindexed))
    delivery_conds = delivery_conditions(f, unindexed=sqlite)
    if delivery_conds:
        query = query.where(exists().where(deliveries.c.event_id == events.c.id, *delivery_conds))
    return query


def _like(term: str) -> str:
    """An ``ILIKE`` pattern for "contains ``term``", its wildcards escaped."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _views(conn: Connection, rows: Sequence[Any]) -> list[EventView]:
    """The events of ``rows`` (the ``_SUMMARY`` columns), each with all its deliveries."""
    by_event: dict[str, list[DeliveryView]] = {r.id: [] for r in rows}
    for chunk in chunks(list(by_event)):
        for d in conn.execute(
            select(deliveries).where(deliveries.c.event_id.in_(chunk)).order_by(deliveries.c.sink)
        ):
            by_event[d.event_id].append(
                DeliveryView(
                    sink=d.sink,
                    status=d.status,
                    attempts=d.attempts,
                    in_flight=d.lease_owner is not None,
                    last_attempt_at=d.last_attempt_at,
                    last_status_code=d.last_status_code,
                    last_error=d.last_error,
                    next_attempt_at=d.next_attempt_at,
                    delivered_at=d.delivered_at,
                )
            )
    return [
        EventView(
            id=r.id,
            type=r.type,
            account=r.account,
            trigger=r.trigger,
            item_key=r.item_key,
            created_at=r.created_at,
            deliveries=tuple(by_event[r.id]),
        )
        for r in rows
    ]
