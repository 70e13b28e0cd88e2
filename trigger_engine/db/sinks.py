"""The sinks' stored state (``sink_state``): disabled or not and why, the last success;
and the per-sink view of the deliveries that ``status``, ``sinks`` and the metrics show."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, exists, func, or_, select, update

from trigger_engine.core import engine_events
from trigger_engine.db.codecs import as_utc
from trigger_engine.db.engine import Database, units_of_work
from trigger_engine.db.engine_events import emit
from trigger_engine.db.schema import deliveries, sink_state
from trigger_engine.types import DUE_STATUSES, DeliveryStatus, SinkStats


def disabled_sinks(conn: Connection) -> set[str]:
    """The names of the sinks that are disabled now."""
    return set(conn.execute(select(sink_state.c.name).where(sink_state.c.disabled)).scalars())


def upsert(db: Database, conn: Connection, name: str, values: dict[str, Any]) -> None:
    """Create the sink's row or update it with ``values``."""
    conn.execute(
        db.insert(sink_state)
        .values(name=name, **values)
        .on_conflict_do_update(index_elements=["name"], set_=values)
    )


def disable(
    db: Database,
    conn: Connection,
    name: str,
    reason: str,
    now: datetime,
    *,
    event_id: str | None = None,
) -> None:
    """Disable a sink: its due deliveries that are not in flight are dead from now on.
    A sink that was enabled until now gets its ``engine.sink_disabled`` event written in
    the same transaction (``event_id``: the delivery whose answer disabled it)."""
    newly = name not in disabled_sinks(conn)
    upsert(db, conn, name, {"disabled": True, "disabled_reason": reason, "disabled_at": now})
    # Deliveries in flight keep their lease: their outcome is recorded when it comes
    # (a late 2xx is a delivery), and a retry they would need is dead then.
    conn.execute(
        update(deliveries)
        .where(
            and_(deliveries.c.sink == name, deliveries.c.status.in_(DUE_STATUSES)),
            or_(deliveries.c.lease_owner.is_(None), deliveries.c.lease_expires_at < now),
        )
        .values(
            status=DeliveryStatus.DEAD,
            next_attempt_at=None,
            lease_owner=None,
            lease_expires_at=None,
            last_error=f"sink disabled: {reason}",
        )
    )
    if newly:  # after the change: the event's own delivery to this sink waits like the rest
        emit(db, conn, [engine_events.sink_disabled(name, reason=reason, event_id=event_id)], now)


@units_of_work
class SinkRepository:
    """Reads and changes the sinks' stored state."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def disabled(self) -> set[str]:
        """The names of the sinks that are disabled now."""
        with self.db.tx() as conn:
            return disabled_sinks(conn)

    def set_enabled(self, name: str, enabled: bool, *, reason: str, now: datetime) -> None:
        """Enable a sink, or disable it (``reason``), by hand."""
        with self.db.tx() as conn:
            if enabled:
                upsert(
                    self.db,
                    conn,
                    name,
                    {"disabled": False, "disabled_reason": None, "disabled_at": None},
                )
            else:
                disable(self.db, conn, name, reason, now)

    def stored(self, name: str) -> bool:
        """Whether the database knows sink ``name``: it has deliveries, or a stored state."""
        with self.db.tx() as conn:
            return bool(
                conn.execute(select(exists().where(deliveries.c.sink == name))).scalar_one()
                or conn.execute(select(exists().where(sink_state.c.name == name))).scalar_one()
            )

    def stored_names(self) -> list[str]:
        """Every sink name the database knows (deliveries or a stored state), sorted."""
        with self.db.tx() as conn:
            found = set(conn.execute(select(deliveries.c.sink).distinct()).scalars())
            found.update(conn.execute(select(sink_state.c.name)).scalars())
        return sorted(found)

    def stats(self) -> dict[str, SinkStats]:
        """Per sink that has deliveries or state: counts by status and its state."""
        with self.db.tx() as conn:
            counts: dict[str, dict[str, int]] = defaultdict(dict)
            for sink, status, n in conn.execute(
                select(deliveries.c.sink, deliveries.c.status, func.count()).group_by(
                    deliveries.c.sink, deliveries.c.status
                )
            ):
                counts[sink][status] = int(n)
            oldest: dict[str, Any] = dict(
                conn.execute(
                    select(deliveries.c.sink, func.min(deliveries.c.created_at))
                    .where(deliveries.c.status.in_(DUE_STATUSES))
                    .group_by(deliveries.c.sink)
                ).all()
            )
            in_flight: dict[str, Any] = dict(
                conn.execute(
                    select(deliveries.c.sink, func.count())
                    .where(deliveries.c.lease_owner.is_not(None))
                    .group_by(deliveries.c.sink)
                ).all()
            )
            states = {r.name: r for r in conn.execute(select(sink_state))}
        stats = {}
        for name in sorted(set(counts) | set(states)):
            st = states.get(name)
            first_due = oldest.get(name)
            stats[name] = SinkStats(
                name=name,
                counts={s.value: counts[name].get(s, 0) for s in DeliveryStatus},
                in_flight=int(in_flight.get(name, 0)),
                oldest_due_created_at=None if first_due is None else as_utc(first_due),
                disabled=bool(st.disabled) if st else False,
                disabled_reason=st.disabled_reason if st else None,
                disabled_at=st.disabled_at if st else None,
                last_success_at=st.last_success_at if st else None,
            )
        return stats
