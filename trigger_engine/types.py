"""The engine's values: the objects that cross layers (most of them frozen).

The values are plain dataclasses without I/O, so a module that needs one (a renderer, the
metrics) imports this module, not the database layer that fills them. The states they hold
(statuses, outcomes, kinds of failure) are the enums of ``states.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from trigger_engine.states import DeliveryStatus, FailureKind, PollOutcome, PollRefusal

# --------------------------------------------------------------------------- polls


@dataclass(frozen=True)
class PollState:
    """One (account, trigger)'s row of ``poll_state``."""

    account: str
    trigger: str
    seeded_at: datetime | None
    last_poll_at: datetime | None
    last_outcome: str | None
    last_error: str | None
    last_success_at: datetime | None
    consecutive_failures: int
    backoff_until: datetime | None
    paused: bool
    paused_reason: str | None
    items_known: int
    paused_auto: bool = False
    failing_since: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    # core/definition.py: the dedupe definition its seen keys were remembered under (None:
    # never succeeded, or polled before fingerprints were stored)
    definition_fingerprint: str | None = None


@dataclass(frozen=True)
class Fence:
    """Proof of a poll lease: the owner and the fencing token its claim got. Every write
    of the poll's result checks it, so a node that lost its lease cannot write. The poll's
    result records ``claimed_at`` as its ``last_poll_at``: when the poll started."""

    owner: str
    token: int
    claimed_at: datetime


@dataclass(frozen=True)
class PollClaim:
    """What a poll claim got: a lease to poll under (``fence``), or why not
    (``refused``), with the trigger's state as the claim saw it. A refused claim that was
    not asked to explain itself has neither (``state`` and ``refused`` None): it cost
    one round trip, not two."""

    state: PollState | None
    fence: Fence | None = None
    refused: PollRefusal | None = None


@dataclass(frozen=True)
class PollResult:
    """What a successful poll's transaction wrote."""

    first_poll: bool
    new_events: int  # events created (emit, or any later poll)
    remembered: int  # keys marked seen without firing (a seeding first poll)
    deliveries: int  # delivery rows created
    held: int = 0  # events held by the flood guard
    quarantined: int = 0  # items set aside by this poll
    newly_quarantined: tuple[tuple[str, str], ...] = ()  # (key, reason) not set aside before
    released: int = 0  # items that left the quarantine: processed at last
    redefined_from: str | None = None  # a re-seed: the definition fingerprint it replaced


@dataclass(frozen=True)
class FailureRecord:
    """What recording a failed poll did: the failures in a row so far, when the run of
    them began, whether the sustained-failure rule paused the trigger (and why), and
    whether this failure made it *failing* (for longer than a few intervals: said once)."""

    failures: int
    since: datetime
    paused_reason: str | None = None
    failing: bool = False


@dataclass(frozen=True)
class PollReport:
    """One poll as the scheduler, the metrics and ``run --once`` see it."""

    account: str
    trigger: str
    ok: bool
    outcome: PollOutcome
    first_poll: bool = False
    items: int = 0
    new_events: int = 0
    remembered: int = 0
    held: int = 0
    duplicates: int = 0
    keyless: int = 0
    quarantined: int = 0
    error: str | None = None
    duration: float = 0.0
    redefined: bool = False  # a first poll again: the trigger's definition changed


@dataclass(frozen=True)
class BackfillResult:
    """What a backfill of one (account, trigger) fired, or would fire."""

    fired: int  # events created
    deliveries: int
    not_listed: int  # remembered items the API no longer lists (cannot be fired)


# --------------------------------------------------------------------------- deliveries


@dataclass(slots=True)
class DueDelivery:
    """A claimed delivery, with what is needed to send it. Not frozen, with slots: one is
    made for every delivery sent, and a frozen dataclass's ``__init__`` costs twice as
    much (benchmarks/RESULTS.md); nothing changes one after it is made."""

    id: int
    sink: str
    attempts: int  # attempts made before this one
    event_id: str
    event_type: str
    account: str | None  # None: an engine event about no account (engine.test)
    created_at: datetime
    # the item, JSON; None when claimed: the claim reads the envelope alone, which holds
    # the item as stored, and core.events.item() cuts it out for a sink that needs it
    payload: bytes | None
    # attempts made early, as probes of a sink that is down (core/circuit.py): they do not
    # use up the retry schedule, which counts only ``attempts - probes``
    probes: int = 0
    # claimed as a probe before its own next attempt was due: a failure leaves its schedule
    # (next_attempt_at, the steps used) as it was
    early: bool = False
    next_attempt_at: datetime | None = None  # when it was due (for an early probe: later)
    # the default body (core/events.py, ``envelope``) as the claim built it in SQL; None:
    # built from the fields above when it is sent
    envelope: bytes | None = None


