"""Tests for trigger_engine.core.circuit (a sink's health: up, or down and probed once per
step) and for what an attempt's result means when the sink is down, gone or used up
(trigger_engine.delivery.attempt.outcome), with explicit clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trigger_engine.config import Sink
from trigger_engine.core.circuit import (
    DOWN_AFTER,
    Change,
    Health,
    SinkHealth,
    probe_interval,
)
from trigger_engine.delivery.attempt import outcome
from trigger_engine.states import DeliveryStatus
from trigger_engine.types import AttemptOutcome, DueDelivery

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("schedule", "every"),
    [
        ((5.0, 300.0, 1800.0), 5.0),  # Svix's: its first step
        ((0.2, 300.0), 1.0),  # never more often than once a second
        ((), 5.0),  # no retries at all: the default
        ((300.0,), 300.0),  # one step of five minutes: once per step
    ],
)
def test_probes_come_once_per_first_step(schedule: tuple[float, ...], every: float) -> None:
    assert probe_interval(schedule) == every


def test_failures_in_a_row_make_a_sink_down_and_an_answer_resets_the_count() -> None:
    h = SinkHealth(probe_every=5.0)
    assert h.observe(failed=True, probe=False, now=at(0)) is None
    assert h.observe(failed=False, probe=False, now=at(1)) is None  # a 400, or a 2xx
    for i in range(DOWN_AFTER - 1):
        assert h.observe(failed=True, probe=False, now=at(2 + i)) is None
    assert h.state is Health.UP
    assert h.observe(failed=True, probe=False, now=at(10)) is Change.WENT_DOWN
    assert (h.down, h.down_since, h.next_probe_at) == (True, at(10), at(15))


def test_steady_means_an_answer_would_change_nothing() -> None:
    """The dispatcher skips observe() for an answer while the sink is steady: that must
    be exactly when observe() would change no field and report no change."""
    h = SinkHealth(probe_every=5.0, down_after=2)
    assert h.steady
    before = vars(h).copy()
    assert h.observe(failed=False, probe=False, now=at(0)) is None
    assert vars(h) == before
    h.observe(failed=True, probe=False, now=at(1))
    assert not h.steady  # one failure counted: an answer resets it
    h.observe(failed=False, probe=False, now=at(2))
    assert h.steady and h.failures == 0
    h.observe(failed=True, probe=False, now=at(3))
    assert h.observe(failed=True, probe=False, now=at(4)) is Change.WENT_DOWN
    assert not h.steady  # down: an answer brings it back
    assert h.observe(failed=False, probe=False, now=at(5)) is Change.CAME_BACK
    assert h.steady


def test_a_down_sink_gets_one_probe_per_step_and_comes_back_at_the_first_success() -> None:
    h = SinkHealth(probe_every=5.0, down_after=1)
    assert h.observe(failed=True, probe=False, now=at(0)) is Change.WENT_DOWN
    assert not h.may_probe(at(4.9))
    assert h.seconds_to_probe(at(4)) == pytest.approx(1.0)
    assert h.may_probe(at(5))
    h.probe_started()
    assert not h.may_probe(at(100))  # one in flight at a time
    assert h.seconds_to_probe(at(6)) is None
    # attempts that were in flight before it went down: counted, no new probe time
    assert h.observe(failed=True, probe=False, now=at(6)) is None
    assert h.observe(failed=True, probe=True, now=at(7)) is None  # the probe failed
    assert (h.down, h.next_probe_at) == (True, at(12))
    assert not h.may_probe(at(11))
    h.probe_started()
    assert h.observe(failed=False, probe=True, now=at(13)) is Change.CAME_BACK
    assert (h.state, h.failures, h.probes, h.next_probe_at) == (Health.UP, 0, 2, None)
    assert not h.may_probe(at(100))  # up: no probes, everything is sent


def test_an_abandoned_probe_is_tried_again_a_step_later() -> None:
    h = SinkHealth(probe_every=2.0, down_after=1)
    h.observe(failed=True, probe=False, now=at(0))
    h.probe_started()
    h.probe_abandoned(at(3))  # nothing to send, or given back
    assert (h.probing, h.next_probe_at) == (False, at(5))


def test_a_success_of_an_attempt_in_flight_brings_a_down_sink_back() -> None:
    h = SinkHealth(probe_every=5.0, down_after=1)
    h.observe(failed=True, probe=False, now=at(0))
    assert h.observe(failed=False, probe=False, now=at(1)) is Change.CAME_BACK


@pytest.mark.parametrize(
    ("code", "down"),
    [(None, True), (500, True), (503, True), (429, True), (408, True), (400, False), (410, False)],
)
def test_what_counts_as_the_receiver_being_down(code: int | None, down: bool) -> None:
    o = AttemptOutcome(1, "crm", "evt_1", 1, T0, 5, code, "x", DeliveryStatus.FAILED)
    assert o.sink_down is down


# ----------------------------------------------------------------------- attempt outcomes

SINK = Sink.model_validate(
    {"name": "crm", "url": "http://127.0.0.1:9/hook", "retry": {"schedule": ["1s", "5m"]}}
)


def delivery(attempts: int, probes: int = 0, *, early: bool = False) -> DueDelivery:
    return DueDelivery(
        1, "crm", attempts, "evt_1", "lead.new", "acme", T0, b"{}", probes, early, at(300)
    )


def result(d: DueDelivery, status: int | None) -> AttemptOutcome:
    return outcome(
        SINK,
        d,
        started_at=T0,
        duration_ms=5,
        status=status,
        error=None if status == 204 else "HTTP x",
        retry_after=None,
        clock=lambda: T0,
        rand=lambda: 0.5,
    )


def test_dead_only_when_the_schedule_is_used_up() -> None:
    assert result(delivery(0), 503).new_status is DeliveryStatus.FAILED
    assert result(delivery(1), 503).new_status is DeliveryStatus.FAILED
    assert result(delivery(2), 503).new_status is DeliveryStatus.DEAD  # 3rd attempt, 2 steps


def test_a_410_disables_the_sink_and_keeps_the_delivery_to_send_again() -> None:
    o = result(delivery(0), 410)
    assert (o.new_status, o.next_attempt_at) == (DeliveryStatus.FAILED, T0)
    assert o.disable_sink is not None


def test_early_probes_do_not_use_up_the_schedule() -> None:
    # a failed early probe keeps the delivery's own next attempt and is counted as a probe
    o = result(delivery(2, early=True), 503)
    assert (o.new_status, o.next_attempt_at, o.early_probe, o.attempt) == (
        DeliveryStatus.FAILED,
        at(300),
        True,
        3,
    )
    # five attempts, three of them early probes: the schedule has used two steps
    assert result(delivery(4, probes=3), 503).new_status is DeliveryStatus.FAILED
    assert result(delivery(5, probes=3), 503).new_status is DeliveryStatus.DEAD
    # an early probe that succeeds is a delivery
    assert result(delivery(2, early=True), 204).new_status is DeliveryStatus.DELIVERED
