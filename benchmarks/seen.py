"""seen: a poll's cost against the size of the trigger's seen set (issue 16, target 2).

    python benchmarks/seen.py [--sizes 10000 1000000] [--runs 60] [--backends sqlite postgresql]
        [--page 10000] [--pg URL] [--no-profile]

One trigger (``leads``) whose seen set holds N keys, for each N of ``--sizes``, each in a
database of its own (a SQLite file; a PostgreSQL database ``seen_bench_N``, created and
dropped here), on each backend:

1. **Seeding.** The engine's own first poll of the simulator's 100 leads (a seeding poll:
   it remembers them), then N - 100 more keys shaped like the simulator's (39-character
   URN-like ids, random, so they spread over the whole index as real ones do) in pages of
   ``--page`` keys, one transaction each, through the engine's own insert
   (``db.seen.insert_keys``) with the trigger's ``items_known`` counter moved as a poll
   moves it. In a child process: its wall time, keys per second and peak RSS. A million
   keys from one first poll would need a list of a million leads (3 GB of JSON): paging
   through the repository is how a million keys get there in minutes. On PostgreSQL a
   ``VACUUM ANALYZE seen_keys`` follows (autovacuum would do it soon after so many
   inserts, maybe in the middle of the timed polls).
2. **Bytes per key on disk.** SQLite: the file's size (WAL checkpointed) / keys, and the
   table and its primary-key index from ``dbstat``. PostgreSQL: ``pg_total_relation_size``
   of ``seen_keys`` / keys, and the heap and the indexes apart.
3. **The poll.** One worker process per N holds the store open, as a daemon does, and runs
   ``Poller.poll`` (the engine's real poll: HTTP GET from the simulator, parse, key, the
   outbox transaction) on command. Before each pair of polls the simulator adds one lead and
   drops the oldest, so each poll's response holds the newest 100 leads, 1 of them new
   (checked: every timed poll must report 100 items and 1 new event). The two workers poll
   in turn (the order alternates), so both sizes see the same machine load; medians, p95
   and the ratio N_max / N_min. Each worker also reports where its poll's time went (the
   engine's functions wrapped by timers, never edited) and its RSS, ready and at the end.
4. **Status.** The store reads of ``status`` / ``GET /api/v1/status`` (``polls.states``,
   ``sinks.stats``, ``quarantine.counts``, ``nodes.views``): median per size. ``items_known``
   is a counter kept with each poll's write, not a count of the seen set.
5. (without ``--no-profile``) pyinstrument over 40 polls of the largest set, top functions.

Target: a poll at 1,000,000 known keys costs <= 1.1x the same poll at 10,000, on both
databases; RSS does not grow with the seen set. This script uses the issue-11 layout
(``trigger_engine.db.seen``); it does not run against snapshots older than that.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    CHILD_ENV,
    HERE,
    PROFILE_DIR,
    PY,
    SimulatorProcess,
    Split,
    _die_with_parent,
    engine_parts,
    fmt_s,
    header,
    log,
    median,
    percentile,
    pg_admin,
    pg_url,
    proc_status_kb,
    profile_hot_spots,
    run_child,
    self_peak_rss_kb,
    shown,
    tmpdir,
    wait_quiet,
    wrapped,
    write_config,
)

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
LIST_SIZE = 100  # the simulator's list: the newest 100 leads
URN_PREFIX, URN_LENGTH = "ACoAA", 39  # the simulator's lead ids (sandbox/records.py)


def urn(rng: random.Random) -> str:
    """A key shaped like the simulator's lead ids, random (one that happened to equal a
    listed lead's would only be skipped by the insert: the loop counts what went in)."""
    return URN_PREFIX + base64.urlsafe_b64encode(rng.randbytes(26))[: URN_LENGTH - 5].decode()


def the_job(engine: Any, config: Any) -> tuple[Any, Any]:
    jobs = engine.poll_jobs(config)
    assert len(jobs) == 1, jobs
    return jobs[0]


# --------------------------------------------------------------------------- seeding (child)


