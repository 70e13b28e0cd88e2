"""The connection to the database: how it is opened, and how a unit of work runs.

SQLite runs in WAL mode through one connection (one writer: SQLite 3.7.0 to 3.51.2 has a
WAL-reset corruption bug when several connections write), transactions begin
``IMMEDIATE``, ``synchronous=FULL``, and the file is created with mode 0600 before SQLite
would create it with the umask's. With SQLite one engine process owns the file
(:meth:`Database.lock_single_node`). PostgreSQL uses a pool sized by the caller (the daemon:
a connection for each poll worker and a few more, :func:`make_engine`), and pings a
connection when it is checked out only if it sat idle in the pool longer than
:data:`PING_IDLE_AFTER` (a busy pool does not pay a round trip for every checkout, as
``pool_pre_ping`` would; a connection that died while idle is still replaced before use).

Every repository runs its statements inside :meth:`Database.tx`: one transaction, and
every database failure turned into one :class:`~trigger_engine.errors.DatabaseError`
sentence without SQL or parameters, marked ``transient`` when the connection was lost or
the database was busy.

Each public method of a repository is one **unit of work** (:func:`units_of_work`): when
it fails on a lost connection (PostgreSQL terminated, restarted or failed over; SQLite
still locked after its busy timeout) it runs again, whole, on a fresh connection, after
the waits of :data:`~trigger_engine.core.retry.UNIT_OF_WORK_RETRY` (about 8 s in all);
then the failure reaches the caller, which decides (the dispatcher keeps trying until it
is stopped; a poll fails and is polled again at its next run). A unit that runs inside
another one is not retried on its own: the outer one is. Every transaction is reported to
:class:`~trigger_engine.db.activity.Activity`, which ``/healthz`` reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from trigger_engine.core.engine_events import NOBODY, Subscribers
from trigger_engine.core.retry import UNIT_OF_WORK_RETRY
from trigger_engine.db import migrate
from trigger_engine.db.activity import Activity
from trigger_engine.db.codecs import TimeCodec
from trigger_engine.db.queries import Queries
from trigger_engine.errors import AlreadyRunning, DatabaseError, StoreLost

CHUNK = 5000  # bound parameters per IN (...) or multi-row statement: well under SQLite's 32766
BUSY_TIMEOUT_MS = 30_000  # SQLite: ms a transaction waits for another process's write lock
CONNECTION_WAIT = 120.0  # SQLite: seconds a store call waits for the one connection
PING_IDLE_AFTER = 1.0  # PostgreSQL: seconds idle in the pool after which a checkout pings
POOL_SIZE = 5  # PostgreSQL: connections kept open when the caller does not say
POOL_OVERFLOW = 10  # PostgreSQL: more, opened for a burst and closed after it

# PostgreSQL SQLSTATEs after which the same unit of work may simply run again: class 08
# (connection exception), the server shutting down or not accepting connections yet
# (57P01-57P03: pg_terminate_backend, a restart, a failover), too many connections,
# serialization failures and deadlocks.
RETRYABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300", "40001", "40P01"})

# SQLite: a function CASEFOLD(text) on every connection, Python's str.casefold: the
# payload search's case-insensitive match beyond ASCII where no index serves it (SQLite's
# own lower() folds ASCII only; db/events.py).
CASEFOLD = "te_casefold"

_P = ParamSpec("_P")
_T = TypeVar("_T")
_Item = TypeVar("_Item")
_Repo = TypeVar("_Repo", bound=type)


def chunks(seq: Sequence[_Item], size: int = CHUNK) -> Iterator[Sequence[_Item]]:
    """``seq`` in slices of at most ``size``: one statement's worth of parameters each."""
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def raw_rows(conn: Connection, statement: str, params: Sequence[Any]) -> Sequence[Any]:
    """The rows of a raw statement as the driver returns them (tuples), without
    SQLAlchemy's Row objects: for the hot paths (a claim reads thousands a second,
    benchmarks/RESULTS.md). SQLite only, where a failure while fetching is raised as
    SQLAlchemy raises it from ``execute``, so that :meth:`Database.tx` reads it the same
    way. On PostgreSQL the rows go through SQLAlchemy as usual, which invalidates the
    connection when its session ends while fetching."""
    result = conn.exec_driver_sql(statement, tuple(params))
    if conn.dialect.name != "sqlite":
        return list(result)
    try:
        rows: Sequence[Any] = result.cursor.fetchall()
    except conn.dialect.loaded_dbapi.Error as exc:
        raise sa_exc.DBAPIError.instance(
            statement, params, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
        ) from exc
    finally:
        result.close()
    return rows


