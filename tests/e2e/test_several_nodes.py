"""Several nodes on one PostgreSQL database, through the real CLI (issue 6's "must show").

* Three daemons share 300 new leads: each lead reaches the receiver exactly once, under one
  ``webhook-id``, and the deliveries are spread over the nodes.
* ``kill -9`` of a node holding delivery claims loses nothing: once its claims' lease
  expires the survivors send them (same ``webhook-id``) and keep polling; its heartbeat
  stops.
* Fencing through the engine: a node frozen (SIGSTOP) in the middle of a poll comes back
  after another node took the trigger over; its stale result is refused (``poll.lease_lost``),
  nothing fires twice, and it keeps running. (The nodes divide the polls: the other node
  takes the trigger at once when it is its share, else once the frozen one's heartbeat
  expired; once back, the frozen node polls its share again.)
* ``trigger-engine db upgrade`` beside running nodes finds the schema up to date and
  breaks nothing.

Timings are short (``[engine] lease = "2s"``, sink timeout 2 s, leads polled every 300 ms,
the other triggers not configured). Every wait is a condition with a deadline; the daemons'
output goes to files, so that a test can read their logs while they run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from tests.e2e.conftest import run_cli, spawn_cli
from tests.receiver import Answer, Received, Receiver
from tests.waiting import wait_until
from trigger_engine.core.division import owner as share_owner
from trigger_engine.sandbox import Fault, SimulatorThread

pytestmark = pytest.mark.postgres

Env = dict[str, str]


# --------------------------------------------------------------------------- helpers


def node_config(
    *,
    database: str,
    base_url: str,
    sink_url: str,
    sink_extra: str = "",
    source_timeout: str = "1s",
) -> str:
    """One config for every node: only ``leads`` (every 300 ms), one sink, short leases."""
    return f"""
[engine]
database = "{database}"
lease = "2s"
shutdown_grace = "10s"

[source]
base_url = "{base_url}"
timeout = "{source_timeout}"

[[accounts]]
name = "acme"
api_key = "${{ALFRED_API_KEY}}"

[triggers.leads]
interval = "300ms"

[[sinks]]
name = "crm"
url = "{sink_url}"
timeout = "2s"
retry = {{ schedule = ["1s", "2s", "5s", "5s", "5s"] }}
{sink_extra}
"""


class Node:
    """``trigger-engine run`` in a subprocess; stdout and stderr go to files."""

    def __init__(self, workdir: Path, env: Env, label: str) -> None:
        self.label = label
        self.err_path = workdir / f"{label}.stderr"
        with (workdir / f"{label}.stdout").open("w") as out, self.err_path.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "trigger_engine", "run"],
                cwd=workdir,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    @property
    def name(self) -> str:
        """The node's name in the database (``Daemon.owner``: host and pid)."""
        return f"{socket.gethostname()}:{self.proc.pid}"

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit code (the process is reaped either way)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise AssertionError(
                f"{self.label} did not exit within {timeout}s of SIGTERM; its log:\n{self.stderr}"
            ) from None
        return self.proc.returncode

    def kill(self) -> int:
        self.proc.kill()
        self.proc.communicate(timeout=10)
        return self.proc.returncode


