"""The store: the only module that speaks SQL, on SQLite and PostgreSQL alike.

It keeps the engine's invariants:

* **Dedupe.** ``seen_keys`` has a primary key on (account, trigger, key); new keys are
  inserted with ``ON CONFLICT DO NOTHING RETURNING key``, so even two overlapping polls
  cannot create two events for one item.
* **Outbox.** A poll's keys, its events and one delivery row per subscribed sink are
  written in one transaction: a crash keeps all of it or none, and the next poll repairs
  the second case because the keys were not marked either.
* **Deliveries are a state machine:** pending → (claimed: lease) → delivered | failed
  (retry scheduled) | dead, with every attempt recorded.

SQLite runs in WAL mode through one connection (one writer), transactions begin
IMMEDIATE, and the file is created with mode 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row, make_url
from sqlalchemy.sql.elements import ColumnElement

from trigger_engine.core.dedupe import KeyedItems, changed, unseen
from trigger_engine.core.filters import EventFilter, ReplayResult
from trigger_engine.db import migrate
from trigger_engine.db.schema import (
    attempts,
    deliveries,
    events,
    nodes,
    poll_state,
    seen_keys,
    sink_state,
)
from trigger_engine.errors import AlreadyRunning, DatabaseError, LeaseLost

# Bound parameters per IN (...) or multi-row statement: well under SQLite's 32766.
_CHUNK = 5000

PENDING, FAILED, DELIVERED, DEAD, HELD = "pending", "failed", "delivered", "dead", "held"
DUE_STATUSES = (PENDING, FAILED)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class PollState:
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


@dataclass(frozen=True)
class Fence:
    """Proof of a poll lease: the owner and the fencing token its claim got. Every write
    of the poll's result checks it, so a node that lost its lease cannot write. The poll's
    result records ``claimed_at`` as its ``last_poll_at``: when the poll started."""

    owner: str
    token: int
    claimed_at: datetime


# Why claim_poll refused a poll (PollClaim.refused).
PollRefusal = Literal["paused", "backing off", "leased", "too soon"]


@dataclass(frozen=True)
class PollClaim:
    """What :meth:`Store.claim_poll` got: a lease to poll under (``fence``), or why not
    (``refused``), with the trigger's state as the claim saw it."""

    state: PollState
    fence: Fence | None = None
    refused: PollRefusal | None = None


@dataclass(frozen=True)
class NodeView:
    name: str
    version: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    leases: tuple[str, ...]  # "account/trigger" whose poll lease it holds now


@dataclass(frozen=True)
class PollResult:
    first_poll: bool
    new_events: int  # events created (emit, or any later poll)
    remembered: int  # keys marked seen without firing (a seeding first poll)
    deliveries: int  # delivery rows created
    held: int = 0  # events held by the flood guard


@dataclass(frozen=True)
class DueDelivery:
    """A claimed delivery, with what is needed to send it."""

    id: int
    sink: str
    attempts: int  # attempts made before this one
    event_id: str
    event_type: str
    account: str
    created_at: datetime
    payload: bytes  # the item, JSON


@dataclass(frozen=True)
class AttemptOutcome:
    """The result of one attempt and the state the delivery moves to."""

    delivery_id: int
    sink: str
    event_id: str
    attempt: int  # 1-based number of this attempt
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    new_status: str  # delivered | failed | dead
    next_attempt_at: datetime | None = None
    disable_sink: str | None = None  # a reason, when the attempt disables the sink (410)


@dataclass(frozen=True)
class DeliveryView:
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
class EventView:
    id: str
    type: str
    account: str
    trigger: str
    item_key: str
    created_at: datetime
    deliveries: tuple[DeliveryView, ...]


@dataclass(frozen=True)
class BackfillResult:
    fired: int  # events created
    deliveries: int
    not_listed: int  # remembered items the API no longer lists (cannot be fired)


@dataclass(frozen=True)
class SinkStats:
    name: str
    counts: dict[str, int]  # by delivery status
    in_flight: int
    oldest_due_created_at: datetime | None
    disabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    last_success_at: datetime | None


# --------------------------------------------------------------------------- ids


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_event_id() -> str:
    """``evt_`` + a ULID (48-bit millisecond time, 80 random bits, Crockford base32)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(secrets.token_bytes(10))
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "evt_" + "".join(reversed(chars))


# --------------------------------------------------------------------------- engine


def redacted_url(url: str) -> str:
    """The database URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return "(unparseable database URL)"


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _create_private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only, before SQLite creates it with
    the umask's mode. SQLite gives its -wal and -shm files the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


BUSY_TIMEOUT_MS = 30_000  # SQLite: ms a transaction waits for another process's write lock
CONNECTION_WAIT = 120.0  # SQLite: seconds a store call waits for the one connection

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _Busy(Exception):
    """Store.run_now: the SQLite file's write lock is held by another process."""


