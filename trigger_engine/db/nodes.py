"""The engine processes sharing the database (``nodes``): heartbeats, who holds which
poll lease, and the node registry (the sinks each node serves and its configuration's
digest, written by every heartbeat)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, Row, and_, delete, or_, select

from trigger_engine.db.engine import Database, units_of_work
from trigger_engine.db.schema import nodes, poll_state
from trigger_engine.types import NODE_ALIVE_WITHIN, NodeView, SinkSubscriptions


def encode_sinks(sinks: SinkSubscriptions) -> str:
    """The ``nodes.sinks`` text: ``{"name": null | ["type", ...]}``, sorted."""
    return orjson.dumps(
        {name: None if events is None else list(events) for name, events in sinks.items()},
        option=orjson.OPT_SORT_KEYS,
    ).decode()


def decode_sinks(text: str | None) -> SinkSubscriptions | None:
    """The sinks a ``nodes.sinks`` text names; None when there is none or it is not one
    we wrote (a node that says nothing adds no sink: see ``core/registry.py``)."""
    if text is None:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    found: dict[str, tuple[str, ...] | None] = {}
    for name, events in value.items():
        if events is None:
            found[name] = None
        elif isinstance(events, list) and all(isinstance(e, str) for e in events):
            found[name] = tuple(events)
        else:
            return None
    return found


def _view(row: Row[Any], leases: tuple[str, ...] = ()) -> NodeView:
    return NodeView(
        name=row.name,
        version=row.version,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        stopped_at=row.stopped_at,
        leases=leases,
        sinks=decode_sinks(row.sinks),
        config_digest=row.config_digest,
        schedule_digest=row.schedule_digest,
    )


def live_nodes(conn: Connection, now: datetime) -> list[NodeView]:
    """The nodes alive at ``now`` (see :meth:`NodeView.alive`), without their leases."""
    rows = conn.execute(
        select(nodes)
        .where(
            nodes.c.stopped_at.is_(None),
            nodes.c.heartbeat_at >= now - timedelta(seconds=NODE_ALIVE_WITHIN),
        )
        .order_by(nodes.c.name)
    )
    return [_view(r) for r in rows]


@units_of_work
class NodeRepository:
    """Heartbeats in, node views out."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def heartbeat(
        self,
        name: str,
        *,
        version: str,
        now: datetime,
        stopping: bool = False,
        sinks: SinkSubscriptions | None = None,
        config_digest: str | None = None,
        schedule_digest: str | None = None,
    ) -> list[NodeView]:
        """Say this node is alive (or, ``stopping``, that it stopped cleanly), and, given,
        which sinks it serves, its configuration's digest and its schedule's. Returns the
        other nodes alive at ``now`` as the same transaction read them (the registry;
        leases not read)."""
        values: dict[str, Any] = {"version": version, "heartbeat_at": now}
        values["stopped_at"] = now if stopping else None
        if sinks is not None:
            values["sinks"] = encode_sinks(sinks)
        if config_digest is not None:
            values["config_digest"] = config_digest
        if schedule_digest is not None:
            values["schedule_digest"] = schedule_digest
        with self.db.tx() as conn:
            conn.execute(
                self.db.insert(nodes)
                .values(name=name, started_at=now, **values)
                .on_conflict_do_update(index_elements=["name"], set_=values)
            )
            return [v for v in live_nodes(conn, now) if v.name != name]

    def live(self, now: datetime) -> list[NodeView]:
        """The nodes alive at ``now``, with what they serve (leases not read)."""
        with self.db.tx() as conn:
            return live_nodes(conn, now)

    def views(self, now: datetime) -> list[NodeView]:
        """Every node that ever ran on this database, with the leases it holds ``now``."""
        with self.db.tx() as conn:
            rows = conn.execute(select(nodes).order_by(nodes.c.name)).all()
            leases: dict[str, list[str]] = defaultdict(list)
            for r in conn.execute(
                select(poll_state.c.lease_owner, poll_state.c.account, poll_state.c.trigger)
                .where(poll_state.c.lease_expires_at > now)
                .order_by(poll_state.c.account, poll_state.c.trigger)
            ):
                leases[r.lease_owner].append(f"{r.account}/{r.trigger}")
        return [_view(r, tuple(leases.get(r.name, ()))) for r in rows]

    def prune(self, before: datetime) -> list[str]:
        """Forget the nodes that stopped before ``before``, and those that vanished (no
        heartbeat since ``before``, never said they stopped): ``status`` lists only the
        recent ones. Returns their names."""
        gone = or_(
            nodes.c.stopped_at < before,
            and_(nodes.c.stopped_at.is_(None), nodes.c.heartbeat_at < before),
        )
        with self.db.tx() as conn:
            names = list(conn.execute(select(nodes.c.name).where(gone)).scalars())
            if names:
                conn.execute(delete(nodes).where(gone))
        return sorted(names)
