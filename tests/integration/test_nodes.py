"""Poll leases with fencing, node heartbeats and the SQLite single-node lock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from trigger_engine.core.dedupe import key_items
from trigger_engine.db.store import Store
from trigger_engine.errors import AlreadyRunning, LeaseLost
from trigger_engine.states import PollRefusal
from trigger_engine.types import EventFilter, PollClaim

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


def claim(store: Store, owner: str, at: datetime, *, lease: float = 30, gap: float | None = None):  # type: ignore[no-untyped-def]
    """The fence a claim got, or None."""
    return store.polls.claim("acme", "leads", owner=owner, now=at, lease=lease, min_gap=gap).fence


def record(store: Store, ids: list[str], fence, at: datetime = T0):  # type: ignore[no-untyped-def]
    return store.polls.record(
        "acme",
        "leads",
        key_items([{"id": i} for i in ids], ["id"]),
        event_type="lead.new",
        emit_first=False,
        sinks=["crm"],
        now=at,
        fence=fence,
    )


def test_one_node_holds_a_trigger_until_its_lease_expires(store: Store) -> None:
    a = claim(store, "node-a", T0)
    assert a is not None
    assert claim(store, "node-b", T0 + timedelta(seconds=29)) is None
    again = claim(store, "node-a", T0 + timedelta(seconds=10))  # renewal bumps the token
    assert again is not None and again.token == a.token + 1
    b = claim(store, "node-b", T0 + timedelta(seconds=41))
    assert b is not None and b.token == again.token + 1


def test_a_node_whose_lease_was_taken_over_cannot_commit_its_poll(store: Store) -> None:
    old = claim(store, "node-a", T0, lease=1)
    record(store, [], old)  # the first poll seeds
    new = claim(store, "node-b", T0 + timedelta(seconds=5))
    assert new is not None
    # node-a wakes up from a long pause with a poll result: refused, nothing written
    with pytest.raises(LeaseLost, match="fencing token"):
        record(store, ["x", "y"], old)
    with pytest.raises(LeaseLost):
        store.polls.record_failure(
            "acme",
            "leads",
            outcome="transient",
            error="HTTP 500",
            backoff_until=None,
            now=T0,
            fence=old,
        )
    assert store.events.list(EventFilter(), limit=10) == []
    state = store.polls.state("acme", "leads")
    assert state is not None and state.consecutive_failures == 0
    # the new owner's result is written
    assert record(store, ["x", "y"], new).new_events == 2


def test_min_gap_keeps_nodes_from_polling_a_trigger_too_often(store: Store) -> None:
    fence = claim(store, "node-a", T0, lease=1, gap=270)
    record(store, [], fence, at=T0)
    assert claim(store, "node-b", T0 + timedelta(seconds=100), gap=270) is None
    assert claim(store, "node-b", T0 + timedelta(seconds=280), gap=270) is not None


def test_a_polls_write_ends_its_lease_so_the_next_turn_waits_only_for_the_gap(
    store: Store,
) -> None:
    """A lease far longer than the interval (``engine.lease`` beyond a long source timeout)
    must not keep another node from the next turn: a poll's write (or its failure's)
    ends its lease; the gap alone spaces the polls, and the last poller stays named."""
    for failed in (False, True):
        at = T0 + timedelta(hours=1) * failed
        fence = claim(store, "node-a", at, lease=600, gap=270)
        assert fence is not None
        if failed:
            store.polls.record_failure(
                "acme",
                "leads",
                outcome="transient",
                error="HTTP 500",
                backoff_until=None,
                now=at,
                fence=fence,
            )
        else:
            record(store, [], fence, at=at)
        early = store.polls.claim(
            "acme",
            "leads",
            owner="node-b",
            now=at + timedelta(seconds=10),
            lease=600,
            min_gap=270,
        )
        assert early.refused is PollRefusal.TOO_SOON
        assert early.state is not None and early.state.lease_owner == "node-a"
        assert claim(store, "node-b", at + timedelta(seconds=300), lease=600, gap=270)


def test_min_gap_runs_from_the_previous_polls_start_not_its_end(store: Store) -> None:
    # A 30 s trigger (gap 27 s) whose poll started at T0 and took 8 s: the poll due at
    # T0 + 30 s goes ahead (measured from the end, 22 s < 27 s, it would be skipped and
    # the trigger polled every other interval).
    fence = claim(store, "node-a", T0, lease=1, gap=27)
    record(store, [], fence, at=T0 + timedelta(seconds=8))
    state = store.polls.state("acme", "leads")
    assert state is not None and state.last_poll_at == T0
    assert state.last_success_at == T0 + timedelta(seconds=8)
    assert claim(store, "node-a", T0 + timedelta(seconds=30), gap=27) is not None


def test_a_failed_poll_also_counts_from_its_start(store: Store) -> None:
    fence = claim(store, "node-a", T0, lease=1, gap=27)
    store.polls.record_failure(
        "acme",
        "leads",
        outcome="transient",
        error="timed out",
        backoff_until=None,
        now=T0 + timedelta(seconds=25),
        fence=fence,
    )
    assert claim(store, "node-b", T0 + timedelta(seconds=26), gap=27) is None
    assert claim(store, "node-b", T0 + timedelta(seconds=28), gap=27) is not None


def test_a_claim_says_why_it_was_refused(store: Store) -> None:
    def claim_at(at: datetime, owner: str = "node-a", **kw: Any) -> PollClaim:
        return store.polls.claim("acme", "leads", owner=owner, now=at, lease=30, **kw)

    first = claim_at(T0)  # creates the trigger's row
    assert first.fence is not None and first.refused is None
    assert first.state.seeded_at is None and first.state.lease_owner == "node-a"
    assert claim_at(T0, owner="node-b").refused == "leased"
    record(store, [], first.fence)
    assert claim_at(T0 + timedelta(seconds=10), min_gap=27).refused == "too soon"

    store.polls.record_failure(
        "acme",
        "leads",
        outcome="transient",
        error="HTTP 503",
        backoff_until=T0 + timedelta(seconds=120),
        now=T0 + timedelta(seconds=60),
    )
    at = T0 + timedelta(seconds=100)
    backing_off = claim_at(at, honour_backoff=True)
    assert (backing_off.fence, backing_off.refused) == (None, "backing off")
    assert backing_off.state.consecutive_failures == 1
    assert claim_at(at).fence is not None  # run --once: whatever backoff a failure set
    assert claim_at(T0 + timedelta(seconds=121), honour_backoff=True).fence is not None

    store.polls.set_paused("acme", "leads", paused=True, reason="by hand")
    paused = claim_at(T0 + timedelta(seconds=200))
    assert (paused.fence, paused.refused) == (None, "paused")
    assert paused.state.paused_reason == "by hand"


def test_a_claim_returns_the_state_the_poll_needs(store: Store) -> None:
    fence = claim(store, "node-a", T0)
    record(store, ["x", "y"], fence)
    granted = store.polls.claim(
        "acme", "leads", owner="node-a", now=T0 + timedelta(seconds=60), lease=30
    )
    assert granted.fence is not None and granted.fence.token == fence.token + 1
    assert granted.fence.claimed_at == T0 + timedelta(seconds=60)
    assert granted.state.items_known == 2 and granted.state.seeded_at == T0


def test_release_and_node_views(store: Store) -> None:
    store.nodes.heartbeat("node-a", version="0.1.0", now=T0)
    store.nodes.heartbeat("node-b", version="0.1.0", now=T0)
    claim(store, "node-a", T0)
    (a, b) = store.nodes.views(T0 + timedelta(seconds=1))
    assert (a.name, a.leases, b.leases) == ("node-a", ("acme/leads",), ())
    assert store.polls.release_leases("node-a") == 1
    assert claim(store, "node-b", T0 + timedelta(seconds=2)) is not None
    store.nodes.heartbeat("node-a", version="0.1.0", now=T0 + timedelta(seconds=3), stopping=True)
    (a, _b) = store.nodes.views(T0 + timedelta(seconds=3))
    assert a.stopped_at == T0 + timedelta(seconds=3) and a.started_at == T0


def test_a_second_process_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/te.db"
    first, second = Store.open(url), Store.open(url)
    try:
        first.lock_single_node()
        with pytest.raises(AlreadyRunning, match="use PostgreSQL"):
            second.lock_single_node()
        first.close()  # the lock goes with the process (here: the store)
        second.lock_single_node()
    finally:
        first.close()
        second.close()
