"""Tests for trigger_engine.core.retry: the delivery retry policy and poll backoff, as tables."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from trigger_engine.core.retry import (
    DEFAULT_SCHEDULE,
    MAX_POLL_BACKOFF,
    MAX_RETRY_AFTER,
    Decision,
    RetryPolicy,
    Verdict,
    decide,
    parse_retry_after,
    poll_backoff,
)

LOW: Callable[[], float] = lambda: 0.0  # noqa: E731
HIGH: Callable[[], float] = lambda: 0.999999  # noqa: E731
MID: Callable[[], float] = lambda: 0.5  # noqa: E731
DEFAULT = RetryPolicy()
NOW = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)


def test_default_schedule_is_svix() -> None:
    assert DEFAULT_SCHEDULE == (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    assert DEFAULT.schedule == DEFAULT_SCHEDULE
    assert DEFAULT.jitter == 0.2
    assert MAX_RETRY_AFTER == 86400.0


@pytest.mark.parametrize(
    ("attempts", "base"),
    [(1, 5.0), (2, 300.0), (3, 1800.0), (4, 7200.0), (5, 18000.0), (6, 36000.0), (7, 36000.0)],
)
@pytest.mark.parametrize("status", [500, None])
def test_default_schedule_delays(attempts: int, base: float, status: int | None) -> None:
    middle = decide(DEFAULT, attempts=attempts, status=status, rand=MID)
    assert middle == Decision(Verdict.RETRY, pytest.approx(base))
    low = decide(DEFAULT, attempts=attempts, status=status, rand=LOW)
    high = decide(DEFAULT, attempts=attempts, status=status, rand=HIGH)
    assert low.verdict is high.verdict is Verdict.RETRY
    assert low.delay == pytest.approx(base * 0.8)
    assert high.delay == pytest.approx(base * 1.2, rel=1e-5)
    assert high.delay is not None
    assert high.delay <= base * 1.2


@pytest.mark.parametrize("attempts", [8, 9, 100])
@pytest.mark.parametrize("status", [500, 429, 404, None])
def test_schedule_used_up_is_dead(attempts: int, status: int | None) -> None:
    decision = decide(DEFAULT, attempts=attempts, status=status, rand=MID)
    assert decision == Decision(Verdict.DEAD)
    assert decision.delay is None


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (201, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (299, Verdict.DELIVERED),
        (410, Verdict.GONE),
        (199, Verdict.RETRY),
        (300, Verdict.RETRY),
        (301, Verdict.RETRY),
        (400, Verdict.RETRY),
        (404, Verdict.RETRY),
        (409, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (None, Verdict.RETRY),
    ],
)
def test_status_table(status: int | None, verdict: Verdict) -> None:
    decision = decide(DEFAULT, attempts=1, status=status, rand=MID)
    assert decision.verdict is verdict
    if verdict is Verdict.RETRY:
        assert decision.delay == pytest.approx(5.0)
    else:
        assert decision.delay is None


@pytest.mark.parametrize("status", [200, 204, 410])
def test_success_and_gone_win_even_after_the_schedule(status: int) -> None:
    """A 2xx on the last attempt is delivered, and a 410 is gone, not dead."""
    verdict = decide(DEFAULT, attempts=8, status=status, rand=MID).verdict
    assert verdict is (Verdict.GONE if status == 410 else Verdict.DELIVERED)


@pytest.mark.parametrize(
    ("attempts", "retry_after", "rand", "expected"),
    [
        pytest.param(1, 60.0, MID, 60.0, id="longer-wins"),
        pytest.param(1, 5.5, LOW, 5.5, id="longer-than-low-jitter-wins"),
        pytest.param(1, 2.0, MID, 5.0, id="shorter-ignored"),
        pytest.param(1, 0.0, MID, 5.0, id="zero-ignored"),
        pytest.param(2, 299.0, MID, 300.0, id="just-shorter-ignored"),
        pytest.param(3, 7200.0, MID, 7200.0, id="hour-scale"),
        pytest.param(1, MAX_RETRY_AFTER, MID, MAX_RETRY_AFTER, id="exactly-a-day"),
        pytest.param(1, 10 * 86400.0, MID, MAX_RETRY_AFTER, id="clamped-to-a-day"),
        pytest.param(7, 7 * 86400.0, HIGH, MAX_RETRY_AFTER, id="clamped-on-last-attempt"),
        pytest.param(1, None, MID, 5.0, id="absent"),
    ],
)
def test_retry_after(
    attempts: int, retry_after: float | None, rand: Callable[[], float], expected: float
) -> None:
    decision = decide(DEFAULT, attempts=attempts, status=503, retry_after=retry_after, rand=rand)
    assert decision == Decision(Verdict.RETRY, pytest.approx(expected))


def test_retry_after_does_not_resurrect_a_dead_delivery() -> None:
    decision = decide(DEFAULT, attempts=8, status=429, retry_after=60.0, rand=MID)
    assert decision.verdict is Verdict.DEAD


def test_retry_after_never_shortens_a_long_scheduled_delay() -> None:
    """A Retry-After asks to wait *at least* that long; clamping it to a day must not cut a
    scheduled delay that is itself longer than a day (sink schedules accept any duration)."""
    policy = RetryPolicy(schedule=(2 * 86400.0,))
    plain = decide(policy, attempts=1, status=503, rand=MID)
    assert plain.delay == pytest.approx(2 * 86400.0)
    asked = decide(policy, attempts=1, status=503, retry_after=3 * 86400.0, rand=MID)
    assert asked.verdict is Verdict.RETRY
    assert asked.delay is not None
    assert asked.delay >= 2 * 86400.0


@pytest.mark.parametrize("status", [500, 404, None])
def test_empty_schedule_first_failure_is_dead(status: int | None) -> None:
    policy = RetryPolicy(schedule=())
    assert decide(policy, attempts=1, status=status, rand=MID).verdict is Verdict.DEAD
    assert decide(policy, attempts=1, status=200, rand=MID).verdict is Verdict.DELIVERED
    assert decide(policy, attempts=1, status=410, rand=MID).verdict is Verdict.GONE


@pytest.mark.parametrize(
    ("attempts", "rand", "expected"),
    [
        (1, MID, Decision(Verdict.RETRY, 1.0)),
        (2, MID, Decision(Verdict.RETRY, 10.0)),
        (3, MID, Decision(Verdict.DEAD)),
        (1, LOW, Decision(Verdict.RETRY, 1.0)),
        (2, HIGH, Decision(Verdict.RETRY, 10.0)),
    ],
)
def test_custom_schedule_without_jitter(
    attempts: int, rand: Callable[[], float], expected: Decision
) -> None:
    policy = RetryPolicy(schedule=(1.0, 10.0), jitter=0.0)
    assert decide(policy, attempts=attempts, status=500, rand=rand) == expected


@pytest.mark.parametrize(("rand", "expected"), [(LOW, 50.0), (MID, 100.0), (HIGH, 150.0)])
def test_custom_jitter(rand: Callable[[], float], expected: float) -> None:
    policy = RetryPolicy(schedule=(100.0,), jitter=0.5)
    decision = decide(policy, attempts=1, status=500, rand=rand)
    assert decision.delay == pytest.approx(expected, rel=1e-5)


def test_custom_max_retry_after() -> None:
    policy = RetryPolicy(schedule=(5.0,), max_retry_after=60.0)
    decision = decide(policy, attempts=1, status=429, retry_after=3600.0, rand=MID)
    assert decision.delay == pytest.approx(60.0)


# ----------------------------------------------------------------- parse_retry_after


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("120", 120.0, id="seconds"),
        pytest.param(" 5 ", 5.0, id="padded-seconds"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param(format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0, id="date"),
        pytest.param("Fri, 27 Nov 2026 11:00:00 GMT", 3600.0, id="literal-date-future"),
        pytest.param(format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0, id="past"),
        pytest.param(format_datetime(NOW, usegmt=True), 0.0, id="now"),
        pytest.param("Fri, 27 Nov 2026 12:00:00 +0200", 0.0, id="offset-date-is-now"),
        pytest.param("Fri, 27 Nov 2026 10:00:30 +0000", 30.0, id="utc-offset"),
        pytest.param("garbage", None, id="garbage"),
        pytest.param("-5", None, id="negative"),
        pytest.param("1.5", None, id="fractional"),
        pytest.param("5s", None, id="unit-suffix"),
        pytest.param("²", None, id="unicode-superscript-digit"),
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty"),
        pytest.param("   ", None, id="blank"),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    result = parse_retry_after(value, NOW)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


# ----------------------------------------------------------------- poll_backoff


@pytest.mark.parametrize(
    ("failures", "interval", "expected"),
    [
        pytest.param(0, 300.0, 300.0, id="no-failure-is-the-interval"),
        pytest.param(1, 300.0, 300.0, id="first-failure-is-the-interval"),
        pytest.param(2, 300.0, 600.0, id="doubles"),
        pytest.param(3, 300.0, 1200.0, id="doubles-again"),
        pytest.param(4, 300.0, 2400.0, id="and-again"),
        pytest.param(5, 300.0, 3600.0, id="capped"),
        pytest.param(50, 300.0, 3600.0, id="stays-capped"),
        pytest.param(1025, 300.0, 3600.0, id="43-days-of-hourly-failures"),
        pytest.param(1, 60.0, 60.0, id="short-interval"),
        pytest.param(7, 60.0, 3600.0, id="short-interval-capped"),
        pytest.param(1, 7200.0, 7200.0, id="interval-above-cap"),
        pytest.param(10, 7200.0, 7200.0, id="never-below-interval"),
    ],
)
def test_poll_backoff_without_jitter(failures: int, interval: float, expected: float) -> None:
    delay = poll_backoff(
        failures=failures, interval=interval, retry_after=None, rand=MID, jitter=0.0
    )
    assert delay == pytest.approx(expected)
    assert poll_backoff(failures=failures, interval=interval, retry_after=None, rand=MID) == (
        pytest.approx(expected)
    )


@pytest.mark.parametrize(("failures", "base"), [(1, 300.0), (3, 1200.0), (9, MAX_POLL_BACKOFF)])
def test_poll_backoff_jitter_bounds(failures: int, base: float) -> None:
    low = poll_backoff(failures=failures, interval=300.0, retry_after=None, rand=LOW)
    high = poll_backoff(failures=failures, interval=300.0, retry_after=None, rand=HIGH)
    assert low == pytest.approx(base * 0.8)
    assert high == pytest.approx(base * 1.2, rel=1e-5)
    assert high <= base * 1.2


def test_poll_backoff_custom_cap() -> None:
    delay = poll_backoff(failures=6, interval=10.0, retry_after=None, rand=MID, cap=100.0)
    assert delay == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("failures", "retry_after", "expected"),
    [
        pytest.param(1, 900.0, 900.0, id="longer-wins"),
        pytest.param(1, 30.0, 300.0, id="shorter-ignored"),
        pytest.param(9, 7200.0, 7200.0, id="wins-over-the-cap"),
        pytest.param(1, 5 * 86400.0, MAX_RETRY_AFTER, id="clamped-to-a-day"),
    ],
)
def test_poll_backoff_retry_after(failures: int, retry_after: float, expected: float) -> None:
    delay = poll_backoff(failures=failures, interval=300.0, retry_after=retry_after, rand=MID)
    assert delay == pytest.approx(expected)


def test_poll_backoff_retry_after_never_shortens_a_long_interval() -> None:
    """An interval longer than a day must not be cut short by a (clamped) Retry-After."""
    interval = 2 * 86400.0
    delay = poll_backoff(failures=1, interval=interval, retry_after=3 * 86400.0, rand=MID)
    assert delay >= interval