def redacted_url(url: str) -> str:
    """The database URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return "(unparseable database URL)"


def reason(exc: BaseException) -> str:
    """The driver's own first line, without SQL or parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return text.rstrip(".")


def is_transient(exc: sa_exc.DBAPIError) -> bool:
    """Whether running the same unit of work again may succeed: the connection was lost
    (or never made), the server is restarting, or the database was busy."""
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return str(sqlstate).startswith("08") or sqlstate in RETRYABLE_SQLSTATES
    if not isinstance(exc, sa_exc.OperationalError):
        return False
    if type(orig).__module__.startswith("psycopg"):
        return True  # an OperationalError without a SQLSTATE: the connection itself failed
    text = str(orig).lower()  # SQLite: only "database is locked" / "database table is locked"
    return "locked" in text or "busy" in text


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for another database or an in-memory one."""
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


def make_engine(url: str, *, pool_size: int | None = None) -> Engine:
    """A SQLAlchemy engine for ``url``, set up as this module's docstring says.
    ``pool_size``: connections the pool keeps open (PostgreSQL; SQLite has one)."""
    backend = make_url(url).get_backend_name()
    if backend != "sqlite":
        engine = create_engine(url, pool_size=pool_size or POOL_SIZE, max_overflow=POOL_OVERFLOW)
        _ping_when_idle(engine)
        return engine
    path = sqlite_path(url)
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
        dbapi_connection.create_function(CASEFOLD, 1, _casefold, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _casefold(value: str | None) -> str | None:
    return None if value is None else value.casefold()


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection at checkout only when it has been idle for more than
    :data:`PING_IDLE_AFTER` seconds; a connection that does not answer is replaced (and,
    as after ``pool_pre_ping``, the pool's older connections with it) before the caller
    gets one. A connection lost while in use fails its statement instead, and its unit of
    work runs again on a fresh one (:meth:`Database.unit`)."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since <= PING_IDLE_AFTER:
            return  # new, or in use a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            raise sa_exc.InvalidatePoolError(f"the idle connection failed a ping: {exc}") from exc


class _Busy(Exception):
    """Database.run_now: the SQLite file's write lock is held by another process."""


def units_of_work(cls: _Repo) -> _Repo:
    """Make each public method of the repository class ``cls`` a unit of work: retried,
    whole, when it loses its connection (see the module's docstring). The class keeps its
    database in ``self.db``."""
    for name, method in list(vars(cls).items()):
        if name.startswith("_") or not callable(method):
            continue

        def unit(method: Callable[..., Any], name: str) -> Callable[..., Any]:
            @functools.wraps(method)
            def run(self: Any, *args: Any, **kwargs: Any) -> Any:
                db: Database = self.db
                return db.unit(f"{cls.__name__}.{name}", method, self, *args, **kwargs)

            return run

        setattr(cls, name, unit(method, name))
    return cls


