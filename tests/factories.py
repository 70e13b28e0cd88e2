"""Value objects the pure tests build again and again, with defaults that say "nothing
special": an enabled sink with nothing in flight."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from trigger_engine.types import SinkStats

NO_DELIVERIES = {"pending": 0, "failed": 0, "dead": 0, "held": 0, "delivered": 0}


def sink_stats(name: str, oldest_due_created_at: datetime | None, **counts: int) -> SinkStats:
    """One enabled sink's stats: its deliveries by status (0 for those not given)."""
    return SinkStats(
        name=name,
        counts={**NO_DELIVERIES, **counts},
        in_flight=0,
        oldest_due_created_at=oldest_due_created_at,
        disabled=False,
        disabled_reason=None,
        disabled_at=None,
        last_success_at=None,
    )


def with_fields(stats: SinkStats, **fields: Any) -> SinkStats:
    """``stats`` with other stored state (``in_flight``, ``last_success_at``, ...)."""
    return replace(stats, **fields)
