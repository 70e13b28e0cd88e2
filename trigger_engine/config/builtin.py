"""The built-in triggers: what each one requests, how its items are keyed, what it fires.

These mirror Meet Alfred's Zapier triggers ("New Campaign", "New Lead", "New Connection").
Every field may be overridden per trigger in the configuration; a trigger with another
name is a custom trigger and must give ``path``, ``key`` and ``event`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TriggerDefaults:
    """What a built-in trigger requests, keys and fires unless its table says otherwise."""

    path: str
    key: tuple[str, ...]
    event: str
    interval: float  # seconds
    items_path: str | None = None
    # An "updated item" trigger: fires when these fields of a known item change.
    update_fields: tuple[str, ...] | None = None


BUILTIN: dict[str, TriggerDefaults] = {
    "campaigns": TriggerDefaults(
        path="/campaigns", key=("key",), event="campaign.new", interval=900
    ),
    "leads": TriggerDefaults(path="/leads", key=("id",), event="lead.new", interval=300),
    "connections": TriggerDefaults(
        path="/connections", key=("id",), event="connection.new", interval=300
    ),
    # Opt-in (poll it by naming it under [triggers]): a lead whose status or last action
    # changed since the previous poll.
    "lead_updates": TriggerDefaults(
        path="/leads",
        key=("id",),
        event="lead.updated",
        interval=300,
        update_fields=("status", "last_action.key"),
    ),
}