class Database:
    """One database: its engine, its transactions, and what differs between SQLite and
    PostgreSQL (the dialect's insert, the raw statements, the time codec)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.queries = Queries.for_dialect(self.dialect)
        # the dialect's own INSERT (with on_conflict_*); its module is already loaded by the
        # engine of this dialect, and only that one (PostgreSQL's takes a while to import)
        self._insert = importlib.import_module(f"sqlalchemy.dialects.{self.dialect}").insert
        self.times = TimeCodec.for_dialect(self.dialect)
        self._lock_fd: int | None = None
        # SQLite has one connection (pool_size=1); this lock is the queue for it, so that
        # run_now can tell whether it is free at this instant.
        self._conn_lock = threading.RLock() if self.dialect == "sqlite" else None
        self._no_wait = False  # run_now is calling: never wait for the file's write lock
        # SQLite: the connection's busy_timeout as last set (a new connection starts with
        # BUSY_TIMEOUT_MS): run_now sets 0 and other calls set it back only when it differs,
        # since each setting checks the connection out of the pool (a drain's calls are
        # nearly all run_now: two checkouts each, 3 % of it; benchmarks/RESULTS.md)
        self._busy_ms = BUSY_TIMEOUT_MS
        if self.dialect == "sqlite":
            event.listen(engine, "connect", self._connected)
        self._units = threading.local()  # .depth: units of work running in this thread
        self.activity = Activity()
        self.retry_waits: tuple[float, ...] = UNIT_OF_WORK_RETRY
        self._file = self._identify_file()
        # SQLite: this file was created now, where an engine had run on another one before
        self.replaced_lost_file = False
        # Who receives the engine's own events (core/engine_events.py), asked inside the
        # transaction that writes them: set from the configuration and the node registry
        # by the daemon or the command (Store.set_subscribers). It must not query the
        # database. Default: nobody (the events are still stored, without deliveries).
        self.subscribers: Callable[[], Subscribers] = lambda: NOBODY

    @classmethod
    def open(cls, url: str, *, upgrade: bool = True, pool_size: int | None = None) -> Database:
        """Connect, and bring the schema up to date unless told not to. ``pool_size``:
        connections kept open (PostgreSQL), see :func:`make_engine`."""
        path = sqlite_path(url)
        # a SQLite file that is not there but whose lock file is: it was deleted or moved
        # since an engine last ran on it (the lock file outlives every process)
        lost = (
            path is not None and not path.exists() and path.with_name(f"{path.name}.lock").exists()
        )
        try:
            db = cls(make_engine(url, pool_size=pool_size))
            db.replaced_lost_file = lost
            if upgrade:
                db.upgrade()
            else:
                db.ping()
        except sa_exc.SQLAlchemyError as exc:
            raise DatabaseError(
                f"cannot use the database {redacted_url(url)}: {reason(exc)}"
            ) from None
        except OSError as exc:
            raise DatabaseError(
                f"cannot create the database file for {redacted_url(url)}: {exc.strerror}"
            ) from None
        return db

    def upgrade(self) -> None:
        """Apply the Alembic migrations shipped in the package; when the schema is
        already current (the usual start), that is one query and Alembic is not loaded."""
        try:
            with self.engine.begin() as conn:
                if migrate.is_current(conn):
                    return
        except sa_exc.DBAPIError as exc:
            if is_transient(exc):  # busy or unreachable: said as the migrations would
                raise
            # no version table (a new database): the migrations make it
        with self.engine.begin() as conn:
            migrate.upgrade(conn)

    def ping(self) -> None:
        """One ``SELECT 1``: raises when the database does not answer."""
        with self._serialized(), self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def close(self) -> None:
        """Close every connection and give up the single-node lock."""
        self.engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def insert(self, table: Table) -> Any:
        """The dialect's INSERT (it has ``on_conflict_do_nothing/update``)."""
        return self._insert(table)

    def lock_single_node(self) -> None:
        """With SQLite, only one engine process may run on a file: hold an exclusive lock
        on ``FILE.lock`` for the life of this process (a second one is refused)."""
        path = sqlite_path(str(self.engine.url))
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

    def _identify_file(self) -> tuple[int, int] | None:
        path = sqlite_path(str(self.engine.url))
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def check_file(self) -> None:
        """SQLite: raise :class:`~trigger_engine.errors.StoreLost` when the file opened at
        the start is no longer the one at its path (deleted, or replaced by another)."""
        path = sqlite_path(str(self.engine.url))
        if path is None or self._file is None:
            return
        try:
            st = os.stat(path)
        except FileNotFoundError:
            what = "deleted"
        except OSError as exc:
            what = f"unreadable ({exc.strerror})"
        else:
            if (st.st_dev, st.st_ino) == self._file:
                return
            what = "replaced by another file"
        raise StoreLost(
            f"the database file {path} was {what} while the engine ran; stopping rather "
            "than writing to a file nobody can open again (restore the file, or start "
            "afresh knowing that a new file seeds every trigger again)"
        )

    def unit(self, name: str, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run the unit of work ``fn`` (named ``name`` for /healthz), again after each
        wait of :attr:`retry_waits` while it fails on a lost connection."""
        if getattr(self._units, "depth", 0):  # inside another unit: that one is retried
            return fn(*args, **kwargs)
        waits = iter(() if self._no_wait else self.retry_waits)  # run_now: never wait
        with self.activity.open():
            return self._run_unit(name, waits, fn, *args, **kwargs)

    def _run_unit(
        self,
        name: str,
        waits: Iterator[float],
        fn: Callable[_P, _T],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        while True:
            self._units.depth = 1
            try:
                result = fn(*args, **kwargs)
            except DatabaseError as exc:
                self.activity.failed(name, str(exc), transient=exc.transient)
                wait = next(waits, None) if exc.transient else None
                if wait is None:
                    raise
            except sa_exc.SQLAlchemyError as exc:  # refused (a constraint, a trigger)
                refused = f"the database refused it: {reason(exc)}"
                self.activity.failed(name, refused)
                raise DatabaseError(refused) from None
            else:
                self.activity.succeeded(name)
                return result
            finally:
                self._units.depth = 0
            time.sleep(wait)

    @contextlib.contextmanager
    def tx(self) -> Iterator[Connection]:
        """One transaction (SQLite: once the one connection is free); a database failure
        leaves it as a DatabaseError sentence."""
        with self._serialized(), self._translated():
            if not self._no_wait:  # may wait for another process's write lock, as usual
                self._set_busy_timeout(BUSY_TIMEOUT_MS)
            with self.engine.begin() as conn:
                yield conn

    @contextlib.contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A connection whose statements each commit on their own: on PostgreSQL in
        autocommit, so a single statement is one round trip (no ``BEGIN``, no ``COMMIT``);
        on SQLite, one transaction as :meth:`tx` (nothing goes over a network). For a
        statement that is atomic alone, such as a poll's claim."""
        if self.dialect != "postgresql":
            with self.tx() as conn:
                yield conn
            return
        with (
            self._translated(),
            self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
        ):
            yield conn

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """A database failure as a DatabaseError sentence (see :meth:`tx`)."""
        try:
            yield
        except sa_exc.DBAPIError as exc:
            if self._no_wait and "locked" in str(exc.orig):
                raise _Busy from None
            transient = is_transient(exc)
            if not transient and not isinstance(exc, sa_exc.OperationalError):
                raise  # a refusal (constraint, data): the outbox isolates the item
            raise DatabaseError(
                f"the database failed: {reason(exc)}", transient=transient
            ) from None
        except sa_exc.TimeoutError as exc:  # no connection free in the pool
            raise DatabaseError(f"the database failed: {exc}", transient=True) from None

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
                self._no_wait = False  # busy_timeout set back by the next other call
        finally:
            lock.release()

    def _connected(self, _dbapi_connection: Any, _record: Any) -> None:
        self._busy_ms = BUSY_TIMEOUT_MS  # a new connection (make_engine's connect hook)

    def _set_busy_timeout(self, ms: int) -> None:
        """Set the SQLite connection's busy_timeout, unless it is set so already; with the
        connection's lock held."""
        if self._busy_ms == ms:
            return
        # on the DB-API connection itself: through SQLAlchemy it would BEGIN (IMMEDIATE)
        with self.engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.execute(f"PRAGMA busy_timeout={int(ms)}")
        self._busy_ms = ms