class Cluster:
    """``with Cluster(workdir, env) as nodes: nodes.start(3)``; a failed test leaves no
    process behind (even a stopped one: SIGKILL ends a SIGSTOPped process too)."""

    def __init__(self, workdir: Path, env: Env) -> None:
        self.workdir = workdir
        self.env = env
        self.nodes: list[Node] = []

    def start(self, count: int = 1) -> list[Node]:
        started = [Node(self.workdir, self.env, f"node{len(self.nodes) + i}") for i in range(count)]
        self.nodes.extend(started)
        return started

    def by_name(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        for node in self.nodes:
            if node.running():
                node.proc.kill()
            node.proc.communicate(timeout=30)


class Db:
    """Read access to the nodes' database (the test's private schema)."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar_one()

    def event_keys(self) -> list[str]:
        return sorted(k for (k,) in self.rows("SELECT item_key FROM events"))

    def all_delivered(self) -> bool:
        """Every delivery delivered and none claimed (and there is at least one)."""
        ((undone, total),) = self.rows(
            "SELECT count(*) FILTER (WHERE status <> 'delivered' OR lease_owner IS NOT NULL),"
            " count(*) FROM deliveries"
        )
        return total > 0 and undone == 0

    def seeded(self) -> bool:
        """Whether the first poll of leads is done (False while the schema is not there)."""
        try:
            return bool(self.rows("SELECT 1 FROM poll_state WHERE seeded_at IS NOT NULL"))
        except ProgrammingError:  # no table yet: the node is still migrating
            return False

    def claims(self) -> dict[str, int]:
        """Node → deliveries it holds a claim on now."""
        return dict(
            self.rows(
                "SELECT lease_owner, count(*) FROM deliveries "
                "WHERE lease_owner IS NOT NULL GROUP BY 1"
            )
        )

    def poll_lease(self) -> tuple[str | None, datetime | None, int]:
        (row,) = self.rows(
            "SELECT lease_owner, lease_expires_at, fencing_token FROM poll_state "
            "WHERE account = 'acme' AND trigger = 'leads'"
        )
        return row[0], row[1], int(row[2])

    def heartbeats(self) -> dict[str, datetime]:
        return dict(self.rows("SELECT name, heartbeat_at FROM nodes"))

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def db(pg_url: str) -> Iterator[Db]:
    store = Db(pg_url)
    yield store
    store.close()  # before pg_url drops the schema


class Sampler:
    """Watches, while the nodes run, which of them claim deliveries and hold poll leases."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.claimers: Counter[str] = Counter()  # node → times seen holding claims
        self.pollers: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(Exception):  # the schema not migrated yet
                self.claimers.update(self.db.claims().keys())
                self.pollers.update(
                    owner
                    for (owner,) in self.db.rows(
                        "SELECT lease_owner FROM poll_state WHERE lease_owner IS NOT NULL"
                    )
                )

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def lead_of(request: Received) -> str:
    body = request.json()
    assert isinstance(body, dict) and body["type"] == "lead.new", body
    return str(body["data"]["id"])


def webhook_ids_by_lead(requests: list[Received]) -> dict[str, set[str]]:
    by_lead: dict[str, set[str]] = defaultdict(set)
    for r in requests:
        by_lead[lead_of(r)].add(r.headers["webhook-id"])
    return by_lead


def status(workdir: Path, env: Env) -> dict[str, Any]:
    done = run_cli("status", "--json", cwd=workdir, env=env)
    assert done.returncode == 0, done.stderr
    doc = orjson.loads(done.stdout)
    assert isinstance(doc, dict)
    return doc


def node_states(workdir: Path, env: Env) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in status(workdir, env)["nodes"]}


def seed(workdir: Path, env: Env) -> None:
    """One ``run --once``: the first poll remembers what exists and fires nothing."""
    done = run_cli("run", "--once", cwd=workdir, env=env)
    assert done.returncode == 0, done.stderr
    assert "acme/leads: 3 items, first poll, 3 remembered, 0 fired" in done.stdout
    assert "0 attempted" in done.stdout


def add_leads(simulator: SimulatorThread, n: int) -> list[str]:
    return [simulator.sim.add_lead()["id"] for _ in range(n)]


def explain(leads: list[str], requests: list[Received], db: Db) -> str:
    """For a failure: what the receiver got for ``leads``, and their rows in the database."""
    got = [(lead_of(r), r.headers["webhook-id"]) for r in requests if lead_of(r) in leads]
    rows = db.rows(
        "SELECT e.item_key, e.id, e.created_at, d.status, d.attempts, a.attempt, "
        "a.started_at, a.status_code, a.error FROM events e "
        "JOIN deliveries d ON d.event_id = e.id LEFT JOIN attempts a ON a.delivery_id = d.id "
        "WHERE e.item_key = ANY(:keys) ORDER BY 1, 3, 6",
        keys=leads,
    )
    return f"received (lead, webhook-id): {got}; in the database: {rows}"


def assert_each_lead_once(requests: list[Received], leads: list[str], db: Db) -> None:
    """Each lead received exactly once under its own webhook-id; one event and one
    delivered delivery per lead in the database."""
    received = Counter(lead_of(r) for r in requests)
    twice = sorted(lead for lead, n in received.items() if n != 1)
    assert twice == [], explain(twice, requests, db)
    assert sorted(received) == sorted(leads)
    ids = [r.headers["webhook-id"] for r in requests]
    assert len(set(ids)) == len(ids) == len(leads)
    assert db.event_keys() == sorted(leads)
    assert sorted(i for (i,) in db.rows("SELECT id FROM events")) == sorted(ids)
    assert db.rows("SELECT status, count(*), max(lease_owner) FROM deliveries GROUP BY 1") == [
        ("delivered", len(leads), None)
    ]


