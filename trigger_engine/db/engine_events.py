"""The engine's own events written to the outbox: an ``events`` row and one delivery per
subscribed sink (:mod:`trigger_engine.core.engine_events`), inside the transaction of the
state change they tell about (a trigger paused, a sink disabled, a delivery given up, an
item quarantined), so that the change and its event are committed together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection

from trigger_engine.core.engine_events import EngineEvent
from trigger_engine.core.events import new_event_id
from trigger_engine.core.exact_json import dumps
from trigger_engine.db.engine import Database


def emit(db: Database, conn: Connection, found: Sequence[EngineEvent], now: datetime) -> int:
    """Write ``found`` in the caller's transaction, each with a delivery to every sink
    that subscribes to its type (``db.subscribers``). Each event's key is its own id: no
    occurrence is ever taken for a repeat of another. Returns how many were written."""
    if not found:
        return 0
    # here, not at the top: db.events imports db.sinks, which imports this module
    from trigger_engine.db import events as event_rows

    subscribers = db.subscribers()
    for event in found:
        event_id = new_event_id()
        event_rows.insert_events(
            conn,
            event.account,
            event.trigger,
            event.type,
            [(event_id, dumps(dict(event.data)))],
            subscribers.sinks_for(event.type),
            now,
            ids=[event_id],
        )
    return len(found)
