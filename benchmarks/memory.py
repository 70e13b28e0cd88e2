"""memory: peak RSS against the response body; RSS over repeated polling stays flat.

    python benchmarks/memory.py [--sizes 10000 30000 100000]
        [--polls 200] [--poll-leads 2000] [--daemon-seconds 120] [--skip-peak]

A. Peak RSS (the child's own ``ru_maxrss``, ``os.wait4``) of ``trigger-engine run --once``
   for poll-known (all N leads known: a seeding run first) and poll-new (emit, fresh database,
   the one sink disabled so delivery rows are written but nothing is sent), for each N, next
   to the floor process (httpx + ``json.loads``) and the body size. The figure: peak RSS /
   body bytes, and the slope between sizes (MB of RSS per MB of body).
B. In process: ``--polls`` polls (``Poller.poll``) of a ``--poll-leads``-lead list whose size
   never changes (before each poll the simulator adds one lead and drops the oldest, so every
   poll fires one event); RSS (``/proc/self/status``) after each poll; first vs last, and the
   slope over the second half.
C. The daemon, ``trigger-engine run``, for ``--daemon-seconds`` (leads every 1 s over
   ``--poll-leads`` leads rotated every second, each new lead delivered to a local receiver):
   its RSS sampled from /proc every 5 s; the first minute vs the end, and the slope.
   (The issue asks for 30 minutes; 2 minutes by default keeps this script under 10.)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    CHILD_ENV,
    HERE,
    PY,
    SECRET,
    ReceiverProcess,
    SimulatorProcess,
    _die_with_parent,
    engine_cmd,
    engine_parts,
    floor_fetch_cmd,
    header,
    log,
    mb,
    proc_status_kb,
    run_child,
    tmpdir,
    wait_quiet,
    write_config,
)


def peak_rss(sizes: list[int]) -> None:
    print("\nA. peak RSS of one run --once against the response body (one run each)")
    print(
        f"   {'N':>8} {'body':>10} {'floor':>10} {'known':>10} {'new':>10} "
        f"{'floor/body':>10} {'known/body':>10} {'new/body':>9}"
    )
    rows = []
    for n in sizes:
        busy = wait_quiet()
        log(f"N={n:,} (machine {busy:.0%} busy) ...")
        with tmpdir("memory") as tmp_name, SimulatorProcess(leads=n) as sim:
            tmp = Path(tmp_name)
            body = sim.info["leads_body_bytes"]
            floor = run_child(floor_fetch_cmd(sim.leads_url)).check()
            known_cfg = write_config(
                tmp / "known.toml",
                base_url=sim.base_url,
                database=tmp / "known.db",
                triggers={"leads": {"interval": "5m"}},
            )
            run_child(engine_cmd("run", "--once", "-c", str(known_cfg))).check()  # seeds
            known = run_child(engine_cmd("run", "--once", "-c", str(known_cfg))).check()
            new_cfg = write_config(
                tmp / "new.toml",
                base_url=sim.base_url,
                database=tmp / "new.db",
                triggers={"leads": {"interval": "5m", "on_first_poll": "emit"}},
                sinks=[{"name": "crm", "url": "http://127.0.0.1:9/hook", "secret": SECRET}],
            )
            run_child(engine_cmd("sinks", "disable", "crm", "-c", str(new_cfg))).check()
            new = run_child(engine_cmd("run", "--once", "-c", str(new_cfg))).check()
        kb = 1024
        f, k, w = floor.maxrss_kb * kb, known.maxrss_kb * kb, new.maxrss_kb * kb
        rows.append((n, body, f, k, w))
        print(
            f"   {n:>8,} {mb(body):>10} {mb(f):>10} {mb(k):>10} {mb(w):>10} "
            f"{f / body:9.1f}x {k / body:9.1f}x {w / body:8.1f}x"
        )
    if len(rows) >= 2:
        (n0, b0, f0, k0, w0), (n1, b1, f1, k1, w1) = rows[0], rows[-1]
        db = b1 - b0
        print(
            f"   slope {n0:,} -> {n1:,} leads (MB of peak RSS per MB of body): "
            f"floor {(f1 - f0) / db:.1f}, poll-known {(k1 - k0) / db:.1f}, "
            f"poll-new {(w1 - w0) / db:.1f}"
        )


# --------------------------------------------------------------------------- B


def child_repeat(cfg: str, polls: int, sim_url: str) -> dict[str, Any]:
    import httpx

    engine = engine_parts()
    config = engine.load_config(Path(cfg))
    store = engine.Store.open(config.database_url())
    rss: list[int] = []
    fired = 0
    try:
        with engine.Source(config.source) as src, httpx.Client() as control:
            poller = engine.Poller(config, store, src)
            account, trigger = config.accounts[0], config.triggers["leads"]
            for i in range(polls):
                if i:
                    control.post(f"{sim_url}/_bench/rotate").raise_for_status()
                report = poller.poll(account, trigger)
                assert report.ok, report
                fired += report.new_events
                rss.append(proc_status_kb()["VmRSS"])
    finally:
        store.close()
    return {"rss_kb": rss, "fired": fired, "hwm_kb": proc_status_kb()["VmHWM"]}


def repeated(polls: int, leads: int) -> None:
    print(
        f"\nB. RSS over {polls} in-process polls of a {leads:,}-lead list of constant size "
        "(one new lead per poll, so each poll after the first fires one event)"
    )
    with tmpdir("memory-repeat") as tmp_name, SimulatorProcess(leads=leads) as sim:
        tmp = Path(tmp_name)
        cfg = write_config(
            tmp / "repeat.toml",
            base_url=sim.base_url,
            database=tmp / "repeat.db",
            triggers={"leads": {"interval": "5m"}},
            sinks=[{"name": "crm", "url": "http://127.0.0.1:9/hook", "secret": SECRET}],
        )
        run_child(engine_cmd("sinks", "disable", "crm", "-c", str(cfg))).check()
        log(f"{polls} polls ...")
        result = run_child(
            [PY, str(HERE / "memory.py"), "--child-repeat", str(cfg), str(polls), sim.base_url]
        ).check()
    data = json.loads(result.stdout.strip().splitlines()[-1])
    rss = [kb / 1024 for kb in data["rss_kb"]]
    marks = [i for i in (1, 2, 10, 50, 100, 150, 200, 300, 500, 1000) if i <= len(rss)]
    marks = sorted({*marks, len(rss)})
    print("   RSS after poll " + ", ".join(f"#{i}: {rss[i - 1]:.1f} MB" for i in marks))
    half = len(rss) // 2
    tail = rss[half:]
    slope = fit_slope(list(enumerate(tail, start=half))) * 1024  # least squares, KB/poll
    print(
        f"   first {rss[0]:.1f} MB, last {rss[-1]:.1f} MB ({rss[-1] - rss[0]:+.1f} MB); over the "
        f"second half {tail[0]:.1f} -> {tail[-1]:.1f} MB = {slope:+.1f} KB/poll; peak "
        f"{data['hwm_kb'] / 1024:.1f} MB; events fired {data['fired']}"
    )


# --------------------------------------------------------------------------- C


def daemon(seconds: float, leads: int, arena_max: int | None = None) -> None:
    env = dict(CHILD_ENV)
    if arena_max:
        env["MALLOC_ARENA_MAX"] = str(arena_max)
    print(
        f"\nC. the daemon (trigger-engine run) for {seconds:g} s: leads every 1 s over "
        f"{leads:,} leads, one new lead per second delivered to a local receiver"
        + (f"; MALLOC_ARENA_MAX={arena_max}" if arena_max else "")
    )
    with (
        tmpdir("memory-daemon") as tmp_name,
        ReceiverProcess() as receiver,
        SimulatorProcess(leads=leads, rotate_every=1.0) as sim,
    ):
        tmp = Path(tmp_name)
        cfg = write_config(
            tmp / "daemon.toml",
            base_url=sim.base_url,
            database=tmp / "daemon.db",
            triggers={"leads": {"interval": "1s"}},
            sinks=[{"name": "crm", "url": receiver.url, "secret": SECRET}],
        )
        proc = subprocess.Popen(
            engine_cmd("run", "-c", str(cfg)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            cwd=HERE,
            env=env,
            preexec_fn=_die_with_parent,
        )
        samples: list[tuple[float, float]] = []
        t0 = time.monotonic()
        try:
            while (elapsed := time.monotonic() - t0) < seconds:
                time.sleep(5.0)
                if proc.poll() is not None:
                    raise RuntimeError(f"the daemon exited early ({proc.returncode})")
                samples.append((time.monotonic() - t0, proc_status_kb(proc.pid)["VmRSS"] / 1024))
            del elapsed
            delivered = receiver.count()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
    print("   RSS (MB) every 5 s: " + ", ".join(f"{r:.0f}" for _t, r in samples))
    first_min = [r for t, r in samples if t <= 60]
    last = [r for t, r in samples if t > samples[-1][0] - 30]
    base = max(first_min) if first_min else samples[0][1]
    half = samples[len(samples) // 2 :]
    print(
        f"   max over the first minute {base:.1f} MB, mean over the last 30 s "
        f"{sum(last) / len(last):.1f} MB; least-squares slope over the second half "
        f"{fit_slope(half) * 60:+.2f} MB/min; webhooks delivered {delivered}; "
        f"exit {proc.returncode}"
    )


def fit_slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y) points, y per unit of t."""
    if len(points) < 2:
        return 0.0
    mt = sum(t for t, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / den if den else 0.0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-repeat":
        cfg, polls, url = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        print(json.dumps(child_repeat(cfg, polls, url)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--poll-leads", type=int, default=2000)
    parser.add_argument("--daemon-seconds", type=float, default=120.0)
    parser.add_argument("--skip-peak", action="store_true")
    parser.add_argument(
        "--malloc-arena-max", type=int, default=None, help="MALLOC_ARENA_MAX for the daemon (C)"
    )
    args = parser.parse_args()
    header("memory (issue 7): peak RSS against the body; RSS over repeated polls")
    if not args.skip_peak:
        peak_rss(args.sizes)
    repeated(args.polls, args.poll_leads)
    if args.daemon_seconds > 0:
        daemon(args.daemon_seconds, args.poll_leads, args.malloc_arena_max)
    return 0


if __name__ == "__main__":
    sys.exit(main())
