"""The raw statements of the hot paths, named in one place and rendered per database.

Everything else goes through SQLAlchemy Core in the repositories. The poll's claim
(:func:`claim_poll`) is written here too, as text typed by SQLAlchemy (its row is the
poll's state): one ``INSERT ... ON CONFLICT ... DO UPDATE ... WHERE ... RETURNING``, the
same on both databases. These few run thousands
of times a second when a backlog drains, where SQLAlchemy's per-row parameter and result
processing was half their cost (benchmarks/RESULTS.md, "deliver"); they are the same on
both databases but for the DB-API placeholder and, on PostgreSQL, the row lock. Times are
passed through :class:`trigger_engine.db.codecs.TimeCodec`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.sql.selectable import TextualSelect

from trigger_engine.db.codecs import UTCDateTime
from trigger_engine.db.schema import poll_state

# Up to LIMIT unclaimed deliveries to one sink in one status, due by a time, oldest first,
# with their events: (id, attempts, event id, type, account, created_at, probes, envelope
# as bytes). The item itself is not read apart: the envelope holds it as stored
# (core/events.py, ``item``), and each copy of it read costs a decode and an encode.
# coalesce() keeps SQLite's planner off the (status, next_attempt_at) index, which would
# read and sort every due row; PostgreSQL adds FOR UPDATE ... SKIP LOCKED, so that nodes
# claim disjoint rows.
_CLAIM = """
SELECT d.id, d.attempts, e.id, e.type, e.account, e.created_at, d.probes, {envelope}
FROM deliveries AS d JOIN events AS e ON e.id = d.event_id
WHERE d.sink = {p} AND d.status = {p} AND coalesce(d.next_attempt_at, NULL) <= {p}
  AND (d.lease_expires_at IS NULL OR d.lease_expires_at < {p})
ORDER BY d.id LIMIT {p}
"""
_SKIP_LOCKED = "FOR UPDATE OF d SKIP LOCKED"

# The webhook envelope (core/events.py, ``envelope``), built by the claim: the stored item
# joined as it is, the type and account quoted as JSON strings (SQLite's json_quote and
# PostgreSQL's to_json escape as orjson does: tests/integration/test_claim_envelope.py),
# the time cut to the second from the stored value, so that no datetime is parsed and
# formatted again for each delivery (benchmarks/RESULTS.md); returned as bytes (SQLite's
# CAST AS BLOB, PostgreSQL's convert_to), as it is sent: no str made and encoded again.
# The text's braces are doubled for str.format.
_ENVELOPE = (
    """'{{"type":' || {type} || ',"timestamp":"' || {stamp} || 'Z","account":' ||"""
    """ CASE WHEN coalesce(e.account, '') = '' THEN 'null' ELSE {account} END ||"""
    """ ',"data":' || e.payload || '}}'"""
)
_SQLITE_STAMP = "substr(e.created_at, 1, 10) || 'T' || substr(e.created_at, 12, 8)"
_POSTGRESQL_STAMP = "to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"

# Take the lease on the claimed deliveries: (owner, expires, *ids).
_LEASE = "UPDATE deliveries SET lease_owner = {p}, lease_expires_at = {p} WHERE id IN ({ids})"

# One attempt: (delivery id, attempt, started_at, duration_ms, status code, error, the
# start of the response body).
_INSERT_ATTEMPT = """
INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status_code, error,
  response_body)
VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})
"""

# The delivery moves on after an attempt, only while its lease is still ours: (status,
# held_by, attempts, probes to add (1: a failed early probe), next_attempt_at,
# last_attempt_at, status code, error, delivered_at, id, owner).
_RECORD_ATTEMPT = """
UPDATE deliveries SET status = {p}, held_by = {p}, attempts = {p}, probes = probes + {p},
  next_attempt_at = {p}, lease_owner = NULL, lease_expires_at = NULL, last_attempt_at = {p},
  last_status_code = {p}, last_error = {p}, delivered_at = {p}
