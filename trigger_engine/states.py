"""The engine's states and names: every status a row or a report can hold, as an enum, and
the bounds of the names the database stores.

Each is spelled once, here (a ``StrEnum`` compares equal to its string, so the database and
JSON still hold plain text). This module defines no class but enums, so the command line's
parser (``--help``) can name statuses and bounds without creating the value objects of
``types.py``.
"""

from __future__ import annotations

from enum import StrEnum

# --------------------------------------------------------------------------- names

# The longest names the database stores: ``db/schema.py`` sizes its columns with these, and
# the configuration refuses a longer name when it is loaded (so ``check`` reports it, instead
# of every poll or delivery failing on PostgreSQL, which enforces the sizes).
ACCOUNT_NAME_MAX = 200  # accounts[].name
TRIGGER_NAME_MAX = 100  # a [triggers.NAME] table's name
SINK_NAME_MAX = 200  # sinks[].name
EVENT_TYPE_MAX = 100  # triggers.NAME.event, e.g. "lead.new"

# The engine's own event types begin with this (core/engine_events.py): a sink receives
# them only when its ``events`` list names them.
ENGINE_EVENT_PREFIX = "engine."


# --------------------------------------------------------------------------- states


class DeliveryStatus(StrEnum):
    """Where a delivery is in its state machine (``deliveries.status``)."""

    PENDING = "pending"  # due at next_attempt_at (a first attempt)
    FAILED = "failed"  # an attempt failed; the retry is due at next_attempt_at
    DELIVERED = "delivered"  # a 2xx came back
    DEAD = "dead"  # the retry schedule is used up: waits for a replay
    # kept, not sent: its sink is paused or disabled (sent in order when it is resumed or
    # enabled), or the flood guard stopped its poll (sent by a replay); see HoldKind
    HELD = "held"


class HoldKind(StrEnum):
    """Why a ``held`` delivery is held (``deliveries.held_by``), which says what sends it."""

    SINK = "sink"  # its sink is paused or disabled: resuming or enabling the sink sends it
    FLOOD_GUARD = "flood_guard"  # its poll fired too much at once: a replay sends it


# The statuses a claim picks from (their next_attempt_at says when).
DUE_STATUSES: tuple[DeliveryStatus, ...] = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)
# Every status but delivered: what still waits for its sink (or for a replay).
WAITING_STATUSES: tuple[DeliveryStatus, ...] = tuple(
    s for s in DeliveryStatus if s is not DeliveryStatus.DELIVERED
)
# Every status, in the order commands list them.
DELIVERY_STATUSES: tuple[str, ...] = tuple(DeliveryStatus)
# Not a delivery's status but an item's: set aside by its poll (see QuarantineView).
QUARANTINED = "quarantined"
# What ``events --status`` accepts.
EVENT_STATUSES: tuple[str, ...] = (*DELIVERY_STATUSES, QUARANTINED)

# The types of the events the engine emits about itself (the contract's section 4c).
ENGINE_EVENT_TYPES: tuple[str, ...] = (
    "engine.test",
    "engine.trigger_failing",
    "engine.trigger_paused",
    "engine.sink_disabled",
    "engine.delivery_dead",
    "engine.item_quarantined",
)

# How much of a receiver's answer an attempt keeps (``attempts.response_body``): its start.
RESPONSE_BODY_KEPT = 1024  # bytes


class FailureKind(StrEnum):
    """Why a poll failed, which decides what happens next."""

    TRANSIENT = "transient"  # timeouts, connection errors, 429, 5xx: try again later
    AUTH = "auth"  # 401/403: the API key was refused
    CLIENT = "client"  # other 4xx: our request is wrong (path, params)
    BAD_BODY = "bad_body"  # 2xx but not a usable list of objects
    KEYLESS = "keyless"  # most items of a first poll (or all of any) have no usable key


class PollOutcome(StrEnum):
    """How a poll ended (``poll_state.last_outcome`` and the ``outcome`` metric label):
    ``ok``, one of the :class:`FailureKind` values, or not written at all."""

    OK = "ok"
    TRANSIENT = FailureKind.TRANSIENT.value
    AUTH = FailureKind.AUTH.value
    CLIENT = FailureKind.CLIENT.value
    BAD_BODY = FailureKind.BAD_BODY.value
    KEYLESS = FailureKind.KEYLESS.value
    STORE = "store"  # our database failed the poll (unreachable, or refused the write)
    LEASE_LOST = "lease_lost"  # another node took the trigger over; nothing was written
    SKIPPED = "skipped"  # run --once: another node holds the poll lease


class PollRefusal(StrEnum):
    """Why a claim on a trigger's poll was refused."""

    PAUSED = "paused"
    BACKING_OFF = "backing off"
    LEASED = "leased"  # another node holds the lease
    TOO_SOON = "too soon"  # a poll of it started less than min_gap ago
