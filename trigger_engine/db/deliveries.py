"""Deliveries (``deliveries``, ``attempts``): one row per (event, sink) with a state
machine, pending → claimed (a lease) → delivered | failed (retry due) | dead (schedule
used up), held while its sink is paused or disabled (see :mod:`.sinks`), and every attempt
recorded.

Claims and attempt records are the delivery hot path: they run the raw statements of
:mod:`trigger_engine.db.queries`. On PostgreSQL, claims lock with ``SKIP LOCKED`` so that
nodes claim disjoint rows; on SQLite one process is the only writer.
"""

from __future__ import annotations

import operator
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, delete, exists, func, insert, literal, select, update
from sqlalchemy.sql.elements import ColumnElement

from trigger_engine.core import engine_events
from trigger_engine.db import sinks as sink_rows
from trigger_engine.db.codecs import as_utc
from trigger_engine.db.engine import Database, chunks, raw_rows, units_of_work
from trigger_engine.db.engine_events import emit
from trigger_engine.db.events import delivery_conditions, event_conditions
from trigger_engine.db.nodes import live_nodes
from trigger_engine.db.schema import attempts, deliveries, events
from trigger_engine.states import DUE_STATUSES, WAITING_STATUSES, DeliveryStatus, HoldKind
from trigger_engine.types import AttemptOutcome, DueDelivery, EventFilter, ReplayResult, SinkDrop

_BY_ID = operator.attrgetter("id")


