"""Nodes whose configurations differ lose nothing (issue 13, item 5): the node registry
(each heartbeat records the sinks its node serves and its config's digest), polls and
backfills fanning out to the sinks other live nodes serve, claims only for known sinks.
On SQLite and PostgreSQL; the last test runs two daemons on one PostgreSQL schema."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from tests.receiver import Receiver
from trigger_engine.clock import now as clock_now
from trigger_engine.config import Config, config_from_dict
from trigger_engine.config.shape import config_digest, served_sinks
from trigger_engine.core.dedupe import key_items
from trigger_engine.core.registry import served_by_live
from trigger_engine.db.nodes import decode_sinks
from trigger_engine.db.schema import deliveries, nodes
from trigger_engine.db.store import Store
from trigger_engine.polling.backfill import backfill
from trigger_engine.polling.poller import Poller
from trigger_engine.polling.source import Source
from trigger_engine.runtime.daemon import Daemon
from trigger_engine.types import AttemptOutcome, EventFilter, PollReport, SinkSubscriptions

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


def make_config(
    db_url: str, sinks: list[dict[str, Any]], triggers: dict[str, Any] | None = None
) -> Config:
    return config_from_dict(
        {
            "engine": {"database": db_url},
            "source": {"base_url": "http://alfred.test/api"},
            "accounts": [{"name": "acme", "api_key": "alfred-key-77e1"}],
            "triggers": triggers or {"leads": {}},
            "sinks": sinks,
        }
    )


def beat(
    store: Store, name: str, at: datetime, sinks: SinkSubscriptions | None, **kw: Any
) -> SinkSubscriptions:
    """Node ``name``'s heartbeat at ``at``; what the other live nodes serve, as it read it."""
    others = store.nodes.heartbeat(name, version="0.1.0", now=at, sinks=sinks, **kw)
    return served_by_live(others, at, excluding=name)


def sinks_of(store: Store) -> dict[str, list[str]]:
    """Each event's item key → the sinks it has a delivery to."""
    found: dict[str, list[str]] = {}
    for e in store.events.list(EventFilter(), limit=1000):
        found[e.item_key] = sorted(d.sink for d in e.deliveries)
    return found


# --------------------------------------------------------------------------- the registry


def test_the_registry_round_trip(store: Store) -> None:
    assert beat(store, "node-b", T0, {"crm": None, "s2": ("lead.new",)}, config_digest="b1") == {}
    remote = beat(store, "node-a", T0 + timedelta(seconds=1), {"crm": None}, config_digest="a1")
    assert remote == {"crm": None, "s2": ("lead.new",)}
    # what every node's row says, as status reads it
    a, b = store.nodes.views(T0 + timedelta(seconds=2))
    assert (a.name, a.sinks, a.config_digest) == ("node-a", {"crm": None}, "a1")
    assert (b.name, b.sinks, b.config_digest) == (
        "node-b",
        {"crm": None, "s2": ("lead.new",)},
        "b1",
    )
    assert [v.name for v in store.nodes.live(T0 + timedelta(seconds=2))] == ["node-a", "node-b"]
    # names and subscriptions only: the stored text is all there is
    with store.db.engine.connect() as conn:
        stored = dict(conn.execute(select(nodes.c.name, nodes.c.sinks)).all())
    assert stored["node-b"] == '{"crm":null,"s2":["lead.new"]}'

    # node-b's heartbeat goes stale (past three heartbeats): node-a no longer fans out to it
    assert beat(store, "node-a", T0 + timedelta(seconds=31), {"crm": None}) == {}
    assert beat(store, "node-a", T0 + timedelta(seconds=30), {"crm": None}) != {}
    # ... comes back, then stops cleanly: gone at once
    assert beat(store, "node-b", T0 + timedelta(seconds=40), {"s2": None}) == {"crm": None}
    assert beat(store, "node-a", T0 + timedelta(seconds=41), {"crm": None}) == {"s2": None}
    store.nodes.heartbeat("node-b", version="0.1.0", now=T0 + timedelta(seconds=42), stopping=True)
    assert beat(store, "node-a", T0 + timedelta(seconds=43), {"crm": None}) == {}
    (_a, b) = store.nodes.views(T0 + timedelta(seconds=43))
    assert b.sinks == {"s2": None}  # a stopping heartbeat keeps what it last served