@dataclass(slots=True)
class AttemptOutcome:
    """The result of one attempt and the state the delivery moves to. Not frozen, with
    slots, as :class:`DueDelivery` (one per attempt); nothing changes one once made."""

    delivery_id: int
    sink: str
    event_id: str
    attempt: int  # 1-based number of this attempt
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    new_status: DeliveryStatus  # delivered | failed | dead
    next_attempt_at: datetime | None = None
    disable_sink: str | None = None  # a reason, when the attempt disables the sink (410)
    response_body: str | None = None  # the start of the receiver's answer (RESPONSE_BODY_KEPT)
    early_probe: bool = False  # a failed early probe: counted in ``probes`` as well

    @property
    def sink_down(self) -> bool:
        """Whether the attempt says the receiver is unreachable or failing: no answer, a
        5xx, 408 or 429 (what the circuit counts; another 4xx is an answer)."""
        code = self.status_code
        return code is None or code >= 500 or code in (408, 429)


@dataclass(frozen=True)
class SinkStats:
    """One sink's deliveries by status, and its stored state."""

    name: str
    counts: dict[str, int]  # by delivery status
    in_flight: int
    oldest_due_created_at: datetime | None
    disabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    last_success_at: datetime | None
    paused: bool = False
    paused_reason: str | None = None
    paused_at: datetime | None = None

    @property
    def holding(self) -> bool:
        """Whether the sink's deliveries are held now: it is paused or disabled."""
        return self.paused or self.disabled


@dataclass(frozen=True)
class SinkChange:
    """What ``sinks pause|resume|enable|disable`` did to a sink and its deliveries."""

    sink: str
    held: int = 0  # deliveries moved to held (pause, disable)
    released: int = 0  # held deliveries made due now (resume, enable)
    in_flight: int = 0  # being attempted now: they finish, a retry they need is held
    paused: bool = False  # the sink's state after the change
    disabled: bool = False


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class DeliveryView:
    """One delivery of an event, as ``events`` shows it."""

    sink: str
    status: str
    attempts: int
    in_flight: bool
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None


@dataclass(frozen=True)
class AttemptView:
    """One recorded attempt of a delivery, as ``events show`` shows it."""

    attempt: int  # 1-based
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None  # the first RESPONSE_BODY_KEPT bytes of the answer, as text


@dataclass(frozen=True)
class EventDetail:
    """One event with its payload and every delivery with every attempt (``events show``)."""

    event: EventView
    payload: str  # the item's JSON text, as stored
    attempts: Mapping[str, tuple[AttemptView, ...]]  # by sink, oldest first


@dataclass(frozen=True)
class EventView:
    """One event with all its deliveries, as ``events`` shows it."""

    id: str
    type: str
    account: str
    trigger: str
    item_key: str
    created_at: datetime
    deliveries: tuple[DeliveryView, ...]


# --------------------------------------------------------------------------- nodes

# The sinks a node serves, as the node registry holds them: each sink's name and the event
# types (or patterns: "engine.*") it subscribes to (None: every item event type, no
# engine.* event). Never a URL, a secret or a header.
SinkSubscriptions = Mapping[str, tuple[str, ...] | None]

# A node is alive while it has not stopped and its last heartbeat is at most this old:
# three heartbeats (runtime/jobs.py HEARTBEAT_EVERY). Past it, ``status`` shows the node
# as vanished and the other nodes stop fanning events out to the sinks only it serves.
NODE_ALIVE_WITHIN = 30.0


