"""The embedded Meet Alfred simulator: a local stand-in for the Zapier API of Meet Alfred.

It serves what the vendor document describes, on 127.0.0.1 (``server.start`` takes another host)::

    GET /campaigns?api_key=KEY     every campaign, newest first
    GET /leads?api_key=KEY         every lead, newest first
    GET /connections?api_key=KEY   every LinkedIn connection, newest first

The same lists are also served with a trailing slash and under the vendor's own prefix
(``/api/integrations/zapier/leads``), so a ``base_url`` of ``http://127.0.0.1:N`` or
``http://127.0.0.1:N/api/integrations/zapier`` both work. The key travels as the query
parameter named ``auth_param`` (default ``api_key``); a missing or wrong key gets
``401 {"error": "invalid api key"}``. Optional pagination: ``page`` (1-based) and
``per_page`` (default 100) return one slice; a page past the end is ``[]``; without ``page``
the whole list is served, as the real API does.

Records have every field of the vendor's samples, with varied, deterministic values (one
``random.Random(seed)`` and a simulated clock, never the wall clock). Leads and connections are
identified by a 39-character LinkedIn-URN-like id; campaigns by a unique integer ``key``.
Records share unchanging sub-objects (a lead's ``campaign`` snapshot) to keep bulk creation
fast: change records through :meth:`Simulator.set_lead_field`, which copies before writing,
not by assigning into the dicts of :attr:`Simulator.leads`.

Faults (:class:`Fault`) are queued with :meth:`Simulator.inject` and served instead of the
normal answer, first in, first out, to the requests they apply to (the oldest queued fault
whose ``paths`` match). They answer before the key is checked, as an outage would. A fault
without a body and with a 2xx status is a pure delay: the normal answer, late.

Control endpoints, for someone running ``trigger-engine simulator`` with curl. They take **no
API key**: the simulator is a local test tool and only listens on the loopback interface::

    POST /_control/fault      body: a JSON object with Fault's fields ("body" as a string)
    POST /_control/leads?n=5  add n leads now (also /_control/connections and /_control/campaigns)

Requests to the list endpoints are recorded in :attr:`Simulator.requests` with the key's value
replaced by ``***``. The key never reaches a log: the aiohttp access log (which would print the
query string) is turned off.

The code, by concept (this module is the place to start)::

    simulator.py  the Simulator: the lists, adding and changing items, faults, the request log
    records.py    deterministic record generation (RecordMaker), the vendor's date formats
    pools.py      the names, places, titles and messages records are drawn from
    faults.py     Fault and its JSON form for /_control/fault
    server.py     the aiohttp app, start(), SimulatorThread, serve_forever()
    demo.py       ``trigger-engine demo``
"""

from __future__ import annotations

import copy
import secrets
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import orjson

from trigger_engine.polling.gc_pause import gc_paused
from trigger_engine.sandbox.faults import Fault
from trigger_engine.sandbox.records import Record, RecordMaker