def _make_engine(url: str) -> Engine:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        path = _sqlite_path(url)
        if path is not None:
            _create_private_file(path)
        engine = create_engine(
            url,
            pool_size=1,  # one connection: one writer (see DESIGN-NOTES on SQLite's WAL bug)
            max_overflow=0,
            pool_timeout=CONNECTION_WAIT,
            connect_args={"check_same_thread": False, "timeout": 30},
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._lock_fd: int | None = None
        self._param = "%s" if self.dialect == "postgresql" else "?"  # the DB-API paramstyle
        # The delivery hot path runs raw statements (see _due_rows), the same on both
        # databases but for the paramstyle, the row lock and how a time is passed.
        p = self._param
        sqlite_db = self.dialect == "sqlite"
        self._claim_sql = _CLAIM_SQL.format(p=p) + ("" if sqlite_db else _SKIP_LOCKED)
        self._insert_attempt_sql = _INSERT_ATTEMPT_SQL.format(p=p)
        self._record_attempt_sql = _RECORD_ATTEMPT_SQL.format(p=p)
        self._db_time: Callable[[datetime | None], Any] = _sqlite_time if sqlite_db else _same
        self._from_db_time: Callable[[Any], datetime] = _from_sqlite_time if sqlite_db else _as_utc
        # SQLite has one connection (pool_size=1); this lock is the queue for it, so that
        # run_now can tell whether it is free at this instant.
        self._conn_lock = threading.RLock() if self.dialect == "sqlite" else None
        self._no_wait = False  # run_now is calling: never wait for the file's write lock

    @classmethod
    def open(cls, url: str, *, upgrade: bool = True) -> Store:
        """Connect, and bring the schema up to date unless told not to."""
        try:
            engine = _make_engine(url)
            store = cls(engine)
            if upgrade:
                store.upgrade()
            else:
                store.ping()
        except sa_exc.SQLAlchemyError as exc:
            raise DatabaseError(
                f"cannot use the database {redacted_url(url)}: {_reason(exc)}"
            ) from None
        except OSError as exc:
            raise DatabaseError(
                f"cannot create the database file for {redacted_url(url)}: {exc.strerror}"
            ) from None
        return store

    def upgrade(self) -> None:
        with self.engine.begin() as conn:
            migrate.upgrade(conn)

    def ping(self) -> None:
        with self._serialized(), self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    @contextlib.contextmanager
    def _serialized(self) -> Iterator[None]:
        """SQLite: wait for the one connection, as long as the pool would have."""
        lock = self._conn_lock
        if lock is None:
            yield
            return
        if not lock.acquire(timeout=CONNECTION_WAIT):
            raise DatabaseError(
                f"the database failed: its connection stayed busy for {CONNECTION_WAIT:g}s"
            )
        try:
            yield
        finally:
            lock.release()

    def run_now(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> tuple[bool, _T | None]:
        """Run the store call ``fn`` (one transaction) in this thread if it can start at
        once: on SQLite, when the connection is free (no poll's transaction holds it) and
        the file's write lock can be had without waiting (no other process, such as a CLI
        command, holds it). Otherwise it is not run: ``(False, None)``; and always on
        PostgreSQL, whose calls may wait on the network or on row locks.

        Why: the dispatcher calls the store from its event loop. In a thread, each call
        competes for the GIL with the loop (sqlite3 releases and takes it back at every
        row), which cost 120 us of CPU per delivery (benchmarks/RESULTS.md, "deliver");
        run here, a claim or a batch of records holds the loop for a few milliseconds.
        """
        lock = self._conn_lock
        if lock is None or not lock.acquire(blocking=False):
            return False, None
        try:
            self._set_busy_timeout(0)
            self._no_wait = True
            try:
                return True, fn(*args, **kwargs)
            except _Busy:
                return False, None
            finally:
                self._no_wait = False
                self._set_busy_timeout(BUSY_TIMEOUT_MS)
        finally:
            lock.release()

    def _set_busy_timeout(self, ms: int) -> None:
        # on the DB-API connection itself: through SQLAlchemy it would BEGIN (IMMEDIATE)
        with self.engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.execute(f"PRAGMA busy_timeout={int(ms)}")

    def close(self) -> None:
        self.engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def lock_single_node(self) -> None:
        """With SQLite, only one engine process may run on a file: hold an exclusive lock
        on ``FILE.lock`` for the life of this process (a second one is refused)."""
        path = _sqlite_path(str(self.engine.url))
        if path is None or self._lock_fd is not None:
            return
        lock_path = path.with_name(path.name + ".lock")
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(
                f"another trigger-engine process is already running on {path} (it holds "
                f"{lock_path.name}); SQLite is for one node: to run several, use PostgreSQL "
                '([engine] database = "postgresql+psycopg://...")'
            ) from None
        self._lock_fd = fd

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._serialized():
            try:
                with self.engine.begin() as conn:
                    yield conn
            except sa_exc.OperationalError as exc:
                if self._no_wait and "locked" in str(exc.orig):
                    raise _Busy from None
                raise DatabaseError(f"the database failed: {_reason(exc)}") from None

    def _insert(self, table: Any) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    # ----------------------------------------------------------------- poll side

    def poll_state(self, account: str, trigger: str) -> PollState | None:
        with self._tx() as conn:
            row = self._poll_row(conn, account, trigger)
        return None if row is None else _poll_state(row)

    def poll_states(self) -> list[PollState]:
        with self._tx() as conn:
            rows = conn.execute(
                select(poll_state).order_by(poll_state.c.account, poll_state.c.trigger)
            ).all()
        return [_poll_state(r) for r in rows]

    def _poll_row(self, conn: Connection, account: str, trigger: str) -> Row[Any] | None:
        return conn.execute(
            select(poll_state).where(
                poll_state.c.account == account, poll_state.c.trigger == trigger
            )
        ).one_or_none()

    def _ensure_poll_row(self, conn: Connection, account: str, trigger: str) -> PollState:
        conn.execute(
            self._insert(poll_state)
            .values(account=account, trigger=trigger)
            .on_conflict_do_nothing(index_elements=["account", "trigger"])
        )
        row = self._poll_row(conn, account, trigger)
        assert row is not None
        return _poll_state(row)

    def known_keys(self, account: str, trigger: str, keys: Sequence[str]) -> set[str]:
        with self._tx() as conn:
            return self._known_keys(conn, account, trigger, keys)

    def _known_keys(
        self,
        conn: Connection,
        account: str,
        trigger: str,
        keys: Sequence[str],
        *,
        items_known: int | None = None,
    ) -> set[str]:
        """Which of ``keys`` are seen. When the response is about as large as the seen
        set (a full list polled again), one scan of the trigger's keys beats many IN
        lists; otherwise the IN lists read only what is asked."""
        if items_known is not None and len(keys) > _CHUNK and items_known <= 2 * len(keys):
            rows = conn.exec_driver_sql(
                f"SELECT key FROM seen_keys WHERE account = {self._param} "
                f"AND trigger = {self._param}",
                (account, trigger),
            )
            return {row[0] for row in rows}
        known: set[str] = set()
        for chunk in _chunks(keys, _CHUNK):
            known.update(
                conn.execute(
                    select(seen_keys.c.key).where(
                        seen_keys.c.account == account,
                        seen_keys.c.trigger == trigger,
                        seen_keys.c.key.in_(chunk),
                    )
                ).scalars()
            )
        return known

    def record_poll(
        self,
        account: str,
        trigger: str,
        keyed: KeyedItems,
        *,
        event_type: str,
        emit_first: bool,
        sinks: Sequence[str],
        now: datetime,
        max_new: int | None = None,
        fence: Fence | None = None,
    ) -> PollResult:
        """A successful poll: mark new keys seen and, unless this is a seeding first
        poll, create their events and deliveries. One transaction.

        With ``keyed.versions`` (an "updated item" trigger) it is the known items whose
        version changed that fire; new items are only remembered. With ``max_new``, a poll
        that would fire more than that holds all of its events (the flood guard)."""
        with self._tx() as conn:
            state = self._check_fence(conn, account, trigger, fence)
            first = state.seeded_at is None
            fire = emit_first or not first
            to_fire: list[tuple[str, Any]] = []
            if keyed.versions is None:
                known = self._known_keys(
                    conn, account, trigger, keyed.keys, items_known=state.items_known
                )
                fresh = unseen(keyed, known)
                inserted = self._insert_keys(
                    conn, account, trigger, fresh, seeded=not fire, now=now
                )
                if fire:
                    to_fire = [(k, item) for k, item in fresh if k in inserted]
            else:
                versions = self._known_versions(conn, account, trigger, keyed.keys)
                fresh = unseen(keyed, versions)
                inserted = self._insert_keys(
                    conn,
                    account,
                    trigger,
                    fresh,
                    seeded=False,
                    now=now,
                    versions=dict(zip(keyed.keys, keyed.versions, strict=True)),
                )
                to_fire = self._bump_versions(conn, account, trigger, changed(keyed, versions))
            held = max_new is not None and len(to_fire) > max_new
            new_events = delivery_rows = 0
            if to_fire:
                new_events, delivery_rows = self._create_events(
                    conn,
                    account,
                    trigger,
                    event_type,
                    to_fire,
                    sinks,
                    now,
                    held=f"held by the flood guard: {len(to_fire)} new items in one poll "
                    f"(max_new_per_poll = {max_new}); release with 'trigger-engine replay "
                    "--status held'"
                    if held
                    else None,
                )
            values: dict[str, Any] = {
                "last_poll_at": now if fence is None else fence.claimed_at,
                "last_success_at": now,
                "last_outcome": "ok",
                "last_error": None,
                "consecutive_failures": 0,
                "failing_since": None,
                "backoff_until": None,
                "items_known": poll_state.c.items_known + len(inserted),
            }
            if first:
                values["seeded_at"] = now
            conn.execute(
                update(poll_state)
                .where(poll_state.c.account == account, poll_state.c.trigger == trigger)
                .values(**values)
            )
        return PollResult(
            first_poll=first,
            new_events=new_events,
            remembered=len(inserted) if not fire or keyed.versions is not None else 0,
            deliveries=delivery_rows,
            held=new_events if held else 0,
        )

    def _known_versions(
        self, conn: Connection, account: str, trigger: str, keys: Sequence[str]
    ) -> dict[str, str | None]:
        known: dict[str, str | None] = {}
        for chunk in _chunks(keys, _CHUNK):
            for key, version in conn.execute(
                select(seen_keys.c.key, seen_keys.c.version).where(
                    seen_keys.c.account == account,
                    seen_keys.c.trigger == trigger,
                    seen_keys.c.key.in_(chunk),
                )
            ):
                known[key] = version
        return known

    def _bump_versions(
        self,
        conn: Connection,
        account: str,
        trigger: str,
        changes: Sequence[tuple[str, Any, str, str | None]],
    ) -> list[tuple[str, Any]]:
        """Move each changed item to its new version; only the rows this transaction
        moved fire (the compare-and-set is the guard against a concurrent poll)."""
        fired = []
        for key, item, new, old in changes:
            same_old = seen_keys.c.version.is_(None) if old is None else seen_keys.c.version == old
            moved = conn.execute(
                update(seen_keys)
                .where(
                    seen_keys.c.account == account,
                    seen_keys.c.trigger == trigger,
                    seen_keys.c.key == key,
                    same_old,
                )
                .values(version=new)
            ).rowcount
            if moved:
                fired.append((key, item))
        return fired

    def _insert_keys(
        self,
        conn: Connection,
        account: str,
        trigger: str,
        fresh: Sequence[tuple[str, Any]],
        *,
        seeded: bool,
        now: datetime,
        versions: Mapping[str, str] | None = None,
    ) -> set[str]:
        inserted: set[str] = set()
        stmt = (
            self._insert(seen_keys)
            .on_conflict_do_nothing(index_elements=["account", "trigger", "key"])
            .returning(seen_keys.c.key)
        )
        for chunk in _chunks(fresh, _CHUNK):
            rows = [
                {
                    "account": account,
                    "trigger": trigger,
                    "key": key,
                    "first_seen_at": now,
                    "seeded": seeded,
                    "version": None if versions is None else versions[key],
                }
                for key, _item in chunk
            ]
            inserted.update(conn.execute(stmt, rows).scalars())
        return inserted

    def _create_events(
        self,
        conn: Connection,
        account: str,
        trigger: str,
        event_type: str,
        items: Sequence[tuple[str, Any]],
        sinks: Sequence[str],
        now: datetime,
        *,
        held: str | None = None,
    ) -> tuple[int, int]:
        """Events for ``items`` and a delivery per sink: pending (due now), dead for a
        disabled sink, or held (with ``held`` as the reason) until a replay."""
        disabled = self._disabled_sinks(conn)
        created = 0
        for chunk in _chunks(items, _CHUNK):
            event_rows = []
            delivery_rows = []
            for key, item in chunk:
                event_id = new_event_id()
                event_rows.append(
                    {
                        "id": event_id,
                        "type": event_type,
                        "account": account,
                        "trigger": trigger,
                        "item_key": key,
                        "payload": orjson.dumps(item).decode(),
                        "created_at": now,
                    }
                )
                for sink in sinks:
                    if sink in disabled:
                        status, due, note = DEAD, None, "sink disabled"
                    elif held is not None:
                        status, due, note = HELD, None, held
                    else:
                        status, due, note = PENDING, now, None
                    delivery_rows.append(
                        {
                            "event_id": event_id,
                            "sink": sink,
                            "status": status,
                            "next_attempt_at": due,
                            "last_error": note,
                            "created_at": now,
                        }
                    )
            conn.execute(insert(events), event_rows)
            if delivery_rows:
                conn.execute(insert(deliveries), delivery_rows)
            created += len(delivery_rows)
        return len(items), created

    def record_poll_failure(
        self,
        account: str,
        trigger: str,
        *,
        outcome: str,
        error: str,
        backoff_until: datetime | None,
        now: datetime,
        fence: Fence | None = None,
    ) -> tuple[int, datetime]:
        """A failed poll changes nothing but the poll's own state. Returns the number of
        consecutive failures so far and when this run of failures began."""
        with self._tx() as conn:
            self._check_fence(conn, account, trigger, fence)
            failures, since = conn.execute(
                update(poll_state)
                .where(poll_state.c.account == account, poll_state.c.trigger == trigger)
                .values(
                    last_poll_at=now if fence is None else fence.claimed_at,
                    last_outcome=outcome,
                    last_error=error,
                    consecutive_failures=poll_state.c.consecutive_failures + 1,
                    failing_since=func.coalesce(poll_state.c.failing_since, now),
                    backoff_until=backoff_until,
                )
                .returning(poll_state.c.consecutive_failures, poll_state.c.failing_since)
            ).one()
        return int(failures), since

    # ----------------------------------------------------------------- poll leases

    def claim_poll(
        self,
        account: str,
        trigger: str,
        *,
        owner: str,
        now: datetime,
        lease: float,
        min_gap: float | None = None,
        honour_backoff: bool = False,
    ) -> PollClaim:
        """Start a poll: take (or renew) the lease on one trigger's polls, in one
        transaction (one ``UPDATE … RETURNING`` once the trigger has a row). Every claim
        bumps the fencing token. Refused (``fence`` None, ``refused`` says why) when the
        trigger is paused, when (``honour_backoff``) failures put it in backoff, when
        another node holds the lease, or (``min_gap``) when any node started a poll of it
        less than ``min_gap`` seconds ago: the gap runs from the previous poll's claim, so
        a poll that ends late does not push the next one out by an interval."""
        conds = [
            poll_state.c.account == account,
            poll_state.c.trigger == trigger,
            poll_state.c.paused.is_(False),
            or_(
                poll_state.c.lease_owner.is_(None),
                poll_state.c.lease_owner == owner,
                poll_state.c.lease_expires_at < now,
            ),
        ]
        if honour_backoff:
            conds.append(
                or_(poll_state.c.backoff_until.is_(None), poll_state.c.backoff_until <= now)
            )
        if min_gap is not None:
            conds.append(
                or_(
                    poll_state.c.last_poll_at.is_(None),
                    poll_state.c.last_poll_at <= now - timedelta(seconds=min_gap),
                )
            )
        claim = (
            update(poll_state)
            .where(*conds)
            .values(
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease),
                fencing_token=poll_state.c.fencing_token + 1,
            )
            .returning(*poll_state.c)
        )
        with self._tx() as conn:
            row = conn.execute(claim).one_or_none()
            if row is None and self._poll_row(conn, account, trigger) is None:
                self._ensure_poll_row(conn, account, trigger)  # the trigger's first claim
                row = conn.execute(claim).one_or_none()
            if row is not None:
                fence = Fence(owner, int(row._mapping["fencing_token"]), now)
                return PollClaim(_poll_state(row), fence=fence)
            refused_row = self._poll_row(conn, account, trigger)
        assert refused_row is not None  # the row exists: ensured above, rows are not deleted
        state = _poll_state(refused_row)
        return PollClaim(state, refused=_refusal(state, owner, now, honour_backoff))

    def release_poll_leases(self, owner: str | None) -> int:
        """Give back every poll lease ``owner`` holds (at shutdown), so that other nodes
        need not wait for them to expire; ``None``: every lease (SQLite, at start)."""
        held = (
            poll_state.c.lease_owner.is_not(None)
            if owner is None
            else poll_state.c.lease_owner == owner
        )
        with self._tx() as conn:
            return int(
                conn.execute(
                    update(poll_state).where(held).values(lease_owner=None, lease_expires_at=None)
                ).rowcount
            )

    def _check_fence(
        self, conn: Connection, account: str, trigger: str, fence: Fence | None
    ) -> PollState:
        """First statement of a poll's write; returns the trigger's state. With a fence,
        it checks the lease and locks the row (PostgreSQL), so a concurrent claim waits for
        this transaction and then sees the renewed lease; without one (tests, tools), it
        creates the row if needed."""
        if fence is None:
            return self._ensure_poll_row(conn, account, trigger)
        row = conn.execute(
            update(poll_state)
            .where(
                poll_state.c.account == account,
                poll_state.c.trigger == trigger,
                poll_state.c.lease_owner == fence.owner,
                poll_state.c.fencing_token == fence.token,
            )
            .values(lease_owner=fence.owner)
            .returning(*poll_state.c)
        ).one_or_none()
        if row is None:
            raise LeaseLost(
                f"account '{account}', trigger '{trigger}': another node took over this "
                f"trigger (fencing token {fence.token} is stale); its result was not written"
            )
        return _poll_state(row)

    # ----------------------------------------------------------------- nodes

    def heartbeat(self, name: str, *, version: str, now: datetime, stopping: bool = False) -> None:
        values: dict[str, Any] = {"version": version, "heartbeat_at": now}
        values["stopped_at"] = now if stopping else None
        with self._tx() as conn:
            conn.execute(
                self._insert(nodes)
                .values(name=name, started_at=now, **values)
                .on_conflict_do_update(index_elements=["name"], set_=values)
            )

    def node_views(self, now: datetime) -> list[NodeView]:
        with self._tx() as conn:
            rows = conn.execute(select(nodes).order_by(nodes.c.name)).all()
            leases: dict[str, list[str]] = defaultdict(list)
            for r in conn.execute(
                select(poll_state.c.lease_owner, poll_state.c.account, poll_state.c.trigger)
                .where(poll_state.c.lease_expires_at > now)
                .order_by(poll_state.c.account, poll_state.c.trigger)
            ):
                leases[r.lease_owner].append(f"{r.account}/{r.trigger}")
        return [
            NodeView(
                name=r.name,
                version=r.version,
                started_at=r.started_at,
                heartbeat_at=r.heartbeat_at,
                stopped_at=r.stopped_at,
                leases=tuple(leases.get(r.name, ())),
            )
            for r in rows
        ]

    # ----------------------------------------------------------------- delivery side

    def release_claims(self, owner: str | None = None, *, ids: Sequence[int] = ()) -> int:
        """Make claimed deliveries due again at once. With SQLite (one process) at start,
        every claim is a leftover of a killed process; otherwise only ``owner``'s, and with
        ``ids`` only those of them (claimed, then given back unsent)."""
        cond: ColumnElement[bool] = deliveries.c.lease_owner.is_not(None)
        if owner is not None:
            cond = deliveries.c.lease_owner == owner
        released = 0
        with self._tx() as conn:
            if not ids:
                released = conn.execute(
                    update(deliveries).where(cond).values(lease_owner=None, lease_expires_at=None)
                ).rowcount
            for chunk in _chunks(ids, 500):
                released += conn.execute(
                    update(deliveries)
                    .where(cond, deliveries.c.id.in_(chunk))
                    .values(lease_owner=None, lease_expires_at=None)
                ).rowcount
        return int(released)

    def claim_due(
        self,
        *,
        owner: str,
        now: datetime,
        lease: float,
        capacity: Mapping[str, int],
        due_by: datetime | None = None,
    ) -> list[DueDelivery]:
        """Claim, per sink, up to ``capacity[sink]`` due deliveries, oldest first: per
        sink, one SELECT per due status (with the events' bodies; ``FOR UPDATE SKIP
        LOCKED`` on PostgreSQL, so nodes claim disjoint rows) and one UPDATE, all in one
        transaction.
        ``due_by`` (default ``now``): only deliveries due by then (``run --once`` passes
        its start, so a retry that falls due during the run waits for the next one)."""
        due = now if due_by is None else min(due_by, now)
        claimed: list[DueDelivery] = []
        expires = now + timedelta(seconds=lease)
        with self._tx() as conn:
            disabled = self._disabled_sinks(conn)
            for sink, limit in capacity.items():
                if limit <= 0 or sink in disabled:
                    continue
                rows = self._due_rows(conn, sink, limit, due=due, now=now)
                if not rows:
                    continue
                ids = [r[0] for r in rows]
                conn.exec_driver_sql(
                    _LEASE_SQL.format(p=self._param, ids=", ".join([self._param] * len(ids))),
                    (owner, self._db_time(expires), *ids),
                )
                claimed.extend(
                    DueDelivery(
                        id=r[0],
                        sink=sink,
                        attempts=r[1],
                        event_id=r[2],
                        event_type=r[3],
                        account=r[4],
                        created_at=r[5],
                        payload=r[6].encode(),
                    )
                    for r in rows
                )
        return claimed

    def _due_rows(
        self, conn: Connection, sink: str, limit: int, *, due: datetime, now: datetime
    ) -> list[tuple[int, int, str, str, str, datetime, str]]:
        """Up to ``limit`` unclaimed deliveries to ``sink`` due by ``due``, oldest first,
        with their events: (id, attempts, event id, type, account, created_at, payload).

        One query per status, each read in id order from the (sink, status, id) index and
        stopping at ``limit``: with both statuses in one query SQLite reads, joins and
        sorts every due row at each claim (7 ms per claim of 128 with 10,000 due; 0.3 ms
        this way). Raw statements: the claim is on the delivery hot path, where
        SQLAlchemy's per-row parameter and result processing was half its cost
        (benchmarks/RESULTS.md, "deliver")."""
        found: list[tuple[int, int, str, str, str, datetime, str]] = []
        t = self._db_time
        for status in DUE_STATUSES:
            cursor = conn.exec_driver_sql(self._claim_sql, (sink, status, t(due), t(now), limit))
            found.extend(
                (r[0], r[1], r[2], r[3], r[4], self._from_db_time(r[5]), r[6]) for r in cursor
            )
        found.sort(key=lambda r: r[0])
        return found[:limit]

    def record_attempts(self, outcomes: Sequence[AttemptOutcome], *, owner: str) -> None:
        """Record a batch of attempts and move their deliveries on. One transaction.
        A delivery whose lease another node took over in the meantime is not touched
        (its attempt is still recorded: it happened)."""
        if not outcomes:
            return
        with self._tx() as conn:
            disabled = self._disabled_sinks(conn)

            def status_of(o: AttemptOutcome) -> str:
                # a retry to a sink disabled while this attempt was in flight is dead
                return DEAD if o.new_status == FAILED and o.sink in disabled else o.new_status

            t = self._db_time  # the hot path, raw (see _due_rows)
            started = [t(o.started_at) for o in outcomes]
            conn.exec_driver_sql(
                self._insert_attempt_sql,
                [
                    (o.delivery_id, o.attempt, at, o.duration_ms, o.status_code, o.error)
                    for o, at in zip(outcomes, started, strict=True)
                ],
            )
            conn.exec_driver_sql(
                self._record_attempt_sql,
                [
                    (
                        status := status_of(o),
                        o.attempt,
                        t(o.next_attempt_at) if status == FAILED else None,
                        at,
                        o.status_code,
                        o.error,
                        at if status == DELIVERED else None,
                        o.delivery_id,
                        owner,
                    )
                    for o, at in zip(outcomes, started, strict=True)
                ],
            )
            successes: dict[str, datetime] = {}
            for o in outcomes:
                if o.new_status == DELIVERED:
                    successes[o.sink] = max(o.started_at, successes.get(o.sink, o.started_at))
            for sink, when in successes.items():
                self._upsert_sink(conn, sink, {"last_success_at": when})
            for o in outcomes:
                if o.disable_sink is not None:
                    self._disable_sink(conn, o.sink, o.disable_sink, o.started_at)

    def next_due_at(self, sinks: Sequence[str]) -> datetime | None:
        """When the earliest unclaimed delivery to one of ``sinks`` falls due."""
        if not sinks:
            return None
        with self._tx() as conn:
            value = conn.execute(
                select(func.min(deliveries.c.next_attempt_at)).where(
                    deliveries.c.sink.in_(sinks),
                    deliveries.c.status.in_(DUE_STATUSES),
                    deliveries.c.lease_owner.is_(None),
                )
            ).scalar_one_or_none()
        if value is None:
            return None
        assert isinstance(value, datetime)
        return _as_utc(value)

    def count_due(self, sinks: Sequence[str], now: datetime) -> int:
        with self._tx() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        deliveries.c.sink.in_(sinks),
                        deliveries.c.status.in_(DUE_STATUSES),
                        deliveries.c.next_attempt_at <= now,
                    )
                ).scalar_one()
            )

    # ----------------------------------------------------------------- sinks

    def _upsert_sink(self, conn: Connection, name: str, values: dict[str, Any]) -> None:
        conn.execute(
            self._insert(sink_state)
            .values(name=name, **values)
            .on_conflict_do_update(index_elements=["name"], set_=values)
        )

    def _disabled_sinks(self, conn: Connection) -> set[str]:
        return set(conn.execute(select(sink_state.c.name).where(sink_state.c.disabled)).scalars())

    def disabled_sinks(self) -> set[str]:
        with self._tx() as conn:
            return self._disabled_sinks(conn)

    def _disable_sink(self, conn: Connection, name: str, reason: str, now: datetime) -> None:
        self._upsert_sink(
            conn, name, {"disabled": True, "disabled_reason": reason, "disabled_at": now}
        )
        # Deliveries in flight keep their lease: their outcome is recorded when it comes
        # (a late 2xx is a delivery), and a retry they would need is dead then.
        conn.execute(
            update(deliveries)
            .where(
                and_(deliveries.c.sink == name, deliveries.c.status.in_(DUE_STATUSES)),
                or_(deliveries.c.lease_owner.is_(None), deliveries.c.lease_expires_at < now),
            )
            .values(
                status=DEAD,
                next_attempt_at=None,
                lease_owner=None,
                lease_expires_at=None,
                last_error=f"sink disabled: {reason}",
            )
        )

    def set_sink_enabled(self, name: str, enabled: bool, *, reason: str, now: datetime) -> None:
        with self._tx() as conn:
            if enabled:
                self._upsert_sink(
                    conn, name, {"disabled": False, "disabled_reason": None, "disabled_at": None}
                )
            else:
                self._disable_sink(conn, name, reason, now)

    # ----------------------------------------------------------------- selections

    @staticmethod
    def _event_conditions(f: EventFilter) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = []
        if f.event_ids:
            conds.append(events.c.id.in_(f.event_ids))
        if f.since is not None:
            conds.append(events.c.created_at >= f.since)
        if f.until is not None:
            conds.append(events.c.created_at < f.until)
        if f.types:
            conds.append(events.c.type.in_(f.types))
        if f.accounts:
            conds.append(events.c.account.in_(f.accounts))
        if f.item_key is not None:
            conds.append(events.c.item_key == f.item_key)
        return conds

    @staticmethod
    def _delivery_conditions(f: EventFilter) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = []
        if f.sinks:
            conds.append(deliveries.c.sink.in_(f.sinks))
        if f.statuses:
            conds.append(deliveries.c.status.in_(f.statuses))
        return conds

    def list_events(self, f: EventFilter, *, limit: int) -> list[EventView]:
        """Events matching ``f``, newest first, each with all its deliveries."""
        query = select(
            events.c.id,
            events.c.type,
            events.c.account,
            events.c.trigger,
            events.c.item_key,
            events.c.created_at,
        ).where(*self._event_conditions(f))
        delivery_conds = self._delivery_conditions(f)
        if delivery_conds:
            query = query.where(
                exists().where(deliveries.c.event_id == events.c.id, *delivery_conds)
            )
        query = query.order_by(events.c.seq.desc()).limit(limit)
        with self._tx() as conn:
            rows = conn.execute(query).all()
            by_event: dict[str, list[DeliveryView]] = {r.id: [] for r in rows}
            for chunk in _chunks(list(by_event), _CHUNK):
                for d in conn.execute(
                    select(deliveries)
                    .where(deliveries.c.event_id.in_(chunk))
                    .order_by(deliveries.c.sink)
                ):
                    by_event[d.event_id].append(
                        DeliveryView(
                            sink=d.sink,
                            status=d.status,
                            attempts=d.attempts,
                            in_flight=d.lease_owner is not None,
                            last_attempt_at=d.last_attempt_at,
                            last_status_code=d.last_status_code,
                            last_error=d.last_error,
                            next_attempt_at=d.next_attempt_at,
                            delivered_at=d.delivered_at,
                        )
                    )
        return [
            EventView(
                id=r.id,
                type=r.type,
                account=r.account,
                trigger=r.trigger,
                item_key=r.item_key,
                created_at=r.created_at,
                deliveries=tuple(by_event[r.id]),
            )
            for r in rows
        ]

    def replay(
        self,
        f: EventFilter,
        *,
        known_sinks: Collection[str],
        now: datetime,
        dry_run: bool,
    ) -> ReplayResult:
        """Queue the matching deliveries again: same event (same ``webhook-id``), due
        now, status back to pending, a fresh attempt history. Deliveries to a disabled or
        unconfigured sink, or being attempted right now, are counted and left alone."""
        query = (
            select(
                deliveries.c.id,
                deliveries.c.event_id,
                deliveries.c.sink,
                deliveries.c.lease_owner,
                deliveries.c.lease_expires_at,
            )
            .join(events, events.c.id == deliveries.c.event_id)
            .where(*self._event_conditions(f), *self._delivery_conditions(f))
        )
        with self._tx() as conn:
            disabled = self._disabled_sinks(conn)
            queue: list[int] = []
            queued_events: set[str] = set()
            unknown = off = busy = 0
            for row in conn.execute(query):
                if row.sink not in known_sinks:
                    unknown += 1
                elif row.sink in disabled:
                    off += 1
                elif row.lease_owner is not None and row.lease_expires_at > now:
                    busy += 1
                else:
                    queue.append(row.id)
                    queued_events.add(row.event_id)
            if not dry_run:
                for chunk in _chunks(queue, _CHUNK):
                    conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(chunk)))
                    conn.execute(
                        update(deliveries)
                        .where(deliveries.c.id.in_(chunk))
                        .values(
                            status=PENDING,
                            attempts=0,
                            next_attempt_at=now,
                            lease_owner=None,
                            lease_expires_at=None,
                            last_attempt_at=None,
                            last_status_code=None,
                            last_error=None,
                            delivered_at=None,
                        )
                    )
        return ReplayResult(
            events=len(queued_events),
            queued=len(queue),
            skipped_disabled=off,
            skipped_unknown=unknown,
            skipped_in_flight=busy,
        )

    def backfill(
        self,
        account: str,
        trigger: str,
        keyed: KeyedItems,
        *,
        event_type: str,
        sinks: Sequence[str],
        now: datetime,
        dry_run: bool,
    ) -> BackfillResult:
        """Fire, once, the listed items that a seeding first poll only remembered."""
        with self._tx() as conn:
            remembered: set[str] = set()
            for chunk in _chunks(keyed.keys, _CHUNK):
                remembered.update(
                    conn.execute(
                        select(seen_keys.c.key).where(
                            seen_keys.c.account == account,
                            seen_keys.c.trigger == trigger,
                            seen_keys.c.seeded,
                            seen_keys.c.key.in_(chunk),
                        )
                    ).scalars()
                )
            total = conn.execute(
                select(func.count()).where(
                    seen_keys.c.account == account,
                    seen_keys.c.trigger == trigger,
                    seen_keys.c.seeded,
                )
            ).scalar_one()
            candidates = [
                (key, item)
                for key, item in zip(reversed(keyed.keys), reversed(keyed.items), strict=True)
                if key in remembered
            ]
            not_listed = int(total) - len(candidates)
            if dry_run:
                return BackfillResult(fired=len(candidates), deliveries=0, not_listed=not_listed)
            flipped: set[str] = set()
            for chunk in _chunks([k for k, _ in candidates], _CHUNK):
                flipped.update(
                    conn.execute(
                        update(seen_keys)
                        .where(
                            seen_keys.c.account == account,
                            seen_keys.c.trigger == trigger,
                            seen_keys.c.seeded,
                            seen_keys.c.key.in_(chunk),
                        )
                        .values(seeded=False)
                        .returning(seen_keys.c.key)
                    ).scalars()
                )
            to_fire = [(k, item) for k, item in candidates if k in flipped]
            fired, rows = self._create_events(
                conn, account, trigger, event_type, to_fire, sinks, now
            )
        return BackfillResult(fired=fired, deliveries=rows, not_listed=not_listed)

    # ----------------------------------------------------------------- status

    def sink_stats(self) -> dict[str, SinkStats]:
        """Per sink that has deliveries or state: counts by status and its state."""
        with self._tx() as conn:
            counts: dict[str, dict[str, int]] = defaultdict(dict)
            for sink, status, n in conn.execute(
                select(deliveries.c.sink, deliveries.c.status, func.count()).group_by(
                    deliveries.c.sink, deliveries.c.status
                )
            ):
                counts[sink][status] = int(n)
            oldest: dict[str, Any] = dict(
                conn.execute(
                    select(deliveries.c.sink, func.min(deliveries.c.created_at))
                    .where(deliveries.c.status.in_(DUE_STATUSES))
                    .group_by(deliveries.c.sink)
                ).all()
            )
            in_flight: dict[str, Any] = dict(
                conn.execute(
                    select(deliveries.c.sink, func.count())
                    .where(deliveries.c.lease_owner.is_not(None))
                    .group_by(deliveries.c.sink)
                ).all()
            )
            states = {r.name: r for r in conn.execute(select(sink_state))}
        stats = {}
        for name in sorted(set(counts) | set(states)):
            st = states.get(name)
            first_due = oldest.get(name)
            stats[name] = SinkStats(
                name=name,
                counts={
                    s: counts[name].get(s, 0) for s in (PENDING, FAILED, DELIVERED, DEAD, HELD)
                },
                in_flight=int(in_flight.get(name, 0)),
                oldest_due_created_at=None if first_due is None else _as_utc(first_due),
                disabled=bool(st.disabled) if st else False,
                disabled_reason=st.disabled_reason if st else None,
                disabled_at=st.disabled_at if st else None,
                last_success_at=st.last_success_at if st else None,
            )
        return stats

    def set_paused(
        self,
        account: str,
        trigger: str,
        *,
        paused: bool,
        reason: str | None,
        auto: bool = False,
    ) -> None:
        """Pause or resume one trigger. Pausing keeps its seen set; resuming clears any
        backoff and failure count so it polls at its next turn. ``auto``: paused by the
        sustained-failure rule rather than by hand."""
        with self._tx() as conn:
            self._ensure_poll_row(conn, account, trigger)
            values: dict[str, Any] = {
                "paused": paused,
                "paused_reason": reason if paused else None,
                "paused_auto": paused and auto,
            }
            if not paused:
                values.update(backoff_until=None, consecutive_failures=0, failing_since=None)
            conn.execute(
                update(poll_state)
                .where(poll_state.c.account == account, poll_state.c.trigger == trigger)
                .values(**values)
            )

    def resume_auto_paused(self) -> list[tuple[str, str]]:
        """Resume the triggers the sustained-failure rule paused (at start and reload:
        the operator may have fixed the cause). Paused-by-hand ones stay paused."""
        with self._tx() as conn:
            rows = conn.execute(
                select(poll_state.c.account, poll_state.c.trigger).where(poll_state.c.paused_auto)
            ).all()
            if rows:
                conn.execute(
                    update(poll_state)
                    .where(poll_state.c.paused_auto)
                    .values(
                        paused=False,
                        paused_auto=False,
                        paused_reason=None,
                        backoff_until=None,
                        consecutive_failures=0,
                        failing_since=None,
                    )
                )
        return [(r.account, r.trigger) for r in rows]

    # ----------------------------------------------------------------- retention

    def prune(self, cutoff: datetime) -> int:
        """Delete events older than ``cutoff`` whose every delivery is delivered (and
        their deliveries and attempts). Pending, failed and dead deliveries, and the seen
        keys, are never touched. Returns the number of events deleted."""
        undelivered = exists().where(
            deliveries.c.event_id == events.c.id, deliveries.c.status != DELIVERED
        )
        deleted = 0
        while True:
            with self._tx() as conn:
                ids = list(
                    conn.execute(
                        select(events.c.id)
                        .where(events.c.created_at < cutoff, ~undelivered)
                        .limit(_CHUNK)
                    ).scalars()
                )
                if not ids:
                    return deleted
                delivery_ids = select(deliveries.c.id).where(deliveries.c.event_id.in_(ids))
                conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(delivery_ids)))
                conn.execute(delete(deliveries).where(deliveries.c.event_id.in_(ids)))
                conn.execute(delete(events).where(events.c.id.in_(ids)))
                deleted += len(ids)


