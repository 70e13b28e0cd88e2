"""console: the console's pages and the admin API at a million events, over HTTP, from the
real daemon, on SQLite and on PostgreSQL.

    python benchmarks/console.py [--n 1000000] [--runs 20] [--reuse] [--keep]
                                 [--pg URL] [--pg-db NAME] [--no-sqlite] [--no-pg]

Seeds N events in bulk (payloads shaped like simulator leads, :func:`search.payload`; the
search index dropped during the insert and built once after it, :mod:`search`'s helpers)
with deliveries in the states a long-running install has: every event has one to ``crm``,
almost all delivered, 1 in 1,000 failed (its retry far in the future), 1 in 2,000 dead,
1 in 2,000 held (by the flood guard); 1 in 100 events also has one to a second sink,
``spare``, 1 in 20 of those dead. Three event types (``lead.new`` most, ``connection.new``
1 in 5, ``campaign.new`` 1 in 100) and two accounts (``acme``, and ``initech`` for 1 in 200
events); the newest event is an hour old. The SQLite file is kept under
``$TMPDIR/te-console-bench/`` and the PostgreSQL database (``--pg-db``) on the server: with
``--reuse`` an existing one holding N events is used as it is (the daemon migrates it);
without ``--keep`` both are removed at the end.

Then starts the daemon (``python -m trigger_engine run``, ``[engine] listen`` and
``[console]``; its upstream and its sinks unreachable, so it only serves) and times, one
request after another with the token, ``--runs`` times each: the events page (first page;
a deep page by cursor, half way down), its filters (status dead / failed / held, sink
spare, type campaign.new, account initech), a search for a name one event holds, a search
for a term every event holds with status dead, the dead-and-held page, the overview, and
``/api/v1/status``, ``/api/v1/events``, ``/metrics``. Prints p50 and p95 in milliseconds and
whether p95 meets the target (150 ms), and the page's bounded-search note when it has one.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import search

from trigger_engine.core.events import new_event_id
from trigger_engine.db.codecs import sqlite_text
from trigger_engine.db.store import Store

TOKEN = "console-bench-token-7f3a9c"
TARGET_MS = 150.0
PG = search.PG
HOUR = timedelta(hours=1)
COMMON = "example.com"  # every payload holds it (the work e-mail)


def kind(i: int) -> tuple[str, str, str]:
    """Event ``i``'s (type, trigger, account)."""
    if i % 100 == 7:
        event_type, trigger = "campaign.new", "campaigns"
    elif i % 5 == 2:
        event_type, trigger = "connection.new", "connections"
    else:
        event_type, trigger = "lead.new", "leads"
    return event_type, trigger, "initech" if i % 200 == 11 else "acme"


def crm_status(i: int) -> str:
    if i % 1000 == 1:
        return "failed"
    if i % 2000 == 3:
        return "dead"
    if i % 2000 == 5:
        return "held"
    return "delivered"


def delivery_row(event_id: str, sink: str, status: str, at: datetime) -> tuple[Any, ...]:
    """(event_id, sink, status, attempts, held_by, next_attempt_at, last_attempt_at,
    last_status_code, last_error, delivered_at, created_at)."""
    later = at + timedelta(days=3650)  # a failed delivery's retry: never during the run
    if status == "delivered":
        return (event_id, sink, status, 1, None, None, at, 200, None, at, at)
    if status == "failed":
        return (event_id, sink, status, 2, None, later, at, 500, "HTTP 500", None, at)
    if status == "dead":
        return (event_id, sink, status, 12, None, None, at, 500, "HTTP 500", None, at)
    return (event_id, sink, "held", 0, "flood_guard", None, None, None, "flood guard", None, at)


