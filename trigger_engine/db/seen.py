"""The seen set (``seen_keys``): the source of truth for dedupe, one row per (account,
trigger, key), never pruned while the trigger exists.

New keys go in with ``INSERT … ON CONFLICT DO NOTHING RETURNING key``, so that even two
overlapping polls cannot both take one key: only the keys a statement returns are new.
The functions here run inside the caller's transaction (a poll's outbox write).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from trigger_engine.db.engine import CHUNK, Database, chunks, units_of_work
from trigger_engine.db.schema import seen_keys


def _of(account: str, trigger: str) -> tuple[Any, Any]:
    return seen_keys.c.account == account, seen_keys.c.trigger == trigger


def known_keys(
    db: Database,
    conn: Connection,
    account: str,
    trigger: str,
    keys: Sequence[str],
    *,
    items_known: int | None = None,
) -> set[str]:
    """Which of ``keys`` are seen. When the response is about as large as the seen set (a
    full list polled again), one scan of the trigger's keys beats many IN lists; otherwise
    the IN lists read only what is asked."""
    if items_known is not None and len(keys) > CHUNK and items_known <= 2 * len(keys):
        rows = conn.exec_driver_sql(db.queries.trigger_keys, (account, trigger))
        return {row[0] for row in rows}
    known: set[str] = set()
    for chunk in chunks(keys):
        known.update(
            conn.execute(
                select(seen_keys.c.key).where(*_of(account, trigger), seen_keys.c.key.in_(chunk))
            ).scalars()
        )
    return known


def known_versions(
    conn: Connection, account: str, trigger: str, keys: Sequence[str]
) -> dict[str, str | None]:
    """The remembered version of each of ``keys`` that is seen (an "updated item" trigger)."""
    known: dict[str, str | None] = {}
    for chunk in chunks(keys):
        for key, version in conn.execute(
            select(seen_keys.c.key, seen_keys.c.version).where(
                *_of(account, trigger), seen_keys.c.key.in_(chunk)
            )
        ):
            known[key] = version
    return known


def bump_versions(
    conn: Connection,
    account: str,
    trigger: str,
    changes: Sequence[tuple[str, Any, str, str | None]],
) -> list[tuple[str, Any]]:
    """Move each changed item to its new version; only the rows this transaction moved
    fire (the compare-and-set is the guard against a concurrent poll)."""
    fired = []
    for key, item, new, old in changes:
        same_old = seen_keys.c.version.is_(None) if old is None else seen_keys.c.version == old
        moved = conn.execute(
            update(seen_keys)
            .where(*_of(account, trigger), seen_keys.c.key == key, same_old)
            .values(version=new)
        ).rowcount
        if moved:
            fired.append((key, item))
    return fired


def insert_keys(
    db: Database,
    conn: Connection,
    account: str,
    trigger: str,
    fresh: Sequence[tuple[str, Any]],
    *,
    seeded: bool,
    now: datetime,
    versions: Mapping[str, str] | None = None,
) -> set[str]:
    """Mark the keys of ``fresh`` seen; returns those this statement inserted (the new ones)."""
    inserted: set[str] = set()
    stmt = (
        db.insert(seen_keys)
        .on_conflict_do_nothing(index_elements=["account", "trigger", "key"])
        .returning(seen_keys.c.key)
    )
    for chunk in chunks(fresh):
        rows = [
            {
                "account": account,
                "trigger": trigger,
                "key": key,
                "first_seen_at": now,
                "seeded": seeded,
                "version": None if versions is None else versions[key],
            }
            for key, _item in chunk
        ]
        inserted.update(conn.execute(stmt, rows).scalars())
    return inserted


def remembered(conn: Connection, account: str, trigger: str, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` a seeding first poll remembered without firing."""
    found: set[str] = set()
    for chunk in chunks(keys):
        found.update(
            conn.execute(
                select(seen_keys.c.key).where(
                    *_of(account, trigger), seen_keys.c.seeded, seen_keys.c.key.in_(chunk)
                )
            ).scalars()
        )
    return found


def count_remembered(conn: Connection, account: str, trigger: str) -> int:
    """How many keys of the trigger are remembered and not fired."""
    return int(
        conn.execute(
            select(func.count()).where(*_of(account, trigger), seen_keys.c.seeded)
        ).scalar_one()
    )


def unremember(conn: Connection, account: str, trigger: str, keys: Sequence[str]) -> set[str]:
    """Flip remembered keys to fired; returns those this transaction flipped."""
    flipped: set[str] = set()
    for chunk in chunks(keys):
        flipped.update(
            conn.execute(
                update(seen_keys)
                .where(*_of(account, trigger), seen_keys.c.seeded, seen_keys.c.key.in_(chunk))
                .values(seeded=False)
                .returning(seen_keys.c.key)
            ).scalars()
        )
    return flipped


@units_of_work
class SeenKeys:
    """The seen set, read outside a poll's write (the poller's page-by-page check)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def known_keys(self, account: str, trigger: str, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` are seen."""
        with self.db.tx() as conn:
            return known_keys(self.db, conn, account, trigger, keys)
