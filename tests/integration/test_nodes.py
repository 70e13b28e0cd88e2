"""Poll leases with fencing, node heartbeats and the SQLite single-node lock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trigger_engine.dedupe import key_items
from trigger_engine.errors import AlreadyRunning, LeaseLost
from trigger_engine.replay import EventFilter
from trigger_engine.store import Store

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


def claim(store: Store, owner: str, at: datetime, *, lease: float = 30, gap: float | None = None):  # type: ignore[no-untyped-def]
    return store.claim_poll("acme", "leads", owner=owner, now=at, lease=lease, min_gap=gap)


def record(store: Store, ids: list[str], fence, at: datetime = T0):  # type: ignore[no-untyped-def]
    return store.record_poll(
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
        store.record_poll_failure(
            "acme",
            "leads",
            outcome="transient",
            error="HTTP 500",
            backoff_until=None,
            now=T0,
            fence=old,
        )
    assert store.list_events(EventFilter(), limit=10) == []
    state = store.poll_state("acme", "leads")
    assert state is not None and state.consecutive_failures == 0
    # the new owner's result is written
    assert record(store, ["x", "y"], new).new_events == 2


def test_min_gap_keeps_nodes_from_polling_a_trigger_too_often(store: Store) -> None:
    fence = claim(store, "node-a", T0, lease=1, gap=270)
    record(store, [], fence, at=T0)
    assert claim(store, "node-b", T0 + timedelta(seconds=100), gap=270) is None
    assert claim(store, "node-b", T0 + timedelta(seconds=280), gap=270) is not None


def test_release_and_node_views(store: Store) -> None:
    store.heartbeat("node-a", version="0.1.0", now=T0)
    store.heartbeat("node-b", version="0.1.0", now=T0)
    claim(store, "node-a", T0)
    (a, b) = store.node_views(T0 + timedelta(seconds=1))
    assert (a.name, a.leases, b.leases) == ("node-a", ("acme/leads",), ())
    assert store.release_poll_leases("node-a") == 1
    assert claim(store, "node-b", T0 + timedelta(seconds=2)) is not None
    store.heartbeat("node-a", version="0.1.0", now=T0 + timedelta(seconds=3), stopping=True)
    (a, _b) = store.node_views(T0 + timedelta(seconds=3))
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
