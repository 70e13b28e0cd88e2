"""Tests for trigger_engine.polling.deadline: the time one socket operation may take."""

from __future__ import annotations

import httpcore
import pytest
from freezegun import freeze_time

from trigger_engine.polling.deadline import deadline, time_left


@pytest.mark.parametrize(
    ("timeout", "elapsed", "expected"),
    [
        pytest.param(30.0, 0, 10.0, id="the-deadline-is-nearer"),
        pytest.param(4.0, 0, 4.0, id="the-timeout-is-nearer"),
        pytest.param(30.0, 7.5, 2.5, id="what-is-left"),
        pytest.param(None, 3, 7.0, id="no-timeout-of-its-own"),
    ],
)
def test_an_operation_gets_the_smaller_of_its_timeout_and_the_time_left(
    timeout: float | None, elapsed: float, expected: float
) -> None:
    with freeze_time("2026-11-27T10:00:00Z") as clock, deadline(10):
        clock.tick(elapsed)
        assert time_left(timeout, httpcore.ReadTimeout) == pytest.approx(expected)


@pytest.mark.parametrize("elapsed", [10, 10.001, 3600])
def test_past_the_deadline_every_operation_raises_its_timeout(elapsed: float) -> None:
    with freeze_time("2026-11-27T10:00:00Z") as clock, deadline(10):
        clock.tick(elapsed)
        with pytest.raises(httpcore.WriteTimeout):
            time_left(5.0, httpcore.WriteTimeout)


def test_without_a_deadline_the_timeout_is_kept() -> None:
    assert time_left(5.0, httpcore.ReadTimeout) == 5.0
    assert time_left(None, httpcore.ReadTimeout) is None


def test_nested_deadlines_keep_the_earlier_and_end_with_their_block() -> None:
    with freeze_time("2026-11-27T10:00:00Z"):
        with deadline(10):
            with deadline(60):
                assert time_left(None, httpcore.ReadTimeout) == pytest.approx(10)
            with deadline(2):
                assert time_left(None, httpcore.ReadTimeout) == pytest.approx(2)
            assert time_left(None, httpcore.ReadTimeout) == pytest.approx(10)
        assert time_left(None, httpcore.ReadTimeout) is None
