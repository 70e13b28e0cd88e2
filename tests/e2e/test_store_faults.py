"""The database on a bad day, through the real CLI (issue 13, "the database comes back"):

* PostgreSQL sessions of a running daemon terminated again and again while leads arrive
  (a failover, an operator's ``pg_terminate_backend``): nothing lost, each lead under one
  ``webhook-id``, the daemon still running, and it stops with exit 0 when asked;
* a refused write (the database reports a full disk for the poll's inserts) is visible
  in ``status``, the metrics and ``/healthz`` (503, with the reason), and clears when the
  database accepts writes again;
* the SQLite file deleted under a running daemon: detected within one heartbeat, one
  sentence, exit 1.

Every wait is a condition with a deadline. ``TE_CHAOS_SECONDS`` (default 6) sets how long
the terminations go on; the closing note of issue 13 ran it for 60, which with the wait for
the backlog outlasts pytest's default 120 s timeout on a busy machine: add ``--timeout 600``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, text

from tests.e2e.conftest import run_cli, spawn_cli
from tests.e2e.test_several_nodes import (
    Cluster,
    Db,
    Env,
    add_leads,
    lead_of,
    node_config,
    seed,
    status,
    wait_until,
)
from tests.receiver import Receiver
from tests.waiting import free_port
from trigger_engine.sandbox import SimulatorThread


@pytest.mark.postgres
def test_terminated_postgresql_sessions_lose_nothing_and_the_daemon_runs_on(
    simulator: SimulatorThread, workdir: Path, cli_env: Env, pg_url: str
) -> None:
    seconds = float(os.environ.get("TE_CHAOS_SECONDS", "6"))
    url = pg_url + "&application_name=te_chaos"
    db = Db(pg_url)
    admin = create_engine(pg_url)
    terminated = [0]
    with Receiver() as crm:
        (workdir / "trigger-engine.toml").write_text(
            node_config(database=url, base_url=simulator.base_url, sink_url=crm.url)
        )
        seed(workdir, cli_env)
        added: list[str] = []
        with Cluster(workdir, cli_env) as cluster:
            (node,) = cluster.start(1)
            wait_until(lambda: node.name in db.heartbeats(), 30, "the node started")
            stop_at = time.monotonic() + seconds
            with admin.connect() as conn:
                while time.monotonic() < stop_at:
                    added += add_leads(simulator, 5)
                    terminated[0] += conn.execute(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = 'te_chaos'"
                        )
                    ).scalar_one()
                    conn.commit()
                    time.sleep(0.05)  # the pace of the fault, not a wait for an outcome
                    assert node.running(), node.stderr
            crm.wait_for(len(added), timeout=90)
            wait_until(db.all_delivered, 60, "every delivery recorded as delivered")
            assert node.running(), node.stderr
            code = node.stop()
            log = node.stderr
        requests = list(crm.requests)
    print(
        f"{seconds:g}s of terminations: {terminated[0]} sessions terminated, {len(added)} "
        f"leads added, {len(requests)} webhooks received"
    )
    admin.dispose()
    assert terminated[0] > 10
    assert code == 0, log
    by_lead: dict[str, set[str]] = {}
    for r in requests:
        by_lead.setdefault(lead_of(r), set()).add(r.headers["webhook-id"])
    assert sorted(by_lead) == sorted(added)  # 0 lost
    changed = {lead: ids for lead, ids in by_lead.items() if len(ids) != 1}
    assert changed == {}  # 0 webhook-id changes
    assert db.event_keys() == sorted(added)  # one event per lead, none twice
    resent = len(requests) - len(added)
    print(f"sent more than once (same webhook-id): {resent}")
    assert "Traceback" not in log
    assert "store.failing" in log or "delivery.store_failed" in log or "poll.failed" in log
    db.close()


@pytest.mark.postgres
def test_a_refused_write_shows_in_status_metrics_and_health(
    simulator: SimulatorThread, workdir: Path, cli_env: Env, pg_url: str
) -> None:
    port = free_port()
    db = Db(pg_url)
    with Receiver() as crm:
        config = node_config(database=pg_url, base_url=simulator.base_url, sink_url=crm.url)
        config = config.replace(
            'shutdown_grace = "10s"', f'shutdown_grace = "10s"\nlisten = "127.0.0.1:{port}"'
        )
        (workdir / "trigger-engine.toml").write_text(config)
        seed(workdir, cli_env)
        with db.engine.begin() as conn:  # the database now refuses every new key: "disk full"
            conn.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "RAISE EXCEPTION 'could not extend file: No space left on device' "
                    "USING ERRCODE = 'disk_full'; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER full_disk BEFORE INSERT ON seen_keys EXECUTE FUNCTION refuse()"
                )
            )
        added = add_leads(simulator, 2)
        with Cluster(workdir, cli_env) as cluster:
            (node,) = cluster.start(1)
            base = f"http://127.0.0.1:{port}"

            def health() -> tuple[int, dict[str, object]]:
                try:
                    r = httpx.get(f"{base}/healthz", timeout=10)
                except httpx.TransportError:
                    return 0, {}
                return r.status_code, r.json()

            wait_until(lambda: health()[0] == 503, 30, "/healthz to say 503")
            code, body = health()
            print(f"/healthz while writes are refused: {code} {body}")
            assert any("No space left on device" in str(r) for r in body["reasons"])  # type: ignore[union-attr]
            (leads,) = [t for t in status(workdir, cli_env)["triggers"] if t["trigger"] == "leads"]
            print(f"status: {leads['state']!r}, {leads['last_outcome']}: {leads['last_error']!r}")
            assert leads["last_outcome"] == "store"
            assert "No space left on device" in leads["last_error"]
            metrics = httpx.get(f"{base}/metrics", timeout=10).text
            assert (
                'trigger_engine_polls_total{account="acme",outcome="store",trigger="leads"}'
                in metrics
            )
            assert 'trigger_engine_store_failures_total{unit="PollRepository.record"}' in metrics
            assert httpx.get(f"{base}/livez", timeout=10).status_code == 200  # no restart
            with db.engine.begin() as conn:  # space again
                conn.execute(text("DROP TRIGGER full_disk ON seen_keys"))
            crm.wait_for(2, timeout=30)
            wait_until(lambda: health()[0] == 200, 30, "/healthz to say 200 again")
            assert sorted(lead_of(r) for r in crm.requests) == sorted(added)
            assert node.stop() == 0
    db.close()


def polled(workdir: Path, env: Env) -> bool:
    done = run_cli("status", "--json", cwd=workdir, env=env)
    return done.returncode == 0 and any(
        t["last_poll_at"] for t in orjson.loads(done.stdout)["triggers"]
    )


def test_a_deleted_sqlite_file_stops_the_daemon_within_a_heartbeat(
    simulator: SimulatorThread, workdir: Path, write_config: object, cli_env: Env
) -> None:
    with Receiver() as crm:
        write_config(  # type: ignore[operator]
            base_url=simulator.base_url,
            sinks=f'[[sinks]]\nname = "crm"\nurl = "{crm.url}"\n',
            interval="1s",
        )
        proc = spawn_cli("run", cwd=workdir, env=cli_env)
        try:
            wait_until(
                lambda: proc.poll() is not None or polled(workdir, cli_env), 60, "a first poll"
            )
            assert proc.poll() is None, proc.communicate()[1]
            os.unlink(workdir / "te.db")
            deleted_at = time.monotonic()
            _out, err = proc.communicate(timeout=30)
            took = time.monotonic() - deleted_at
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
    print(f"deleted file noticed; exit {proc.returncode} {took:.1f}s after the deletion")
    assert proc.returncode == 1
    assert took < 15  # one heartbeat is 10 s
    last = err.strip().splitlines()[-1]
    assert "te.db was deleted while the engine ran" in last, err
    assert "Traceback" not in err
    # started again (as a supervisor would): a new, empty file, and it says so
    again = run_cli("run", "--once", cwd=workdir, env=cli_env)
    assert again.returncode == 0, again.stderr
    assert "engine.database_created_anew" in again.stderr
    assert "first poll, 3 remembered" in again.stdout


@pytest.mark.postgres
def test_work_stuck_behind_a_foreign_lock_makes_healthz_503_until_it_goes(
    simulator: SimulatorThread, workdir: Path, cli_env: Env, pg_url: str
) -> None:
    port = free_port()
    db = Db(pg_url)
    with Receiver() as crm:
        config = node_config(database=pg_url, base_url=simulator.base_url, sink_url=crm.url)
        config = config.replace(
            'shutdown_grace = "10s"', f'shutdown_grace = "10s"\nlisten = "127.0.0.1:{port}"'
        )
        (workdir / "trigger-engine.toml").write_text(config)
        seed(workdir, cli_env)
        base = f"http://127.0.0.1:{port}"

        def health() -> int:
            try:
                return httpx.get(f"{base}/healthz", timeout=10).status_code
            except httpx.TransportError:
                return 0

        with Cluster(workdir, cli_env) as cluster:
            (node,) = cluster.start(1)
            wait_until(lambda: health() == 200, 30, "/healthz to say 200")
            with db.engine.connect() as conn:
                locked_at = time.monotonic()
                conn.execute(text("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE"))
                wait_until(lambda: health() == 503, 60, "/healthz to say 503")
                took = time.monotonic() - locked_at
                body = httpx.get(f"{base}/healthz", timeout=10).json()
                assert httpx.get(f"{base}/livez", timeout=10).status_code == 200
                conn.rollback()  # the lock goes
            print(f"/healthz 503 {took:.0f}s after the lock: {body['reasons']}")
            assert any("lock held elsewhere" in r for r in body["reasons"])
            wait_until(lambda: health() == 200, 30, "/healthz to say 200 again")
            added = add_leads(simulator, 2)
            crm.wait_for(2, timeout=30)
            assert sorted(lead_of(r) for r in crm.requests) == sorted(added)
            assert node.stop() == 0
    db.close()
