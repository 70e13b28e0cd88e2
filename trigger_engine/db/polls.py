"""Per (account, trigger) poll state (``poll_state``) and a poll's writes.

A poll is claimed under a lease with a fencing token (:meth:`PollRepository.claim`), so
that on several nodes one polls a trigger at a time and a node that lost its lease cannot
write. A successful poll is one transaction, the outbox: new keys marked seen
(:mod:`~trigger_engine.db.seen`), their events and deliveries
(:func:`~trigger_engine.db.events.insert_events`) and the poll's state, all or nothing; a
failed poll changes only the poll's own state.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, func, select, update

from trigger_engine.clock import isoformat_z
from trigger_engine.core import engine_events
from trigger_engine.core.dedupe import KeyedItems, Quarantined, changed, flood_guard, unseen
from trigger_engine.core.definition import DefinitionPrint, redefined
from trigger_engine.core.retry import is_failing, should_pause
from trigger_engine.db import quarantine, queries, seen
from trigger_engine.db.engine import Database, units_of_work
from trigger_engine.db.engine_events import emit
from trigger_engine.db.outbox import Writer, bulk_then_item_by_item, encoded, isolated
from trigger_engine.db.schema import poll_state
from trigger_engine.db.schema import quarantine as quarantine_table
from trigger_engine.errors import LeaseLost
from trigger_engine.states import PollOutcome, PollRefusal
from trigger_engine.types import (
    BackfillResult,
    FailureRecord,
    Fence,
    PollClaim,
    PollResult,
    PollState,
)


def _where(account: str, trigger: str) -> tuple[Any, Any]:
    return poll_state.c.account == account, poll_state.c.trigger == trigger


def _state(row: Row[Any]) -> PollState:
    m = row._mapping
    return PollState(
        account=m["account"],
        trigger=m["trigger"],
        seeded_at=m["seeded_at"],
        last_poll_at=m["last_poll_at"],
        last_outcome=m["last_outcome"],
        last_error=m["last_error"],
        last_success_at=m["last_success_at"],
        consecutive_failures=m["consecutive_failures"],
        backoff_until=m["backoff_until"],
        paused=bool(m["paused"]),
        paused_reason=m["paused_reason"],
        items_known=m["items_known"],
        paused_auto=bool(m["paused_auto"]),
        failing_since=m["failing_since"],
        lease_owner=m["lease_owner"],
        lease_expires_at=m["lease_expires_at"],
        definition_fingerprint=m["definition_fingerprint"],
    )


def _refusal(state: PollState, owner: str, now: datetime, honour_backoff: bool) -> PollRefusal:
    """Why a claim on this state was refused (the same tests as the claim, in order)."""
    if state.paused:
        return PollRefusal.PAUSED
    if honour_backoff and state.backoff_until is not None and state.backoff_until > now:
        return PollRefusal.BACKING_OFF
    held = state.lease_owner not in (None, owner)
    if held and state.lease_expires_at is not None and state.lease_expires_at >= now:
        return PollRefusal.LEASED
    return PollRefusal.TOO_SOON


@units_of_work
class PollRepository:
    """Claims, records and pauses polls; the seen set and the outbox are written here."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ----------------------------------------------------------------- reading

    def state(self, account: str, trigger: str) -> PollState | None:
        """One trigger's state, or None before its first claim."""
        with self.db.tx() as conn:
            row = self._row(conn, account, trigger)
        return None if row is None else _state(row)

    def states(self) -> list[PollState]:
        """Every trigger's state, by account and trigger."""
        with self.db.tx() as conn:
            rows = conn.execute(
                select(poll_state).order_by(poll_state.c.account, poll_state.c.trigger)
            ).all()
        return [_state(r) for r in rows]

    def last_polls(self) -> dict[tuple[str, str], datetime | None]:
        """When each trigger's last poll started (claimed), by (account, trigger): what a
        node that takes over another's share reads to find the polls whose turn passed."""
        with self.db.tx() as conn:
            rows = conn.execute(
                select(poll_state.c.account, poll_state.c.trigger, poll_state.c.last_poll_at)
            )
            return {(r.account, r.trigger): r.last_poll_at for r in rows}

    def _row(self, conn: Connection, account: str, trigger: str) -> Row[Any] | None:
        return conn.execute(select(poll_state).where(*_where(account, trigger))).one_or_none()

    def _ensure_row(self, conn: Connection, account: str, trigger: str) -> PollState:
        conn.execute(
            self.db.insert(poll_state)
            .values(account=account, trigger=trigger)
            .on_conflict_do_nothing(index_elements=["account", "trigger"])
        )
        row = self._row(conn, account, trigger)
        assert row is not None
        return _state(row)

    # ----------------------------------------------------------------- leases

    def claim(
        self,
        account: str,
        trigger: str,
        *,
        owner: str,
        now: datetime,
        lease: float,
        min_gap: float | None = None,
        honour_backoff: bool = False,
        explain: bool = True,
    ) -> PollClaim:
        """Start a poll: take (or renew) the lease on one trigger's polls in one statement
        (:func:`~trigger_engine.db.queries.claim_poll`; on PostgreSQL in autocommit, one
        round trip), which creates the trigger's row at its first claim. Every claim bumps
        the fencing token. Refused (``fence`` None, ``refused`` says why) when the trigger
        is paused, when (``honour_backoff``) failures put it in backoff, when another node
        holds the lease, or (``min_gap``) when any node started a poll of it less than
        ``min_gap`` seconds ago: the gap runs from the previous poll's claim, so a poll
        that ends late does not push the next one out by an interval. A refused claim
        reads the state once more to say why (a second statement, after the first), unless
        ``explain`` is False (the daemon's scheduled polls, unless it logs at debug level):
        then it is refused in its one round trip, with no state and no reason."""
        claim = queries.claim_poll(backoff=honour_backoff, gap=min_gap is not None)
        params: dict[str, Any] = {
            "account": account,
            "trigger": trigger,
            "owner": owner,
            "now": now,
            "expires": now + timedelta(seconds=lease),
        }
        if min_gap is not None:
            params["gap_from"] = now - timedelta(seconds=min_gap)
        with self.db.autocommit() as conn:
            row = conn.execute(claim, params).one_or_none()
            if row is not None:
                fence = Fence(owner, int(row._mapping["fencing_token"]), now)
                return PollClaim(_state(row), fence=fence)
            if not explain:
                return PollClaim(None)
            refused_row = self._row(conn, account, trigger)
        assert refused_row is not None  # the claim's INSERT made it, rows are not deleted
        state = _state(refused_row)
        return PollClaim(state, refused=_refusal(state, owner, now, honour_backoff))

    def release_leases(self, owner: str | None) -> int:
        """Give back every poll lease ``owner`` holds (at shutdown), so that other nodes
        need not wait for them to expire; ``None``: every lease (SQLite, at start)."""
        held = (
            poll_state.c.lease_owner.is_not(None)
            if owner is None
            else poll_state.c.lease_owner == owner
        )
        with self.db.tx() as conn:
            return int(
                conn.execute(
                    update(poll_state).where(held).values(lease_owner=None, lease_expires_at=None)
                ).rowcount
            )

    def _check_fence(
        self,
        conn: Connection,
        account: str,
        trigger: str,
        fence: Fence | None,
        values: dict[str, Any] | None = None,
    ) -> tuple[PollState, bool | None]:
        """First statement of a poll's write; returns the trigger's state and whether it
        has items in quarantine (None: not known). With a fence, it checks the lease and
        locks the row (PostgreSQL), so a concurrent claim waits for this transaction and
        then sees the renewed lease, and reads the quarantine flag in the same statement;
        without one (tests, tools), it creates the row if needed. With a fence, it also
        sets ``values`` (a successful poll's state: in the steady case, the poll's only
        write to its row); the state returned then shows them, and the other columns as
        they were.

        With a fence, the lease ends here: it expires at the poll's claim (its owner stays,
        as who polled last), so no other node waits for it once this transaction commits;
        the minimum gap between polls, set in the same statement, keeps the next poll to
        its turn. A lease kept to its expiry (``engine.lease`` beyond the source's timeout:
        630 s in ``benchmarks/schedule.py``) made the node that owns a trigger in the
        division wait for the lease of a node that polled it before it knew of the owner,
        and skip that turn."""
        if fence is None:
            return self._ensure_row(conn, account, trigger), None
        held = (
            select(quarantine_table.c.key)
            .where(quarantine_table.c.account == account, quarantine_table.c.trigger == trigger)
            .exists()
            .label("quarantined")
        )
        row = conn.execute(
            update(poll_state)
            .where(
                *_where(account, trigger),
                poll_state.c.lease_owner == fence.owner,
                poll_state.c.fencing_token == fence.token,
            )
            .values(lease_owner=fence.owner, lease_expires_at=fence.claimed_at, **(values or {}))
            .returning(*poll_state.c, held)
        ).one_or_none()
        if row is None:
            raise LeaseLost(
                f"account '{account}', trigger '{trigger}': another node took over this "
                f"trigger (fencing token {fence.token} is stale); its result was not written"
            )
        return _state(row), bool(row._mapping["quarantined"])

    # ----------------------------------------------------------------- results

    def record(
        self,
        account: str,
        trigger: str,
        keyed: KeyedItems,
        *,
        event_type: str,
        emit_first: bool,
        sinks: Sequence[str],
        now: datetime,
        max_new: int | None = None,
        fence: Fence | None = None,
        definition: DefinitionPrint | None = None,
    ) -> PollResult:
        """A successful poll: mark new keys seen and, unless this is a seeding first
        poll, create their events and deliveries. One transaction.

        ``definition``: the trigger's dedupe definition as configured now, stored with its
        state. When it differs from the stored one, this poll is a first poll again (a
        re-seed: it remembers what it lists and, unless ``emit_first``, fires nothing; keys
        seen before stay seen; an "updated item" trigger moves its known items to their
        new versions without firing). A state without a stored one adopts it silently.

        With ``keyed.versions`` (an "updated item" trigger) it is the known items whose
        version changed that fire; new items are only remembered. With ``max_new``, a poll
        that would fire more than that holds all of its events (the flood guard).

        One item never stops the others: an item that cannot be written as an event or
        that the database refuses is quarantined (:mod:`~trigger_engine.db.quarantine`),
        not marked seen, and the rest of the poll is written."""
        return bulk_then_item_by_item(
            self._record,
            account,
            trigger,
            keyed,
            event_type=event_type,
            emit_first=emit_first,
            sinks=sinks,
            now=now,
            max_new=max_new,
            fence=fence,
            definition=definition,
        )

    def _record(
        self,
        account: str,
        trigger: str,
        keyed: KeyedItems,
        *,
        event_type: str,
        emit_first: bool,
        sinks: Sequence[str],
        now: datetime,
        max_new: int | None,
        fence: Fence | None,
        definition: DefinitionPrint | None,
        item_by_item: bool,
    ) -> PollResult:
        db = self.db
        # a successful poll's state, written by the fence check (one statement fewer when
        # the poll found nothing new: then nothing else of the row changes)
        ok: dict[str, Any] = {
            "last_poll_at": now if fence is None else fence.claimed_at,
            "last_success_at": now,
            "last_outcome": PollOutcome.OK,
            "last_error": None,
            "consecutive_failures": 0,
            "failing_since": None,
            "failing_notified": False,
            "backoff_until": None,
        }
        with db.tx() as conn:
            state, in_quarantine = self._check_fence(conn, account, trigger, fence, ok)
            redo = definition is not None and redefined(state.definition_fingerprint, definition)
            first = state.seeded_at is None or redo
            fire = emit_first or not first
            set_aside = list(keyed.quarantined)
            held: str | None = None
            if keyed.versions is None:
                known = seen.known_keys(
                    db, conn, account, trigger, keyed.keys, items_known=state.items_known
                )
                fresh: Sequence[Any] = unseen(keyed, known)
                if fire:
                    fresh = encoded(fresh, set_aside)
                    held = flood_guard(len(fresh), max_new)
                write = Writer(
                    db, conn, account, trigger, event_type, sinks, now, fire=fire, held=held
                )
                tally = isolated(conn, fresh, write.new_items, set_aside, item_by_item=item_by_item)
            else:
                versions = seen.known_versions(conn, account, trigger, keyed.keys)
                changes = changed(keyed, versions)
                moved = encoded([(k, item) for k, item, _new, _old in changes], set_aside)
                held = None if redo else flood_guard(len(moved), max_new)
                write = Writer(
                    db,
                    conn,
                    account,
                    trigger,
                    event_type,
                    sinks,
                    now,
                    fire=not redo,  # a re-seed moves known items to their versions, silently
                    held=held,
                    versions=dict(zip(keyed.keys, keyed.versions, strict=True)),
                    old_versions={key: old for key, _item, _new, old in changes},
                )
                fresh = unseen(keyed, versions)
                tally = isolated(conn, fresh, write.new_items, set_aside, item_by_item=item_by_item)
                tally.add(
                    isolated(conn, moved, write.changed_items, set_aside, item_by_item=item_by_item)
                )
            newly = quarantine.hold(db, conn, account, trigger, set_aside, now)
            _report_quarantined(db, conn, account, trigger, newly, now)
            released = quarantine.release(
                conn,
                account,
                trigger,
                tally.inserted,
                anything=None if in_quarantine is None else in_quarantine or bool(newly),
            )
            values: dict[str, Any] = {} if fence is not None else dict(ok)
            if tally.inserted:
                values["items_known"] = poll_state.c.items_known + len(tally.inserted)
            if first:
                values["seeded_at"] = now
            if definition is not None:
                fingerprint = definition.encode()
                if fingerprint != state.definition_fingerprint:
                    values["definition_fingerprint"] = fingerprint
            if values:
                conn.execute(update(poll_state).where(*_where(account, trigger)).values(**values))
        return PollResult(
            first_poll=first,
            new_events=tally.events,
            remembered=len(tally.inserted) if not fire or keyed.versions is not None else 0,
            deliveries=tally.deliveries,
            held=tally.events if held is not None else 0,
            quarantined=len(set_aside),
            newly_quarantined=tuple((q.key, q.reason) for q in newly),
            released=released,
            redefined_from=state.definition_fingerprint if redo else None,
        )

    def record_failure(
        self,
        account: str,
        trigger: str,
        *,
        outcome: PollOutcome,
        error: str,
        backoff_until: datetime | None,
        now: datetime,
        fence: Fence | None = None,
        interval: float | None = None,
        pause_after: float = 0.0,
        pause_after_failures: int = 0,
    ) -> FailureRecord:
        """A failed poll changes nothing but the poll's own state, in one transaction:
        the failure count and backoff; with ``interval``, the first failure of a run that
        has lasted longer than a few intervals writes ``engine.trigger_failing`` (once per
        run of failures); with ``pause_after_failures``, the sustained-failure rule
        (:func:`~trigger_engine.core.retry.should_pause`) pauses the trigger and writes
        ``engine.trigger_paused``."""
        with self.db.tx() as conn:
            self._check_fence(conn, account, trigger, fence)
            failures, since, notified = conn.execute(
                update(poll_state)
                .where(*_where(account, trigger))
                .values(
                    last_poll_at=now if fence is None else fence.claimed_at,
                    last_outcome=outcome,
                    last_error=error,
                    consecutive_failures=poll_state.c.consecutive_failures + 1,
                    failing_since=func.coalesce(poll_state.c.failing_since, now),
                    backoff_until=backoff_until,
                )
                .returning(
                    poll_state.c.consecutive_failures,
                    poll_state.c.failing_since,
                    poll_state.c.failing_notified,
                )
            ).one()
            failures = int(failures)
            found: list[engine_events.EngineEvent] = []
            failing = (
                interval is not None
                and not notified
                and is_failing(failures=failures, failing_since=since, now=now, interval=interval)
            )
            values: dict[str, Any] = {}
            if failing:
                values["failing_notified"] = True
                found.append(
                    engine_events.trigger_failing(
                        account, trigger, failures=failures, since=since, now=now, error=error
                    )
                )
            paused: str | None = None
            if should_pause(
                failures=failures,
                failing_since=since,
                now=now,
                after=pause_after,
                after_failures=pause_after_failures,
            ):
                began = isoformat_z(since)
                paused = f"{failures} polls in a row failed since {began}; last: {error}"
                values.update(paused=True, paused_reason=paused, paused_auto=True)
                found.append(
                    engine_events.trigger_paused(
                        account, trigger, failures=failures, since=since, error=error
                    )
                )
            if values:
                conn.execute(update(poll_state).where(*_where(account, trigger)).values(**values))
            emit(self.db, conn, found, now)
        return FailureRecord(failures, since, paused_reason=paused, failing=failing)

    def backfill(
        self,
        account: str,
        trigger: str,
        keyed: KeyedItems,
        *,
        event_type: str,
        sinks: Sequence[str],
        now: datetime,
        dry_run: bool,
    ) -> BackfillResult:
        """Fire, once, the listed items that a seeding first poll only remembered."""
        return bulk_then_item_by_item(
            self._backfill,
            account,
            trigger,
            keyed,
            event_type=event_type,
            sinks=sinks,
            now=now,
            dry_run=dry_run,
        )

    def _backfill(
        self,
        account: str,
        trigger: str,
        keyed: KeyedItems,
        *,
        event_type: str,
        sinks: Sequence[str],
        now: datetime,
        dry_run: bool,
        item_by_item: bool,
    ) -> BackfillResult:
        with self.db.tx() as conn:
            remembered = seen.remembered(conn, account, trigger, keyed.keys)
            total = seen.count_remembered(conn, account, trigger)
            candidates = [
                (key, item)
                for key, item in zip(reversed(keyed.keys), reversed(keyed.items), strict=True)
                if key in remembered
            ]
            not_listed = total - len(candidates)
            if dry_run:
                return BackfillResult(fired=len(candidates), deliveries=0, not_listed=not_listed)
            set_aside: list[Quarantined] = []
            write = Writer(self.db, conn, account, trigger, event_type, sinks, now)
            tally = isolated(
                conn,
                encoded(candidates, set_aside),
                write.remembered_items,
                set_aside,
                item_by_item=item_by_item,
            )
            newly = quarantine.hold(self.db, conn, account, trigger, set_aside, now)
            _report_quarantined(self.db, conn, account, trigger, newly, now)
            fired, rows = tally.events, tally.deliveries
        return BackfillResult(fired=fired, deliveries=rows, not_listed=not_listed)

    # ----------------------------------------------------------------- pauses

    def set_paused(
        self,
        account: str,
        trigger: str,
        *,
        paused: bool,
        reason: str | None,
        auto: bool = False,
    ) -> None:
        """Pause or resume one trigger. Pausing keeps its seen set; resuming clears any
        backoff and failure count so it polls at its next turn. ``auto``: paused by the
        sustained-failure rule rather than by hand."""
        with self.db.tx() as conn:
            self._ensure_row(conn, account, trigger)
            values: dict[str, Any] = {
                "paused": paused,
                "paused_reason": reason if paused else None,
                "paused_auto": paused and auto,
            }
            if not paused:
                values.update(
                    backoff_until=None,
                    consecutive_failures=0,
                    failing_since=None,
                    failing_notified=False,
                )
            conn.execute(update(poll_state).where(*_where(account, trigger)).values(**values))

    def clear_backoff(self, account: str, trigger: str) -> PollState | None:
        """Clear one trigger's backoff so that its next turn polls it (``triggers retry``);
        its failure count stays (it is still failing until a poll succeeds). Returns its
        state before, None when it was never polled."""
        with self.db.tx() as conn:
            row = self._row(conn, account, trigger)
            if row is None:
                return None
            conn.execute(
                update(poll_state).where(*_where(account, trigger)).values(backoff_until=None)
            )
            return _state(row)

    def resume_auto_paused(self) -> list[tuple[str, str]]:
        """Resume the triggers the sustained-failure rule paused (at start and reload:
        the operator may have fixed the cause). Paused-by-hand ones stay paused."""
        with self.db.tx() as conn:
            rows = conn.execute(
                select(poll_state.c.account, poll_state.c.trigger).where(poll_state.c.paused_auto)
            ).all()
            if rows:
                conn.execute(
                    update(poll_state)
                    .where(poll_state.c.paused_auto)
                    .values(
                        paused=False,
                        paused_auto=False,
                        paused_reason=None,
                        backoff_until=None,
                        consecutive_failures=0,
                        failing_since=None,
                        failing_notified=False,
                    )
                )
        return [(r.account, r.trigger) for r in rows]


def _report_quarantined(
    db: Database,
    conn: Connection,
    account: str,
    trigger: str,
    newly: Sequence[Quarantined],
    now: datetime,
) -> None:
    """``engine.item_quarantined`` for each item set aside for the first time (at most
    ``MAX_PER_WRITE``, then one that counts the rest), in the poll's transaction."""
    found = [
        engine_events.item_quarantined(account, trigger, key=q.key, reason=q.reason) for q in newly
    ]
    emit(db, conn, engine_events.capped(found), now)
