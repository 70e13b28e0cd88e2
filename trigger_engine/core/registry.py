"""The node registry's logic: which sinks the live nodes serve, and how another node's
configuration differs from ours. Pure: node views in, plain values out.

Every node's heartbeat records the sinks it serves (names and subscriptions, never a URL
or a secret) and a digest of its configuration's shape (``config/shape.py``). A poll fans
its events out to the sinks of its own configuration *and* to those that any other live
node serves, so that nodes whose configurations differ for a while (a rolling deploy)
lose no event: a delivery row exists for every sink some node delivers to, and the node
that serves the sink claims it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache

from trigger_engine.states import ENGINE_EVENT_PREFIX
from trigger_engine.types import NodeView, SinkSubscriptions


def is_engine_event(event_type: str) -> bool:
    """Whether ``event_type`` is one of the engine's own (``engine.``...)."""
    return event_type.startswith(ENGINE_EVENT_PREFIX)


@lru_cache(maxsize=1024)
def _pattern(pattern: str) -> re.Pattern[str] | None:
    if "*" not in pattern:
        return None
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def matches(pattern: str, event_type: str) -> bool:
    """Whether an ``events`` entry names ``event_type``: equal, or a pattern in which
    ``*`` stands for any run of characters (``engine.*``, ``lead.*``)."""
    compiled = _pattern(pattern)
    if compiled is None:
        return pattern == event_type
    return compiled.fullmatch(event_type) is not None


def subscribes(events: tuple[str, ...] | None, event_type: str) -> bool:
    """Whether a sink with this ``events`` list receives ``event_type``: a type the list
    names or matches (``engine.*``); without a list (None), every item event type but
    none of the engine's own (``engine.*``: only a sink that asks for them gets them)."""
    if events is None:
        return not is_engine_event(event_type)
    return any(matches(pattern, event_type) for pattern in events)


def subscribed(sinks: SinkSubscriptions, event_type: str) -> list[str]:
    """The names of ``sinks`` that receive ``event_type``, in their order."""
    return [name for name, events in sinks.items() if subscribes(events, event_type)]


def live_nodes(views: Iterable[NodeView], now: datetime) -> list[NodeView]:
    """The nodes alive at ``now`` (not stopped, a heartbeat within three intervals)."""
    return [v for v in views if v.alive(now)]


def served_by_live(
    views: Iterable[NodeView], now: datetime, *, excluding: str | None = None
) -> dict[str, tuple[str, ...] | None]:
    """The sinks that live nodes (but ``excluding``) serve, each with the union of their
    subscriptions: every type (None) if one node subscribes it to every type. Sorted by
    name. A node that did not say what it serves (an older version) adds nothing."""
    merged: dict[str, set[str] | None] = {}
    for view in live_nodes(views, now):
        if view.name == excluding or view.sinks is None:
            continue
        for name, events in view.sinks.items():
            if events is None or (name in merged and merged[name] is None):
                merged[name] = None
            else:
                merged.setdefault(name, set()).update(events)  # type: ignore[union-attr]
    return {
        name: None if events is None else tuple(sorted(events))
        for name, events in sorted(merged.items())
    }


def serving(views: Iterable[NodeView], now: datetime) -> dict[str, list[str]]:
    """Each sink that a live node serves, with the names of those nodes (sorted)."""
    found: dict[str, list[str]] = {}
    for view in sorted(live_nodes(views, now), key=lambda v: v.name):
        for name in view.sinks or {}:
            found.setdefault(name, []).append(view.name)
    return found


def fan_out(own: SinkSubscriptions, remote: SinkSubscriptions, event_type: str) -> list[str]:
    """The sinks an event of ``event_type`` gets a delivery for: this node's subscribed
    sinks, then those that other live nodes subscribe to it (``remote``), each once. The
    union: while nodes disagree on a sink's subscription (a rolling deploy changing it),
    the sink gets what any of them would send it."""
    names = subscribed(own, event_type)
    return names + [n for n in subscribed(remote, event_type) if n not in names]


def differences(ours: SinkSubscriptions, theirs: SinkSubscriptions) -> list[str]:
    """How another node's sinks differ from ours, as phrases ("serves sink s2 that this
    configuration lacks"); empty when they are the same."""
    found = []
    extra = sorted(set(theirs) - set(ours))
    missing = sorted(set(ours) - set(theirs))
    other = sorted(n for n in set(ours) & set(theirs) if _norm(ours[n]) != _norm(theirs[n]))
    if extra:
        found.append(f"serves {_sinks(extra)} {', '.join(extra)} that this configuration lacks")
    if missing:
        found.append(f"does not serve {_sinks(missing)} {', '.join(missing)} of this configuration")
    for name in other:
        found.append(
            f"subscribes sink {name} to {_types(theirs[name])} (here: {_types(ours[name])})"
        )
    return found


def _norm(events: tuple[str, ...] | None) -> tuple[str, ...] | None:
    return None if events is None else tuple(sorted(set(events)))


def _sinks(names: Sequence[str]) -> str:
    return "sink" if len(names) == 1 else "sinks"


def _types(events: tuple[str, ...] | None) -> str:
    return "every event type" if events is None else ", ".join(sorted(set(events)))
