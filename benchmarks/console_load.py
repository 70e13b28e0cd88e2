"""console_load: the daemon's delivery throughput with the console open on the events page,
against the same daemon without it.

    python benchmarks/console_load.py [--pending 150000] [--runs 3] [--every 5]

Seeds once, in bulk, a SQLite database made by the engine's migrations with P events (lead
payloads, :func:`search.payload`) and one pending delivery each to ``crm`` (a fast local
receiver, :class:`common.ReceiverProcess`; the sink signed, ``max_in_flight = 32``). Each
run copies it and starts the real daemon (``trigger-engine run``, ``[engine] listen`` and
``[console]``; its upstream unreachable, so it only delivers), which drains the backlog.
Throughput: deliveries per second between the receiver's count passing 10 % and 90 % of P
(start-up and the tail left out), read every 0.25 s. On a shared machine other work moves
the throughput of a run by 2x and more: the ratio is printed of the medians and of each
run's pair (its two halves ran back to back).

"With the console": a client does what an open events page does (``static/console.js``):
it loads ``/events`` and the overview ``/`` once, then every ``--every`` seconds asks
``/api/v1/events?limit=50`` (the live events list) and ``/api/v1/status`` (the live
overview), one after the other, with the token. Runs without and with alternate (the
order flips each run). Prints each run, the medians, the ratio with / without (target
>= 0.90) and the console requests' latencies.
"""

from __future__ import annotations

import argparse
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import search

from trigger_engine.core.events import new_event_id
from trigger_engine.db.codecs import sqlite_text
from trigger_engine.db.store import Store

TOKEN = "console-load-token-2b8e41"
TARGET = 0.90
IN_FLIGHT = 32


def seed(db: Path, n: int) -> None:
    """N events, each with one pending delivery to crm, due now."""
    url = f"sqlite:///{db}"
    Store.open(url).close()
    engine = create_engine(url)
    rng = random.Random(7)
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("PRAGMA synchronous=OFF"))
        search.drop_search_index(conn)
        raw = conn.connection.driver_connection
        assert raw is not None
        cur = raw.cursor()
        stamp = sqlite_text(at)  # as the engine stores times: compared as text
        for start in range(0, n, 20_000):
            ids = [new_event_id() for _ in range(start, min(n, start + 20_000))]
            cur.executemany(
                "INSERT INTO events (id, type, account, trigger, item_key, payload, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        eid,
                        "lead.new",
                        "acme",
                        "leads",
                        f"ACoAA{start + j:012d}",
                        search.payload(start + j, rng, -1),
                        stamp,
                    )
                    for j, eid in enumerate(ids)
                ],
            )
            cur.executemany(
                "INSERT INTO deliveries (event_id, sink, status, attempts, next_attempt_at, "
                "created_at) VALUES (?, 'crm', 'pending', 0, ?, ?)",
                [(eid, stamp, stamp) for eid in ids],
            )
    engine.dispose()
    print(f"  seeded {n:,} pending deliveries in {time.perf_counter() - started:.0f} s", flush=True)
    search.rebuild_search_index(url)


def write_config(path: Path, db: Path, port: int, receiver_url: str) -> Path:
    path.write_text(
        f'[engine]\ndatabase = "sqlite:///{db}"\nlisten = "127.0.0.1:{port}"\n'
        'retention = "3650d"\n'
        f'[console]\ntoken = "{TOKEN}"\n'
        '[source]\nbase_url = "http://127.0.0.1:9"\ntimeout = "1s"\n'
        '[[accounts]]\nname = "acme"\napi_key = "k"\n'
        '[triggers.leads]\ninterval = "1d"\n'
        f'[[sinks]]\nname = "crm"\nurl = "{receiver_url}"\nsecret = "{common.SECRET}"\n'
        f"max_in_flight = {IN_FLIGHT}\n"
    )
    return path


