"""The sinks' stored state (``sink_state``): paused or not, disabled or not and why, the
last success; holding and releasing their deliveries; and the per-sink view of the
deliveries that ``status``, ``sinks`` and the metrics show.

A sink that is paused (by hand) or disabled (by hand, or by a ``410 Gone``) is *holding*:
its deliveries are ``held`` (``held_by`` = sink), neither claimed nor attempted, kept
whatever their age; resuming or enabling it (when it is then neither paused nor disabled)
makes them due at once, and the claim sends them oldest first with their own event ids.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, exists, func, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from trigger_engine.core import engine_events
from trigger_engine.db.codecs import as_utc
from trigger_engine.db.engine import Database, units_of_work
from trigger_engine.db.engine_events import emit
from trigger_engine.db.queries import HOLDING
from trigger_engine.db.schema import deliveries, sink_state
from trigger_engine.states import DUE_STATUSES, WAITING_STATUSES, DeliveryStatus, HoldKind
from trigger_engine.types import SinkChange, SinkStats


def disabled_sinks(conn: Connection) -> set[str]:
    """The names of the sinks that are disabled now."""
    return set(conn.execute(select(sink_state.c.name).where(sink_state.c.disabled)).scalars())


def holding_sinks(conn: Connection) -> dict[str, str]:
    """The sinks whose deliveries are held now (paused or disabled), each with why. A raw
    statement: every claim and every record of the dispatcher reads it."""
    return {
        name: "sink disabled" if disabled else "sink paused"
        for name, disabled in conn.exec_driver_sql(HOLDING)
    }


def upsert(db: Database, conn: Connection, name: str, values: dict[str, Any]) -> None:
    """Create the sink's row or update it with ``values``."""
    conn.execute(
        db.insert(sink_state)
        .values(name=name, **values)
        .on_conflict_do_update(index_elements=["name"], set_=values)
    )


def not_in_flight(now: datetime | None) -> ColumnElement[bool]:
    """Deliveries not claimed, or whose claim expired by ``now`` (None: not claimed)."""
    if now is None:
        return deliveries.c.lease_owner.is_(None)
    return or_(deliveries.c.lease_owner.is_(None), deliveries.c.lease_expires_at < now)


def hold(conn: Connection, names: Mapping[str, str], now: datetime | None) -> int:
    """Hold the due deliveries (pending, failed) to the sinks ``names`` (name → why) that
    are not in flight: kept, with their attempts, until the sink is resumed or enabled.
    Deliveries in flight keep their lease: their outcome is recorded when it comes (a
    late 2xx is a delivery), and a retry they need is held then. Returns how many."""
    held = 0
    for name, note in names.items():
        held += conn.execute(
            update(deliveries)
            .where(
                deliveries.c.sink == name,
                deliveries.c.status.in_(DUE_STATUSES),
                not_in_flight(now),
            )
            .values(
                status=DeliveryStatus.HELD,
                held_by=HoldKind.SINK,
                next_attempt_at=None,
                lease_owner=None,
                lease_expires_at=None,
                last_error=note,
            )
        ).rowcount
    return int(held)


def release(conn: Connection, name: str, now: datetime) -> int:
    """Make the deliveries held for sink ``name`` due now, unless it is still paused or
    disabled: back to pending (never attempted) or failed (a retry), keeping their
    attempts; the claim sends them oldest first. Returns how many."""
    if name in holding_sinks(conn):
        return 0
    released = conn.execute(
        update(deliveries)
        .where(
            deliveries.c.sink == name,
            deliveries.c.status == DeliveryStatus.HELD,
            deliveries.c.held_by == HoldKind.SINK,
        )
        .values(
            status=case(
                (deliveries.c.attempts > 0, DeliveryStatus.FAILED.value),
                else_=DeliveryStatus.PENDING.value,
            ),
            held_by=None,
            next_attempt_at=now,
            last_error=None,  # "sink paused": the attempts keep the errors
        )
    ).rowcount
    return int(released)


def disable(
    db: Database,
    conn: Connection,
    name: str,
    reason: str,
    now: datetime,
    *,
    event_id: str | None = None,
) -> int:
    """Disable a sink (a 410, or by hand): its due deliveries that are not in flight are
    held from now on, until ``sinks enable``. Returns how many were held. A sink that was
    enabled until now gets its ``engine.sink_disabled`` event written in the same
    transaction (``event_id``: the delivery whose answer disabled it)."""
    newly = name not in disabled_sinks(conn)
    upsert(db, conn, name, {"disabled": True, "disabled_reason": reason, "disabled_at": now})
    held = hold(conn, {name: "sink disabled"}, now)
    if newly:  # after the change: the event's own delivery to this sink is held like the rest
        emit(db, conn, [engine_events.sink_disabled(name, reason=reason, event_id=event_id)], now)
    return held


