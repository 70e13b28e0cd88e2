"""The delivery retry policy. Pure: no clock, no randomness of its own, no I/O.

After attempt *n* fails, the next attempt waits ``schedule[n-1]`` (±``jitter``), or the
receiver's ``Retry-After`` when that is longer (clamped to ``max_retry_after``). When the
schedule is used up the delivery is dead. ``410 Gone`` disables the sink.
The default schedule is Svix's: 5s, 5m, 30m, 2h, 5h, 10h, 10h (eight attempts in all).
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

DEFAULT_SCHEDULE: tuple[float, ...] = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
MAX_RETRY_AFTER = 86400.0  # a receiver may not push a retry further than a day


class Verdict(StrEnum):
    """What follows one delivery attempt."""

    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"  # schedule used up
    GONE = "gone"  # 410: disable the sink


@dataclass(frozen=True)
class RetryPolicy:
    """A sink's retry schedule and its bounds."""

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.2  # ±20%
    max_retry_after: float = MAX_RETRY_AFTER


@dataclass(frozen=True)
class Decision:
    """A verdict, with the delay before the next attempt for a retry."""

    verdict: Verdict
    delay: float | None = None  # seconds until the next attempt, for RETRY


def decide(
    policy: RetryPolicy,
    *,
    attempts: int,
    status: int | None,
    retry_after: float | None = None,
    rand: Callable[[], float],
) -> Decision:
    """What follows attempt number ``attempts`` (1-based), which got HTTP ``status``
    (None: timeout or connection error). ``rand`` returns a float in [0, 1)."""
    if status is not None and 200 <= status < 300:
        return Decision(Verdict.DELIVERED)
    if status == 410:
        return Decision(Verdict.GONE)
    if attempts > len(policy.schedule):
        return Decision(Verdict.DEAD)
    base = policy.schedule[attempts - 1]
    delay = base * (1 - policy.jitter + 2 * policy.jitter * rand())
    if retry_after is not None:  # a receiver may ask for more time, never for less
        delay = max(delay, min(retry_after, policy.max_retry_after))
    return Decision(Verdict.RETRY, delay)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from ``now`` that a ``Retry-After`` header asks for: delta-seconds or an
    HTTP date. None when absent or unreadable; never negative."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


# --------------------------------------------------------------------------- polls


def should_pause(
    *, failures: int, failing_since: datetime, now: datetime, after: float, after_failures: int
) -> bool:
    """The sustained-failure rule: a trigger that has failed ``after_failures`` polls in a
    row over at least ``after`` seconds is paused (0 failures: never). Zapier turns a Zap
    off when 95% of its runs over 7 days fail; counting only unbroken failures, we never
    pause a trigger that still succeeds now and then."""
    if after_failures <= 0 or failures < after_failures:
        return False
    return (now - failing_since).total_seconds() >= after


MAX_POLL_BACKOFF = 3600.0
STORE_BACKOFF_CAP = 60.0  # a poll the store failed: our database, not the API's fault

# A poll whose failures in a row span longer than this many of its intervals is *failing*:
# status, the metrics and /healthz say so (a blip that the next poll fixes is not).
FAILING_AFTER_INTERVALS = 3.0


def is_failing(
    *, failures: int, failing_since: datetime | None, now: datetime, interval: float
) -> bool:
    """Whether a trigger's polls have failed for longer than ``FAILING_AFTER_INTERVALS``."""
    if failures <= 0 or failing_since is None:
        return False
    return (now - failing_since).total_seconds() > FAILING_AFTER_INTERVALS * interval


# --------------------------------------------------------------------------- the store

# Seconds between the runs of a unit of work that lost its database connection (about 8 s
# in all); then its caller decides (see trigger_engine.db.engine).
UNIT_OF_WORK_RETRY: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
# Seconds the dispatcher waits before trying the database again, by failure in a row
# (the last one repeats): it keeps trying until it is stopped.
STORE_OUTAGE_WAITS: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0)


def outage_wait(failures: int) -> float:
    """The wait before the next try after ``failures`` (1-based) store failures in a row."""
    return STORE_OUTAGE_WAITS[min(max(failures, 1), len(STORE_OUTAGE_WAITS)) - 1]


def poll_backoff(
    *,
    failures: int,
    interval: float,
    retry_after: float | None,
    rand: Callable[[], float],
    cap: float = MAX_POLL_BACKOFF,
    jitter: float = 0.2,
) -> float:
    """Seconds to wait before polling again after ``failures`` consecutive failed polls:
    the interval doubled per failure beyond the first (±jitter), capped at ``cap`` (but
    never below the interval itself); a longer ``Retry-After`` wins, up to a day."""
    doublings = min(max(0, failures - 1), 64)  # bounded: 2.0**1025 overflows
    base = min(interval * 2.0**doublings, max(cap, interval))
    delay = base * (1 - jitter + 2 * jitter * rand())
    if retry_after is not None:  # the API may ask for more time, never for less
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay
