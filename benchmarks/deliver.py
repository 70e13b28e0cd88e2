"""deliver: N pending events delivered to a fast local receiver, against bare aiohttp.

    python benchmarks/deliver.py [--n 10000] [--runs 3] [--no-profile] [--no-e2e]

Receiver: a bare ASGI app under uvicorn (uvloop, httptools) in its own process, answering 204.
Pending events are made by the engine itself: a poll with ``on_first_poll = "emit"`` over N
simulator leads into a fresh SQLite database, sink ``max_in_flight = 32`` and a ``secret``
(every request is signed), so N events and N pending deliveries. Each run starts from a copy
of that database.

* engine: ``Dispatcher.drain()`` in a fresh process, timed around the drain alone (claims,
  envelopes, signatures, POSTs, and every attempt recorded in SQLite);
* floor: the fastest bare Python client, aiohttp with 32 requests in flight on one session,
  posting the very same bodies and headers (built beforehand, untimed, by the engine's own
  functions) to the same receiver; on the stock asyncio loop and on uvloop.
* durable floor (issue 16): the same aiohttp client (asyncio loop), plus what any engine
  that signs and keeps every attempt must add: each request signed as it is sent (the
  engine's ``headers_for``) and each attempt recorded through the bare ``sqlite3`` driver
  with the engine's own two statements (insert the attempt, move the delivery on),
  ``executemany`` per batch of DURABLE_BATCH, one commit each, in this run's copy of the
  database (WAL, ``synchronous=FULL``). No claims: stricter than the engine's work.

Throughput is N / seconds; the figures are engine / durable floor throughput, target
>= 0.85 (issue 16), and engine / fastest bare aiohttp, target >= 0.8 (issue 7). The CPU
per request of each, and the engine's split of it by wrapped function, are printed.
Also: ``run --once`` end to end (start-up, a poll of N known leads, the drain) and, unless
``--no-profile``, a profile of one drain (store calls run inline in the main thread so that
pyinstrument sees them; saved under benchmarks/profiles/).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from common import (
    HERE,
    PROFILE_DIR,
    PY,
    SECRET,
    ReceiverProcess,
    SimulatorProcess,
    Split,
    engine_cmd,
    engine_parts,
    fmt_s,
    gc_timer,
    header,
    log,
    median,
    print_split,
    profile_hot_spots,
    run_child,
    shown,
    tmpdir,
    wait_quiet,
    wrapped,
    write_config,
)

TARGET = 0.8
IN_FLIGHT = 32
DURABLE_BATCH = 256  # attempts recorded per transaction by the durable floor
DURABLE_TARGET = 0.85  # issue 16, target 4: engine / durable floor throughput


def config_for(tmp: Path, name: str, sim_url: str, receiver_url: str, db: Path) -> Path:
    return write_config(
        tmp / f"{name}.toml",
        base_url=sim_url,
        database=db,
        triggers={"leads": {"interval": "5m", "on_first_poll": "emit"}},
        sinks=[{"name": "crm", "url": receiver_url, "secret": SECRET, "max_in_flight": IN_FLIGHT}],
    )


def copy_db(src: Path, dst: Path) -> None:
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


def db_counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return {
            "pending": conn.execute(
                "SELECT count(*) FROM deliveries WHERE status='pending'"
            ).fetchone()[0],
            "delivered": conn.execute(
                "SELECT count(*) FROM deliveries WHERE status='delivered'"
            ).fetchone()[0],
            "attempts": conn.execute("SELECT count(*) FROM attempts").fetchone()[0],
        }


# --------------------------------------------------------------------------- children


def child(args: list[str]) -> dict[str, Any]:
    result = run_child([PY, str(HERE / "deliver.py"), "--child", *args]).check()
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    data["maxrss_kb"] = result.maxrss_kb
    return data


def child_make(cfg: str) -> dict[str, Any]:
    """One poll (emit): N events and N pending deliveries."""
    engine = engine_parts()
    config = engine.load_config(Path(cfg))
    store = engine.Store.open(config.database_url())
    try:
        with engine.Source(config.source) as src:
            poller = engine.Poller(config, store, src)
            report = poller.poll(config.accounts[0], config.triggers["leads"])
    finally:
        store.close()
    return {"new_events": report.new_events}


def child_drain(cfg: str, profile_out: str | None) -> dict[str, Any]:
    """Time ``Dispatcher.drain()`` over what is pending; optionally profiled."""
    engine = engine_parts()
    delivery = engine.dispatcher
    config = engine.load_config(Path(cfg))
    store = engine.Store.open(config.database_url())
    split = Split()
    result: dict[str, Any] = {}

    async def drain() -> tuple[float, Any]:
        async with delivery.Dispatcher(config, store, owner="bench") as dispatcher:
            idle = loop_idle_meter()
            t0, c0 = time.perf_counter(), time.process_time()
            report = await dispatcher.drain()
            result["cpu"] = time.process_time() - c0
            result["idle"] = idle[0]
            return time.perf_counter() - t0, report

    def inline(fn: Any, /, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """in_daemon_thread's stand-in for the profile: the store call runs in the main
        thread (pyinstrument samples one thread), after one yield to the loop, as the
        thread version yields (the drain loop relies on it: done-callbacks run)."""

        async def call() -> Any:
            await asyncio.sleep(0)
            return fn(*args, **kwargs)

        return asyncio.ensure_future(call())

    repo = type(engine.deliveries(store))  # the class with claim_due and record_attempts
    try:
        with (
            gc_timer(split),
            wrapped(split, repo, "claim_due", "store: claim_due"),
            wrapped(split, repo, "record_attempts", "store: record_attempts"),
            wrapped(split, repo, "record_and_claim", "store: record_and_claim (one tx)"),
            # per request (signing, the body) only in the profiled drain: a wrapper costs
            # about a microsecond a call, which the timed drains should not carry; signing
            # is timed apart, by the floor's child, over the same bodies
            wrapped(split, engine.attempt, "headers_for", "delivery: headers_for (signing)")
            if profile_out
            else contextlib.nullcontext(),
        ):
            if profile_out:
                delivery.in_daemon_thread = inline  # type: ignore[assignment]
                (seconds, report), lines = profile_hot_spots(
                    lambda: asyncio.run(drain()), save_to=Path(profile_out)
                )
                result["profile"] = lines
            else:
                seconds, report = asyncio.run(drain())
    finally:
        store.close()
    split.add("drain total", seconds)
    result.update(
        seconds=seconds,
        attempted=report.attempted,
        delivered=report.delivered,
        failed=report.failed,
        split=print_split(split, "drain total"),
        phases={**split.phases, "GC pauses": split.gc_time},
    )
    return result


def claimed_bodies(cfg: str) -> tuple[Any, Any, list[tuple[Any, bytes]], Any]:
    """(config, sink, [(delivery, body)], store's time codec and queries): every pending
    delivery claimed (untimed) and its body built by the engine's own ``body_for``."""
    engine = engine_parts()
    config = engine.load_config(Path(cfg))
    sink = config.sinks[0]
    store = engine.Store.open(config.database_url())
    try:
        claimed = engine.deliveries(store).claim_due(
            owner="floor", now=engine.now(), lease=3600, capacity={sink.name: 10**9}
        )
        db = SimpleNamespace(queries=store.db.queries, to_db=store.db.times.to_db)
    finally:
        store.close()
    return config, sink, [(d, engine.body_for(sink, d)) for d in claimed], db


def loop_idle_meter() -> list[float]:
    """Time the running (stock asyncio) loop spends waiting in ``select`` with nothing to
    run, added up in the returned list's one item: wall time in which this process did
    not work (waiting for the receiver, or for the disk)."""
    idle = [0.0]
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    select = selector.select

    def timed(timeout: float | None = None) -> Any:
        t0 = time.perf_counter()
        try:
            return select(timeout)
        finally:
            idle[0] += time.perf_counter() - t0

    selector.select = timed
    return idle


async def post_all(
    url: str,
    requests: list[tuple[Any, bytes, dict[str, str] | None]],
    *,
    sign: Any = None,
    done: Any = None,
) -> dict[str, Any]:
    """IN_FLIGHT workers on one aiohttp session post every (delivery, body, headers) of
    ``requests``; headers None: made as the request is sent by ``sign(delivery, body,
    started)``. ``done(delivery, started, ms, status, answer)`` after each response (the
    durable floor records it there), and ``done(None, ...)`` once at the end. Timed from
    the first request to the last ``done``: wall, CPU, and the loop's idle time (stock
    asyncio loop only)."""
    import aiohttp

    ok = 0
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as session:
        items = iter(requests)

        async def worker() -> None:
            nonlocal ok
            for d, body, headers in items:
                started = time.time()
                if headers is None:
                    headers = sign(d, body, started)
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    answer = await response.read()
                    status = response.status
                ok += 200 <= status < 300
                if done is not None:
                    done(d, started, int((time.perf_counter() - t0) * 1000), status, answer)

        uv = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        idle = [0.0] if uv else loop_idle_meter()
        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        if done is not None:
            done(None, 0.0, 0, 0, b"")
        cpu, seconds = time.process_time() - c0, time.perf_counter() - t0
    return {"seconds": seconds, "ok": ok, "cpu": cpu, "idle": None if uv else idle[0]}


def child_floor(cfg: str, loop: str) -> dict[str, Any]:
    """Bare aiohttp, IN_FLIGHT requests in flight on one session, the engine's own bodies
    and headers (built before the clock starts)."""
    engine = engine_parts()
    _config, sink, bodies, _db = claimed_bodies(cfg)
    stamp = int(time.time())
    t0 = time.perf_counter()
    requests = [(d, body, engine.headers_for(sink, d, body, stamp)) for d, body in bodies]
    signing = time.perf_counter() - t0  # the engine's headers_for, each body once
    if loop == "uvloop":
        import uvloop

        got = uvloop.run(post_all(sink.url, requests))
    else:
        got = asyncio.run(post_all(sink.url, requests))
    return {**got, "requests": len(requests), "signing": signing}


def child_durable(cfg: str) -> dict[str, Any]:
    """The durable floor: what any engine that signs and persists every attempt must do
    on top of bare aiohttp. IN_FLIGHT requests in flight on one session (stock asyncio
    loop, as the engine), the engine's own bodies (built before the clock starts), each
    request signed when it is sent by the engine's ``headers_for`` (HMAC), and each
    attempt recorded through the bare ``sqlite3`` driver, into this run's copy of the
    database, with the engine's own statements (insert the attempt, move the delivery
    on), ``executemany`` per batch of DURABLE_BATCH, one commit each (WAL,
    ``synchronous=FULL``, as the engine's connection), on the loop's thread."""
    engine = engine_parts()
    config, sink, bodies, db = claimed_bodies(cfg)
    queries, to_db, headers_for = db.queries, db.to_db, engine.headers_for
    conn = sqlite3.connect(config.database_url().removeprefix("sqlite:///"))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    pending: list[tuple[Any, ...]] = []
    batches: list[int] = []

    def sign(d: Any, body: bytes, started: float) -> dict[str, str]:
        return headers_for(sink, d, body, int(started))  # type: ignore[no-any-return]

    def done(d: Any, started: float, ms: int, status: int, answer: bytes) -> None:
        """Keep the attempt; record a batch (one transaction) of DURABLE_BATCH, and the
        rest at the end (``d`` None)."""
        if d is not None:
            at = to_db(datetime.fromtimestamp(started, UTC))
            pending.append((d.id, d.attempts + 1, at, ms, status, None, answer.decode()))
            if len(pending) < DURABLE_BATCH:
                return
        if not pending:
            return
        batch = pending[:]
        pending.clear()
        conn.executemany(queries.insert_attempt, [r[:7] for r in batch])
        conn.executemany(
            queries.record_attempt,
            [
                ("delivered", None, r[1], 0, None, r[2], r[4], None, r[2], r[0], "floor")
                for r in batch
            ],
        )
        conn.commit()
        batches.append(len(batch))

    try:
        got = asyncio.run(
            post_all(sink.url, [(d, body, None) for d, body in bodies], sign=sign, done=done)
        )
    finally:
        conn.close()
    return {**got, "requests": len(bodies), "transactions": len(batches)}


# --------------------------------------------------------------------------- harness


def bench(n: int, runs: int, profile: bool, e2e: bool) -> dict[str, float]:
    with (
        tmpdir("deliver") as tmp_name,
        ReceiverProcess() as receiver,
        SimulatorProcess(leads=n) as sim,
    ):
        tmp = Path(tmp_name)
        template = tmp / "template.db"
        cfg = config_for(tmp, "template", sim.base_url, receiver.url, template)
        made = child(["make", str(cfg)])
        assert made["new_events"] == n, made
        print(
            f"\n-- N = {n:,} pending events (one sink, max_in_flight = {IN_FLIGHT}, signed), "
            f"receiver {receiver.url}"
        )
        print(f"   template: {db_counts(template)}")

        engine, floor_a, floor_u, durable, e2e_walls, busy = [], [], [], [], [], []
        cpu: dict[str, list[float]] = {"fa": [], "fu": [], "d": [], "e": []}
        idle: dict[str, list[float]] = {"fa": [], "d": [], "e": []}
        splits: list[dict[str, Any]] = []
        signing: list[float] = []  # headers_for over the N bodies, timed by the floors
        durable_tx = 0
        for r in range(runs):
            busy.append(wait_quiet())
            log(f"run {r + 1}/{runs} (machine {busy[-1]:.0%} busy before) ...")
            for name, runs_, loop in (("fa", floor_a, "asyncio"), ("fu", floor_u, "uvloop")):
                db = tmp / f"{name}{r}.db"
                copy_db(template, db)
                c = config_for(tmp, f"{name}{r}", sim.base_url, receiver.url, db)
                before = receiver.count()
                got = child(["floor", str(c), loop])
                assert got["ok"] == n and receiver.count() - before == n, got
                runs_.append(got["seconds"])
                cpu[name].append(got["cpu"])
                signing.append(got["signing"])
                if got["idle"] is not None:
                    idle[name].append(got["idle"])
                db.unlink()
            db = tmp / f"d{r}.db"
            copy_db(template, db)
            c = config_for(tmp, f"d{r}", sim.base_url, receiver.url, db)
            before = receiver.count()
            got = child(["durable", str(c)])
            counts = db_counts(db)
            assert got["ok"] == n and receiver.count() - before == n, got
            assert counts["attempts"] == n and counts["delivered"] == n, counts
            durable.append(got["seconds"])
            cpu["d"].append(got["cpu"])
            idle["d"].append(got["idle"])
            durable_tx = got["transactions"]
            db.unlink()
            db = tmp / f"e{r}.db"
            copy_db(template, db)
            c = config_for(tmp, f"e{r}", sim.base_url, receiver.url, db)
            before = receiver.count()
            got = child(["drain", str(c)])
            counts = db_counts(db)
            assert got["delivered"] == n and receiver.count() - before == n, (got, counts)
            assert counts["attempts"] == n and counts["delivered"] == n, counts
            engine.append(got["seconds"])
            cpu["e"].append(got["cpu"])
            idle["e"].append(got["idle"])
            last_split = got["split"]
            splits.append(got["phases"])
            db.unlink()
            if e2e:
                db = tmp / f"x{r}.db"
                copy_db(template, db)
                c = config_for(tmp, f"x{r}", sim.base_url, receiver.url, db)
                res = run_child(engine_cmd("run", "--once", "-c", str(c))).check()
                assert db_counts(db)["delivered"] == n
                e2e_walls.append(res.wall)
                db.unlink()

        def line(label: str, secs: list[float]) -> str:
            m = median(secs)
            return (
                f"   {label:<44} {fmt_s(m):>10} {n / m:9,.0f} req/s   "
                f"[{', '.join(f'{s:.2f}' for s in secs)}]"
            )

        print(f"   {'':44} {'median':>10} {'throughput':>15}")
        print(line("floor: aiohttp, 32 in flight, asyncio loop", floor_a))
        print(line("floor: aiohttp, 32 in flight, uvloop", floor_u))
        print(line(f"durable floor: + signing + sqlite3 ({durable_tx} tx)", durable))
        print(line("engine: Dispatcher.drain() (attempts recorded)", engine))
        e_tp = n / median(engine)
        a_tp, u_tp = n / median(floor_a), n / median(floor_u)
        d_tp = n / median(durable)
        best = max(a_tp, u_tp)
        verdict = "meets" if e_tp / d_tp >= DURABLE_TARGET else "MISSES"
        print(
            f"   RATIO engine / durable floor throughput = {e_tp / d_tp:.2f}x  "
            f"(target >= {DURABLE_TARGET}x: {verdict})"
        )
        print(f"   ratio engine / fastest bare aiohttp     = {e_tp / best:.2f}x")
        print(f"   ratio engine / asyncio-loop aiohttp     = {e_tp / a_tp:.2f}x")
        print(f"   ratio durable floor / fastest aiohttp   = {d_tp / best:.2f}x")
        per = {k: median(v) / n * 1e6 for k, v in cpu.items()}
        print(
            f"   CPU per request (the client process, all threads; medians): aiohttp asyncio "
            f"{per['fa']:.0f} us, aiohttp uvloop {per['fu']:.0f} us, durable floor "
            f"{per['d']:.0f} us, engine {per['e']:.0f} us"
        )
        wall = {"fa": floor_a, "d": durable, "e": engine}
        print(
            "   wall per request = busy + loop idle (waiting in select: for the receiver, or "
            "the disk; medians):"
        )
        for key, label in (("fa", "aiohttp asyncio"), ("d", "durable floor"), ("e", "engine")):
            w, i = median(wall[key]) / n * 1e6, median(idle[key]) / n * 1e6
            print(f"     {label:<16} wall {w:6.1f} us = busy {w - i:6.1f} + idle {i:6.1f} us")
        print("   engine's CPU per request, split (medians over the runs; wall time of the")
        print("   wrapped store calls, which are CPU-bound but for the commit's fsync; signing")
        print("   timed apart, the engine's headers_for over the same bodies; the rest is")
        print("   aiohttp and the pipeline):")
        labels = list(dict.fromkeys(k for sp in splits for k in sp))
        labels = [k for k in labels if k not in ("drain total", "GC pauses")]
        sign_us = median(signing) / n * 1e6
        print(f"     {'delivery: headers_for (signing), apart':<44} {sign_us:6.1f} us")
        split_sum = sign_us
        for label in labels:
            us = median([s.get(label, 0.0) for s in splits]) / n * 1e6
            split_sum += us
            print(f"     {label:<44} {us:6.1f} us")
        gc_us = median([s.get("GC pauses", 0.0) for s in splits]) / n * 1e6
        print(f"     {'(of which GC pauses, all phases)':<44} {gc_us:6.1f} us")
        rest = per["e"] - split_sum
        print(f"     {'rest: HTTP (aiohttp), outcome, pipeline':<44} {rest:6.1f} us")
        print(f"     {'engine total (CPU)':<44} {per['e']:6.1f} us")
        print(
            f"     {'durable floor total (CPU), for comparison':<44} {per['d']:6.1f} us; "
            f"of which beyond aiohttp {per['d'] - per['fa']:.1f} us"
        )
        if e2e_walls:
            m = median(e2e_walls)
            walls = ", ".join(f"{s:.2f}" for s in e2e_walls)
            print(
                f"   run --once end to end (start-up + poll of {n:,} known + drain): "
                f"{fmt_s(m)} ({n / m:,.0f} deliveries/s)  [{walls}]"
            )
        print(f"   other load before each run: {', '.join(f'{b:.0%}' for b in busy)} of 2 cores")
        print(
            "   engine's split of the last drain (wrapped functions; a store call runs on the "
            "loop's thread when SQLite is free at once, else in a daemon thread):"
        )
        for text in last_split:
            print(f" {text}")
        if profile:
            log("profile ...")
            db = tmp / "p.db"
            copy_db(template, db)
            c = config_for(tmp, "p", sim.base_url, receiver.url, db)
            out = PROFILE_DIR / f"deliver_{n}.txt"
            got = child(["drain", str(c), str(out)])
            print(
                f"   profile of one drain, store calls inline (pyinstrument; tree in "
                f"{shown(out)}); that drain took {fmt_s(got['seconds'])}:"
            )
            for text in got["profile"]:
                print(f" {text}")
        return {
            "n": n,
            "engine": e_tp,
            "floor": best,
            "ratio": e_tp / best,
            "durable": d_tp,
            "durable_ratio": e_tp / d_tp,
        }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        role, rest = sys.argv[2], sys.argv[3:]
        if role == "make":
            out = child_make(rest[0])
        elif role == "drain":
            out = child_drain(rest[0], rest[1] if len(rest) > 1 else None)
        elif role == "durable":
            out = child_durable(rest[0])
        else:
            out = child_floor(rest[0], rest[1])
        print(json.dumps(out))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-e2e", action="store_true")
    args = parser.parse_args()
    header("deliver (issue 7): N pending deliveries vs bare aiohttp, same receiver")
    r = bench(args.n, args.runs, not args.no_profile, not args.no_e2e)
    print("\n-- summary")
    print(
        f"   deliver N={r['n']:,}: engine {r['engine']:,.0f} req/s, durable floor "
        f"{r['durable']:,.0f} req/s -> {r['durable_ratio']:.2f}x (target >= {DURABLE_TARGET}x); "
        f"bare aiohttp {r['floor']:,.0f} req/s -> {r['ratio']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