def test_a_node_that_does_not_say_what_it_serves_adds_no_sink(store: Store) -> None:
    # an engine from before the registry: its heartbeat writes no sinks, no digest
    store.nodes.heartbeat("old-node", version="0.0.9", now=T0)
    assert beat(store, "node-a", T0, {"crm": None}) == {}
    (_a, old) = store.nodes.views(T0)
    assert (old.sinks, old.config_digest) == (None, None)
    # a value that is not one we wrote counts as saying nothing
    for text in ('["crm"]', '{"crm": 3}', "not json", '{"crm": [1]}'):
        assert decode_sinks(text) is None
    assert decode_sinks('{"crm": null, "s2": ["lead.new"]}') == {"crm": None, "s2": ("lead.new",)}


# --------------------------------------------------------------------------- fan-out


def upstream(items: list[dict[str, Any]]) -> Source:
    config = make_config("sqlite://", [])
    return Source(
        config.source, transport=httpx.MockTransport(lambda _r: httpx.Response(200, json=items))
    )


def test_a_poll_fans_out_to_the_sinks_another_live_node_serves(db_url: str, store: Store) -> None:
    config = make_config(db_url, [{"name": "crm", "url": "http://crm.test/hook"}])
    items: list[dict[str, Any]] = []
    remote: SinkSubscriptions = {}
    at = T0
    poller = Poller(config, store, upstream(items), remote_sinks=lambda: remote, clock=lambda: at)
    account, trigger = config.accounts[0], config.triggers["leads"]
    poller.poll(account, trigger)  # the first poll seeds

    def poll_new(key: str, when: datetime) -> None:
        nonlocal at, remote
        at = when
        remote = beat(store, "node-a", when, served_sinks(config))
        items.insert(0, {"id": key})
        assert poller.poll(account, trigger).new_events == 1

    # node-b serves crm and s2 (to lead.new) and audit (to connections only)
    b_sinks = {"crm": None, "s2": ("lead.new",), "audit": ("connection.new",)}
    beat(store, "node-b", T0, b_sinks)
    poll_new("while-b-lives", T0 + timedelta(seconds=5))
    # node-b's heartbeat is stale: node-a's next heartbeat drops its sinks
    poll_new("b-stale", T0 + timedelta(seconds=35))
    beat(store, "node-b", T0 + timedelta(seconds=40), b_sinks)
    poll_new("b-back", T0 + timedelta(seconds=41))
    store.nodes.heartbeat("node-b", version="0.1.0", now=T0 + timedelta(seconds=42), stopping=True)
    poll_new("b-stopped", T0 + timedelta(seconds=43))

    assert sinks_of(store) == {
        "while-b-lives": ["crm", "s2"],
        "b-stale": ["crm"],
        "b-back": ["crm", "s2"],
        "b-stopped": ["crm"],
    }


def test_a_backfill_fans_out_to_the_sinks_live_nodes_serve(db_url: str, store: Store) -> None:
    config = make_config(db_url, [{"name": "crm", "url": "http://crm.test/hook"}])
    items = [{"id": "old-1"}, {"id": "old-2"}]
    source = upstream(items)
    Poller(config, store, source).poll(config.accounts[0], config.triggers["leads"])  # seeds
    now = clock_now()
    beat(store, "node-b", now, {"s2": None})
    steps = list(
        backfill(config, store, source, accounts=(), triggers=(), dry_run=False, clock=lambda: now)
    )
    assert [s.result.fired if s.result else None for s in steps] == [2]
    assert sinks_of(store) == {"old-1": ["crm", "s2"], "old-2": ["crm", "s2"]}


