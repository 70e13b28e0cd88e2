"""How far the dispatcher claims ahead for a sink (delivery/dispatcher.py, queue_depth):
rounds of max_in_flight for a slow sink, CLAIM_AHEAD seconds of its pace for a fast one
(fewer, bigger claims: one commit each), never more than MAX_QUEUE."""

from __future__ import annotations

import pytest

from trigger_engine.delivery.dispatcher import (
    CLAIM_AHEAD,
    MAX_QUEUE,
    PREFETCH_ROUNDS,
    queue_depth,
)


@pytest.mark.parametrize("pace", [0.0, 5.0, 32 * PREFETCH_ROUNDS / CLAIM_AHEAD])
def test_a_slow_or_unmeasured_sink_gets_its_rounds(pace: float) -> None:
    assert queue_depth(32, pace) == 32 * PREFETCH_ROUNDS


def test_a_fast_sink_gets_claim_ahead_seconds_of_its_pace() -> None:
    pace = 3000.0  # a second
    assert queue_depth(32, pace) == int(pace * CLAIM_AHEAD)
    assert 32 * PREFETCH_ROUNDS < queue_depth(32, pace) < MAX_QUEUE


def test_the_queue_is_bounded_whatever_the_pace() -> None:
    assert queue_depth(32, 1e9) == MAX_QUEUE
    # ... unless the sink's own rounds are more: max_in_flight is the user's bound
    assert queue_depth(1000, 1e9) == 1000 * PREFETCH_ROUNDS
