"""Which events and deliveries a command is about. Pure: no I/O of its own.

``events``, ``replay`` and the retention sweep all select over the store with an
``EventFilter``; this module builds one from what the user typed (TIME is ISO 8601 or a
relative duration meaning "that long ago") and checks that it makes sense.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from trigger_engine.core.durations import parse_duration
from trigger_engine.core.keys import lookup_key
from trigger_engine.core.words import did_you_mean
from trigger_engine.errors import UsageError
from trigger_engine.states import DELIVERY_STATUSES
from trigger_engine.types import EventFilter

# The earliest time a filter can name: a duration ago may reach back this far, no further.
EARLIEST = datetime.min.replace(tzinfo=UTC)


def parse_time(text: str, now: datetime, *, option: str) -> datetime:
    """ISO 8601 (a date, or a date and time; UTC unless it says otherwise) or a duration
    meaning that long before ``now`` (``2h``, ``30m``, ``7d``).

    The range is Python's (years 1 to 9999, in UTC): a duration ago that would reach back
    before the year 1, or a time whose offset takes it outside, is a UsageError sentence.
    """
    value = text.strip()
    try:
        seconds = parse_duration(value)
    except ValueError:
        pass
    else:
        if seconds > (now - EARLIEST).total_seconds():
            raise UsageError(
                f"{option} '{text}' reaches back before the year 1: give a shorter duration "
                "or an ISO 8601 time"
            )
        try:
            return now - timedelta(seconds=seconds)
        except OverflowError:  # a few microseconds past the year 1, by float rounding
            return EARLIEST
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option} '{text}' is neither an ISO 8601 time (2026-11-27T10:00:00Z) "
            "nor a duration ago (2h, 30m, 7d)"
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise UsageError(
            f"{option} '{text}' is outside the times it can name (years 1 to 9999, UTC)"
        ) from None


def build_filter(
    *,
    now: datetime,
    event_ids: tuple[str, ...] = (),
    since: str | None = None,
    until: str | None = None,
    types: tuple[str, ...] = (),
    accounts: tuple[str, ...] = (),
    sinks: tuple[str, ...] = (),
    statuses: tuple[str, ...] = (),
    item_key: str | None = None,
    allowed_statuses: tuple[str, ...] = DELIVERY_STATUSES,
) -> EventFilter:
    """The EventFilter of a command's options, checked (statuses, times, their order).
    ``item_key`` is the key as the user typed it: it is looked up as the store holds it."""
    for status in statuses:
        if status not in allowed_statuses:
            raise UsageError(
                f"--status '{status}' is not one of {', '.join(allowed_statuses)}"
                + did_you_mean(status, allowed_statuses)
            )
    start = parse_time(since, now, option="--since") if since else None
    end = parse_time(until, now, option="--until") if until else None
    if start is not None and end is not None and start >= end:
        raise UsageError(f"--since ({since}) must be earlier than --until ({until})")
    return EventFilter(
        event_ids=event_ids,
        since=start,
        until=end,
        types=types,
        accounts=accounts,
        item_key=None if item_key is None else lookup_key(item_key),
        sinks=sinks,
        statuses=statuses,
    )
