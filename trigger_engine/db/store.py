"""The store: one database and its repositories, the only way the engine reaches SQL.

It keeps the engine's invariants, each in the repository named for it:

* **Dedupe** (:mod:`~trigger_engine.db.seen`): ``seen_keys`` has a primary key on
  (account, trigger, key); new keys are inserted with ``ON CONFLICT DO NOTHING RETURNING
  key``, so even two overlapping polls cannot create two events for one item.
* **Outbox** (:mod:`~trigger_engine.db.polls`, :mod:`~trigger_engine.db.events`): a poll's
  keys, its events and one delivery row per subscribed sink are written in one
  transaction: a crash keeps all of it or none, and the next poll repairs the second case
  because the keys were not marked either.
* **Deliveries are a state machine** (:mod:`~trigger_engine.db.deliveries`): pending →
  (claimed: lease) → delivered | failed (retry scheduled) | dead, every attempt recorded.

Use it as a context manager (``with Store.open(url) as store:``) or call :meth:`close`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from trigger_engine.core.engine_events import Subscribers
from trigger_engine.db.deliveries import DeliveryRepository
from trigger_engine.db.engine import Database
from trigger_engine.db.events import EventRepository
from trigger_engine.db.nodes import NodeRepository
from trigger_engine.db.polls import PollRepository
from trigger_engine.db.quarantine import QuarantineRepository
from trigger_engine.db.search_index import SearchIndex
from trigger_engine.db.seen import SeenKeys
from trigger_engine.db.sinks import SinkRepository

_P = ParamSpec("_P")
_T = TypeVar("_T")


class Store:
    """A database (:class:`~trigger_engine.db.engine.Database`) with one repository per
    aggregate: ``polls``, ``seen``, ``events``, ``deliveries``, ``sinks``, ``nodes``,
    ``quarantine``, and the payload search's ``search_index``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.polls = PollRepository(db)
        self.seen = SeenKeys(db)
        self.events = EventRepository(db)
        self.deliveries = DeliveryRepository(db)
        self.sinks = SinkRepository(db)
        self.nodes = NodeRepository(db)
        self.quarantine = QuarantineRepository(db)
        self.search_index = SearchIndex(db)

    @classmethod
    def open(cls, url: str, *, upgrade: bool = True, pool_size: int | None = None) -> Store:
        """Connect, and bring the schema up to date unless told not to. ``pool_size``:
        the connections PostgreSQL's pool keeps open (the daemon: one per poll worker and
        a few more, :func:`trigger_engine.runtime.plan.pool_size`)."""
        return cls(Database.open(url, upgrade=upgrade, pool_size=pool_size))

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.db.dialect

    def set_subscribers(self, subscribers: Callable[[], Subscribers]) -> None:
        """Say who receives the engine's own events (``engine.*``): asked each time one is
        written, inside its transaction, so it must answer from memory (the configuration,
        the registry as the last heartbeat read it), never from the database."""
        self.db.subscribers = subscribers

    def close(self) -> None:
        """Close every connection and give up the single-node lock."""
        self.db.close()

    def ping(self) -> None:
        """Raise unless the database answers."""
        self.db.ping()

    def lock_single_node(self) -> None:
        """SQLite: refuse to run beside another engine process on the same file."""
        self.db.lock_single_node()

    def run_now(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> tuple[bool, _T | None]:
        """Run a store call here if the database is free this instant (see
        :meth:`Database.run_now <trigger_engine.db.engine.Database.run_now>`)."""
        return self.db.run_now(fn, *args, **kwargs)
