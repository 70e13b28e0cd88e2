"""Side measurements behind the suggestions in RESULTS.md (not benchmarks: no floor).

    python benchmarks/experiments.py [--n 100000]     # ~3 min
    (msgspec is optional: pip install msgspec to see E2)

E0  fetching the 100,000-lead body (317 MB) from the simulator process, no parsing: httpx as
    source.py reads it (stream, iter_bytes, join), httpx.get, and aiohttp;
E1  parsing the 100,000-lead body: json / orjson, with the cyclic GC on and held off;
E2  msgspec: the body as a list of raw JSON slices (no objects), then only each item's key;
E3  SQLite inserts of N events / seen keys / deliveries: SQLAlchemy Core executemany (what
    store.py does) against the sqlite3 driver's executemany on the same schema and file;
E4  the cost of one small commit with ``synchronous=FULL`` (store.py) and ``NORMAL``;
E5  recording 32 attempts: 32 UPDATE statements through SQLAlchemy (record_attempts) against
    one driver-level executemany.
E6  the persistence the deliver benchmark requires, alone (no HTTP): 10,000 pending
    deliveries claimed 128 at a time and their attempts recorded 256 at a time, through
    ``Store.claim_due`` / ``Store.record_attempts`` against the same statements through the
    bare sqlite3 driver (the floor of persisting them), CPU per delivery.

    python benchmarks/experiments.py --only e6       # ~10 s
"""

from __future__ import annotations

import argparse
import gc
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import common  # (puts the engine under test on the path)
import orjson


