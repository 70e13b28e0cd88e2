"""A poll's items written to the outbox: keys marked seen, events and their deliveries; and
how one item never stops the others.

:func:`isolated` runs a write over a whole batch in a savepoint and, when the database
refuses it for an item's sake (a constraint, a value it cannot hold), again one item at a
time, setting aside the items it refuses (the quarantine); :class:`Writer` holds the
writes themselves. Both run inside the caller's transaction (:mod:`trigger_engine.db.polls`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from trigger_engine.core.dedupe import Quarantined
from trigger_engine.core.events import Unencodable, payload_of
from trigger_engine.db import events as event_rows
from trigger_engine.db import seen
from trigger_engine.db.engine import Database

# A payload is (key, item, its JSON text).
Encoded = tuple[str, Any, str]


def encoded(pairs: Sequence[tuple[str, Any]], set_aside: list[Quarantined]) -> list[Encoded]:
    """Each (key, item) with the JSON text its event will hold; an item that cannot be
    written (see :func:`trigger_engine.core.events.payload_of`) is set aside instead."""
    out: list[Encoded] = []
    for key, item in pairs:
        try:
            out.append((key, item, payload_of(item)))
        except Unencodable as exc:
            set_aside.append(Quarantined(key, f"cannot be written as an event: {exc}"))
    return out


# What the database says about one item (a constraint, a value it cannot hold), as opposed
# to the database failing (OperationalError: locked, gone, full), which fails the poll.
_ITEM_ERRORS = (sa_exc.IntegrityError, sa_exc.DataError, sa_exc.InternalError)


def item_error(exc: BaseException) -> bool:
    """Whether the database refused a write for an item's sake (a constraint, a value it
    cannot hold, a value the driver cannot even bind), rather than failing itself."""
    if not isinstance(exc, sa_exc.StatementError):
        return False
    if isinstance(exc, _ITEM_ERRORS):
        return True
    # not a DB-API error: the driver could not even bind a value (e.g. UnicodeEncodeError)
    return not isinstance(exc, sa_exc.DBAPIError)


_R = TypeVar("_R")


def bulk_then_item_by_item(write: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
    """``write(..., item_by_item=False)``, one transaction in bulk; when the database
    refuses it for an item's sake, it is rolled back whole, and done again with
    ``item_by_item=True`` (see :func:`isolated`)."""
    try:
        return write(*args, **kwargs, item_by_item=False)
    except sa_exc.StatementError as exc:
        if not item_error(exc):
            raise
    return write(*args, **kwargs, item_by_item=True)


def isolated(
    conn: Connection,
    batch: Sequence[Any],
    write: Callable[[Sequence[Any]], Tally],
    set_aside: list[Quarantined],
    *,
    item_by_item: bool,
) -> Tally:
    """``write(batch)``, or, ``item_by_item``, each item in a savepoint of its own, setting
    aside the items the database refuses. Returns the tally of what was written.

    The caller writes in bulk first, without savepoints (on SQLite a savepoint around a
    large write costs a fifth of it: every page it touches goes to a sub-journal); when
    the database refuses the bulk write for an item's sake (:func:`item_error`), the
    transaction is rolled back and done again item by item."""
    total = Tally()
    if not batch:
        return total
    if not item_by_item:
        return total.add(write(batch))
    for one in batch:
        try:
            with conn.begin_nested():
                done = write([one])
            total.add(done)
        except sa_exc.StatementError as exc:
            if not item_error(exc):
                raise
            set_aside.append(Quarantined(one[0], f"cannot be stored: {_reason_of(exc)}"))
    return total


def _reason_of(exc: sa_exc.StatementError) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return text.rstrip(".")[:300]


@dataclass
class Tally:
    """What a write wrote: keys marked seen, events and deliveries created."""

    inserted: list[str] = field(default_factory=list)
    events: int = 0
    deliveries: int = 0

    def add(self, other: Tally) -> Tally:
        """Count ``other`` in this one (a write that committed)."""
        self.inserted.extend(other.inserted)
        self.events += other.events
        self.deliveries += other.deliveries
        return self


class Writer:
    """Writes a poll's items (keys, events, deliveries); each method takes a batch and
    returns its :class:`Tally`, and is run by :func:`isolated`."""

    def __init__(
        self,
        db: Database,
        conn: Connection,
        account: str,
        trigger: str,
        event_type: str,
        sinks: Sequence[str],
        now: datetime,
        *,
        fire: bool = True,
        held: str | None = None,
        versions: dict[str, str] | None = None,
        old_versions: dict[str, str | None] | None = None,
    ) -> None:
        self.db, self.conn, self.now = db, conn, now
        self.account, self.trigger, self.event_type, self.sinks = (
            account,
            trigger,
            event_type,
            sinks,
        )
        self.fire, self.held = fire, held
        self.versions, self.old_versions = versions, old_versions or {}

    def new_items(self, batch: Sequence[Any]) -> Tally:
        """Mark new items seen and fire them (events and deliveries), unless seeding; an
        "updated item" trigger (``versions``) only remembers its new items."""
        fire = self.fire and self.versions is None
        inserted = seen.insert_keys(
            self.db,
            self.conn,
            self.account,
            self.trigger,
            [(entry[0], entry[1]) for entry in batch],
            seeded=fire is False and self.versions is None,
            now=self.now,
            versions=self.versions,
        )
        tally = Tally(inserted=[entry[0] for entry in batch if entry[0] in inserted])
        if fire:
            tally.add(self._fire([(k, text) for k, _item, text in batch if k in inserted]))
        return tally

    def changed_items(self, batch: Sequence[Encoded]) -> Tally:
        """Move changed items to their new version and fire those this poll moved (unless
        ``fire`` is off: a re-seed only moves them)."""
        assert self.versions is not None
        changes = [(k, text, self.versions[k], self.old_versions[k]) for k, _i, text in batch]
        moved = seen.bump_versions(self.conn, self.account, self.trigger, changes)
        return self._fire(moved) if self.fire else Tally()

    def remembered_items(self, batch: Sequence[Encoded]) -> Tally:
        """Backfill: fire remembered items, each at most once (the flag flips with it)."""
        keys = [k for k, _item, _text in batch]
        flipped = seen.unremember(self.conn, self.account, self.trigger, keys)
        return self._fire([(k, text) for k, _item, text in batch if k in flipped])

    def _fire(self, pairs: Sequence[tuple[str, str]]) -> Tally:
        if not pairs:
            return Tally()
        events, deliveries = event_rows.insert_events(
            self.conn,
            self.account,
            self.trigger,
            self.event_type,
            pairs,
            self.sinks,
            self.now,
            held=self.held,
        )
        return Tally(events=events, deliveries=deliveries)