# --------------------------------------------------------------------------- 1. sharing


def test_three_nodes_deliver_300_leads_each_exactly_once_and_share_the_work(
    simulator: SimulatorThread, workdir: Path, cli_env: Env, pg_url: str, db: Db
) -> None:
    with Receiver(lambda _r: Answer(delay=0.1)) as crm:
        (workdir / "trigger-engine.toml").write_text(
            node_config(database=pg_url, base_url=simulator.base_url, sink_url=crm.url)
        )
        seed(workdir, cli_env)
        added: list[str] = []
        with Cluster(workdir, cli_env) as cluster, Sampler(db) as sampler:
            nodes = cluster.start(3)
            wait_until(
                lambda: {n.name for n in nodes} <= set(db.heartbeats()), 30, "3 nodes started"
            )
            # 300 leads in 10 batches, each polled before the next is added
            for batch in range(10):
                added += add_leads(simulator, 30)
                wait_until(
                    lambda b=batch: len(db.event_keys()) >= 30 * (b + 1),
                    30,
                    f"batch {batch} polled",
                )
            crm.wait_for(300, timeout=60)
            wait_until(db.all_delivered, 30, "every delivery recorded as delivered")

            alive = node_states(workdir, cli_env)
            assert {n.name for n in nodes} == set(alive)
            assert [alive[n.name]["state"] for n in nodes] == ["alive"] * 3
            assert all(alive[n.name]["heartbeat_at"] for n in nodes)
            assert all(n.running() for n in nodes)

            codes = [n.stop() for n in nodes]
            logs = {n.label: n.stderr for n in nodes}
        requests = list(crm.requests)  # anything late would show here

    assert codes == [0, 0, 0], logs
    assert len(requests) == 300
    assert_each_lead_once(requests, added, db)
    # the work was spread: several nodes claimed deliveries (SKIP LOCKED shares them out)
    ours = {n.name for n in nodes}
    print(f"seen holding delivery claims: {dict(sampler.claimers)}; poll leases: {sampler.pollers}")
    assert set(sampler.claimers) <= ours and sampler.pollers <= ours
    assert len(sampler.claimers) >= 2, (sampler.claimers, sampler.pollers)
    # a clean stop says so
    stopped = node_states(workdir, cli_env)
    assert [stopped[n.name]["state"] for n in nodes] == ["stopped"] * 3
    assert all(stopped[n.name]["leases"] == [] for n in nodes)
    for text_ in logs.values():
        assert "Traceback" not in text_ and "poll.error" not in text_


# --------------------------------------------------------------------------- 2. kill -9