@dataclass(frozen=True)
class NodeView:
    """One engine process sharing the database: its heartbeat, the poll leases it holds,
    and what its heartbeat last said of its configuration (the node registry)."""

    name: str
    version: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    leases: tuple[str, ...] = ()  # "account/trigger" whose poll lease it holds now
    # the sinks it serves; None: it did not say (a version from before the registry)
    sinks: SinkSubscriptions | None = None
    config_digest: str | None = None  # config/shape.py config_digest of its configuration
    # core/division.py schedule_digest of its poll jobs: nodes with equal ones divide them
    schedule_digest: str | None = None

    def alive(self, now: datetime) -> bool:
        """Not stopped, and a heartbeat within ``NODE_ALIVE_WITHIN`` seconds of ``now``."""
        return (
            self.stopped_at is None
            and (now - self.heartbeat_at).total_seconds() <= NODE_ALIVE_WITHIN
        )


@dataclass(frozen=True)
class EventFilter:
    """Which events (and, through ``sinks``/``statuses``, deliveries) a command is about."""

    event_ids: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    types: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()
    item_key: str | None = None
    # delivery-level: an event matches when one of its deliveries does
    sinks: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    # keyset pagination (the admin API's cursor): only events older than this event's
    before: str | None = None


@dataclass(frozen=True)
class ReplayResult:
    """What a replay queued again, and what it left alone and why."""

    events: int  # events with at least one delivery queued again
    queued: int  # deliveries queued again
    skipped_disabled: int  # to a sink that is disabled
    skipped_unknown: int  # to a sink no longer in the configuration
    skipped_in_flight: int  # being attempted right now
    held: int = 0  # of ``queued``: to a paused sink, held until it is resumed


@dataclass(frozen=True)
class SinkDrop:
    """What ``sinks drop`` removed (or, refused, why not), and what it queued instead."""

    sink: str
    dropped: Mapping[str, int]  # the sink's deliveries that were not delivered, by status
    to: str | None = None  # the sink their events were queued to
    queued: int = 0  # deliveries created to ``to``
    already_there: int = 0  # events that had a delivery to ``to`` already
    served_by: tuple[str, ...] = ()  # live nodes serving the sink: refused, nothing done

    @property
    def total(self) -> int:
        """How many deliveries were (or would be) dropped."""
        return sum(self.dropped.values())


@dataclass(frozen=True)
class QuarantineView:
    """An item a poll set aside, with the reason, as ``events --status quarantined`` shows it."""

    account: str
    trigger: str
    key: str
    reason: str
    first_seen_at: datetime
    last_seen_at: datetime
    polls: int  # how many polls listed it and could not process it


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class StoreFailure:
    """The last failed run of a unit of work."""

    unit: str
    reason: str
    transient: bool  # the connection was lost or the database busy (vs. refused)
    since: float  # monotonic time of the first failure in a row
    failures: int  # runs in a row that failed


@dataclass(frozen=True)
class ActivitySnapshot:
    """The database's activity at one instant."""

    at: float  # monotonic time of the snapshot
    longest_open: float  # seconds the oldest running unit of work has run (0: none)
    failing: tuple[StoreFailure, ...]  # units whose last run failed


# --------------------------------------------------------------------------- check


@dataclass(frozen=True)
class TriggerCheck:
    """``check``: one request (first page only) of one (account, trigger), as a poll
    would judge it."""

    account: str
    trigger: str
    key: tuple[str, ...]
    ok: bool
    items: int | None = None  # on the first page; None when the request failed
    keyless: int | None = None  # items without a usable key
    fields: tuple[str, ...] = ()  # the first items' top-level fields (sorted, bounded)
    fields_more: bool = False  # more fields than listed
    kind: FailureKind | None = None  # why it failed
    error: str | None = None
    duration_ms: int = 0


@dataclass(frozen=True)
class SinkCheck:
    """``check``: one signed ``engine.test`` event POSTed to one sink."""

    sink: str
    ok: bool  # a 2xx within the sink's timeout
    webhook_id: str
    status_code: int | None
    latency_ms: int
    error: str | None = None


@dataclass(frozen=True)
class CheckReport:
    """Everything ``check`` tried; ``ok`` only when every part passed."""

    config_path: str | None
    triggers: tuple[TriggerCheck, ...]
    sinks: tuple[SinkCheck, ...]
    sinks_checked: bool  # False with --no-sinks
    problem: str | None = None  # a failure that is no single check's (no trigger to test)

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return (
            self.problem is None
            and all(t.ok for t in self.triggers)
            and all(s.ok for s in self.sinks)
        )
