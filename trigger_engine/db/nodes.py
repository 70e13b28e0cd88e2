"""The engine processes sharing the database (``nodes``): heartbeats, and who holds which
poll lease."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import select

from trigger_engine.db.engine import Database, units_of_work
from trigger_engine.db.schema import nodes, poll_state
from trigger_engine.types import NodeView


@units_of_work
class NodeRepository:
    """Heartbeats in, node views out."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def heartbeat(self, name: str, *, version: str, now: datetime, stopping: bool = False) -> None:
        """Say this node is alive (or, ``stopping``, that it stopped cleanly)."""
        values: dict[str, Any] = {"version": version, "heartbeat_at": now}
        values["stopped_at"] = now if stopping else None
        with self.db.tx() as conn:
            conn.execute(
                self.db.insert(nodes)
                .values(name=name, started_at=now, **values)
                .on_conflict_do_update(index_elements=["name"], set_=values)
            )

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