def timed(fn: Callable[[], Any], *, gc_off: bool = False, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        if gc_off:
            gc.disable()
        t0 = time.perf_counter()
        try:
            result = fn()
        finally:
            elapsed = time.perf_counter() - t0
            gc.enable()
        del result
        best = min(best, elapsed)
    return best


def e0_fetch(n: int) -> None:
    import asyncio

    import aiohttp
    import httpx

    with common.SimulatorProcess(leads=n) as sim:
        url = sim.leads_url

        def httpx_stream() -> int:
            with httpx.Client(timeout=600) as client, client.stream("GET", url) as response:
                return len(b"".join(response.iter_bytes()))

        def httpx_get() -> int:
            return len(httpx.get(url, timeout=600).content)

        def aiohttp_read() -> int:
            async def go() -> int:
                async with aiohttp.ClientSession() as session, session.get(url) as response:
                    return len(await response.read())

            return asyncio.run(go())

        httpx_get()  # warm
        results = {
            name: timed(fn, repeat=3)
            for name, fn in (
                ("httpx stream + join (source.py)", httpx_stream),
                ("httpx.get", httpx_get),
                ("aiohttp read()", aiohttp_read),
            )
        }
    print(
        f"E0  fetch {n:,} leads' body, best of 3: "
        + "; ".join(f"{name} {secs:.2f} s" for name, secs in results.items())
    )


def e1_e2(n: int) -> list[dict[str, Any]]:
    simulator, _make_app, _list_body = common.simulator_parts()
    sim = simulator(initial=0)
    sim.add_leads(n)
    body = orjson.dumps(sim.leads)
    del sim
    gc.collect()
    print(f"E1  parse {len(body) / 1e6:.0f} MB ({n:,} leads)")
    for name, fn in (("json.loads", json.loads), ("orjson.loads", orjson.loads)):
        on = timed(lambda fn=fn: fn(body))
        off = timed(lambda fn=fn: fn(body), gc_off=True)
        print(f"    {name:<13} GC on {on:6.2f} s   GC held off {off:6.2f} s")
    items: list[dict[str, Any]] = orjson.loads(body)  # kept for E2's check and E3
    try:
        import msgspec
    except ImportError:
        print("E2  msgspec not installed: skipped")
        return items

    class Key(msgspec.Struct):
        id: str

    raw_decoder = msgspec.json.Decoder(list[msgspec.Raw])
    key_decoder = msgspec.json.Decoder(Key)

    def raw_and_keys() -> tuple[list[Any], list[str]]:
        raws = raw_decoder.decode(body)
        return raws, [key_decoder.decode(r).id for r in raws]

    keys_only = msgspec.json.Decoder(list[Key])
    t_raw = timed(lambda: raw_decoder.decode(body))
    t_both = timed(raw_and_keys)
    t_keys = timed(lambda: keys_only.decode(body))
    raws, keys = raw_and_keys()
    assert keys == [item["id"] for item in items]
    print(
        f"E2  msgspec: list[Raw] {t_raw:.2f} s; list[Raw] + each item's key {t_both:.2f} s; "
        f"keys only (list[Struct(id)]) {t_keys:.2f} s; raw slices total "
        f"{sum(len(r) for r in raws) / 1e6:.0f} MB (kept as bytes: no re-encoding for events)"
    )
    return items


def e3_inserts(items: list[dict[str, Any]]) -> None:
    from sqlalchemy import create_engine, insert

    parts = common.engine_parts()
    new_event_id, schema = parts.new_event_id, parts.schema
    deliveries, events, metadata, seen_keys = (
        schema.deliveries,
        schema.events,
        schema.metadata,
        schema.seen_keys,
    )

    n = len(items)
    now = datetime.now(UTC)
    payloads = [orjson.dumps(item).decode() for item in items]
    ids = [new_event_id() for _ in items]
    with tempfile.TemporaryDirectory() as tmp:

        def fresh(name: str) -> Any:
            engine = create_engine(f"sqlite:///{tmp}/{name}.db")
            metadata.create_all(engine)
            return engine

        def sa_way() -> None:
            engine = fresh(f"sa{time.monotonic_ns()}")
            with engine.begin() as conn:
                for start in range(0, n, 5000):
                    chunk = range(start, min(n, start + 5000))
                    conn.execute(
                        insert(seen_keys),
                        [
                            {
                                "account": "a",
                                "trigger": "leads",
                                "key": items[i]["id"],
                                "first_seen_at": now,
                                "seeded": False,
                                "version": None,
                            }
                            for i in chunk
                        ],
                    )
                    conn.execute(
                        insert(events),
                        [
                            {
                                "id": ids[i],
                                "type": "lead.new",
                                "account": "a",
                                "trigger": "leads",
                                "item_key": items[i]["id"],
                                "payload": payloads[i],
                                "created_at": now,
                            }
                            for i in chunk
                        ],
                    )
                    conn.execute(
                        insert(deliveries),
                        [
                            {
                                "event_id": ids[i],
                                "sink": "crm",
                                "status": "pending",
                                "next_attempt_at": now,
                                "last_error": None,
                                "created_at": now,
                            }
                            for i in chunk
                        ],
                    )
            engine.dispose()

        def driver_way() -> None:
            engine = fresh(f"raw{time.monotonic_ns()}")
            engine.dispose()
            path = str(engine.url.database)
            con = sqlite3.connect(path, isolation_level=None)
            stamp = now.replace(tzinfo=None).isoformat(sep=" ")
            con.execute("BEGIN IMMEDIATE")
            con.executemany(
                "INSERT INTO seen_keys (account, trigger, key, first_seen_at, seeded) "
                "VALUES ('a', 'leads', ?, ?, 0)",
                ((item["id"], stamp) for item in items),
            )
            con.executemany(
                "INSERT INTO events (id, type, account, trigger, item_key, payload, created_at)"
                " VALUES (?, 'lead.new', 'a', 'leads', ?, ?, ?)",
                ((ids[i], items[i]["id"], payloads[i], stamp) for i in range(n)),
            )
            con.executemany(
                "INSERT INTO deliveries (event_id, sink, status, attempts, next_attempt_at, "
                "created_at) VALUES (?, 'crm', 'pending', 0, ?, ?)",
                ((ids[i], stamp, stamp) for i in range(n)),
            )
            con.execute("COMMIT")
            con.close()

        t_sa = timed(sa_way)
        t_raw = timed(driver_way)
        print(
            f"E3  insert {n:,} seen keys + {n:,} events + {n:,} deliveries in one transaction: "
            f"SQLAlchemy Core executemany {t_sa:.2f} s ({3 * n / t_sa:,.0f} rows/s); sqlite3 "
            f"executemany {t_raw:.2f} s ({3 * n / t_raw:,.0f} rows/s)"
        )


def e4_e5() -> None:
    from sqlalchemy import create_engine, event, update

    schema = common.engine_parts().schema
    deliveries, metadata = schema.deliveries, schema.metadata

    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("FULL", "NORMAL"):
            con = sqlite3.connect(f"{tmp}/c{mode}.db", isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(f"PRAGMA synchronous={mode}")
            con.execute("CREATE TABLE t (x INTEGER)")
            t0 = time.perf_counter()
            for i in range(200):
                con.execute("BEGIN IMMEDIATE")
                con.execute("INSERT INTO t VALUES (?)", (i,))
                con.execute("COMMIT")
            per = (time.perf_counter() - t0) / 200
            con.close()
            print(f"E4  one small transaction, WAL, synchronous={mode}: {1000 * per:.2f} ms")

        engine = create_engine(f"sqlite:///{tmp}/att.db")

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi: Any, _rec: Any) -> None:
            dbapi.execute("PRAGMA journal_mode=WAL")
            dbapi.execute("PRAGMA synchronous=FULL")

        metadata.create_all(engine)
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO events (id, type, account, trigger, item_key, payload, created_at) "
                "VALUES ('e', 't', 'a', 'l', 'k', '{}', '2025-01-01')"
            )
            conn.execute(
                deliveries.insert(),
                [
                    {"event_id": "e", "sink": f"s{i}", "status": "pending", "created_at": now}
                    for i in range(3200)
                ],
            )
        rounds = 50

        def per_row() -> None:
            for r in range(rounds):
                with engine.begin() as conn:
                    for i in range(r * 32 + 1, r * 32 + 33):
                        conn.execute(
                            update(deliveries)
                            .where(deliveries.c.id == i, deliveries.c.lease_owner.is_(None))
                            .values(
                                status="delivered",
                                attempts=1,
                                next_attempt_at=None,
                                lease_owner=None,
                                lease_expires_at=None,
                                last_attempt_at=now,
                                last_status_code=204,
                                last_error=None,
                                delivered_at=now,
                            )
                        )

        def batched() -> None:
            stamp = now.replace(tzinfo=None).isoformat(sep=" ")
            for r in range(rounds):
                with engine.begin() as conn:
                    conn.connection.driver_connection.executemany(  # type: ignore[union-attr]
                        "UPDATE deliveries SET status='delivered', attempts=1, "
                        "next_attempt_at=NULL, lease_owner=NULL, lease_expires_at=NULL, "
                        "last_attempt_at=?, last_status_code=204, last_error=NULL, "
                        "delivered_at=? WHERE id=? AND lease_owner IS NULL",
                        [(stamp, stamp, i) for i in range(r * 32 + 1, r * 32 + 33)],
                    )

        t_row = timed(per_row) / rounds
        t_batch = timed(batched) / rounds
        print(
            f"E5  record 32 attempts' delivery updates in one transaction: 32 SQLAlchemy "
            f"UPDATEs {1000 * t_row:.1f} ms; one executemany {1000 * t_batch:.1f} ms "
            f"(both with the commit)"
        )
        engine.dispose()