# --------------------------------------------------------------------------- helpers

# The delivery hot path, raw (see Store._due_rows), with {p} the DB-API placeholder.
# coalesce() keeps SQLite's planner off the (status, next_attempt_at) index, which would
# read and sort every due row; PostgreSQL adds _SKIP_LOCKED, so nodes claim disjoint rows.
_CLAIM_SQL = """
SELECT d.id, d.attempts, e.id, e.type, e.account, e.created_at, e.payload
FROM deliveries AS d JOIN events AS e ON e.id = d.event_id
WHERE d.sink = {p} AND d.status = {p} AND coalesce(d.next_attempt_at, NULL) <= {p}
  AND (d.lease_expires_at IS NULL OR d.lease_expires_at < {p})
ORDER BY d.id LIMIT {p}
"""
_SKIP_LOCKED = "FOR UPDATE OF d SKIP LOCKED"
_LEASE_SQL = "UPDATE deliveries SET lease_owner = {p}, lease_expires_at = {p} WHERE id IN ({ids})"
_INSERT_ATTEMPT_SQL = """
INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status_code, error)
VALUES ({p}, {p}, {p}, {p}, {p}, {p})
"""
_RECORD_ATTEMPT_SQL = """
UPDATE deliveries SET status = {p}, attempts = {p}, next_attempt_at = {p}, lease_owner = NULL,
  lease_expires_at = NULL, last_attempt_at = {p}, last_status_code = {p}, last_error = {p},
  delivered_at = {p}
WHERE id = {p} AND lease_owner = {p}
"""


