"""The engine's own events (operational events): what they are called, what they hold,
and who receives them. Pure: values in, values out.

The engine tells about itself through the same pipeline as the items it forwards: an
operational event is an ``events`` row like any other (signed, retried, listed by
``events``, replayable), with one delivery per sink whose ``events`` list names it.

* **Who receives them.** Only a sink whose ``events`` list names the type, or a pattern
  that matches it (``"engine.*"`` matches them all; ``*`` is the only wildcard): a sink
  without an ``events`` list receives every *item* event type and no ``engine.*`` event,
  so a CRM never gets the engine's alerts unless asked. ``engine.test`` is not emitted
  here: ``check`` sends it to every sink directly, whatever its list.
* **What they hold.** The envelope of every event (``type``, ``timestamp``, ``account``:
  null when no account applies, ``data``); ``data`` holds ``reason`` (one sentence),
  the names involved (``account``, ``trigger``, ``sink``, ``event_id``, ``key``, as
  apply) and ``next``: the command to run next.
* **Stored as.** ``account`` the account involved or ``""``; ``trigger`` the trigger
  involved or ``""``; ``item_key`` the event's own id (each occurrence is its own
  event, nothing deduplicates one away).
* **No cascade.** ``engine.delivery_dead`` is never emitted about a delivery of an
  ``engine.*`` event (:func:`about_deliveries_of`): a dead alert sink cannot make alerts
  about its own alerts forever. ``engine.sink_disabled`` is emitted once per disabling
  (enabled → disabled), and the others once per state change, so every chain ends.
* **Bounded.** One state change never makes more than :data:`MAX_PER_WRITE` events of a
  type (a poll that quarantines 10,000 items): past that one summary event says how many
  more there were (:func:`capped`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from trigger_engine.clock import isoformat_z
from trigger_engine.core.registry import fan_out, is_engine_event, matches
from trigger_engine.states import ENGINE_EVENT_PREFIX, ENGINE_EVENT_TYPES
from trigger_engine.types import SinkSubscriptions

__all__ = ["ENGINE_EVENT_PREFIX", "ENGINE_EVENT_TYPES", "is_engine_event", "matches"]

# Every operational event type, named here in the contract's order (states.py holds the list).
TEST, TRIGGER_FAILING, TRIGGER_PAUSED, SINK_DISABLED, DELIVERY_DEAD, ITEM_QUARANTINED = (
    ENGINE_EVENT_TYPES
)
ALL_PATTERN = "engine.*"

# Events of one type that one state change may make; the rest are summed up in one more.
MAX_PER_WRITE = 20

NO_ACCOUNT = ""  # the ``account`` stored for an event no account applies to
NO_TRIGGER = ""


def _took(seconds: float) -> str:
    """A span in a few characters: ``45s``, ``16m``, ``5h``, ``3d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@dataclass(frozen=True)
class Subscribers:
    """Who receives the engine's events: this node's sinks (``own``) and those other live
    nodes serve (``remote``), each with its ``events`` list (None: every item event)."""

    own: SinkSubscriptions = field(default_factory=lambda: MappingProxyType({}))
    remote: SinkSubscriptions = field(default_factory=lambda: MappingProxyType({}))

    def sinks_for(self, event_type: str) -> list[str]:
        """The sinks an event of ``event_type`` gets a delivery for."""
        return fan_out(self.own, self.remote, event_type)


NOBODY = Subscribers()


@dataclass(frozen=True)
class EngineEvent:
    """One operational event, before it is stored: its type, the account it concerns
    (or ``""``), the trigger (or ``""``) and its ``data`` (reason, names, next)."""

    type: str
    data: Mapping[str, Any]
    account: str = NO_ACCOUNT
    trigger: str = NO_TRIGGER


def trigger_paused(
    account: str,
    trigger: str,
    *,
    failures: int,
    since: datetime,
    error: str,
) -> EngineEvent:
    """The sustained-failure rule paused a trigger."""
    return EngineEvent(
        TRIGGER_PAUSED,
        {
            "reason": (
                f"trigger {account}/{trigger} was paused: {failures} polls in a row failed "
                f"since {isoformat_z(since)}; last: {error}"
            ),
            "account": account,
            "trigger": trigger,
            "failures": failures,
            "failing_since": isoformat_z(since),
            "last_error": error,
            "next": f"trigger-engine triggers resume {account} {trigger}",
        },
        account=account,
        trigger=trigger,
    )