def seed(url: str, n: int) -> None:
    """N events and their deliveries, in bulk, into a database made by the migrations."""
    Store.open(url).close()
    engine = create_engine(url)
    rng = random.Random(7)
    newest = datetime.now(UTC).replace(microsecond=0) - HOUR
    started = time.perf_counter()
    with engine.begin() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.execute(text("PRAGMA synchronous=OFF"))
        search.drop_search_index(conn)
        raw = conn.connection.driver_connection
        assert raw is not None
        cur = raw.cursor()
        p = "?" if sqlite else "%s"

        def when(at: datetime | None) -> Any:
            return sqlite_text(at) if sqlite else at  # SQLite compares times as text

        batch = 20_000
        for start in range(0, n, batch):
            event_rows = []
            delivery_rows = []
            for i in range(start, min(n, start + batch)):
                event_id = new_event_id()
                at = newest - timedelta(seconds=n - 1 - i)
                event_type, trigger, account = kind(i)
                body = search.payload(i, rng, n // 3)
                event_rows.append(
                    (event_id, event_type, account, trigger, f"ACoAA{i:012d}", body, when(at))
                )
                rows = [delivery_row(event_id, "crm", crm_status(i), at)]
                if i % 100 == 0:
                    spare = "dead" if i % 2000 == 0 else "delivered"
                    rows.append(delivery_row(event_id, "spare", spare, at))
                delivery_rows += [
                    (*r[:5], when(r[5]), when(r[6]), *r[7:9], when(r[9]), when(r[10])) for r in rows
                ]
            cur.executemany(
                "INSERT INTO events (id, type, account, trigger, item_key, payload, created_at) "
                f"VALUES ({', '.join([p] * 7)})",
                event_rows,
            )
            cur.executemany(
                "INSERT INTO deliveries (event_id, sink, status, attempts, held_by, "
                "next_attempt_at, last_attempt_at, last_status_code, last_error, delivered_at, "
                f"created_at) VALUES ({', '.join([p] * 11)})",
                delivery_rows,
            )
            if start % 200_000 == 0:
                common.log(f"  seeded {start + len(event_rows):,} events")
    engine.dispose()
    print(f"  seeded {n:,} events in {time.perf_counter() - started:.0f} s", flush=True)
    search.rebuild_search_index(url)


def seeded(url: str, n: int) -> bool:
    """Whether the database at ``url`` already holds the N seeded events."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(text("SELECT count(*) FROM events WHERE seq <= :n"), {"n": n})
            return found.scalar_one() == n
    except Exception:  # no database, or no table: seed it
        return False
    finally:
        engine.dispose()


def write_config(path: Path, url: str, port: int) -> Path:
    path.write_text(
        f'[engine]\ndatabase = "{url}"\nlisten = "127.0.0.1:{port}"\nretention = "3650d"\n'
        f'[console]\ntoken = "{TOKEN}"\n'
        '[source]\nbase_url = "http://127.0.0.1:9"\ntimeout = "1s"\n'
        '[[accounts]]\nname = "acme"\napi_key = "k"\n'
        '[[accounts]]\nname = "initech"\napi_key = "k"\n'
        '[triggers.leads]\ninterval = "1d"\n[triggers.connections]\ninterval = "1d"\n'
        '[triggers.campaigns]\ninterval = "1d"\n'
        '[[sinks]]\nname = "crm"\nurl = "http://127.0.0.1:9/crm"\n'
        '[[sinks]]\nname = "spare"\nurl = "http://127.0.0.1:9/spare"\n'
    )
    return path


class Daemon:
    """``trigger-engine run`` on a config, until :meth:`stop`."""

    def __init__(self, config: Path, port: int, log_path: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log = log_path.open("w")
        self.proc = subprocess.Popen(
            common.engine_cmd("-c", str(config), "run"),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=common.CHILD_ENV,
        )
        self.client = httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120
        )

    def wait_ready(self, timeout: float = 600.0) -> float:
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the daemon exited ({self.proc.returncode}): see {self.log.name}"
                )
            try:
                if self.client.get("/api/v1/status").status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the daemon did not answer in time")

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def cases(deep_cursor: str) -> list[tuple[str, str]]:
    def events(**params: str) -> str:
        return "/events?" + urlencode(params) if params else "/events"

    rare = search.RARE.split()[0].lower()
    return [
        ("events page", events()),
        ("events page, deep (cursor half way)", events(cursor=deep_cursor)),
        ("events status=dead", events(status="dead")),
        ("events status=failed", events(status="failed")),
        ("events status=held", events(status="held")),
        ("events sink=spare", events(sink="spare")),
        ("events type=campaign.new", events(type="campaign.new")),
        ("events account=initech", events(account="initech")),
        (f"events search={rare} (1 event)", events(search=rare)),
        (f"events search={COMMON}&status=dead", events(search=COMMON, status="dead")),
        ("dead and held page", "/deliveries"),
        ("overview /", "/"),
        ("/api/v1/status", "/api/v1/status"),
        ("/api/v1/events", "/api/v1/events?limit=50"),
        ("/api/v1/events?status=dead", "/api/v1/events?limit=50&status=dead"),
        ("/metrics", "/metrics"),
    ]


def bench(label: str, url: str, n: int, runs: int, reuse: bool, work: Path) -> list[str]:
    print(f"{label}: {url.split('@')[-1]}", flush=True)
    if reuse and seeded(url, n):
        print(f"  reusing the {n:,} events seeded before", flush=True)
    else:
        seed(url, n)
    engine = create_engine(url)
    with engine.connect() as conn:
        deep = conn.execute(text("SELECT id FROM events WHERE seq = :s"), {"s": n // 2})
        deep_cursor = deep.scalar_one()
    engine.dispose()
    port = common.free_port()
    config = write_config(work / f"{label.lower()}.toml", url, port)
    daemon = Daemon(config, port, work / f"{label.lower()}-daemon.log")
    lines = []
    try:
        print(f"  daemon ready in {daemon.wait_ready():.1f} s", flush=True)
        for name, path in cases(deep_cursor):
            daemon.client.get(path)  # warm: the first request of a kind pays the imports
            busy = common.wait_quiet()
            times = []
            note = ""
            for _ in range(runs):
                t0 = time.perf_counter()
                response = daemon.client.get(path)
                times.append((time.perf_counter() - t0) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(
                        f"{path}: HTTP {response.status_code}: {response.text[:300]}"
                    )
            body = response.text
            if "searched back to" in body or "looked at events back to" in body:
                note = "  (bounded: says how far back it looked)"
            p50, p95 = common.median(times), common.percentile(times, 95)
            mark = "meets" if p95 < TARGET_MS else "MISSES"
            line = (
                f"  {name:42s} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  {mark} < {TARGET_MS:.0f} ms"
                f"  [{len(body):,} B, busy {busy:.0%}]{note}"
            )
            print(line, flush=True)
            lines.append(line)
    finally:
        daemon.stop()
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--reuse", action="store_true", help="use databases seeded before")
    parser.add_argument("--keep", action="store_true", help="keep the seeded databases")
    parser.add_argument("--pg", default=PG, help="a PostgreSQL server's URL (any database)")
    parser.add_argument("--pg-db", default="te_console_bench", help="the database to seed")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args()
    common.header("console: pages and admin API at N events, over HTTP")
    keep_dir = Path(os.environ.get("TMPDIR") or tempfile.gettempdir()) / "te-console-bench"
    keep_dir.mkdir(exist_ok=True)
    with common.tmpdir("console") as tmp:
        work = Path(tmp)
        try:
            if not args.no_sqlite:
                db = keep_dir / f"console-{args.n}.db"
                if not args.reuse:
                    for stale in keep_dir.glob(f"console-{args.n}.db*"):
                        stale.unlink()
                bench("SQLite", f"sqlite:///{db}", args.n, args.runs, args.reuse, work)
            if not args.no_pg:
                admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
                name = args.pg_db
                with admin.connect() as conn:
                    exists = conn.execute(
                        text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": name}
                    ).first()
                    if exists and not args.reuse:
                        conn.execute(text(f'DROP DATABASE "{name}"'))
                        exists = None
                    if not exists:
                        conn.execute(text(f'CREATE DATABASE "{name}"'))
                try:
                    url = admin.url.set(database=name).render_as_string(hide_password=False)
                    bench("PostgreSQL", url, args.n, args.runs, args.reuse, work)
                finally:
                    if not args.keep:
                        with admin.connect() as conn:
                            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                    admin.dispose()
        finally:
            if not args.keep:
                shutil.rmtree(keep_dir, ignore_errors=True)
            for log_file in work.glob("*-daemon.log"):
                tail = log_file.read_text().splitlines()[-5:]
                common.log(f"{log_file.name}: " + " | ".join(tail))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