def e6_persist(n: int = 10_000, claim: int = 128, record: int = 256) -> None:
    from datetime import timedelta

    parts = common.engine_parts()
    Store, AttemptOutcome, DELIVERED = parts.Store, parts.AttemptOutcome, parts.DELIVERED

    stamp = "2026-11-27 07:00:00.000000"
    body = '{"id": %d, "name": "%s"}'

    def fresh(path: str) -> None:
        Store.open(f"sqlite:///{path}").close()  # the schema, by the migrations
        con = sqlite3.connect(path)
        con.executemany(
            "INSERT INTO events (seq, id, type, account, trigger, item_key, payload, created_at)"
            " VALUES (?, ?, 'lead.new', 'acme', 'leads', ?, ?, ?)",
            [(i, f"msg_{i:026d}", str(i), body % (i, "x" * 400), stamp) for i in range(1, n + 1)],
        )
        con.executemany(
            "INSERT INTO deliveries (id, event_id, sink, status, attempts, next_attempt_at,"
            " created_at) VALUES (?, ?, 'crm', 'pending', 0, ?, ?)",
            [(i, f"msg_{i:026d}", stamp, stamp) for i in range(1, n + 1)],
        )
        con.commit()
        con.close()

    def engine(path: str) -> float:
        store = Store.open(f"sqlite:///{path}")
        now = datetime(2026, 11, 27, 8, tzinfo=UTC)
        c0 = time.process_time()
        pending: list[Any] = []
        repo = parts.deliveries(store)
        while got := repo.claim_due(owner="me", now=now, lease=60, capacity={"crm": claim}):
            pending += [
                AttemptOutcome(d.id, "crm", d.event_id, 1, now, 1, 204, None, DELIVERED)
                for d in got
            ]
            if len(pending) >= record:
                repo.record_attempts(pending, owner="me")
                pending = []
        repo.record_attempts(pending, owner="me")
        spent = time.process_time() - c0
        store.close()
        return spent

    def bare(path: str) -> float:
        con = sqlite3.connect(path, isolation_level=None)
        con.execute("PRAGMA synchronous=FULL")
        t = (datetime(2026, 11, 27, 8) + timedelta(0)).isoformat(" ", "microseconds")
        c0 = time.process_time()
        pending: list[tuple[int, str]] = []
        while True:
            con.execute("BEGIN IMMEDIATE")
            rows = con.execute(
                "SELECT d.id, d.attempts, e.id, e.type, e.account, e.created_at, e.payload"
                " FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.sink = 'crm'"
                " AND d.status = 'pending' AND d.lease_owner IS NULL ORDER BY d.id LIMIT ?",
                (claim,),
            ).fetchall()
            ids = [r[0] for r in rows]
            con.execute(
                "UPDATE deliveries SET lease_owner = 'me', lease_expires_at = ?"
                f" WHERE id IN ({', '.join('?' * len(ids))})",
                (t, *ids),
            )
            con.execute("COMMIT")
            if not rows:
                break
            pending += [(r[0], r[2]) for r in rows]
            if len(pending) >= record:
                con.execute("BEGIN IMMEDIATE")
                con.executemany(
                    "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms,"
                    " status_code) VALUES (?, 1, ?, 1, 204)",
                    [(i, t) for i, _ in pending],
                )
                con.executemany(
                    "UPDATE deliveries SET status = 'delivered', attempts = 1, lease_owner ="
                    " NULL, lease_expires_at = NULL, last_attempt_at = ?, last_status_code ="
                    " 204, delivered_at = ? WHERE id = ? AND lease_owner = 'me'",
                    [(t, t, i) for i, _ in pending],
                )
                con.execute("COMMIT")
                pending = []
        spent = time.process_time() - c0
        con.close()
        return spent

    results: dict[str, list[float]] = {"engine": [], "bare": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(3):
            for name, run in (("bare", bare), ("engine", engine)):
                path = f"{tmp}/{name}{r}.db"
                fresh(path)
                results[name].append(run(path))
    e, b = (sorted(results[k])[1] / n * 1e6 for k in ("engine", "bare"))
    print(
        f"E6  persisting {n:,} deliveries (claims of {claim}, records of {record}), CPU per "
        f"delivery, median of 3: Store {e:.1f} us, bare sqlite3 {b:.1f} us ({e / b:.2f}x)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--only", choices=["e6"], help="run only this experiment")
    args = parser.parse_args()
    common.header("experiments behind the suggestions (no floor)")
    if args.only == "e6":
        e6_persist()
        return 0
    e0_fetch(args.n)
    items = e1_e2(args.n)
    e3_inserts(items)
    e4_e5()
    e6_persist()
    return 0


if __name__ == "__main__":
    sys.exit(main())