def trigger_failing(
    account: str,
    trigger: str,
    *,
    failures: int,
    since: datetime,
    now: datetime,
    error: str,
) -> EngineEvent:
    """A trigger's polls have failed for longer than a few of its intervals."""
    took = _took(max(0.0, (now - since).total_seconds()))
    return EngineEvent(
        TRIGGER_FAILING,
        {
            "reason": (
                f"the polls of {account}/{trigger} have failed for {took} ({failures} in a "
                f"row since {isoformat_z(since)}); last: {error}"
            ),
            "account": account,
            "trigger": trigger,
            "failures": failures,
            "failing_since": isoformat_z(since),
            "last_error": error,
            "next": "trigger-engine check (the trigger keeps retrying with backoff; "
            "'trigger-engine status' shows its last error)",
        },
        account=account,
        trigger=trigger,
    )


def sink_disabled(sink: str, *, reason: str, event_id: str | None = None) -> EngineEvent:
    """A sink was disabled (a ``410 Gone``, or by hand)."""
    data: dict[str, Any] = {
        "reason": f"sink {sink} was disabled: {reason}",
        "sink": sink,
        "next": f"trigger-engine sinks enable {sink}",
    }
    if event_id is not None:
        data["event_id"] = event_id
    return EngineEvent(SINK_DISABLED, data)


@dataclass(frozen=True)
class DeadDelivery:
    """A delivery whose retry schedule is used up, with its event's names."""

    sink: str
    event_id: str
    event_type: str
    account: str
    trigger: str
    key: str
    attempts: int
    last_error: str | None


def about_deliveries_of(event_type: str) -> bool:
    """Whether a delivery of an event of ``event_type`` may be reported by an operational
    event: never for the engine's own events (see the module: no cascade)."""
    return not is_engine_event(event_type)


def delivery_dead(dead: DeadDelivery) -> EngineEvent:
    """A delivery was given up: its schedule is used up."""
    last = f"; last: {dead.last_error}" if dead.last_error else ""
    attempts = f"{dead.attempts} attempt{'s' if dead.attempts != 1 else ''}"
    return EngineEvent(
        DELIVERY_DEAD,
        {
            "reason": (
                f"the delivery of {dead.event_id} ({dead.event_type}) to sink {dead.sink} "
                f"is dead: its retry schedule is used up after {attempts}{last}"
            ),
            "sink": dead.sink,
            "event_id": dead.event_id,
            "event_type": dead.event_type,
            "account": dead.account,
            "trigger": dead.trigger,
            "key": dead.key,
            "attempts": dead.attempts,
            "last_error": dead.last_error,
            "next": f"trigger-engine replay --event {dead.event_id} --sink {dead.sink}",
        },
        account=dead.account,
        trigger=dead.trigger,
    )


def item_quarantined(account: str, trigger: str, *, key: str, reason: str) -> EngineEvent:
    """An item was set aside by its poll, for the first time."""
    return EngineEvent(
        ITEM_QUARANTINED,
        {
            "reason": f"an item of {account}/{trigger} was quarantined: {reason}",
            "account": account,
            "trigger": trigger,
            "key": key,
            "next": f"trigger-engine events --status quarantined --account {account}",
        },
        account=account,
        trigger=trigger,
    )


def capped(found: Sequence[EngineEvent], *, limit: int = MAX_PER_WRITE) -> list[EngineEvent]:
    """At most ``limit`` of ``found`` (events of one type from one state change), and, when
    there were more, one summary event of the same type saying how many more (with the
    first's account and trigger, when all share them)."""
    if len(found) <= limit:
        return list(found)
    kept, rest = list(found[:limit]), found[limit:]
    first = rest[0]
    accounts = {e.account for e in rest}
    triggers = {(e.account, e.trigger) for e in rest}
    account = first.account if len(accounts) == 1 else NO_ACCOUNT
    trigger = first.trigger if len(triggers) == 1 else NO_TRIGGER
    data: dict[str, Any] = {
        "reason": f"{len(rest)} more {first.type} events like the {limit} before this one "
        f"(only {limit} are sent one by one)",
        "more": len(rest),
        "next": str(first.data.get("next", "trigger-engine status")),
    }
    if account:
        data["account"] = account
    if trigger:
        data["trigger"] = trigger
    kept.append(EngineEvent(first.type, data, account=account, trigger=trigger))
    return kept
