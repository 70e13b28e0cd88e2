"""Events (``events``) and the delivery rows created with them: the outbox.

:func:`insert_events` runs inside a poll's (or a backfill's) transaction, so an item's
seen key, its event and one delivery per subscribed sink are written together or not at
all. The repository reads them back (``events``) and prunes what is fully delivered.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, delete, exists, insert, select
from sqlalchemy.sql.elements import ColumnElement

from trigger_engine.core.events import new_event_id
from trigger_engine.db.engine import CHUNK, Database, chunks, units_of_work
from trigger_engine.db.schema import attempts, deliveries, events
from trigger_engine.db.sinks import holding_sinks
from trigger_engine.types import DeliveryStatus, DeliveryView, EventFilter, EventView, HoldKind


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


def event_conditions(f: EventFilter) -> list[ColumnElement[bool]]:
    """The event-level part of a filter, as WHERE conditions on ``events``."""
    conds: list[ColumnElement[bool]] = []
    if f.event_ids:
        conds.append(events.c.id.in_(f.event_ids))
    if f.since is not None:
        conds.append(events.c.created_at >= f.since)
    if f.until is not None:
        conds.append(events.c.created_at < f.until)
    if f.types:
        conds.append(events.c.type.in_(f.types))
    if f.accounts:
        conds.append(events.c.account.in_(f.accounts))
    if f.item_key is not None:
        conds.append(events.c.item_key == f.item_key)
    return conds


def delivery_conditions(f: EventFilter) -> list[ColumnElement[bool]]:
    """The delivery-level part of a filter, as WHERE conditions on ``deliveries``."""
    conds: list[ColumnElement[bool]] = []
    if f.sinks:
        conds.append(deliveries.c.sink.in_(f.sinks))
    if f.statuses:
        conds.append(deliveries.c.status.in_(f.statuses))
    return conds


@units_of_work
class EventRepository:
    """Reads events with their deliveries; prunes the fully delivered ones."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def list(self, f: EventFilter, *, limit: int) -> list[EventView]:
        """Events matching ``f``, newest first, each with all its deliveries."""
        query = select(
            events.c.id,
            events.c.type,
            events.c.account,
            events.c.trigger,
            events.c.item_key,
            events.c.created_at,
        ).where(*event_conditions(f))
        delivery_conds = delivery_conditions(f)
        if delivery_conds:
            query = query.where(
                exists().where(deliveries.c.event_id == events.c.id, *delivery_conds)
            )
        query = query.order_by(events.c.seq.desc()).limit(limit)
        with self.db.tx() as conn:
            rows = conn.execute(query).all()
            by_event: dict[str, list[DeliveryView]] = {r.id: [] for r in rows}
            for chunk in chunks(list(by_event)):
                for d in conn.execute(
                    select(deliveries)
                    .where(deliveries.c.event_id.in_(chunk))
                    .order_by(deliveries.c.sink)
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
