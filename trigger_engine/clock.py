"""The one clock. Every "now" in the engine comes from here, always timezone-aware UTC.

Tests move time with freezegun, which patches ``datetime.datetime.now``.
"""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def isoformat_z(moment: datetime) -> str:
    """``2026-11-27T10:00:00Z``: UTC, second precision, as in the webhook envelope."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
