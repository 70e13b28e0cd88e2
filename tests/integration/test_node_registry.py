"""Nodes whose configurations differ lose nothing (issue 13, item 5): the node registry
(each heartbeat records the sinks its node serves and its config's digest). On SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from trigger_engine.core.registry import served_by_live
from trigger_engine.db.nodes import decode_sinks
from trigger_engine.db.schema import nodes
from trigger_engine.db.store import Store
from trigger_engine.types import SinkSubscriptions

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


def beat(
    store: Store, name: str, at: datetime, sinks: SinkSubscriptions | None, **kw: Any
) -> SinkSubscriptions:
    """Node ``name``'s heartbeat at ``at``; what the other live nodes serve, as it read it."""
    others = store.nodes.heartbeat(name, version="0.1.0", now=at, sinks=sinks, **kw)
    return served_by_live(others, at, excluding=name)


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
