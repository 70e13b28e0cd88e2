"""Crash safety and graceful shutdown, through the real CLI in subprocesses.

* ``kill -9`` at random moments (mid-startup, mid-poll, mid-delivery, wherever the dice
  fall) loses no event; what was in flight is sent again as soon as the next process
  starts, with the same ``webhook-id``; SQLite passes ``PRAGMA integrity_check``.
* SIGTERM: no new claims, in-flight deliveries finish within ``shutdown_grace`` and are
  recorded, exit 0; past the grace they are released, due at once for the next start.
* A second signal stops at once (exit 1, one sentence on stderr), promptly even with a
  slow receiver and a poll in flight, without corrupting anything.

The daemon's stderr goes to a file, so a test can wait on its log lines while it runs;
every wait is a condition with a deadline, never a sleep standing in for one.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from tests.e2e.conftest import ConfigWriter, run_cli
from tests.receiver import Answer, Received, Receiver
from tests.waiting import wait_until
from trigger_engine.sandbox import Fault, SimulatorThread

Env = dict[str, str]


# --------------------------------------------------------------------------- helpers


class Daemon:
    """``trigger-engine run`` in a subprocess; stdout and stderr go to files."""

    def __init__(self, workdir: Path, env: Env, name: str) -> None:
        self.err_path = workdir / f"{name}.stderr"
        self.out_path = workdir / f"{name}.stdout"
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "trigger_engine", "run"],
                cwd=workdir,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    def __enter__(self) -> Daemon:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if self.proc.poll() is None:  # a failed test: leave no process behind
            self.proc.kill()
        self.proc.wait(30)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait_for_log(self, text: str, timeout: float = 20) -> None:
        wait_until(lambda: text in self.stderr, timeout, f"{text!r} in the daemon's log")

    def send(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit code; fails (and kills) if the process is still running after ``timeout``."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the daemon did not exit within {timeout}s; its log:\n{self.stderr}"
            ) from None


@contextlib.contextmanager
def read_only(db: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection: it can neither write nor checkpoint the engine's file."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with read_only(db) as conn:
        return conn.execute(sql).fetchall()


def integrity(db: Path) -> str:
    return ", ".join(row[0] for row in query(db, "PRAGMA integrity_check"))


def deliveries(db: Path) -> dict[str, tuple[str, int, str | None]]:
    """webhook-id → (status, attempts, lease_owner), for the one sink."""
    rows = query(db, "SELECT event_id, status, attempts, lease_owner FROM deliveries")
    return {event_id: (status, attempts, lease) for event_id, status, attempts, lease in rows}


def leased(db: Path) -> set[str]:
    return {e for e, (_s, _a, lease) in deliveries(db).items() if lease is not None}


def all_delivered(db: Path) -> bool:
    return all(
        status == "delivered" and lease is None for status, _a, lease in deliveries(db).values()
    )


def lead_id(request: Received) -> str | None:
    """The lead a request carried; None for a body cut short by a kill."""
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return None
    return str(body["data"]["id"]) if body.get("type") == "lead.new" else None


def ids_of(requests: list[Received]) -> list[str]:
    return [r.headers["webhook-id"] for r in requests]


def resent_check(receiver: Receiver, webhook_ids: set[str]) -> Callable[[], bool]:
    """A condition: each of ``webhook_ids`` was received (again) since now."""
    before = {i: ids_of(receiver.requests).count(i) for i in webhook_ids}
    return lambda: all(ids_of(receiver.requests).count(i) > n for i, n in before.items())


def sink_toml(url: str, extra: str = "") -> str:
    return f'[[sinks]]\nname = "crm"\nurl = "{url}"\n{extra}'


def seed(workdir: Path, env: Env) -> None:
    """The first polls remember what exists and fire nothing."""
    done = run_cli("run", "--once", cwd=workdir, env=env)
    assert done.returncode == 0, done.stderr
    assert "0 attempted" in done.stdout


def slow_first(delay: float) -> Callable[[Received], Answer]:
    """A plan: the first request is answered after ``delay`` s, later ones at once."""
    seen: list[Received] = []

    def plan(request: Received) -> Answer:
        seen.append(request)
        return Answer(delay=delay if len(seen) == 1 else 0.0)

    return plan


# --------------------------------------------------------------------------- kill -9


def test_kill_9_at_random_moments_loses_no_event_and_resends_in_flight_ones_at_once(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    rng = random.Random(20261127)
    sim = simulator.sim
    db = workdir / "te.db"
    added: list[str] = []

    def add_leads(n: int) -> None:
        for _ in range(n):
            added.append(sim.add_lead()["id"])

    with Receiver(lambda _r: Answer(delay=0.3)) as crm:
        write_config(
            base_url=simulator.base_url,
            sinks=sink_toml(crm.url, "max_in_flight = 4\n"),
            interval="200ms",
        )
        seed(workdir, cli_env)
        add_leads(40)

        # Where each kill lands: anywhere (startup, migrations, a poll, a delivery, a
        # commit), or at a random moment while deliveries / a poll are surely in flight.
        moments = ["anywhere", "delivering", "polling"] * 2
        kills_with_claims = 0
        in_flight: set[str] = set()  # webhook-ids claimed when the last process died
        for round_, moment in enumerate(moments):
            resent = resent_check(crm, in_flight)
            if moment == "polling":
                sim.inject(Fault(status=200, delay=0.6, paths=("/leads",)))
            with Daemon(workdir, cli_env, f"kill-{round_}") as daemon:
                # What the killed process had in flight goes out again as soon as this one
                # starts, with the same webhook-id; a lease left in place would hold it
                # back for the sink's timeout + 60 s.
                wait_until(resent, 8, f"the {len(in_flight)} deliveries in flight to be resent")
                delay = rng.uniform(0.05, 1.0)
                if moment == "anywhere":
                    time.sleep(delay)
                elif moment == "delivering":
                    time.sleep(delay)
                    wait_until(lambda: crm.answering > 0, 20, "a delivery in flight")
                else:  # the poll of leads is held 0.6 s by the fault: kill inside it
                    wait_until(lambda: not sim.pending_faults(), 20, "the delayed poll")
                    time.sleep(delay * 0.5)
                daemon.proc.kill()
                assert daemon.wait(10) == -signal.SIGKILL
            assert integrity(db) == "ok", f"after kill {round_} ({moment})"
            in_flight = leased(db)
            kills_with_claims += bool(in_flight)
            print(f"kill {round_} ({moment}, {delay:.2f}s): {len(in_flight)} in flight")
            sim.clear_faults()
            add_leads(rng.randint(4, 8))

        # a last daemon finishes the work, then stops cleanly
        with Daemon(workdir, cli_env, "final") as daemon:
            wait_until(
                lambda: {lead_id(r) for r in crm.requests} >= set(added) and all_delivered(db),
                60,
                "every lead delivered and recorded",
            )
            daemon.send(signal.SIGTERM)
            assert daemon.wait(30) == 0, daemon.stderr
        requests = list(crm.requests)

    assert kills_with_claims >= 1, "no kill landed while deliveries were in flight"
    # every lead added after seeding reached the receiver, under one webhook-id each
    webhook_ids: dict[str, set[str]] = defaultdict(set)
    for r in requests:
        lead = lead_id(r)
        if lead is not None:
            webhook_ids[lead].add(r.headers["webhook-id"])
    assert set(webhook_ids) == set(added)
    assert {lead: len(ids) for lead, ids in webhook_ids.items() if len(ids) != 1} == {}
    assert len({i for ids in webhook_ids.values() for i in ids}) == len(added)
    # in the store: one event per lead, each delivered, nothing pending, failed or leased
    assert sorted(k for (k,) in query(db, "SELECT item_key FROM events")) == sorted(added)
    assert query(db, "SELECT status, count(*), max(lease_owner) FROM deliveries GROUP BY 1") == [
        ("delivered", len(added), None)
    ]
    assert integrity(db) == "ok"


# --------------------------------------------------------------------------- SIGTERM


def test_sigterm_lets_in_flight_deliveries_finish_records_them_and_claims_nothing_new(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    db = workdir / "te.db"
    with Receiver(lambda _r: Answer(delay=1.5)) as crm:
        write_config(
            base_url=simulator.base_url,
            sinks=sink_toml(crm.url, "max_in_flight = 2\n"),
            interval="200ms",
            engine_extra='shutdown_grace = "10s"',
        )
        seed(workdir, cli_env)
        leads = [simulator.sim.add_lead()["id"] for _ in range(6)]

        with Daemon(workdir, cli_env, "daemon") as daemon:
            crm.wait_for(1, timeout=20)
            assert crm.answering >= 1  # a delivery is in flight: the receiver is on it
            sent_at = time.monotonic()
            daemon.send(signal.SIGTERM)
            assert daemon.wait(15) == 0, daemon.stderr
            took = time.monotonic() - sent_at
        assert took < 10, f"exit took {took:.1f}s, more than the grace"
        log = daemon.stderr
        assert "engine.stopping signal=SIGTERM" in log
        assert "delivery.shutdown_waiting" in log
        assert "engine.stopped" in log

        # the ones in flight at SIGTERM finished and were recorded; nothing new was sent
        in_flight = ids_of(crm.requests)
        assert 1 <= len(in_flight) <= 2
        state = deliveries(db)
        assert {i: state[i] for i in in_flight} == {i: ("delivered", 1, None) for i in in_flight}
        rest = {i: s for i, s in state.items() if i not in in_flight}
        assert list(rest.values()) == [("pending", 0, None)] * (6 - len(in_flight))

        # the next start delivers what remained: each event once in all
        done = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert done.returncode == 0, done.stderr
        assert f"{6 - len(in_flight)} attempted, {6 - len(in_flight)} delivered" in done.stdout
        requests = list(crm.requests)
    assert sorted(ids_of(requests)) == sorted(state)
    assert sorted(lead_id(r) for r in requests) == sorted(leads)
    assert all_delivered(db)
    assert integrity(db) == "ok"


def test_past_the_grace_an_unfinished_delivery_is_released_and_resent_at_the_next_start(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    db = workdir / "te.db"
    with Receiver(slow_first(10.0)) as crm:
        write_config(
            base_url=simulator.base_url,
            sinks=sink_toml(crm.url),
            interval="200ms",
            engine_extra='shutdown_grace = "1s"',
        )
        seed(workdir, cli_env)
        simulator.sim.add_lead()

        with Daemon(workdir, cli_env, "daemon") as daemon:
            crm.wait_for(1, timeout=20)
            sent_at = time.monotonic()
            daemon.send(signal.SIGTERM)
            assert daemon.wait(15) == 0, daemon.stderr
            took = time.monotonic() - sent_at
        assert 1.0 <= took < 5.0, f"exit took {took:.1f}s with a grace of 1s"
        assert "delivery.abandoned_in_flight deliveries=1" in daemon.stderr
        assert "delivery.released_on_shutdown deliveries=1" in daemon.stderr

        # released: no lease, no attempt recorded (none finished), still due
        (webhook_id,) = ids_of(crm.requests)
        assert deliveries(db) == {webhook_id: ("pending", 0, None)}

        # due now: run --once (which sends only what is due now) sends it, same webhook-id
        done = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert done.returncode == 0, done.stderr
        assert "1 attempted, 1 delivered" in done.stdout
        assert ids_of(crm.requests) == [webhook_id, webhook_id]
    assert deliveries(db) == {webhook_id: ("delivered", 1, None)}
    assert integrity(db) == "ok"


def test_a_second_signal_stops_at_once_even_with_a_slow_receiver_and_a_poll_in_flight(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    db = workdir / "te.db"
    with Receiver(slow_first(10.0)) as crm:
        config = write_config(
            base_url=simulator.base_url, sinks=sink_toml(crm.url), interval="200ms"
        )  # shutdown_grace: the default 30 s
        config.write_text(config.read_text().replace('timeout = "5s"', 'timeout = "30s"'))
        seed(workdir, cli_env)
        simulator.sim.add_lead()
        # the daemon's first poll of connections hangs 8 s in its HTTP request
        simulator.sim.inject(Fault(status=200, delay=8.0, paths=("/connections",)))

        with Daemon(workdir, cli_env, "daemon") as daemon:
            crm.wait_for(1, timeout=20)
            wait_until(lambda: not simulator.sim.pending_faults(), 10, "the hanging poll")
            daemon.send(signal.SIGTERM)
            daemon.wait_for_log("delivery.shutdown_waiting")  # in the grace wait now
            sent_at = time.monotonic()
            daemon.send(signal.SIGINT)
            code = daemon.wait(10)
            took = time.monotonic() - sent_at
        assert took < 3.0, f"a stop at once took {took:.1f}s"
        assert code == 1, daemon.stderr
        lines = daemon.stderr.splitlines()
        message = (
            "trigger-engine: error: stopped at once by a second signal (SIGINT): "
            "work in flight was abandoned and is retried at the next start"
        )
        assert lines[-1] == message
        assert [line for line in lines if "stopped at once" in line] == [message]
        assert "Traceback" not in daemon.stderr
        assert integrity(db) == "ok"

        # the next start delivers the abandoned event, same webhook-id
        (webhook_id,) = ids_of(crm.requests)
        assert deliveries(db)[webhook_id][0] == "pending"
        done = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert done.returncode == 0, done.stderr
        assert "1 attempted, 1 delivered" in done.stdout
        assert ids_of(crm.requests) == [webhook_id, webhook_id]
    assert deliveries(db) == {webhook_id: ("delivered", 1, None)}