def test_kill_9_of_a_node_holding_claims_loses_nothing_and_the_others_take_over(
    simulator: SimulatorThread, workdir: Path, cli_env: Env, pg_url: str, db: Db
) -> None:
    with Receiver(lambda _r: Answer(delay=1.0)) as crm:
        (workdir / "trigger-engine.toml").write_text(
            node_config(
                database=pg_url,
                base_url=simulator.base_url,
                sink_url=crm.url,
                sink_extra="max_in_flight = 4",
            )
        )
        seed(workdir, cli_env)
        with Cluster(workdir, cli_env) as cluster:
            nodes = cluster.start(3)
            added = add_leads(simulator, 40)
            crm.wait_for(4, timeout=30)

            def victim_found() -> bool:
                ours = {n: c for n, c in db.claims().items() if cluster.by_name(n) is not None}
                return bool(ours) and crm.answering > 0

            wait_until(victim_found, 20, "a node holding delivery claims, a request in flight")
            claims = {n: c for n, c in db.claims().items() if cluster.by_name(n) is not None}
            victim_name = max(claims, key=lambda n: claims[n])
            victim = cluster.by_name(victim_name)
            assert victim is not None
            killed_at = datetime.now(UTC)
            assert victim.kill() == -signal.SIGKILL
            # its claims stay in place until their lease expires (4 s): read them now
            in_flight = {
                i
                for (i,) in db.rows(
                    "SELECT event_id FROM deliveries WHERE lease_owner = :owner",
                    owner=victim_name,
                )
            }
            # what the victim had sent and not seen answered: received once so far
            sent_before = Counter(r.headers["webhook-id"] for r in crm.requests)
            heartbeat_at_kill = db.heartbeats()[victim_name]
            survivors = [n for n in nodes if n is not victim]

            # polling goes on (by the victim's share's new owner once its heartbeat is 30 s
            # old, within 40 s), and the victim's claims are taken over once their lease
            # expires (sink timeout + [engine] lease = 4 s)
            added += add_leads(simulator, 10)
            wait_until(
                lambda: (
                    {lead_of(r) for r in list(crm.requests)} >= set(added) and db.all_delivered()
                ),
                90,
                "every lead received and every delivery delivered",
            )
            # the victim's heartbeat stopped: both survivors beat after the kill, it did not
            wait_until(
                lambda: all(db.heartbeats()[n.name] > killed_at for n in survivors),
                25,
                "a heartbeat of each survivor after the kill",
            )
            assert db.heartbeats()[victim_name] == heartbeat_at_kill
            states = node_states(workdir, cli_env)
            assert states[victim_name]["state"] in ("alive", "vanished")  # never "stopped"
            assert states[victim_name]["leases"] == []
            assert [states[n.name]["state"] for n in survivors] == ["alive", "alive"]
            assert all(n.running() for n in survivors)

            codes = [n.stop() for n in survivors]
            logs = {n.label: n.stderr for n in survivors}
        requests = list(crm.requests)

    assert codes == [0, 0], logs
    # every lead arrived (at least once), each under exactly one webhook-id
    by_lead = webhook_ids_by_lead(requests)
    assert sorted(by_lead) == sorted(added)
    assert {lead: ids for lead, ids in by_lead.items() if len(ids) != 1} == {}
    # one event per lead, all delivered, nothing claimed any more
    assert db.event_keys() == sorted(added)
    assert db.rows("SELECT status, count(*), max(lease_owner) FROM deliveries GROUP BY 1") == [
        ("delivered", len(added), None)
    ]
    # what the victim had in flight was sent again by a survivor, same webhook-id
    assert in_flight, "the victim held no claim when it was killed"
    received = Counter(r.headers["webhook-id"] for r in requests)
    resent = {i for i in in_flight if sent_before[i] >= 1}
    assert {i: received[i] for i in resent if received[i] < 2} == {}
    assert all(received[i] >= 1 for i in in_flight)
    # duplicates only for what was in flight at the kill (at-least-once, never more)
    twice = {i for i, n in received.items() if n > 1}
    assert twice <= in_flight, db.rows(
        "SELECT d.event_id, d.attempts, a.attempt, a.status_code, a.error, a.duration_ms "
        "FROM deliveries d LEFT JOIN attempts a ON a.delivery_id = d.id "
        "WHERE d.event_id = ANY(:ids) ORDER BY 1, 3",
        ids=sorted(twice - in_flight),
    )


# --------------------------------------------------------------------------- 3. fencing