def _in_flight(conn: Connection, name: str, now: datetime) -> int:
    return int(
        conn.execute(
            select(func.count()).where(
                deliveries.c.sink == name,
                deliveries.c.lease_owner.is_not(None),
                deliveries.c.lease_expires_at >= now,
            )
        ).scalar_one()
    )


def _state(conn: Connection, name: str) -> tuple[bool, bool]:
    row = conn.execute(
        select(sink_state.c.paused, sink_state.c.disabled).where(sink_state.c.name == name)
    ).first()
    return (bool(row.paused), bool(row.disabled)) if row else (False, False)


@units_of_work
class SinkRepository:
    """Reads and changes the sinks' stored state."""

    def __init__(self, db: Database, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.monotonic = monotonic
        # the delivered counts by sink, and when (monotonic) they were read: stats()
        self._delivered_read: tuple[float, dict[str, int]] | None = None

    def disabled(self) -> set[str]:
        """The names of the sinks that are disabled now."""
        with self.db.tx() as conn:
            return disabled_sinks(conn)

    def holding(self) -> dict[str, str]:
        """The sinks whose deliveries are held now (paused or disabled), each with why."""
        with self.db.tx() as conn:
            return holding_sinks(conn)

    def set_enabled(self, name: str, enabled: bool, *, reason: str, now: datetime) -> SinkChange:
        """Enable a sink (its held deliveries are due now, unless it is paused), or
        disable it (``reason``; its due deliveries are held), by hand."""
        with self.db.tx() as conn:
            held = released = 0
            if enabled:
                upsert(
                    self.db,
                    conn,
                    name,
                    {"disabled": False, "disabled_reason": None, "disabled_at": None},
                )
                released = release(conn, name, now)
            else:
                held = disable(self.db, conn, name, reason, now)
            return self._change(conn, name, now, held=held, released=released)

    def set_paused(self, name: str, paused: bool, *, reason: str, now: datetime) -> SinkChange:
        """Pause a sink by hand (``reason``; its due deliveries are held), or resume it
        (its held deliveries are due now, unless it is disabled)."""
        with self.db.tx() as conn:
            held = released = 0
            if paused:
                upsert(
                    self.db, conn, name, {"paused": True, "paused_reason": reason, "paused_at": now}
                )
                held = hold(conn, {name: holding_sinks(conn)[name]}, now)
            else:
                upsert(
                    self.db, conn, name, {"paused": False, "paused_reason": None, "paused_at": None}
                )
                released = release(conn, name, now)
            return self._change(conn, name, now, held=held, released=released)

    def _change(
        self, conn: Connection, name: str, now: datetime, *, held: int, released: int
    ) -> SinkChange:
        paused, disabled = _state(conn, name)
        return SinkChange(
            sink=name,
            held=held,
            released=released,
            in_flight=_in_flight(conn, name, now),
            paused=paused,
            disabled=disabled,
        )

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

    def stats(self, *, delivered: float | None = 0.0) -> dict[str, SinkStats]:
        """Per sink that has deliveries or state: counts by status and its state.

        The waiting statuses (pending, failed, held, dead) are counted exactly, from the
        status index. Counting the delivered ones reads every delivered row (most of the
        table: most of a second at a million), so ``delivered`` says how fresh that count
        must be, in seconds: 0, counted now (the CLI); more, the count read within that
        many seconds by this repository is reused (the console's overview: 60); None, not
        counted (0, and a sink known only by delivered rows is left out: the metrics, which
        export no delivered count)."""
        with self.db.tx() as conn:
            counts: dict[str, dict[str, int]] = defaultdict(dict)
            for sink, status, n in conn.execute(
                select(deliveries.c.sink, deliveries.c.status, func.count())
                .where(deliveries.c.status.in_(WAITING_STATUSES))
                .group_by(deliveries.c.sink, deliveries.c.status)
            ):
                counts[sink][status] = int(n)
            if delivered is not None:
                for sink, n in self._delivered(conn, delivered).items():
                    counts[sink][DeliveryStatus.DELIVERED] = n
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
                    # claims are of due (waiting) deliveries: the status index finds them
                    .where(
                        deliveries.c.status.in_(WAITING_STATUSES),
                        deliveries.c.lease_owner.is_not(None),
                    )
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
                paused=bool(st.paused) if st else False,
                paused_reason=st.paused_reason if st else None,
                paused_at=st.paused_at if st else None,
            )
        return stats

    def _delivered(self, conn: Connection, max_age: float) -> dict[str, int]:
        """The delivered deliveries by sink, counted now or, when counted less than
        ``max_age`` seconds ago, as they were then."""
        moment = self.monotonic()
        last = self._delivered_read
        if max_age > 0 and last is not None and moment - last[0] < max_age:
            return last[1]
        found = {
            sink: int(n)
            for sink, n in conn.execute(
                select(deliveries.c.sink, func.count())
                .where(deliveries.c.status == DeliveryStatus.DELIVERED)
                .group_by(deliveries.c.sink)
            )
        }
        self._delivered_read = (moment, found)
        return found
