"""Held, not dead, and fast recovery, through the real CLI and the ``run`` daemon.

* ``sinks pause`` while the daemon runs: new events are ``held`` (counted in ``status``),
  nothing is sent; ``sinks resume`` sends them, once each, in order, with their original
  webhook-ids.
* A receiver that goes down (503) for a while, with a schedule whose second step is five
  minutes: it gets at most one probe per first step while down, and its whole backlog within
  10 s of its return (the figures are printed: ``pytest -s``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from tests.e2e.conftest import ConfigWriter, run_cli, spawn_cli
from tests.e2e.test_delivery_failures import ids, sink, verify
from tests.receiver import Answer, Received, Receiver
from tests.waiting import wait_until
from trigger_engine.sandbox import SimulatorThread

Env = dict[str, str]


def cli(*args: str, cwd: Path, env: Env) -> str:
    done = run_cli(*args, cwd=cwd, env=env)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def crm_row(cwd: Path, env: Env) -> dict[str, Any]:
    doc = orjson.loads(cli("status", "--json", cwd=cwd, env=env))
    (row,) = [s for s in doc["sinks"] if s["name"] == "crm"]
    assert isinstance(row, dict)
    return row


def event_ids(cwd: Path, env: Env) -> list[str]:
    """Every event's id, oldest first."""
    found = orjson.loads(cli("events", "--json", "--limit", "1000", cwd=cwd, env=env))
    return [e["id"] for e in reversed(found)]


def stop(daemon: subprocess.Popen[str]) -> str:
    daemon.send_signal(signal.SIGTERM)
    _out, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    return err


def test_pause_holds_new_events_and_resume_sends_them_once_in_order(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    with Receiver() as crm:
        write_config(
            base_url=simulator.base_url,
            sinks=sink("crm", crm.url, extra="max_in_flight = 1"),
            interval="200ms",
        )
        cli("run", "--once", cwd=workdir, env=cli_env)  # the first poll remembers
        paused = cli("sinks", "pause", "crm", cwd=workdir, env=cli_env)
        assert "sink 'crm' paused" in paused
        assert crm_row(workdir, cli_env)["state"] == "paused"

        daemon = spawn_cli("run", cwd=workdir, env=cli_env)
        try:
            for _ in range(4):
                simulator.sim.add_lead()
            wait_until(lambda: crm_row(workdir, cli_env)["held"] == 4, what="4 held deliveries")
            assert crm.requests == []  # nothing sent while paused
            held_ids = event_ids(workdir, cli_env)
            assert len(held_ids) == 4

            resumed = cli("sinks", "resume", "crm", cwd=workdir, env=cli_env)
            assert "4 held deliveries due now" in resumed
            crm.wait_for(4, timeout=30)
            wait_until(lambda: crm_row(workdir, cli_env)["delivered"] == 4, what="all delivered")
        finally:
            err = stop(daemon)
        assert ids(crm.requests) == held_ids  # once each, in order, original webhook-ids
        for r in crm.requests:
            verify(r)
        assert "engine.stopped" in err
    print(f"\npause/resume: {len(held_ids)} events held while paused, then sent once each in order")


class Outage:
    """A receiver plan: 503 while ``down`` (counting those requests), else 200."""

    def __init__(self) -> None:
        self.down = False
        self.while_down = 0
        self.delivered: set[str] = set()
        self.answered_ok: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, r: Received) -> Answer:
        with self._lock:
            if self.down:
                self.while_down += 1
                return Answer(status=503)
            self.delivered.add(r.headers["webhook-id"])
            self.answered_ok.append(r.headers["webhook-id"])
            return Answer(status=200)


# seconds the receiver is down (the issue measured 70 s; the same shape), and the first retry
# step: one probe per step while down. TE_OUTAGE_SECONDS / TE_OUTAGE_STEP change them (the
# closing note of issue 14 ran 70 s with Svix's first step, 5 s).
DOWN_FOR = float(os.environ.get("TE_OUTAGE_SECONDS", "8"))
STEP = float(os.environ.get("TE_OUTAGE_STEP", "2"))


def test_a_receiver_back_after_an_outage_gets_its_backlog_within_10s(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    plan = Outage()
    with Receiver(plan) as crm:
        write_config(
            base_url=simulator.base_url,
            sinks=sink("crm", crm.url, schedule=(f"{STEP:g}s", "5m", "30m")),
            interval="300ms",
        )
        cli("run", "--once", cwd=workdir, env=cli_env)
        daemon = spawn_cli("run", cwd=workdir, env=cli_env)
        try:
            simulator.sim.add_lead()
            wait_until(lambda: len(plan.delivered) == 1, what="the first lead")

            plan.down = True
            went_down = time.monotonic()
            added = 0
            while time.monotonic() < went_down + DOWN_FOR:  # leads keep coming meanwhile
                if added < 10:
                    simulator.sim.add_lead()
                    added += 1
                time.sleep(0.5)
            requests_while_down = plan.while_down
            plan.down = False
            back = time.monotonic()
            wait_until(lambda: len(plan.delivered) == 1 + added, timeout=60, what="the backlog")
            backlog_after = time.monotonic() - back
        finally:
            err = stop(daemon)

    # without probes, the second attempts would wait for the 5 m step: 300 s
    print(
        f"\noutage of {DOWN_FOR:g}s (schedule {STEP:g}s, 5m, 30m): {requests_while_down} "
        f"requests while down for {added} leads, backlog delivered {backlog_after:.2f}s "
        "after the receiver returned"
    )
    assert backlog_after < 10.0
    # until it goes down (3 failures in a row), then at most one probe per step
    assert requests_while_down <= 3 + DOWN_FOR / STEP + 1
    assert "sink.down" in err and "sink.recovered" in err
    assert sorted(plan.answered_ok) == sorted(plan.delivered)  # each delivered once
