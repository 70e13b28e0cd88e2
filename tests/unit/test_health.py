"""The health verdicts (pure): which facts make the node unready, and which make it dead."""

from __future__ import annotations

from trigger_engine.ops.health import STUCK_AFTER, Probe, assess
from trigger_engine.types import ActivitySnapshot, StoreFailure

QUIET = ActivitySnapshot(at=100.0, longest_open=0.0, failing=())


def test_all_well_is_live_and_ready_without_reasons() -> None:
    health = assess(scheduler_running=True, probe=Probe(), activity=QUIET, failing_polls={})
    assert (health.live, health.ready, health.reasons) == (True, True, ())


def test_a_stopped_scheduler_is_not_live() -> None:
    health = assess(scheduler_running=False, probe=Probe(), activity=QUIET, failing_polls={})
    assert not health.live and not health.ready
    assert health.reasons == ("the scheduler is not running",)


def test_a_failed_write_probe_makes_it_unready_but_live() -> None:
    health = assess(
        scheduler_running=True,
        probe=Probe(error="the database failed: connection refused"),
        activity=QUIET,
        failing_polls={},
    )
    assert health.live and not health.ready
    assert health.reasons == (
        "the database failed a write: the database failed: connection refused",
    )


def test_a_probe_that_times_out_while_the_database_is_merely_busy_is_fine() -> None:
    busy = ActivitySnapshot(at=100.0, longest_open=STUCK_AFTER - 1, failing=())
    health = assess(
        scheduler_running=True, probe=Probe(timed_out=True), activity=busy, failing_polls={}
    )
    assert health.ready


def test_work_stuck_behind_a_lock_is_unready_even_when_the_probe_answers() -> None:
    stuck = ActivitySnapshot(at=100.0, longest_open=STUCK_AFTER + 12, failing=())
    for probe in (Probe(), Probe(timed_out=True)):
        health = assess(scheduler_running=True, probe=probe, activity=stuck, failing_polls={})
        assert not health.ready and health.live
        assert "waited 42s" in health.reasons[0] and "lock" in health.reasons[0]


def test_failing_units_and_polls_are_named() -> None:
    failing = (
        StoreFailure("DeliveryRepository.claim_due", "connection lost", True, 40.0, 3),
        StoreFailure("PollRepository.record", "disk full", False, 90.0, 1),
    )
    health = assess(
        scheduler_running=True,
        probe=Probe(),
        activity=ActivitySnapshot(at=100.0, longest_open=0.0, failing=failing),
        failing_polls={"acme/leads": "the database refused it: CHECK constraint failed"},
    )
    assert health.reasons == (
        "store unreachable for DeliveryRepository.claim_due (3 in a row, for 60s): connection lost",
        "store refused for PollRepository.record (1 in a row, for 10s): disk full",
        "the store failed the last poll of acme/leads: the database refused it: CHECK "
        "constraint failed",
    )
    assert health.body()["status"] == "unhealthy"


def test_liveness_only_ignores_the_database() -> None:
    failing = (StoreFailure("x", "down", True, 0.0, 9),)
    health = assess(
        scheduler_running=True,
        probe=None,
        activity=ActivitySnapshot(at=100.0, longest_open=999.0, failing=failing),
        failing_polls={"acme/leads": "down"},
    )
    assert health.live and health.ready
