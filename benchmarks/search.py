"""search: ``events show`` and ``events --search`` at a million events, SQLite and PostgreSQL.

    python benchmarks/search.py [--n 1000000] [--runs 20] [--pg URL] [--no-sqlite] [--no-pg]
                                [--cli]

Seeds N events in bulk (payloads shaped like simulator leads, about 600 bytes each, one
delivery each) into a fresh database made by the engine's migrations, the search index
included (SQLite: the FTS5 trigram table, rebuilt once after the bulk insert; PostgreSQL:
the events_search table and its pg_trgm GIN index, built once after it; the backlog emptied
as the engine's indexer would have). Then times, ``--runs`` times each, the repository calls
the commands make (``EventRepository.detail`` for ``events show ID``,
``EventRepository.search`` for ``events --search TEXT``, default limit 50): a rare term (one
event holds it: the newest-events windows, then the index), a common one (every event holds
it: the first window fills the page), one in nine events, a common term with a filter
(``--type campaign.new``, which no event has: the worst case, the index lists every event),
and a two-letter term (the bounded scan). Prints p50 and p95 in milliseconds. ``--cli``
also times one run of each through the real CLI (process start included).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trigger_engine.core.events import new_event_id
from trigger_engine.db.codecs import sqlite_text
from trigger_engine.db.store import Store
from trigger_engine.types import EventFilter

PG = os.environ.get("TRIGGER_ENGINE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
FIRST = ["Shaban", "Olga", "Émilie", "Kenji", "Ana", "Lars", "Priya", "Tomás", "Mei", "Omar"]
LAST = ["Ali", "Smirnova", "Dupont", "Tanaka", "Silva", "Berg", "Patel", "García", "Wang"]
COMPANIES = ["Acme GmbH", "Globex", "Initech", "Kaspersky", "Umbrella", "Hooli", "Stark"]
RARE = "Zyxwvut Rarename"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def payload(i: int, rng: random.Random, rare_at: int) -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    name = RARE if i == rare_at else f"{first} {last}"
    company = rng.choice(COMPANIES)
    return orjson.dumps(
        {
            "id": f"ACoAA{i:012d}",
            "campaign": {"id": rng.randint(1, 500), "name": f"Q{rng.randint(1, 4)} outreach"},
            "status": rng.choice(["approved", "pending", "connected", "replied"]),
            "linkedin_data": {
                "name": name,
                "headline": f"Head of Growth at {company}",
                "handle": f"{first.lower()}-{last.lower()}-{i:x}",
                "location": "Berlin, Germany",
            },
            "profile": {
                "name": name,
                "company": company,
                "work_email": f"{first.lower()}.{last.lower()}{i}@example.com",
            },
            "created_at": "2025-03-05 06:25:21+00:00",
        }
    ).decode()


def seed(url: str, n: int, backlog: int = 0) -> str:
    """N events (and a delivery each) in bulk; returns the id of the rare one."""
    Store.open(url).close()  # the schema and the search index, by the migrations
    engine = create_engine(url)
    rng = random.Random(7)
    rare_id = ""
    started = time.perf_counter()
    with engine.begin() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.execute(text("PRAGMA synchronous=OFF"))
        drop_search_index(conn)
        raw = conn.connection.driver_connection
        assert raw is not None
        cur = raw.cursor()
        p = "?" if sqlite else "%s"
        batch = 20_000
        for start in range(0, n, batch):
            events_rows = []
            delivery_rows = []
            for i in range(start, min(n, start + batch)):
                event_id = new_event_id()
                if i == n // 3:
                    rare_id = event_id
                at = T0 + timedelta(seconds=i)
                events_rows.append(
                    (
                        event_id,
                        "lead.new",
                        "acme",
                        "leads",
                        f"ACoAA{i:012d}",
                        payload(i, rng, n // 3),
                        at,
                    )
                )
                delivery_rows.append((event_id, "crm", "delivered", 1, at, 200, at, at))
            cur.executemany(
                "INSERT INTO events (id, type, account, trigger, item_key, payload, created_at) "
                f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})",
                events_rows if not sqlite else [(*r[:6], sqlite_text(r[6])) for r in events_rows],
            )
            cur.executemany(
                "INSERT INTO deliveries (event_id, sink, status, attempts, last_attempt_at, "
                f"last_status_code, delivered_at, created_at) VALUES ({p}, {p}, {p}, {p}, {p}, "
                f"{p}, {p}, {p})",
                delivery_rows
                if not sqlite
                else [
                    (*r[:4], sqlite_text(r[4]), r[5], sqlite_text(r[6]), sqlite_text(r[7]))
                    for r in delivery_rows
                ],
            )
    print(f"  seeded {n:,} events in {time.perf_counter() - started:.0f} s", flush=True)
    engine.dispose()
    rebuild_search_index(url, backlog)
    return rare_id


def drop_search_index(conn: Any) -> None:
    """Before a bulk insert: on PostgreSQL the GIN index goes (it is built once, faster,
    by :func:`rebuild_search_index`). The inserted events enter the search's backlog (its
    trigger costs a few microseconds an event) and are indexed there at once."""
    if conn.dialect.name != "sqlite":
        conn.execute(text("DROP INDEX ix_events_search_payload_trgm"))


def rebuild_search_index(url: str, backlog: int = 0) -> None:
    """After a bulk insert: every event indexed at once, as the engine's indexer
    (``db/search_index.py``) would have in the background, but the newest ``backlog``
    (left waiting for the indexer, as after a first poll that fired that many), then
    ANALYZE."""
    started = time.perf_counter()
    Store.open(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        upto = conn.execute(text("SELECT max(seq) FROM events")).scalar_one() - backlog
        key = "rowid" if conn.dialect.name == "sqlite" else "seq"  # FTS5's, or the table's
        conn.execute(
            text(
                f"INSERT INTO events_search ({key}, payload) "
                "SELECT seq, payload FROM events WHERE seq <= :upto"
            ),
            {"upto": upto},
        )
        conn.execute(text("DELETE FROM events_search_backlog WHERE seq <= :upto"), {"upto": upto})
        if conn.dialect.name != "sqlite":
            conn.execute(
                text(
                    "CREATE INDEX ix_events_search_payload_trgm ON events_search "
                    "USING gin (payload public.gin_trgm_ops)"
                )
            )
            conn.execute(text("ANALYZE"))  # autovacuum would have, by now
    engine.dispose()
    print(f"  indexed in {time.perf_counter() - started:.0f} s", flush=True)


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float, object]:
    times = []
    result: object = None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return statistics.median(times), p95, result


def bench(label: str, url: str, n: int, runs: int, cli: bool, backlog: int) -> None:
    print(f"{label}: {url.split('@')[-1]}", flush=True)
    rare_id = seed(url, n, backlog)
    if backlog:
        print(f"  the newest {backlog:,} events left in the indexer's backlog", flush=True)
    with Store.open(url) as store:
        cases: list[tuple[str, Callable[[], object]]] = [
            ("events show ID", lambda: store.events.detail(rare_id)),
            (
                f"--search '{RARE.split()[0].lower()}' (1 event)",
                lambda: store.events.search(EventFilter(), RARE.split()[0].lower(), limit=50),
            ),
            (
                "--search 'example.com' (every event)",
                lambda: store.events.search(EventFilter(), "example.com", limit=50),
            ),
            (
                "--search 'smirnova' (1 in 9)",
                lambda: store.events.search(EventFilter(), "smirnova", limit=50),
            ),
            (
                "--search 'example.com' --type campaign.new (none)",
                lambda: store.events.search(
                    EventFilter(types=("campaign.new",)), "example.com", limit=50
                ),
            ),
            (
                "--search 'zq' (2 letters: bounded scan)",
                lambda: store.events.search(EventFilter(), "zq", limit=50),
            ),
            (
                "events (no search, for reference)",
                lambda: store.events.list(EventFilter(), limit=50),
            ),
        ]
        for name, fn in cases:
            p50, p95, result = timed(fn, runs)
            found = getattr(result, "events", result)
            count = len(found) if isinstance(found, list) else (1 if found else 0)
            bounded = getattr(result, "bounded_at", None)
            extra = f", bounded at {bounded:,}" if bounded else ""
            print(
                f"  {name:55s} p50 {p50:8.1f} ms  p95 {p95:8.1f} ms  ({count} found{extra})",
                flush=True,
            )
    if cli:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "te.toml"
            config.write_text(
                f'[engine]\ndatabase = "{url}"\n[[accounts]]\nname = "acme"\napi_key = "k"\n'
                '[triggers.leads]\n[[sinks]]\nname = "crm"\nurl = "http://127.0.0.1:9/"\n'
            )
            for args in (
                ["events", "show", rare_id],
                ["events", "--search", "rarename"],
                ["events", "--search", "example.com"],
            ):
                t0 = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "trigger_engine", "-c", str(config), *args],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                print(
                    f"  CLI {' '.join(args)[:45]:45s} {time.perf_counter() - t0:6.2f} s "
                    f"(exit {done.returncode})",
                    flush=True,
                )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pg", default=PG)
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--cli", action="store_true")
    parser.add_argument("--backlog", type=int, default=0, help="the newest N events left unindexed")
    args = parser.parse_args()
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            bench("SQLite", f"sqlite:///{tmp}/search.db", args.n, args.runs, args.cli, args.backlog)
    if not args.no_pg:
        schema = f"bench_search_{os.getpid()}"
        admin = create_engine(args.pg)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            url = f"{args.pg}?options=-csearch_path%3D{schema}"
            bench("PostgreSQL", url, args.n, args.runs, args.cli, args.backlog)
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