@units_of_work
class DeliveryRepository:
    """Claims due deliveries, records attempts, queues replays."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def claim_due(
        self,
        *,
        owner: str,
        now: datetime,
        lease: float,
        capacity: Mapping[str, int],
        due_by: datetime | None = None,
    ) -> list[DueDelivery]:
        """Claim, per sink, up to ``capacity[sink]`` due deliveries, oldest first: only
        for the sinks ``capacity`` names (a node claims for the sinks it knows, and leaves
        the others' deliveries to the nodes that serve them); per
        sink, one SELECT per due status (with the events' bodies; ``FOR UPDATE SKIP
        LOCKED`` on PostgreSQL, so nodes claim disjoint rows) and one UPDATE, all in one
        transaction.
        ``due_by`` (default ``now``): only deliveries due by then (``run --once`` passes
        its start, so a retry that falls due during the run waits for the next one)."""
        with self.db.tx() as conn:
            return self._claim(
                conn, owner=owner, now=now, lease=lease, capacity=capacity, due_by=due_by
            )

    def record_and_claim(
        self,
        outcomes: Sequence[AttemptOutcome],
        *,
        owner: str,
        now: datetime,
        lease: float,
        capacity: Mapping[str, int],
        due_by: datetime | None = None,
    ) -> tuple[list[tuple[AttemptOutcome, str]], list[DueDelivery]]:
        """:meth:`record_attempts` then :meth:`claim_due`, in one transaction (one commit
        where there were two: the dispatcher's hot path, benchmarks/RESULTS.md). The
        claim reads what the records wrote: a delivery recorded failed is claimed again
        only once its retry is due, and a sink this batch disabled (a 410) is held, not
        claimed for. Returns (the held retries, as :meth:`record_attempts`; the claimed)."""
        with self.db.tx() as conn:
            holding = sink_rows.holding_sinks(conn)
            held = self._record(conn, outcomes, owner=owner, holding=holding)
            if any(o.disable_sink is not None for o in outcomes):
                holding = sink_rows.holding_sinks(conn)  # a 410 of this batch disabled one
            claimed = self._claim(
                conn,
                owner=owner,
                now=now,
                lease=lease,
                capacity=capacity,
                due_by=due_by,
                holding=holding,
            )
        return held, claimed

    def _claim(
        self,
        conn: Connection,
        *,
        owner: str,
        now: datetime,
        lease: float,
        capacity: Mapping[str, int],
        due_by: datetime | None,
        holding: Mapping[str, str] | None = None,
    ) -> list[DueDelivery]:
        due = now if due_by is None else min(due_by, now)
        claimed: list[DueDelivery] = []
        expires = now + timedelta(seconds=lease)
        if holding is None:
            holding = sink_rows.holding_sinks(conn)
        # what fell due for a paused or disabled sink since (a lease given back, a
        # record of another node) is held, not claimed
        sink_rows.hold(conn, {s: why for s, why in holding.items() if s in capacity}, now)
        for sink, limit in capacity.items():
            if limit <= 0 or sink in holding:
                continue
            due_rows = self._due_rows(conn, sink, limit, due=due, now=now)
            if not due_rows:
                continue
            ids = [d.id for d in due_rows]
            conn.exec_driver_sql(
                self.db.queries.lease(len(ids)),
                (owner, self.db.times.to_db(expires), *ids),
            )
            claimed += due_rows
        return claimed

    def claim_probe(
        self, sink: str, *, owner: str, now: datetime, lease: float
    ) -> DueDelivery | None:
        """Claim one delivery to ``sink`` to probe it while it is down (core/circuit.py):
        the oldest one due, else the one due soonest (then ``early``: a failure of it
        leaves its schedule as it was). None when nothing waits, or the sink is held."""
        query = (
            select(
                deliveries.c.id,
                deliveries.c.attempts,
                deliveries.c.probes,
                deliveries.c.next_attempt_at,
                events.c.id.label("event_id"),
                events.c.type,
                events.c.account,
                events.c.created_at,
                events.c.payload,
            )
            .join(events, events.c.id == deliveries.c.event_id)
            .where(
                deliveries.c.sink == sink,
                deliveries.c.status.in_(DUE_STATUSES),
                sink_rows.not_in_flight(now),
            )
            .limit(1)
        )
        if self.db.dialect == "postgresql":
            query = query.with_for_update(of=deliveries, skip_locked=True)
        due = deliveries.c.next_attempt_at <= now
        with self.db.tx() as conn:
            if sink in sink_rows.holding_sinks(conn):
                return None
            row = conn.execute(query.where(due).order_by(deliveries.c.id)).first()
            if row is None:
                row = conn.execute(
                    query.order_by(deliveries.c.next_attempt_at, deliveries.c.id)
                ).first()
            if row is None:
                return None
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == row.id)
                .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease))
            )
        next_at = as_utc(row.next_attempt_at) if row.next_attempt_at is not None else None
        return DueDelivery(
            id=row.id,
            sink=sink,
            attempts=row.attempts,
            event_id=row.event_id,
            event_type=row.type,
            account=row.account,
            created_at=as_utc(row.created_at),
            payload=row.payload.encode(),
            probes=row.probes,
            early=next_at is not None and next_at > now,
            next_attempt_at=next_at,
        )

    def due_now(self, sink: str, now: datetime) -> int:
        """Make every delivery waiting for ``sink`` (pending, failed, not in flight) due
        now: its receiver is back (core/circuit.py). One UPDATE; the claim then sends
        them oldest first, with their own event ids. Returns how many were moved."""
        with self.db.tx() as conn:
            moved = conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.sink == sink,
                    deliveries.c.status.in_(DUE_STATUSES),
                    deliveries.c.next_attempt_at > now,
                    sink_rows.not_in_flight(now),
                )
                .values(next_attempt_at=now)
            ).rowcount
        return int(moved)

    def _due_rows(
        self, conn: Connection, sink: str, limit: int, *, due: datetime, now: datetime
    ) -> list[DueDelivery]:
        """Up to ``limit`` unclaimed deliveries to ``sink`` due by ``due``, oldest first,
        with their events, each with its envelope (its payload None: the envelope holds
        it, core.events.item).

        One query per status, each read in id order from the (sink, status, id) index and
        stopping at ``limit``: with both statuses in one query SQLite reads, joins and
        sorts every due row at each claim (7 ms per claim of 128 with 10,000 due; 0.3 ms
        this way)."""
        found: list[DueDelivery] = []
        to_db, from_db = self.db.times.to_db, self.db.times.from_db
        claim = self.db.queries.claim
        for status in DUE_STATUSES:
            # each row: (id, attempts, event id, type, account, created_at, probes,
            # envelope as bytes), made a DueDelivery positionally, in the fields' order
            # (id, sink, attempts, event_id, event_type, account, created_at, payload,
            # probes, early, next_attempt_at, envelope)
            found += [
                DueDelivery(
                    r[0],
                    sink,
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    from_db(r[5]),
                    None,
                    r[6],
                    False,
                    None,
                    bytes(r[7]),
                )
                for r in raw_rows(conn, claim, (sink, status.value, to_db(due), to_db(now), limit))
            ]
        found.sort(key=_BY_ID)  # oldest first across the statuses
        del found[limit:]
        return found

    def release_claims(self, owner: str | None = None, *, ids: Sequence[int] = ()) -> int:
        """Make claimed deliveries due again at once. With SQLite (one process) at start,
        every claim is a leftover of a killed process; otherwise only ``owner``'s, and with
        ``ids`` only those of them (claimed, then given back unsent)."""
        cond: ColumnElement[bool] = deliveries.c.lease_owner.is_not(None)
        if owner is not None:
            cond = deliveries.c.lease_owner == owner
        released = 0
        with self.db.tx() as conn:
            if not ids:
                released = conn.execute(
                    update(deliveries).where(cond).values(lease_owner=None, lease_expires_at=None)
                ).rowcount
            for chunk in chunks(ids, 500):
                released += conn.execute(
                    update(deliveries)
                    .where(cond, deliveries.c.id.in_(chunk))
                    .values(lease_owner=None, lease_expires_at=None)
                ).rowcount
            # given back unsent to a sink paused or disabled meanwhile: held
            sink_rows.hold(conn, sink_rows.holding_sinks(conn), None)
        return int(released)

    def record_attempts(
        self, outcomes: Sequence[AttemptOutcome], *, owner: str
    ) -> list[tuple[AttemptOutcome, str]]:
        """Record a batch of attempts and move their deliveries on. One transaction.
        A delivery whose lease another node took over in the meantime is not touched
        (its attempt is still recorded: it happened). Returns the failed attempts whose
        retry is held (their sink was paused or disabled meanwhile), each with why."""
        if not outcomes:
            return []
        with self.db.tx() as conn:
            return self._record(conn, outcomes, owner=owner)

    def _record(
        self,
        conn: Connection,
        outcomes: Sequence[AttemptOutcome],
        *,
        owner: str,
        holding: Mapping[str, str] | None = None,
    ) -> list[tuple[AttemptOutcome, str]]:
        if not outcomes:
            return []
        failed, held, delivered = (
            DeliveryStatus.FAILED,
            DeliveryStatus.HELD,
            DeliveryStatus.DELIVERED,
        )
        if holding is None:
            holding = sink_rows.holding_sinks(conn)

        def status_of(o: AttemptOutcome) -> str:
            # a retry to a sink paused or disabled while this attempt was in flight
            # is held until the sink is resumed or enabled
            return held if o.new_status == failed and o.sink in holding else o.new_status

        t = self.db.times.to_db
        started = [t(o.started_at) for o in outcomes]
        # each outcome's status as recorded (no sink held, the common case: as decided)
        statuses = [status_of(o) for o in outcomes] if holding else [o.new_status for o in outcomes]
        conn.exec_driver_sql(
            self.db.queries.insert_attempt,
            [
                (
                    o.delivery_id,
                    o.attempt,
                    at,
                    o.duration_ms,
                    o.status_code,
                    o.error,
                    o.response_body,
                )
                for o, at in zip(outcomes, started, strict=True)
            ],
        )
        conn.exec_driver_sql(
            self.db.queries.record_attempt,
            [
                (
                    status,
                    HoldKind.SINK.value if status == held else None,
                    o.attempt,
                    1 if o.early_probe else 0,
                    t(o.next_attempt_at) if status == failed else None,
                    at,
                    o.status_code,
                    holding[o.sink] if status == held else o.error,
                    at if status == delivered else None,
                    o.delivery_id,
                    owner,
                )
                for o, at, status in zip(outcomes, started, statuses, strict=True)
            ],
        )
        successes: dict[str, datetime] = {}
        for o in outcomes:
            if o.new_status == delivered:
                successes[o.sink] = max(o.started_at, successes.get(o.sink, o.started_at))
        for sink, when in successes.items():  # one statement each (not executemany)
            conn.exec_driver_sql(self.db.queries.last_success, (sink, t(when)))
        for o in outcomes:
            if o.disable_sink is not None:
                # the 410's own delivery (recorded failed above) is held with the rest
                sink_rows.disable(
                    self.db, conn, o.sink, o.disable_sink, o.started_at, event_id=o.event_id
                )
        self._report_dead(conn, outcomes)
        return [(o, holding[o.sink]) for o, s in zip(outcomes, statuses, strict=True) if s == held]

    def _report_dead(self, conn: Connection, outcomes: Sequence[AttemptOutcome]) -> None:
        """``engine.delivery_dead`` for each delivery of ``outcomes`` that this batch made
        dead because its schedule is used up (not a 410, not another node's lease), in the
        batch's transaction; never about a delivery of an engine event (no cascade)."""
        used_up = {
            o.delivery_id: o
            for o in outcomes
            if o.new_status == DeliveryStatus.DEAD and o.disable_sink is None
        }
        if not used_up:
            return
        found: list[engine_events.EngineEvent] = []
        for chunk in chunks(list(used_up), 500):
            rows = conn.execute(
                select(
                    deliveries.c.id,
                    deliveries.c.status,
                    deliveries.c.attempts,
                    events.c.type,
                    events.c.account,
                    events.c.trigger,
                    events.c.item_key,
                )
                .join(events, events.c.id == deliveries.c.event_id)
                .where(deliveries.c.id.in_(chunk))
                .order_by(deliveries.c.id)
            )
            for row in rows:
                o = used_up[row.id]
                if (
                    row.status != DeliveryStatus.DEAD  # another node's lease: not ours
                    or row.attempts != o.attempt
                    or not engine_events.about_deliveries_of(row.type)
                ):
                    continue
                dead = engine_events.DeadDelivery(
                    sink=o.sink,
                    event_id=o.event_id,
                    event_type=row.type,
                    account=row.account,
                    trigger=row.trigger,
                    key=row.item_key,
                    attempts=o.attempt,
                    last_error=o.error,
                )
                found.append(engine_events.delivery_dead(dead))
        if found:
            emit(self.db, conn, engine_events.capped(found), max(o.started_at for o in outcomes))

    def next_due_at(self, sinks: Sequence[str]) -> datetime | None:
        """When the earliest unclaimed delivery to one of ``sinks`` falls due."""
        if not sinks:
            return None
        with self.db.tx() as conn:
            value = conn.execute(
                select(func.min(deliveries.c.next_attempt_at)).where(
                    deliveries.c.sink.in_(sinks),
                    deliveries.c.status.in_(DUE_STATUSES),
                    deliveries.c.lease_owner.is_(None),
                )
            ).scalar_one_or_none()
        if value is None:
            return None
        assert isinstance(value, datetime)
        return as_utc(value)

    def count_due(self, sinks: Sequence[str], now: datetime) -> int:
        """How many deliveries to ``sinks`` are due by ``now`` (claimed or not)."""
        with self.db.tx() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        deliveries.c.sink.in_(sinks),
                        deliveries.c.status.in_(DUE_STATUSES),
                        deliveries.c.next_attempt_at <= now,
                    )
                ).scalar_one()
            )

    def replay(
        self,
        f: EventFilter,
        *,
        known_sinks: Collection[str],
        now: datetime,
        dry_run: bool,
    ) -> ReplayResult:
        """Queue the matching deliveries again: same event (same ``webhook-id``), due
        now, status back to pending, a fresh attempt history; to a paused sink, held
        instead (sent in order when it is resumed). Deliveries to a disabled or
        unconfigured sink, or being attempted right now, are counted and left alone."""
        query = (
            select(
                deliveries.c.id,
                deliveries.c.event_id,
                deliveries.c.sink,
                deliveries.c.lease_owner,
                deliveries.c.lease_expires_at,
            )
            .join(events, events.c.id == deliveries.c.event_id)
            .where(*event_conditions(f), *delivery_conditions(f))
        )
        with self.db.tx() as conn:
            disabled = sink_rows.disabled_sinks(conn)
            holding = sink_rows.holding_sinks(conn)  # disabled, or paused by hand
            queue: list[int] = []
            to_hold: list[int] = []
            queued_events: set[str] = set()
            unknown = off = busy = 0
            for row in conn.execute(query):
                if row.sink not in known_sinks:
                    unknown += 1
                elif row.sink in disabled:
                    off += 1
                elif row.lease_owner is not None and row.lease_expires_at > now:
                    busy += 1
                else:
                    (to_hold if row.sink in holding else queue).append(row.id)
                    queued_events.add(row.event_id)
            if not dry_run:
                # to a paused sink: queued as held, sent in order when it is resumed
                for ids, hold in ((queue, False), (to_hold, True)):
                    for chunk in chunks(ids):
                        conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(chunk)))
                        conn.execute(
                            update(deliveries)
                            .where(deliveries.c.id.in_(chunk))
                            .values(
                                status=DeliveryStatus.HELD if hold else DeliveryStatus.PENDING,
                                held_by=HoldKind.SINK if hold else None,
                                attempts=0,
                                probes=0,
                                next_attempt_at=None if hold else now,
                                lease_owner=None,
                                lease_expires_at=None,
                                last_attempt_at=None,
                                last_status_code=None,
                                last_error="sink paused" if hold else None,
                                delivered_at=None,
                            )
                        )
        return ReplayResult(
            events=len(queued_events),
            queued=len(queue) + len(to_hold),
            skipped_disabled=off,
            skipped_unknown=unknown,
            skipped_in_flight=busy,
            held=len(to_hold),
        )

    def drop_sink(
        self, name: str, *, to: str | None = None, now: datetime, dry_run: bool = False
    ) -> SinkDrop:
        """Delete the deliveries to sink ``name`` that were not delivered (pending, failed,
        held, dead), with their attempts; with ``to``, first give each of their events a
        delivery to that sink, due now (same event: same ``webhook-id``), unless it has one.
        One transaction. Refused (nothing done; ``served_by`` names them) while a live
        node serves ``name``. Delivered ones stay, as history."""
        waiting = and_(deliveries.c.sink == name, deliveries.c.status.in_(WAITING_STATUSES))
        with self.db.tx() as conn:
            serving = tuple(v.name for v in live_nodes(conn, now) if name in (v.sinks or {}))
            if serving:
                return SinkDrop(name, {}, to=to, served_by=serving)
            counts = {
                status: int(n)
                for status, n in conn.execute(
                    select(deliveries.c.status, func.count())
                    .where(waiting)
                    .group_by(deliveries.c.status)
                )
            }
            dropped = {s.value: counts[s] for s in WAITING_STATUSES if counts.get(s)}
            queued = already = 0
            if to is not None:
                other = deliveries.alias("other")
                has_one = exists().where(
                    other.c.event_id == deliveries.c.event_id, other.c.sink == to
                )
                already = int(
                    conn.execute(select(func.count()).where(waiting, has_one)).scalar_one()
                )
                moved = (
                    select(
                        deliveries.c.event_id,
                        literal(to),
                        literal(DeliveryStatus.PENDING.value),
                        literal(now, type_=deliveries.c.next_attempt_at.type),
                        literal(now, type_=deliveries.c.created_at.type),
                    )
                    .where(waiting, ~has_one)
                    .order_by(deliveries.c.id)
                )
                # counted, not read from the INSERT's rowcount: SQLite's driver gives -1
                # for an INSERT ... SELECT
                queued = int(
                    conn.execute(select(func.count()).where(waiting, ~has_one)).scalar_one()
                )
                if not dry_run:
                    conn.execute(
                        insert(deliveries).from_select(
                            ["event_id", "sink", "status", "next_attempt_at", "created_at"],
                            moved,
                        )
                    )
            if not dry_run:
                ids = select(deliveries.c.id).where(waiting)
                conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(ids)))
                conn.execute(delete(deliveries).where(waiting))
        return SinkDrop(name, dropped, to=to, queued=queued, already_there=already)