def _chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def _sqlite_time(value: datetime | None) -> str | None:
    """A time as models.UTCDateTime stores it on SQLite: naive UTC, SQLAlchemy's text
    format (``2026-11-27 07:00:00.000000``), which sorts as time does."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]  # without the "+00:00"


def _same(value: datetime | None) -> datetime | None:
    return value  # PostgreSQL: the driver passes an aware datetime as timestamptz


def _from_sqlite_time(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _poll_state(row: Row[Any]) -> PollState:
    m = row._mapping
    return PollState(
        account=m["account"],
        trigger=m["trigger"],
        seeded_at=m["seeded_at"],
        last_poll_at=m["last_poll_at"],
        last_outcome=m["last_outcome"],
        last_error=m["last_error"],
        last_success_at=m["last_success_at"],
        consecutive_failures=m["consecutive_failures"],
        backoff_until=m["backoff_until"],
        paused=bool(m["paused"]),
        paused_reason=m["paused_reason"],
        items_known=m["items_known"],
        paused_auto=bool(m["paused_auto"]),
        failing_since=m["failing_since"],
        lease_owner=m["lease_owner"],
        lease_expires_at=m["lease_expires_at"],
    )


def _refusal(state: PollState, owner: str, now: datetime, honour_backoff: bool) -> PollRefusal:
    """Why a claim on this state was refused (the same tests as the claim, in order)."""
    if state.paused:
        return "paused"
    if honour_backoff and state.backoff_until is not None and state.backoff_until > now:
        return "backing off"
    held = state.lease_owner not in (None, owner)
    if held and state.lease_expires_at is not None and state.lease_expires_at >= now:
        return "leased"
    return "too soon"


def _reason(exc: BaseException) -> str:
    """The driver's own first line, without SQL or parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return text.rstrip(".")
