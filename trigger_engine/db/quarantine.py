"""The quarantine (``quarantine``): items a poll set aside, with the reason, so that one
bad item never stops the others. A quarantined item is not marked seen, so every later
poll that lists it tries it again; it leaves the quarantine when it is processed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from trigger_engine.core.dedupe import Quarantined
from trigger_engine.db.engine import Database, chunks, units_of_work
from trigger_engine.db.schema import quarantine
from trigger_engine.types import EventFilter, QuarantineView


def _of(account: str, trigger: str) -> tuple[Any, Any]:
    return quarantine.c.account == account, quarantine.c.trigger == trigger


def hold(
    db: Database,
    conn: Connection,
    account: str,
    trigger: str,
    items: Sequence[Quarantined],
    now: datetime,
) -> list[Quarantined]:
    """Set ``items`` aside (or note that a poll saw them again); returns those that were not
    in the quarantine before (the ones to log: one line per item, not one per poll)."""
    if not items:
        return []
    known: set[str] = set()
    for chunk in chunks([q.key for q in items]):
        known.update(
            conn.execute(
                select(quarantine.c.key).where(*_of(account, trigger), quarantine.c.key.in_(chunk))
            ).scalars()
        )
    new = [q for q in items if q.key not in known]
    again = [q for q in items if q.key in known]
    if new:
        conn.execute(
            db.insert(quarantine).on_conflict_do_nothing(
                index_elements=["account", "trigger", "key"]
            ),
            [
                {
                    "account": account,
                    "trigger": trigger,
                    "key": q.key,
                    "reason": q.reason,
                    "first_seen_at": now,
                    "last_seen_at": now,
                }
                for q in new
            ],
        )
    for q in again:
        conn.execute(
            update(quarantine)
            .where(*_of(account, trigger), quarantine.c.key == q.key)
            .values(reason=q.reason, last_seen_at=now, polls=quarantine.c.polls + 1)
        )
    return new


def release(
    conn: Connection,
    account: str,
    trigger: str,
    keys: Iterable[str],
    *,
    anything: bool | None = None,
) -> int:
    """The items of ``keys`` were processed: out of the quarantine. Returns how many left.
    ``anything``: whether the trigger has items in quarantine, when the caller knows (a
    poll's fence check reads it); otherwise one query asks."""
    if anything is None:
        found = conn.execute(select(quarantine.c.key).where(*_of(account, trigger)).limit(1))
        anything = found.first() is not None
    if not anything:  # the usual case: nothing to look up key by key
        return 0
    released = 0
    for chunk in chunks(list(keys)):
        released += conn.execute(
            delete(quarantine).where(*_of(account, trigger), quarantine.c.key.in_(chunk))
        ).rowcount
    return released


@units_of_work
class QuarantineRepository:
    """Reads the quarantine; prunes items no poll has seen for a long time."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def counts(self) -> dict[tuple[str, str], int]:
        """How many items each (account, trigger) has in quarantine."""
        with self.db.tx() as conn:
            rows = conn.execute(
                select(quarantine.c.account, quarantine.c.trigger, func.count()).group_by(
                    quarantine.c.account, quarantine.c.trigger
                )
            ).all()
        return {(account, trigger): int(n) for account, trigger, n in rows}

    def list(
        self, f: EventFilter, *, triggers: dict[str, str] | None = None, limit: int
    ) -> list[QuarantineView]:
        """Quarantined items matching ``f`` (account, time, key; ``types`` through
        ``triggers``, each trigger's event type), most recently seen first."""
        query = select(quarantine)
        if f.accounts:
            query = query.where(quarantine.c.account.in_(f.accounts))
        if f.since is not None:
            query = query.where(quarantine.c.last_seen_at >= f.since)
        if f.until is not None:
            query = query.where(quarantine.c.first_seen_at < f.until)
        if f.item_key is not None:
            query = query.where(quarantine.c.key == f.item_key)
        if f.types:
            wanted = [t for t, kind in (triggers or {}).items() if kind in f.types]
            query = query.where(quarantine.c.trigger.in_(wanted))
        query = query.order_by(
            quarantine.c.last_seen_at.desc(), quarantine.c.account, quarantine.c.key
        ).limit(limit)
        with self.db.tx() as conn:
            rows = conn.execute(query).all()
        return [
            QuarantineView(
                account=r.account,
                trigger=r.trigger,
                key=r.key,
                reason=r.reason,
                first_seen_at=r.first_seen_at,
                last_seen_at=r.last_seen_at,
                polls=r.polls,
            )
            for r in rows
        ]

    def prune(self, cutoff: datetime) -> int:
        """Forget items no poll has listed since ``cutoff`` (the retention sweep)."""
        with self.db.tx() as conn:
            return int(
                conn.execute(delete(quarantine).where(quarantine.c.last_seen_at < cutoff)).rowcount
            )