def seed_main(argv: list[str]) -> int:
    """``seen.py seed CONFIG N PAGE``: the first poll, then N - 100 keys in pages."""
    from sqlalchemy import update

    from trigger_engine.db import seen as seen_db
    from trigger_engine.db.schema import poll_state

    config_path, total, page = Path(argv[0]), int(argv[1]), int(argv[2])
    engine = engine_parts()
    config = engine.load_config(config_path)
    store = engine.Store.open(config.database_url())
    account, trigger = the_job(engine, config)
    try:
        with engine.Source(config.source) as src:
            t0 = time.perf_counter()
            report = engine.Poller(config, store, src).poll(account, trigger)
            first_poll = time.perf_counter() - t0
        assert report.ok and report.first_poll and report.remembered == LIST_SIZE, report
        rng = random.Random(total)
        rest = total - report.remembered
        rss_pages: list[int] = []
        inserted = 0
        t0 = time.perf_counter()
        while inserted < rest:
            fresh = [(urn(rng), None) for _ in range(min(page, rest - inserted))]
            with store.db.tx() as conn:
                new = seen_db.insert_keys(
                    store.db,
                    conn,
                    account.name,
                    trigger.name,
                    fresh,
                    seeded=False,
                    now=engine.now(),
                )
                conn.execute(
                    update(poll_state)
                    .where(poll_state.c.account == account.name)
                    .where(poll_state.c.trigger == trigger.name)
                    .values(items_known=poll_state.c.items_known + len(new))
                )
            inserted += len(new)
            rss_pages.append(proc_status_kb()["VmRSS"])
        pages_s = time.perf_counter() - t0
        state = store.polls.state(account.name, trigger.name)
        assert state is not None and state.items_known == total, state
    finally:
        store.close()
    print(
        json.dumps(
            {
                "first_poll_s": first_poll,
                "pages_s": pages_s,
                "keys": inserted,
                "pages": len(rss_pages),
                "rss_first_page_kb": rss_pages[0] if rss_pages else 0,
                "rss_last_page_kb": rss_pages[-1] if rss_pages else 0,
                "peak_rss_kb": self_peak_rss_kb(),
            }
        )
    )
    return 0


# --------------------------------------------------------------------------- the poll (child)

PHASES = [
    ("polling.source", "Source", "_get", "HTTP GET + parse"),
    ("polling.poller", None, "key_items", "key_items"),
    ("db.polls", "PollRepository", "state", "polls.state"),
    ("db.polls", "PollRepository", "record", "polls.record (the transaction)"),
    ("db.seen", None, "known_keys", "  seen.known_keys"),
    ("db.seen", None, "insert_keys", "  seen.insert_keys"),
    ("db.events", None, "insert_events", "  events.insert_events"),
]


def worker_main(argv: list[str]) -> int:
    """``seen.py worker CONFIG``: the store held open; one poll (or status) per stdin line."""
    import contextlib
    import importlib

    engine = engine_parts()
    config = engine.load_config(Path(argv[0]))
    store = engine.Store.open(config.database_url())
    account, trigger = the_job(engine, config)
    split = Split()
    with contextlib.ExitStack() as stack:
        for module, owner, attr, label in PHASES:
            mod = importlib.import_module(f"trigger_engine.{module}")
            stack.enter_context(wrapped(split, getattr(mod, owner) if owner else mod, attr, label))
        src = stack.enter_context(engine.Source(config.source))
        poller = engine.Poller(config, store, src)

        def reply(data: dict[str, Any]) -> None:
            data["rss_kb"] = proc_status_kb()["VmRSS"]
            sys.stdout.write(json.dumps(data) + "\n")
            sys.stdout.flush()

        reply({"ready": True})
        for line in sys.stdin:
            command = line.split()
            if not command or command[0] == "quit":
                break
            if command[0] == "poll":
                split.phases.clear()
                split.calls.clear()
                w0, c0 = time.perf_counter(), time.thread_time()
                report = poller.poll(account, trigger)
                wall, cpu = time.perf_counter() - w0, time.thread_time() - c0
                reply(
                    {
                        "wall": wall,
                        "cpu": cpu,
                        "ok": report.ok,
                        "items": report.items,
                        "new": report.new_events,
                        "phases": dict(split.phases),
                    }
                )
            elif command[0] == "status":
                w0 = time.perf_counter()
                status_reads(store)
                reply({"wall": time.perf_counter() - w0})
            elif command[0] == "profile":
                polls, sim_url, out = int(command[1]), command[2], Path(command[3])
                lines = profile_polls(lambda: poller.poll(account, trigger), polls, sim_url, out)
                reply({"lines": lines})
    store.close()
    return 0


def profile_polls(poll: Any, polls: int, sim_url: str, out: Path) -> list[str]:
    """pyinstrument over ``polls`` polls, each after a rotation (one new lead)."""
    import httpx

    with httpx.Client(timeout=60) as control:

        def many() -> None:
            for _ in range(polls):  # the rotation's request is sampled too: small
                control.post(f"{sim_url}/_bench/rotate").raise_for_status()
                poll()

        _none, lines = profile_hot_spots(many, save_to=out)
    return lines


def status_reads(store: Any) -> None:
    """The store reads behind ``status`` and ``GET /api/v1/status`` (cli/commands.py)."""
    moment = engine_parts().now()
    store.nodes.views(moment)
    store.polls.states()
    store.sinks.stats()
    store.quarantine.counts()


class Worker:
    """A worker child: the store open, one poll per request."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [PY, str(HERE / "seen.py"), "worker", str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=CHILD_ENV,
            cwd=HERE,
            text=True,
            preexec_fn=_die_with_parent,
        )
        self.ready = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited ({self.proc.wait()})")
        data: dict[str, Any] = json.loads(line)
        return data

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# --------------------------------------------------------------------------- the harness


def on_disk(backend: str, where: str, keys: int) -> dict[str, float]:
    """Bytes on disk of the seen set: whole file / total relation, and table vs index."""
    if backend == "sqlite":
        import sqlite3

        path = Path(where)
        con = sqlite3.connect(path)
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            try:
                sizes = dict(
                    con.execute(
                        "SELECT name, sum(pgsize) FROM dbstat "
                        "WHERE name IN ('seen_keys', 'sqlite_autoindex_seen_keys_1') "
                        "GROUP BY name"
                    ).fetchall()
                )
            except sqlite3.OperationalError:  # dbstat not compiled in
                sizes = {}
        finally:
            con.close()
        size = path.stat().st_size + sum(
            p.stat().st_size for p in path.parent.glob(path.name + "-wal")
        )
        return {
            "total": size / keys,
            "table": sizes.get("seen_keys", 0) / keys,
            "index": sizes.get("sqlite_autoindex_seen_keys_1", 0) / keys,
        }
    with pg_admin(where) as con:
        total, heap, index = con.execute(
            "SELECT pg_total_relation_size('seen_keys'), pg_relation_size('seen_keys'), "
            "pg_indexes_size('seen_keys')"
        ).fetchone()
    return {"total": total / keys, "table": heap / keys, "index": index / keys}


def bench_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    sizes: list[int] = args.sizes
    out: dict[str, Any] = {"seed": {}, "disk": {}, "polls": {}, "status": {}, "rss": {}}
    made_pg: list[str] = []
    workers: dict[int, Worker] = {}
    with tmpdir(f"seen-{backend}") as tmp_name, SimulatorProcess(leads=LIST_SIZE) as sim:
        tmp = Path(tmp_name)
        try:
            configs: dict[int, Path] = {}
            where: dict[int, str] = {}
            for n in sizes:
                if backend == "sqlite":
                    db_file = tmp / f"seen-{n}.db"
                    configs[n] = write_config(
                        tmp / f"seen-{n}.toml", base_url=sim.base_url, database=db_file
                    )
                    where[n] = str(db_file)
                else:
                    name = f"seen_bench_{n}"
                    with pg_admin(args.pg) as con:
                        con.execute(f'DROP DATABASE IF EXISTS "{name}"')
                        con.execute(f'CREATE DATABASE "{name}"')
                    made_pg.append(name)
                    where[n] = pg_url(args.pg, name)
                    configs[n] = write_config(
                        tmp / f"seen-{n}.toml",
                        base_url=sim.base_url,
                        database=tmp / "unused.db",
                        database_url=where[n],
                    )
                log(f"{backend}: seeding {n:,} keys in pages of {args.page:,}")
                busy = wait_quiet()
                seeded = run_child(
                    [PY, str(HERE / "seen.py"), "seed", str(configs[n]), str(n), str(args.page)],
                    timeout=3600,
                ).check()
                data = json.loads(seeded.stdout.strip().splitlines()[-1])
                data["busy"] = busy
                data["child_peak_rss_kb"] = seeded.maxrss_kb
                if backend == "postgresql":
                    t0 = time.perf_counter()
                    with pg_admin(where[n]) as con:
                        con.execute("VACUUM ANALYZE seen_keys")
                    data["vacuum_s"] = time.perf_counter() - t0
                out["seed"][n] = data
                out["disk"][n] = on_disk(backend, where[n], n)
            for n in sizes:
                workers[n] = Worker(configs[n])
            ready_rss = {n: w.ready["rss_kb"] for n, w in workers.items()}
            log(f"{backend}: warming up")
            for _ in range(args.warmup):
                sim.rotate()
                for n in sizes:
                    workers[n].ask("poll")
            walls: dict[int, list[float]] = {n: [] for n in sizes}
            cpus: dict[int, list[float]] = {n: [] for n in sizes}
            phases: dict[int, dict[str, list[float]]] = {n: {} for n in sizes}
            busy_seen: list[float] = []
            log(f"{backend}: {args.runs} timed polls per size")
            for i in range(args.runs):
                if i % 20 == 0:
                    busy_seen.append(wait_quiet())
                sim.rotate()
                for n in sizes if i % 2 == 0 else list(reversed(sizes)):
                    r = workers[n].ask("poll")
                    if not (r["ok"] and r["items"] == LIST_SIZE and r["new"] == 1):
                        raise RuntimeError(f"{backend} N={n}: unexpected poll {r}")
                    walls[n].append(r["wall"])
                    cpus[n].append(r["cpu"])
                    for label, secs in r["phases"].items():
                        phases[n].setdefault(label, []).append(secs)
            status: dict[int, list[float]] = {n: [] for n in sizes}
            for _ in range(args.status_runs):
                for n in sizes:
                    status[n].append(workers[n].ask("status")["wall"])
            end_rss = {n: workers[n].ask("status")["rss_kb"] for n in sizes}
            if args.profile:
                big = max(sizes)
                PROFILE_DIR.mkdir(parents=True, exist_ok=True)
                target = PROFILE_DIR / f"seen-{backend}-{big}.txt"
                log(f"{backend}: profiling 40 polls at N={big:,}")
                wait_quiet()
                out["profile"] = workers[big].ask(f"profile 40 {sim.base_url} {target}")["lines"]
                out["profile_file"] = str(target)
            for w in workers.values():
                w.close()
            workers.clear()
            for n in sizes:
                keys = n + args.warmup + args.runs + (40 if args.profile else 0) * (n == max(sizes))
                out["disk_after"] = out.get("disk_after", {})
                out["disk_after"][n] = on_disk(backend, where[n], keys)
            out["polls"] = {"wall": walls, "cpu": cpus, "phases": phases, "busy": busy_seen}
            out["status"] = status
            out["rss"] = {"ready": ready_rss, "end": end_rss}
        finally:
            for w in workers.values():
                w.close()
            for name in made_pg:
                with pg_admin(args.pg) as con:
                    con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return out


def p95(values: list[float]) -> float:
    return percentile(values, 95)


def report(backend: str, res: dict[str, Any], sizes: list[int]) -> None:
    lo, hi = min(sizes), max(sizes)
    print(f"\n-- {backend}")
    print("  seeding (a first poll of 100 leads, then the rest in pages, one transaction each)")
    print(
        f"    {'N':>10} {'first poll':>10} {'pages':>6} {'time':>9} {'keys/s':>9} "
        f"{'RSS 1st page':>12} {'last page':>10} {'peak':>8}{'  vacuum':>9}  load"
    )
    for n in sizes:
        s = res["seed"][n]
        rate = s["keys"] / s["pages_s"] if s["pages_s"] else float("nan")
        vac = f"{s['vacuum_s']:7.1f} s" if "vacuum_s" in s else f"{'-':>9}"
        print(
            f"    {n:>10,} {fmt_s(s['first_poll_s']):>10} {s['pages']:>6} "
            f"{fmt_s(s['pages_s']):>9} {rate:>9,.0f} {s['rss_first_page_kb'] / 1024:>9.1f} MB "
            f"{s['rss_last_page_kb'] / 1024:>7.1f} MB {s['child_peak_rss_kb'] / 1024:>5.0f} MB"
            f"{vac}  {100 * s['busy']:.0f}%"
        )
    print("  bytes per key on disk (after seeding; table and primary-key index apart)")
    for n in sizes:
        d = res["disk"][n]
        print(
            f"    {n:>10,}: {d['total']:6.1f} B/key in all"
            f" (table {d['table']:.1f}, index {d['index']:.1f})"
        )
    walls, cpus = res["polls"]["wall"], res["polls"]["cpu"]
    runs = len(walls[lo])
    print(
        f"  a poll of the newest {LIST_SIZE} leads, 1 new ({runs} timed runs per size, "
        f"interleaved; machine busy before blocks: "
        f"{', '.join(f'{100 * b:.0f}%' for b in res['polls']['busy'])})"
    )
    print(
        f"    {'N':>10} {'wall med':>10} {'p95':>10} {'cpu med':>10} {'p95':>10} "
        f"{'RSS ready':>10} {'RSS end':>9}"
    )
    for n in sizes:
        ms = [1000 * f(v[n]) for v in (walls, cpus) for f in (median, p95)]
        rss = [res["rss"][when][n] / 1024 for when in ("ready", "end")]
        print(
            f"    {n:>10,} "
            + " ".join(f"{m:>7.2f} ms" for m in ms)
            + f" {rss[0]:>7.1f} MB {rss[1]:>6.1f} MB"
        )
    print(
        f"    ratio {hi:,} / {lo:,}: wall median {median(walls[hi]) / median(walls[lo]):.3f}x, "
        f"p95 {percentile(walls[hi], 95) / percentile(walls[lo], 95):.3f}x; "
        f"cpu median {median(cpus[hi]) / median(cpus[lo]):.3f}x  (target <= 1.1x)"
    )
    print("  where a poll's time goes (median per poll, ms)")
    labels = list(res["polls"]["phases"][lo])
    print(f"    {'':<34}" + "".join(f"{n:>12,}" for n in sizes) + f"{'ratio':>8}")
    for label in labels:
        meds = [median(res["polls"]["phases"][n].get(label, [0.0])) for n in sizes]
        r = meds[-1] / meds[0] if meds[0] else float("nan")
        print(f"    {label:<34}" + "".join(f"{1000 * m:>12.3f}" for m in meds) + f"{r:>8.2f}")
    print("  status reads (polls.states, sinks.stats, quarantine.counts, nodes.views), median")
    st = res["status"]
    print(
        "    "
        + ", ".join(f"N={n:,}: {1000 * median(st[n]):.2f} ms" for n in sizes)
        + f"; ratio {median(st[hi]) / median(st[lo]):.2f}x"
    )
    if "profile" in res:
        print(
            f"  profile: 40 polls at N={hi:,} (pyinstrument; tree in {shown(res['profile_file'])})"
        )
        for line in res["profile"]:
            print(f"  {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--status-runs", type=int, default=20)
    parser.add_argument("--page", type=int, default=10_000)
    parser.add_argument(
        "--backends", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", PG_DEFAULT))
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    args = parser.parse_args()
    args.sizes = sorted(set(args.sizes))
    if min(args.sizes) < LIST_SIZE:
        parser.error(f"each size must be at least {LIST_SIZE} (the simulator's list)")
    header("seen: a poll against the size of the seen set (issue 16, target 2)")
    print(
        f"   PostgreSQL: databases seen_bench_N on {args.pg.rsplit('@', 1)[-1].rsplit('/', 1)[0]}"
    )
    for backend in args.backends:
        res = bench_backend(backend, args)
        report(backend, res, args.sizes)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("seed", "worker"):
        role = sys.argv[1]
        sys.exit((seed_main if role == "seed" else worker_main)(sys.argv[2:]))
    sys.exit(main())
