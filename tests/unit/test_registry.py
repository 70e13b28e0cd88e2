"""The node registry's pure logic (which sinks live nodes serve, fan-out, how configs
differ) and the configuration's shape and digest, as tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trigger_engine.config import Config, config_from_dict
from trigger_engine.config.shape import config_digest, config_shape, served_sinks
from trigger_engine.core.registry import (
    differences,
    fan_out,
    served_by_live,
    serving,
    subscribed,
)
from trigger_engine.runtime.jobs import HEARTBEAT_EVERY
from trigger_engine.types import NODE_ALIVE_WITHIN, NodeView, SinkSubscriptions

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def node(
    name: str,
    sinks: SinkSubscriptions | None,
    *,
    age: float = 5,
    stopped: bool = False,
    digest: str | None = "d",
) -> NodeView:
    beat = NOW - timedelta(seconds=age)
    return NodeView(
        name=name,
        version="0.1.0",
        started_at=beat,
        heartbeat_at=beat,
        stopped_at=beat if stopped else None,
        sinks=sinks,
        config_digest=digest,
    )


def test_a_node_is_alive_for_three_heartbeats() -> None:
    assert NODE_ALIVE_WITHIN == 3 * HEARTBEAT_EVERY
    assert node("a", {}, age=NODE_ALIVE_WITHIN).alive(NOW)
    assert not node("a", {}, age=NODE_ALIVE_WITHIN + 0.001).alive(NOW)
    assert not node("a", {}, age=0, stopped=True).alive(NOW)


@pytest.mark.parametrize(
    ("views", "expected"),
    [
        ([], {}),
        ([node("b", {"s2": None})], {"s2": None}),
        # the union of subscriptions; one node taking every type wins
        (
            [node("b", {"s2": ("lead.new",)}), node("c", {"s2": ("connection.new",)})],
            {"s2": ("connection.new", "lead.new")},
        ),
        ([node("b", {"s2": ("lead.new",)}), node("c", {"s2": None})], {"s2": None}),
        ([node("b", {"s2": None}), node("c", {"s2": ("lead.new",)})], {"s2": None}),
        # stale, stopped, silent (an older version) and ourselves add nothing
        ([node("b", {"s2": None}, age=31)], {}),
        ([node("b", {"s2": None}, stopped=True)], {}),
        ([node("b", None)], {}),
        ([node("me", {"s9": None}), node("b", {"s2": None})], {"s2": None}),
        # sorted by name
        ([node("b", {"z": None, "a": ("lead.new",)})], {"a": ("lead.new",), "z": None}),
    ],
)
def test_served_by_live(views: list[NodeView], expected: dict[str, Any]) -> None:
    got = served_by_live(views, NOW, excluding="me")
    assert got == expected
    assert list(got) == list(expected)


def test_serving_names_the_live_nodes_of_each_sink() -> None:
    views = [
        node("c", {"s2": None, "crm": None}),
        node("b", {"s2": ("lead.new",)}),
        node("old", {"gone": None}, age=60),
        node("quiet", None),
    ]
    assert serving(views, NOW) == {"s2": ["b", "c"], "crm": ["c"]}


@pytest.mark.parametrize(
    ("own", "remote", "event_type", "expected"),
    [
        ({"crm": None}, {}, "lead.new", ["crm"]),
        ({"crm": ("connection.new",)}, {}, "lead.new", []),
        ({"crm": None}, {"s2": None}, "lead.new", ["crm", "s2"]),
        ({"crm": None}, {"s2": ("connection.new",)}, "lead.new", ["crm"]),
        ({"crm": None}, {"s2": ("lead.new",)}, "lead.new", ["crm", "s2"]),
        # a sink of ours is ours: once, whatever another node subscribes it to
        ({"crm": ("lead.new",)}, {"crm": None}, "lead.new", ["crm"]),
        # ... and, subscribed elsewhere to a type we do not send it, it gets that type too:
        # the union of what the live nodes would send it
        ({"crm": ("lead.new",)}, {"crm": None}, "campaign.new", ["crm"]),
        ({}, {"a": None, "b": None}, "lead.new", ["a", "b"]),
    ],
)
def test_fan_out(
    own: SinkSubscriptions, remote: SinkSubscriptions, event_type: str, expected: list[str]
) -> None:
    assert fan_out(own, remote, event_type) == expected


def test_subscribed_keeps_the_order() -> None:
    assert subscribed({"z": None, "a": ("x",), "m": None}, "y") == ["z", "m"]


@pytest.mark.parametrize(
    ("ours", "theirs", "expected"),
    [
        ({"crm": None}, {"crm": None}, []),
        ({"crm": ("a", "b")}, {"crm": ("b", "a")}, []),
        (
            {"crm": None},
            {"crm": None, "s2": None},
            ["serves sink s2 that this configuration lacks"],
        ),
        (
            {"crm": None},
            {"crm": None, "s2": None, "s3": None},
            ["serves sinks s2, s3 that this configuration lacks"],
        ),
        (
            {"crm": None, "s2": None},
            {"crm": None},
            ["does not serve sink s2 of this configuration"],
        ),
        (
            {"crm": None},
            {"crm": ("lead.new",)},
            ["subscribes sink crm to lead.new (here: every event type)"],
        ),
    ],
)
def test_differences(
    ours: SinkSubscriptions, theirs: SinkSubscriptions, expected: list[str]
) -> None:
    assert differences(ours, theirs) == expected


# --------------------------------------------------------------------------- shape


def config(**changes: Any) -> Config:
    doc: dict[str, Any] = {
        "source": {"base_url": "http://alfred.test/api"},
        "accounts": [{"name": "acme", "api_key": "key-1"}],
        "triggers": {"leads": {"interval": "5m"}},
        "sinks": [
            {"name": "crm", "url": "http://crm.test/hook"},
            {"name": "audit", "url": "http://audit.test/hook", "events": ["lead.new"]},
        ],
    }
    doc.update(changes)
    return config_from_dict(doc)


BASE_SINKS = [
    {"name": "crm", "url": "http://crm.test/hook"},
    {"name": "audit", "url": "http://audit.test/hook", "events": ["lead.new"]},
]


def test_served_sinks_are_names_and_subscriptions_only() -> None:
    assert served_sinks(config()) == {"crm": None, "audit": ("lead.new",)}


@pytest.mark.parametrize(
    "changes",
    [
        # secrets, keys, URLs, intervals and timeouts are not the shape
        {"accounts": [{"name": "acme", "api_key": "another-key"}]},
        {"source": {"base_url": "http://elsewhere.test/api", "timeout": "5s"}},
        {"triggers": {"leads": {"interval": "30s"}}},
        {
            "sinks": [
                {
                    "name": "crm",
                    "url": "http://crm.test/other?token=t",
                    "secret": "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
                    "headers": {"Authorization": "Bearer x"},
                    "timeout": "3s",
                },
                {"name": "audit", "url": "http://audit.test/hook", "events": ["lead.new"]},
            ]
        },
        # nor the order of sinks
        {"sinks": list(reversed(BASE_SINKS))},
    ],
)
def test_the_digest_ignores_what_is_not_the_shape(changes: dict[str, Any]) -> None:
    assert config_digest(config(**changes)) == config_digest(config())


@pytest.mark.parametrize(
    "changes",
    [
        {"accounts": [{"name": "globex", "api_key": "key-1"}]},
        {"triggers": {"leads": {"interval": "5m", "key": "email"}}},
        {"triggers": {"leads": {"interval": "5m", "params": {"status": "new"}}}},
        {"triggers": {"leads": {}, "connections": {}}},
        {"sinks": BASE_SINKS[:1]},
        {"sinks": [BASE_SINKS[0], {**BASE_SINKS[1], "events": ["connection.new"]}]},
    ],
)
def test_the_digest_tells_shapes_apart(changes: dict[str, Any]) -> None:
    assert config_digest(config(**changes)) != config_digest(config())


def test_the_shape_holds_no_secret_nor_url() -> None:
    text = repr(config_shape(config()))
    for secret in ("key-1", "http://", "crm.test"):
        assert secret not in text
    assert len(config_digest(config())) == 12