def test_a_node_frozen_mid_poll_cannot_write_its_stale_result_and_keeps_running(
    simulator: SimulatorThread, workdir: Path, cli_env: Env, pg_url: str, db: Db
) -> None:
    with Receiver() as crm:
        (workdir / "trigger-engine.toml").write_text(
            node_config(
                database=pg_url,
                base_url=simulator.base_url,
                sink_url=crm.url,
                source_timeout="4s",  # the poll lease: 2 s + 4 s
            )
        )
        with Cluster(workdir, cli_env) as cluster:
            (a,) = cluster.start(1)
            # a's first poll seeds (the 3 existing leads), then a delivers new ones
            wait_until(db.seeded, 30, "the seeding poll")
            first = add_leads(simulator, 5)
            crm.wait_for(5, timeout=20)
            assert db.poll_lease()[0] == a.name

            # a's next poll of leads hangs 1.5 s at the simulator: freeze a meanwhile
            simulator.sim.inject(Fault(status=200, delay=1.5, paths=("/leads",)))
            wait_until(lambda: not simulator.sim.pending_faults(), 10, "a's delayed poll")
            os.kill(a.proc.pid, signal.SIGSTOP)
            _owner, a_expires, a_token = db.poll_lease()
            second = add_leads(simulator, 5)  # in the answer a is waiting for, too

            # b takes the trigger over once a's lease expired, and delivers the new leads:
            # at once when the trigger is b's share of the two, else when a's heartbeat
            # expired (30 s after a's last one, at b's next heartbeat)
            (b,) = cluster.start(1)
            crm.wait_for(10, timeout=60)
            owner, b_expires, b_token = db.poll_lease()
            assert owner == b.name and b_token > a_token
            assert a_expires is not None and b_expires is not None and b_expires > a_expires

            # a wakes up with its stale poll: refused by the fencing token, nothing fires
            os.kill(a.proc.pid, signal.SIGCONT)
            wait_until(lambda: "poll.lease_lost" in a.stderr, 20, "a's poll.lease_lost")
            third = add_leads(simulator, 5)
            crm.wait_for(15, timeout=40)
            wait_until(db.all_delivered, 20, "every delivery delivered")
            # a is live again: the trigger is polled by the owner of its share of the two
            keeper = a if share_owner(("acme", "leads"), [a.name, b.name]) == a.name else b
            wait_until(lambda: db.poll_lease()[0] == keeper.name, 30, f"{keeper.label} polls")
            assert a.running() and b.running()

            codes = [a.stop(), b.stop()]
            logs = {n.label: n.stderr for n in (a, b)}
        requests = list(crm.requests)

    assert codes == [0, 0], logs
    assert_each_lead_once(requests, first + second + third, db)
    assert "Traceback" not in logs["node0"] and "poll.error" not in logs["node0"]
    if keeper is b:  # after its refused poll, a never polled again: b kept the trigger
        assert "poll.new_items" not in logs["node0"].split("poll.lease_lost", 1)[1]
    assert "poll.lease_lost" not in logs["node1"]


# --------------------------------------------------------------------------- 4. migrations


def test_db_upgrade_beside_running_nodes_finds_the_schema_up_to_date_and_breaks_nothing(
    simulator: SimulatorThread, workdir: Path, cli_env: Env, pg_url: str, db: Db
) -> None:
    with Receiver(lambda _r: Answer(delay=1.0)) as crm:
        (workdir / "trigger-engine.toml").write_text(
            node_config(database=pg_url, base_url=simulator.base_url, sink_url=crm.url)
        )
        with Cluster(workdir, cli_env) as cluster:
            # an empty schema: two nodes and two `db upgrade` start together; the advisory
            # lock lets one migrate, the others then find the schema up to date
            upgrades = [spawn_cli("db", "upgrade", cwd=workdir, env=cli_env) for _ in range(2)]
            nodes = cluster.start(2)
            outputs = [u.communicate(timeout=60) for u in upgrades]
            assert [u.returncode for u in upgrades] == [0, 0], outputs
            assert [out for out, _err in outputs] == ["database is up to date\n"] * 2
            wait_until(db.seeded, 30, "the seeding poll")  # by one of the nodes
            version = db.rows("SELECT version_num FROM alembic_version")
            assert len(version) == 1

            # with the nodes polling and deliveries in flight: `db upgrade` again
            added = add_leads(simulator, 10)
            crm.wait_for(1, timeout=30)
            assert crm.answering > 0
            done = run_cli("db", "upgrade", cwd=workdir, env=cli_env, timeout=60)
            assert done.returncode == 0, done.stderr
            assert done.stdout == "database is up to date\n"
            assert db.rows("SELECT version_num FROM alembic_version") == version

            # the nodes carry on: polling and delivering
            added += add_leads(simulator, 10)
            crm.wait_for(20, timeout=30)
            wait_until(db.all_delivered, 30, "every delivery delivered")
            states = node_states(workdir, cli_env)
            assert [states[n.name]["state"] for n in nodes] == ["alive", "alive"]
            assert all(n.running() for n in nodes)

            codes = [n.stop() for n in nodes]
            logs = {n.label: n.stderr for n in nodes}
        requests = list(crm.requests)

    assert codes == [0, 0], logs
    assert_each_lead_once(requests, added, db)
    for text_ in logs.values():
        assert "Traceback" not in text_ and "ERROR" not in text_, text_
