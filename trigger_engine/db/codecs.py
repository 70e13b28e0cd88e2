"""How a moment in time is stored: the one conversion, for SQLAlchemy and raw statements.

Every time in the database is UTC. PostgreSQL keeps ``timestamptz``; SQLite has no time
zones and keeps naive UTC as text (SQLAlchemy's ``DateTime`` format,
``2026-11-27 07:00:00.000000``, which sorts as time does). :class:`UTCDateTime` does it for
statements built with SQLAlchemy; :class:`TimeCodec` does the same for the raw hot-path
statements of :mod:`trigger_engine.db.queries`, which skip SQLAlchemy's type processing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def to_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; a naive one is refused (use ``clock.now()``)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use clock.now()")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def as_utc(value: datetime) -> datetime:
    """A time read back from the database as an aware UTC datetime (SQLite's is naive UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sqlite_text(value: datetime | None) -> str | None:
    """A time as SQLite stores it: naive UTC text, microseconds always written."""
    if value is None:
        return None
    return to_utc(value).isoformat(" ", "microseconds")[:26]  # without the "+00:00"


def from_sqlite_text(value: str) -> datetime:
    """The aware UTC datetime of SQLite's stored text."""
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _to_postgresql(value: datetime | None) -> datetime | None:
    return None if value is None else to_utc(value)  # the driver sends it as timestamptz


@dataclass(frozen=True)
class TimeCodec:
    """Times to and from one database's DB-API driver, for raw statements."""

    to_db: Callable[[datetime | None], Any]
    from_db: Callable[[Any], datetime]

    @classmethod
    def for_dialect(cls, dialect: str) -> TimeCodec:
        """SQLite's text, or PostgreSQL's timestamptz."""
        if dialect == "sqlite":
            return cls(sqlite_text, from_sqlite_text)
        return cls(_to_postgresql, as_utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on SQLite (stored as naive UTC text,
    which sorts correctly) and PostgreSQL (timestamptz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """An aware time to what the dialect stores."""
        if value is None:
            return None
        value = to_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """A stored time back to an aware UTC datetime."""
        if value is None:
            return None
        assert isinstance(value, datetime)
        return as_utc(value)
