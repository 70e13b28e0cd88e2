"""The one clock. Every "now" in the engine comes from here, always timezone-aware UTC.

Tests move time with freezegun, which patches ``datetime.datetime.now``.
"""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def isoformat_z(moment: datetime) -> str:
    """``2026-11-27T10:00:00Z``: UTC, second precision, as in the webhook envelope."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="seconds")[:19] + "Z"  # (strftime is 4x slower)