WHERE id = {p} AND lease_owner = {p}
"""

# The sinks whose deliveries are held (paused or disabled), read in every claim and every
# record: (name, disabled). No parameters; the booleans read as 0/1 on SQLite.
HOLDING = "SELECT name, disabled FROM sink_state WHERE disabled OR paused"

# A sink answered 2xx: its last success, its row made if it has none: (name, when).
_LAST_SUCCESS = """
INSERT INTO sink_state (name, last_success_at) VALUES ({p}, {p})
ON CONFLICT (name) DO UPDATE SET last_success_at = excluded.last_success_at
"""

# Every seen key of one trigger: (account, trigger). A full list polled again reads them
# in one scan rather than in many IN lists.
_TRIGGER_KEYS = "SELECT key FROM seen_keys WHERE account = {p} AND trigger = {p}"


# A poll's claim, in one statement (on PostgreSQL one round trip, in autocommit): take or
# renew the lease on one trigger and bump its fencing token, creating its row at its first
# claim; returns the row (the state the poll starts from), or nothing when refused: paused,
# another owner's lease not expired, and as asked, in backoff or polled too recently (by
# any node). The WHERE of DO UPDATE reads the existing row; the row's lock makes two
# claims at once run one after the other, the second seeing the first's lease.
_CLAIM_POLL = """
INSERT INTO poll_state (account, trigger, lease_owner, lease_expires_at, fencing_token)
VALUES (:account, :trigger, :owner, :expires, 1)
ON CONFLICT (account, trigger) DO UPDATE
SET lease_owner = excluded.lease_owner, lease_expires_at = excluded.lease_expires_at,
  fencing_token = poll_state.fencing_token + 1
WHERE NOT poll_state.paused
  AND (poll_state.lease_owner IS NULL OR poll_state.lease_owner = :owner
       OR poll_state.lease_expires_at < :now){backoff}{gap}
RETURNING {columns}
"""
_CLAIM_BACKOFF = "\n  AND (poll_state.backoff_until IS NULL OR poll_state.backoff_until <= :now)"
_CLAIM_GAP = "\n  AND (poll_state.last_poll_at IS NULL OR poll_state.last_poll_at <= :gap_from)"


@functools.cache
def claim_poll(*, backoff: bool, gap: bool) -> TextualSelect:
    """The claim statement (:data:`_CLAIM_POLL`), with the backoff test and the min-gap
    test (``:gap_from``: the claim's time less the gap) as asked; its parameters and the
    returned columns typed as ``poll_state``'s, so times are converted as everywhere."""
    sql = _CLAIM_POLL.format(
        backoff=_CLAIM_BACKOFF if backoff else "",
        gap=_CLAIM_GAP if gap else "",
        columns=", ".join(c.name for c in poll_state.c),
    )
    times = [bindparam(name, type_=UTCDateTime) for name in ("expires", "now", "gap_from")]
    statement = text(sql).bindparams(*(t for t in times if f":{t.key}" in sql))
    return statement.columns(*poll_state.c)


@dataclass(frozen=True)
class Queries:
    """The hot-path statements, rendered for one database's DB-API paramstyle."""

    claim: str
    insert_attempt: str
    record_attempt: str
    last_success: str
    trigger_keys: str
    placeholder: str

    @classmethod
    def for_dialect(cls, dialect: str) -> Queries:
        """``?`` placeholders on SQLite; ``%s`` and the row lock on PostgreSQL."""
        postgresql = dialect == "postgresql"
        p = "%s" if postgresql else "?"
        quote = "to_json({})::text" if postgresql else "json_quote({})"
        envelope = _ENVELOPE.format(
            type=quote.format("e.type"),
            account=quote.format("e.account"),
            stamp=_POSTGRESQL_STAMP if postgresql else _SQLITE_STAMP,
        )
        as_bytes = "convert_to({}, 'UTF8')" if postgresql else "CAST({} AS BLOB)"
        claim = _CLAIM.format(p=p, envelope=as_bytes.format(envelope))
        return cls(
            claim=claim + (_SKIP_LOCKED if postgresql else ""),
            insert_attempt=_INSERT_ATTEMPT.format(p=p),
            record_attempt=_RECORD_ATTEMPT.format(p=p),
            last_success=_LAST_SUCCESS.format(p=p),
            trigger_keys=_TRIGGER_KEYS.format(p=p),
            placeholder=p,
        )

    def lease(self, count: int) -> str:
        """The lease statement for ``count`` delivery ids."""
        return _LEASE.format(p=self.placeholder, ids=", ".join([self.placeholder] * count))