class ConsoleClient(threading.Thread):
    """What an open events page asks of the daemon, until :meth:`stop`."""

    def __init__(self, base: str, every: float) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        )
        self.every = every
        self.halt = threading.Event()
        self.latencies: dict[str, list[float]] = {}
        self.errors = 0

    def get(self, path: str) -> None:
        t0 = time.perf_counter()
        try:
            ok = self.client.get(path).status_code == 200
        except httpx.TransportError:
            ok = False
        self.errors += 0 if ok else 1
        name = path.split("?")[0]
        self.latencies.setdefault(name, []).append((time.perf_counter() - t0) * 1000)

    def run(self) -> None:
        self.get("/events")
        self.get("/")
        while not self.halt.wait(self.every):
            self.get("/api/v1/events?limit=50")
            self.get("/api/v1/status")

    def stop(self) -> None:
        self.halt.set()
        self.join(120)
        self.client.close()


def one_run(
    template: Path,
    work: Path,
    receiver: common.ReceiverProcess,
    n: int,
    console: bool,
    every: float,
) -> tuple[float, ConsoleClient | None]:
    db = work / "run.db"
    for stale in work.glob("run.db*"):
        stale.unlink()
    with sqlite3.connect(template) as a, sqlite3.connect(db) as b:
        a.backup(b)
    port = common.free_port()
    config = write_config(work / "run.toml", db, port, receiver.url)
    base_count = receiver.count()
    common.wait_quiet()
    log_file = (work / f"daemon-{'console' if console else 'alone'}.log").open("a")
    proc = subprocess.Popen(
        common.engine_cmd("-c", str(config), "run"),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=common.CHILD_ENV,
    )
    client: ConsoleClient | None = None
    samples: list[tuple[float, int]] = []
    try:
        if console:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            client = ConsoleClient(f"http://127.0.0.1:{port}", every)
            client.start()
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline:
            got = receiver.count() - base_count
            samples.append((time.monotonic(), got))
            if got >= n:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited ({proc.returncode}): {log_file.name}")
            time.sleep(0.25)
    finally:
        if client is not None:
            client.stop()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()
    lo = next(s for s in samples if s[1] >= 0.1 * n)
    hi = next(s for s in samples if s[1] >= 0.9 * n)
    return (hi[1] - lo[1]) / (hi[0] - lo[0]), client


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pending", type=int, default=150_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--every", type=float, default=5.0, help="the live page's interval (s)")
    args = parser.parse_args()
    common.header("console_load: delivery throughput with and without the console open")
    n = args.pending
    with common.tmpdir("console-load") as tmp, common.ReceiverProcess() as receiver:
        work = Path(tmp)
        template = work / "template.db"
        seed(template, n)
        results: dict[bool, list[float]] = {False: [], True: []}
        clients: list[ConsoleClient] = []
        for run in range(args.runs):
            order = (False, True) if run % 2 == 0 else (True, False)
            for console in order:
                rate, client = one_run(template, work, receiver, n, console, args.every)
                results[console].append(rate)
                if client is not None:
                    clients.append(client)
                label = "with the console" if console else "without        "
                print(f"  run {run + 1} {label}: {rate:8.0f} deliveries/s", flush=True)
        alone = common.median(results[False])
        with_console = common.median(results[True])
        ratio = with_console / alone
        print(
            f"N = {n:,} pending deliveries, {args.runs} runs each, interleaved; console client "
            f"every {args.every:g} s"
        )
        print(f"  without the console: median {alone:8.0f} deliveries/s")
        print(f"  with the console:    median {with_console:8.0f} deliveries/s")
        mark = "meets" if ratio >= TARGET else "MISSES"
        print(f"  ratio with / without (medians): {ratio:.3f}  ({mark} >= {TARGET:.2f})")
        # each run's two halves ran back to back: their ratio drifts less with other load
        pairs = [w / a for w, a in zip(results[True], results[False], strict=True)]
        print(
            f"  ratio per run: {', '.join(f'{r:.3f}' for r in pairs)}; "
            f"median {common.median(pairs):.3f}"
        )
        for name in sorted({k for c in clients for k in c.latencies}):
            times = [t for c in clients for t in c.latencies.get(name, [])]
            print(
                f"  console {name:20s} {len(times):4d} requests  p50 "
                f"{common.median(times):7.1f} ms  p95 {common.percentile(times, 95):7.1f} ms"
            )
        print(f"  console request errors: {sum(c.errors for c in clients)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