# --------------------------------------------------------------------------- claims


def test_a_claim_returns_only_deliveries_of_the_sinks_it_names(store: Store) -> None:
    store.polls.record(
        "acme",
        "leads",
        key_items([{"id": f"L{i}"} for i in range(5)], ["id"]),
        event_type="lead.new",
        emit_first=True,
        sinks=["crm", "s2", "gone"],
        now=T0,
    )
    later = T0 + timedelta(seconds=1)
    claimed = store.deliveries.claim_due(owner="node-a", now=later, lease=30, capacity={"crm": 10})
    assert Counter(d.sink for d in claimed) == {"crm": 5}
    # a sink with no capacity left is not claimed for either
    claimed = store.deliveries.claim_due(
        owner="node-a", now=later, lease=30, capacity={"crm": 10, "s2": 0}
    )
    assert claimed == []
    with store.db.engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.sink, deliveries.c.lease_owner).where(deliveries.c.sink != "crm")
        ).all()
    assert len(rows) == 10 and {owner for _sink, owner in rows} == {None}
    # the node that serves s2 gets them all
    theirs = store.deliveries.claim_due(owner="node-b", now=later, lease=30, capacity={"s2": 10})
    assert Counter(d.sink for d in theirs) == {"s2": 5}


# --------------------------------------------------------------------------- two daemons


@pytest.mark.postgres
def test_two_daemons_with_different_sinks_deliver_every_event_to_every_sink(
    pg_url: str,
) -> None:
    """Node A serves crm and polls leads; node B serves crm and s2 and does not poll leads
    (its configuration is a step ahead or behind: it polls connections). Every lead reaches
    both sinks exactly once, under one webhook-id; A never attempts an s2 delivery."""
    leads: list[dict[str, Any]] = []
    lock = threading.Lock()

    def answer(request: httpx.Request) -> httpx.Response:
        with lock:
            return httpx.Response(
                200, json=list(leads) if request.url.path.endswith("/leads") else []
            )

    with Receiver() as crm, Receiver() as s2:
        sink_crm = {"name": "crm", "url": crm.url, "timeout": "5s"}
        sink_s2 = {"name": "s2", "url": s2.url, "timeout": "5s"}
        config_a = make_config(pg_url, [sink_crm], {"leads": {"interval": "200ms"}})
        config_b = make_config(pg_url, [sink_crm, sink_s2], {"connections": {"interval": "1h"}})
        assert config_digest(config_a) != config_digest(config_b)
        attempts: dict[str, list[AttemptOutcome]] = {"node-a": [], "node-b": []}
        polls: dict[str, list[PollReport]] = {"node-a": [], "node-b": []}
        with Store.open(pg_url) as store_a, Store.open(pg_url) as store_b:

            def daemon(name: str, config: Config, store: Store) -> Daemon:
                source = Source(config.source, transport=httpx.MockTransport(answer))
                d = Daemon(
                    config,
                    store,
                    source,
                    on_attempt=attempts[name].append,
                    on_poll=polls[name].append,
                )
                d.owner = name  # two nodes in one process
                return d

            node_a = daemon("node-a", config_a, store_a)
            node_b = daemon("node-b", config_b, store_b)
            added: list[str] = []

            async def scenario() -> None:
                b_ready, a_ready = asyncio.Event(), asyncio.Event()
                b = asyncio.create_task(node_b.run(ready=b_ready.set))
                await asyncio.wait_for(b_ready.wait(), 30)  # B's heartbeat is in
                a = asyncio.create_task(node_a.run(ready=a_ready.set))
                await asyncio.wait_for(a_ready.wait(), 30)
                await until(lambda: seeded(store_a), "the seeding poll")
                for batch in range(5):
                    with lock:
                        new = [{"id": f"lead-{batch}-{i}"} for i in range(4)]
                        leads[:0] = new
                    added.extend(n["id"] for n in new)
                    await until(lambda: len(s2.requests) >= len(added), f"batch {batch} at s2")
                await until(lambda: len(crm.requests) >= len(added), "every lead at crm")
                for node, task in ((node_a, a), (node_b, b)):
                    node_stop(node)
                    await asyncio.wait_for(task, 30)

            asyncio.run(scenario())

        for receiver in (crm, s2):
            got = Counter(orjson_id(r.body) for r in receiver.requests)
            assert got == Counter(added), (receiver.url, got)
            ids = {r.headers["webhook-id"] for r in receiver.requests}
            assert len(ids) == len(added)
        # the same event (webhook-id) at both sinks
        assert {r.headers["webhook-id"] for r in crm.requests} == {
            r.headers["webhook-id"] for r in s2.requests
        }
        # A, which lacks s2, polled every new lead; it claims only for the sinks it knows,
        # so s2's deliveries were B's alone
        assert sum(p.new_events for p in polls["node-a"]) == len(added)
        assert [p.trigger for p in polls["node-b"]] == ["connections"]  # its seeding poll
        assert {o.sink for o in attempts["node-a"]} == {"crm"}
        assert Counter(o.sink for o in attempts["node-b"])["s2"] == len(added)