class Simulator:
    """In-memory Meet Alfred data, the faults queued on it and the requests it was sent.

    Thread-safe: every read and write of the lists goes through one lock, so a test thread
    may add items while a :class:`~trigger_engine.sandbox.server.SimulatorThread` serves them.
    :func:`~trigger_engine.sandbox.server.make_app` is its HTTP face.
    """

    def __init__(
        self, *, api_key: str = "demo", seed: int = 0, initial: int = 3, auth_param: str = "api_key"
    ) -> None:
        if not api_key:
            raise ValueError("the simulator's api_key must not be empty")
        if not auth_param:
            raise ValueError("the simulator's auth_param must not be empty")
        if initial < 0:
            raise ValueError(f"initial must not be negative, not {initial}")
        self.api_key = api_key
        self.auth_param = auth_param
        self.seed = seed
        self.campaigns: list[Record] = []  # newest first, as served
        self.leads: list[Record] = []
        self.connections: list[Record] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.RLock()
        self._records = RecordMaker(seed)
        self._lead_index: dict[str, Record] = {}
        self._faults: list[tuple[Fault, list[int]]] = []  # (fault, [remaining count])
        self._bodies: dict[str, bytes] = {}  # encoded full lists, dropped on change
        self._ticks = 0
        for _ in range(initial):
            self.add_campaign()
        self.add_leads(initial)
        for _ in range(initial):
            self.add_connection()

    # ----------------------------------------------------------------- mutation

    def add_campaign(self) -> Record:
        """Add one campaign at the head of :attr:`campaigns` and return it."""
        with self._lock:
            campaign = self._records.campaign()
            self.campaigns.insert(0, campaign)
            self._bodies.pop("campaigns", None)
            return campaign

    def add_lead(self) -> Record:
        """Add one lead at the head of :attr:`leads` and return it."""
        with self._lock:
            self.add_leads(1)
            return self.leads[0]

    def add_leads(self, n: int) -> None:
        """Add ``n`` leads at once (fast: 100 000 take about a second)."""
        if n < 0:
            raise ValueError(f"cannot add a negative number of leads ({n})")
        if n == 0:
            return
        with self._lock, gc_paused():
            if not self.campaigns:
                self.add_campaign()
            records = self._records
            snapshots: dict[int, Record] = {}
            campaigns = self.campaigns
            batch: list[Record] = []
            for _ in range(n):
                source = records.pick(campaigns)
                snapshot = snapshots.get(source["key"])
                if snapshot is None:
                    snapshot = snapshots[source["key"]] = copy.deepcopy(source)
                lead = records.lead(snapshot)
                self._lead_index[lead["id"]] = lead
                batch.append(lead)
            batch.reverse()
            self.leads[:0] = batch
            self._bodies.pop("leads", None)

    def add_connection(self) -> Record:
        """Add one LinkedIn connection at the head of :attr:`connections` and return it."""
        with self._lock:
            connection = self._records.connection()
            self.connections.insert(0, connection)
            self._bodies.pop("connections", None)
            return connection

    def add_items(self, kind: str, n: int) -> int:
        """Add ``n`` items to the list named ``kind``; returns the list's new length."""
        with self._lock:
            if kind == "leads":
                self.add_leads(n)
            else:
                add = self.add_connection if kind == "connections" else self.add_campaign
                for _ in range(n):
                    add()
            return len(self._items(kind))

    def set_lead_field(self, lead_id: str, dotted: str, value: Any) -> None:
        """Set one (possibly nested, dotted) field of a lead, e.g. ``("status", "replied")``.

        Intermediate objects must exist; they are copied first, so that sub-objects shared
        between leads (the campaign snapshot) change for this lead only. The lead keeps its
        place in the list.
        """
        with self._lock:
            lead = self._lead_index.get(lead_id)
            if lead is None:
                raise KeyError(f"no lead with id {lead_id!r}")
            *parents, last = dotted.split(".")
            node = lead
            for depth, name in enumerate(parents):
                child = node.get(name)
                if not isinstance(child, dict):
                    where = ".".join(parents[: depth + 1])
                    raise KeyError(f"lead field {where!r} is not an object")
                child = dict(child)
                node[name] = child
                node = child
            node[last] = value
            if dotted == "id":
                del self._lead_index[lead_id]
                self._lead_index[value] = lead
            self._bodies.pop("leads", None)

    def invalidate(self) -> None:
        """Forget the cached response bodies, after changing the lists by hand."""
        with self._lock:
            self._bodies.clear()
            self._lead_index = {lead["id"]: lead for lead in self.leads}

    def tick(self) -> list[tuple[str, Record]]:
        """One step of "new items over time": a lead every tick, a connection every 2nd
        tick, a campaign every 5th. Returns what was added, as (kind, record) pairs."""
        with self._lock:
            self._ticks += 1
            added: list[tuple[str, Record]] = []
            if self._ticks % 5 == 0:
                added.append(("campaigns", self.add_campaign()))
            added.append(("leads", self.add_lead()))
            if self._ticks % 2 == 0:
                added.append(("connections", self.add_connection()))
            return added

    # ----------------------------------------------------------------- faults

    def inject(self, fault: Fault) -> None:
        """Queue a fault (a copy: the caller's object is not used up)."""
        with self._lock:
            self._faults.append((replace(fault), [fault.count]))

    def pending_faults(self) -> list[Fault]:
        """The faults still queued, each with the count it has left."""
        with self._lock:
            return [replace(fault, count=left[0]) for fault, left in self._faults]

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def take_fault(self, path: str) -> Fault | None:
        """Use up one request's worth of the oldest fault for ``path`` and return it, if any."""
        with self._lock:
            for index, (fault, left) in enumerate(self._faults):
                if fault.applies_to(path):
                    left[0] -= 1
                    if left[0] == 0:
                        del self._faults[index]
                    return fault
            return None

    # ----------------------------------------------------------------- answering requests

    def log_request(self, path: str, query: Mapping[str, str]) -> None:
        """Record a request to a list endpoint in :attr:`requests`, the key's value as ``***``."""
        params = dict(query)
        if self.auth_param in params:
            params[self.auth_param] = "***"
        with self._lock:
            self.requests.append((path, params))

    def key_matches(self, supplied: str | None) -> bool:
        """Whether ``supplied`` is this simulator's API key (compared in constant time)."""
        return supplied is not None and secrets.compare_digest(
            supplied.encode(), self.api_key.encode()
        )

    def list_body(self, kind: str) -> bytes:
        """The whole list named ``kind``, JSON-encoded (cached until the list changes)."""
        with self._lock:
            body = self._bodies.get(kind)
            if body is None:
                body = self._bodies[kind] = orjson.dumps(self._items(kind))
            return body

    def page_body(self, kind: str, page: int, per_page: int) -> bytes:
        """One page (1-based) of the list named ``kind``, JSON-encoded; past the end: ``[]``."""
        with self._lock:
            items = self._items(kind)[(page - 1) * per_page : page * per_page]
            return orjson.dumps(items)

    def _items(self, kind: str) -> list[Record]:
        items: list[Record] = getattr(self, kind)
        return items
