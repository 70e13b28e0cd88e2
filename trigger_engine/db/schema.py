"""The database schema, declared once (SQLAlchemy Core). Migrations must match it exactly
(``tests/integration/test_migrations.py`` compares them).

Only the repositories of ``trigger_engine.db`` (and the Alembic migrations) import it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    column,
    false,
    table,
    text,
)

from trigger_engine.db.codecs import UTCDateTime
from trigger_engine.states import ACCOUNT_NAME_MAX, EVENT_TYPE_MAX, SINK_NAME_MAX, TRIGGER_NAME_MAX

# An auto-incrementing 64-bit id that is SQLite's rowid there.
Serial = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# The payload search's index (``events --search``), made by migrations 0009 and 0012
# outside this metadata because neither form is a plain table or index, and either may be
# missing (SQLite without FTS5, PostgreSQL without pg_trgm: the search then scans a bounded
# number of rows). SQLite: an FTS5 table with the trigram tokenizer (and its shadow tables)
# over ``events.payload``; PostgreSQL: a table of its own (``seq``, ``payload``) with a
# pg_trgm GIN index. Written events wait in ``SEARCH_BACKLOG`` (their ``seq``) until the
# search indexer takes them (``db/search_index.py``).
SEARCH_TABLE = "events_search"
SEARCH_BACKLOG = "events_search_backlog"
SEARCH_INDEX = "ix_events_search_payload_trgm"  # PostgreSQL
_SEARCH_INDEX_0009 = "ix_events_payload_trgm"  # PostgreSQL, migrations 0009 to 0011

search_backlog = table(SEARCH_BACKLOG, column("seq"))


def is_search_index(name: str | None) -> bool:
    """Whether a table, trigger, index or constraint named ``name`` belongs to the payload
    search (the migration tests and Alembic's comparison leave those out)."""
    return name is not None and (
        name.startswith(SEARCH_TABLE) or name in (SEARCH_INDEX, _SEARCH_INDEX_0009)
    )


# Per (account, trigger): the poll's state machine.
poll_state = Table(
    "poll_state",
    metadata,
    Column("account", String(ACCOUNT_NAME_MAX), primary_key=True),
    Column("trigger", String(TRIGGER_NAME_MAX), primary_key=True),
    Column("seeded_at", UTCDateTime, nullable=True),  # first successful poll
    Column("last_poll_at", UTCDateTime, nullable=True),
    Column("last_outcome", String(20), nullable=True),  # states.PollOutcome
    Column("last_error", Text, nullable=True),
    Column("last_success_at", UTCDateTime, nullable=True),
    Column("consecutive_failures", Integer, nullable=False, server_default=text("0")),
    Column("backoff_until", UTCDateTime, nullable=True),
    Column("paused", Boolean, nullable=False, server_default=false()),
    Column("paused_reason", Text, nullable=True),
    # paused by the sustained-failure rule (a restart or reload resumes it), not by hand
    Column("paused_auto", Boolean, nullable=False, server_default=false()),
    Column("failing_since", UTCDateTime, nullable=True),  # first failure of the current run
    # engine.trigger_failing was written for the current run of failures (once per run)
    Column("failing_notified", Boolean, nullable=False, server_default=false()),
    Column("items_known", BigInteger, nullable=False, server_default=text("0")),
    Column("lease_owner", String(200), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("fencing_token", BigInteger, nullable=False, server_default=text("0")),
    # The dedupe definition (path, key, items_path, params, update_fields) its seen keys
    # were remembered under, fingerprinted (core/definition.py): when the configuration's
    # differs, the next poll is a first poll again. NULL: never succeeded, or polled
    # before this column existed (the next success adopts the definition, no re-seed).
    Column("definition_fingerprint", String(200), nullable=True),
)

# The dedupe set: the source of truth for "seen". Never pruned while the trigger exists.
# Read by primary key only (a poll's keys IN (...)), so a poll costs the same at 10,000
# and at 1,000,000 keys (benchmarks/seen.py).
seen_keys = Table(
    "seen_keys",
    metadata,
    Column("account", String(ACCOUNT_NAME_MAX), primary_key=True),
    Column("trigger", String(TRIGGER_NAME_MAX), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("first_seen_at", UTCDateTime, nullable=False),
    # Remembered by a seeding first poll without firing; backfill may still fire it once.
    Column("seeded", Boolean, nullable=False, server_default=false()),
    # For "updated item" triggers: a fingerprint of the watched fields' values.
    Column("version", Text, nullable=True),
    # SQLite: the rows live in the primary key's B-tree, stored once (migration 0010).
    sqlite_with_rowid=False,
)

events = Table(
    "events",
    metadata,
    Column("seq", Serial, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),  # webhook-id
    Column("type", String(EVENT_TYPE_MAX), nullable=False),
    Column("account", String(ACCOUNT_NAME_MAX), nullable=False),
    Column("trigger", String(TRIGGER_NAME_MAX), nullable=False),
    Column("item_key", Text, nullable=False),
    Column("payload", Text, nullable=False),  # the item as JSON, as the API returned it
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "created_at"),
    Index(None, "account", "trigger", "item_key"),
    Index(None, "type"),  # the console's type filter (migration 0011)
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("event_id", String(40), ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
    Column("sink", String(SINK_NAME_MAX), nullable=False),
    # pending | failed | delivered | dead | held (states.DeliveryStatus)
    Column("status", String(10), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    # of the attempts, those made early as probes of a sink that was down (core/circuit.py):
    # the retry schedule counts only attempts - probes
    Column("probes", Integer, nullable=False, server_default=text("0")),
    # held: why (states.HoldKind): "sink" (paused or disabled: resuming sends it) or
    # "flood_guard" (a replay sends it); NULL otherwise
    Column("held_by", String(12), nullable=True),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("lease_owner", String(200), nullable=True),  # in flight: claimed by a node
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("last_attempt_at", UTCDateTime, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("event_id", "sink"),
    Index(None, "status", "next_attempt_at"),
    Index(None, "sink", "status", "id"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("delivery_id", Serial, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    # the start of the receiver's answer (types.RESPONSE_BODY_KEPT bytes), decoded leniently
    Column("response_body", Text, nullable=True),
    Index(None, "delivery_id"),
)

sink_state = Table(
    "sink_state",
    metadata,
    Column("name", String(SINK_NAME_MAX), primary_key=True),
    Column("disabled", Boolean, nullable=False, server_default=false()),
    Column("disabled_reason", Text, nullable=True),
    Column("disabled_at", UTCDateTime, nullable=True),
    Column("last_success_at", UTCDateTime, nullable=True),
    # paused by hand (sinks pause): its deliveries are held until sinks resume
    Column("paused", Boolean, nullable=False, server_default=false()),
    Column("paused_reason", Text, nullable=True),
    Column("paused_at", UTCDateTime, nullable=True),
)

# The engine processes sharing this database, with their heartbeats.
nodes = Table(
    "nodes",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("version", String(40), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime, nullable=True),
    # The node registry, written by every heartbeat: the sinks the node serves as JSON
    # ({"crm": null, "audit": ["lead.new"]}: name → subscribed event types, null for every
    # one; never a URL, secret or header) and a digest of its configuration's shape.
    Column("sinks", Text, nullable=True),
    Column("config_digest", String(64), nullable=True),
    # Its schedule's digest (core/division.py schedule_digest): the live nodes with equal
    # digests divide their polls among themselves (migration 0013).
    Column("schedule_digest", String(64), nullable=True),
)

# Items set aside by a poll (they cannot be keyed, written or stored), with the reason.
# Not marked seen: every poll that lists one tries it again; it leaves this table when it
# is processed (fired or remembered).
quarantine = Table(
    "quarantine",
    metadata,
    Column("account", String(ACCOUNT_NAME_MAX), primary_key=True),
    Column("trigger", String(TRIGGER_NAME_MAX), primary_key=True),
    Column("key", Text, primary_key=True),  # as stored (storable_key), or a fingerprint
    Column("reason", Text, nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("polls", Integer, nullable=False, server_default=text("1")),  # polls that saw it
)