def seeded(store: Store) -> bool:
    state = store.polls.state("acme", "leads")
    return state is not None and state.seeded_at is not None


def orjson_id(body: bytes) -> str:
    data = orjson.loads(body)
    assert isinstance(data, dict)
    return str(data["data"]["id"])


def node_stop(node: Daemon) -> None:
    """Stop a running daemon as a first SIGTERM would (two daemons share this test's loop,
    and a signal reaches only the handler installed last)."""
    serving = node._serving
    assert serving is not None
    serving.stop.set()


async def until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}")
        await asyncio.sleep(0.05)


def test_the_daemons_metrics_cover_its_sinks_and_those_live_nodes_serve(
    db_url: str, store: Store
) -> None:
    """A sink no live node serves (removed) has no backlog series; one another live node
    serves has, once the daemon read the registry (``run --once`` reads it at its start),
    on PostgreSQL (on SQLite no other node can be live)."""
    store.polls.record(
        "acme",
        "leads",
        key_items([{"id": "L1"}], ["id"]),
        event_type="lead.new",
        emit_first=True,
        sinks=["old", "s2"],
        now=clock_now(),
    )
    config = make_config(db_url, [{"name": "crm", "url": "http://crm.test/hook"}])
    daemon = Daemon(config, store, upstream([]))
    assert 'sink="old"' not in daemon.metrics.render().decode()
    store.nodes.heartbeat("node-b", version="0.1.0", now=clock_now(), sinks={"s2": None})
    report = asyncio.run(daemon.run_once())
    assert report.ok and report.delivery.attempted == 0
    page = daemon.metrics.render().decode()
    s2 = 'trigger_engine_delivery_backlog{sink="s2",status="pending"} 1.0'
    if store.dialect == "postgresql":
        assert s2 in page
    else:  # one process per SQLite file: no other node is live
        assert 'sink="s2"' not in page
    assert 'sink="old"' not in page


def test_on_sqlite_another_nodes_row_is_a_killed_processs_and_adds_no_sink(
    tmp_path: Path,
) -> None:
    """One process per SQLite file: a row that still looks alive (killed seconds ago, with a
    sink since removed from the file) must not make the new process fan out to it."""
    url = f"sqlite:///{tmp_path}/te.db"
    config = make_config(url, [{"name": "crm", "url": "http://crm.test/hook"}])
    with Store.open(url) as store:
        store.nodes.heartbeat("killed:1", version="0.1.0", now=clock_now(), sinks={"old": None})
        Poller(config, store, upstream([])).poll(config.accounts[0], config.triggers["leads"])
        daemon = Daemon(config, store, upstream([{"id": "new"}]))
        daemon.owner = "restarted:2"
        report = asyncio.run(daemon.run_once())
        assert [p.new_events for p in report.polls] == [1]
        assert sinks_of(store) == {"new": ["crm"]}
