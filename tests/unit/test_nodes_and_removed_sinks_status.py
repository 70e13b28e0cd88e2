"""What ``status`` and ``sinks`` say of nodes whose configuration differs from this one,
of sinks served by another node only, and of removed sinks; ``sinks drop``'s sentence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.factories import sink_stats
from trigger_engine.cli.render import drop_text, sink_line, status_text
from trigger_engine.config import Config, config_from_dict
from trigger_engine.config.shape import config_digest
from trigger_engine.runtime.views import node_dicts, sink_dicts, status_dict
from trigger_engine.types import NodeView, SinkDrop, SinkStats, SinkSubscriptions

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def config(*sinks: dict[str, object]) -> Config:
    return config_from_dict(
        {
            "accounts": [{"name": "acme", "api_key": "k"}],
            "triggers": {"leads": {}},
            "sinks": list(sinks) or [{"name": "crm", "url": "http://crm.test/hook"}],
        }
    )


CRM = {"name": "crm", "url": "http://crm.test/hook"}
S2 = {"name": "s2", "url": "http://s2.test/hook", "events": ["lead.new"]}


def node(
    name: str,
    sinks: SinkSubscriptions | None,
    digest: str | None,
    *,
    age: float = 3,
    stopped: bool = False,
) -> NodeView:
    beat = NOW - timedelta(seconds=age)
    return NodeView(name, "0.1.0", beat, beat, beat if stopped else None, (), sinks, digest)


def test_status_shows_the_nodes_whose_configuration_differs() -> None:
    ours = config(CRM)
    theirs = config(CRM, S2)
    triggers_differ = config_from_dict(
        {
            "accounts": [{"name": "globex", "api_key": "k"}],
            "triggers": {"leads": {}},
            "sinks": [CRM],
        }
    )
    views = [
        node("a", {"crm": None}, config_digest(ours)),
        node("b", {"crm": None, "s2": ("lead.new",)}, config_digest(theirs)),
        node("c", {"crm": None}, config_digest(triggers_differ)),
        node("old", None, None),
        node("gone", {"x": None}, "zz", stopped=True),
    ]
    rows = {n["name"]: n for n in node_dicts(views, NOW, ours)}
    assert {name: n["config"] for name, n in rows.items()} == {
        "a": "same",
        "b": "differs",
        "c": "differs",
        "old": "unknown",
        "gone": "differs",
    }
    assert rows["b"]["sinks"] == {"crm": None, "s2": ["lead.new"]}
    assert rows["b"]["config_differences"] == ["serves sink s2 that this configuration lacks"]
    assert rows["c"]["config_differences"] == [
        "its accounts or triggers differ (names, dedupe definitions or event types)"
    ]
    assert rows["a"]["config_differences"] == []
    # without a configuration to compare with, as before
    assert "config" not in node_dicts(views, NOW)[0]

    doc = status_dict(ours, [], {}, NOW)
    doc["nodes"] = list(rows.values())
    text = status_text(doc)
    assert (
        "  b: alive, last heartbeat 2026-12-03T11:59:57Z; polling no trigger right now; "
        "config differs" in text
    )
    assert (
        "  node b's configuration differs from this one: serves sink s2 that this "
        "configuration lacks" in text
    )
    assert "node c's configuration differs from this one: its accounts or triggers" in text
    # a stopped node's configuration no longer matters: no line for it
    assert "node gone's" not in text and "node a's" not in text


def stats(name: str, **counts: int) -> SinkStats:
    return sink_stats(name, NOW - timedelta(hours=2), **counts)


def test_status_and_sinks_report_a_removed_sink_and_one_served_elsewhere() -> None:
    found = {
        "crm": stats("crm", delivered=4),
        "old": stats("old", pending=2, dead=1, delivered=7),
        "s2": stats("s2", pending=3),
        "history": stats("history", delivered=9),  # removed, nothing waiting: not shown
    }
    rows = sink_dicts(config(CRM), found, NOW, {"s2": ["node-b"]})
    assert [(r["name"], r["state"], r["url"]) for r in rows] == [
        ("crm", "enabled", "http://crm.test/hook"),
        ("old", "removed", None),
        ("s2", "elsewhere", None),
    ]
    old, s2 = rows[1], rows[2]
    assert (old["waiting"], old["pending"], old["dead"]) == (3, 2, 1)
    assert old["oldest_pending_seconds"] == 7200.0
    assert "trigger-engine sinks drop old --to OTHER" in old["hint"]
    assert s2["served_by"] == ["node-b"]

    text = status_text({"triggers": [], "sinks": rows})
    assert (
        "  old: removed from the configuration, 3 deliveries waiting; pending 2, failed 0, "
        "dead 1, held 0, delivered 7; last success never" in text
    )
    assert "      list them with 'trigger-engine events --sink old', send them" in text
    assert "  s2: not configured here, served by node-b; pending 3" in text

    lines = sink_line(old).splitlines()
    assert lines[0].startswith("old  removed from the configuration, 3 deliveries waiting")
    assert "sinks drop old" in lines[1]
    one = sink_dicts(config(CRM), {"old": stats("old", failed=1)}, NOW)[1]
    assert "1 delivery waiting" in sink_line(one)
    # served by a live node again: not removed
    assert sink_dicts(config(CRM), found, NOW, {"old": ["node-c"]})[1]["state"] == "elsewhere"


def test_the_drop_sentence_counts_with_the_right_plurals() -> None:
    one = SinkDrop("old", {"pending": 1})
    assert drop_text(one, dry_run=False) == "dropped 1 delivery (1 pending) of removed sink 'old'"
    many = SinkDrop("old", {"pending": 2, "dead": 1}, to="backup", queued=2, already_there=1)
    assert drop_text(many, dry_run=True) == (
        "would drop 3 deliveries (2 pending, 1 dead) of removed sink 'old'; would queue 2 to "
        "'backup' (1 event already had a delivery to 'backup')"
    )
    moved = SinkDrop("old", {"failed": 2}, to="backup", queued=2)
    assert drop_text(moved, dry_run=False) == (
        "dropped 2 deliveries (2 failed) of removed sink 'old'; queued 2 to 'backup'"
    )
    assert drop_text(SinkDrop("old", {}), dry_run=False) == (
        "sink 'old' has no deliveries waiting: nothing to drop"
    )
