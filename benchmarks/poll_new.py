"""poll-new: the first poll, with on_first_poll = "emit", over N new leads, end to end.

    python benchmarks/poll_new.py [--n 100000] [--runs 3] [--no-profile]

Engine: ``trigger-engine run --once`` in a subprocess on a fresh SQLite database, config with
the ``leads`` trigger (``on_first_poll = "emit"``) and one sink. Every lead becomes a seen
key, an event and a delivery row, in one transaction. The sink is disabled beforehand
(``trigger-engine sinks disable``, untimed), so each delivery row is written (status
``dead``, "sink disabled") but nothing is sent: this measures the poll, not the delivery
(``deliver.py`` measures that). Floor: the same as poll-known, a bare Python subprocess
fetching the same body with httpx and parsing it with ``json.loads``. Interleaved,
``--runs`` times, medians. Target (issue 7): engine / floor <= 2.5.

Also: the engine's own split of one run (in process) and a pyinstrument profile of one
poll (saved under benchmarks/profiles/).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from common import (
    PROFILE_DIR,
    SECRET,
    SimulatorProcess,
    engine_cmd,
    floor_fetch_cmd,
    fmt_s,
    header,
    log,
    mb,
    median,
    profile_in_child,
    ratio,
    run_child,
    shown,
    split_in_child,
    split_lines,
    tmpdir,
    wait_quiet,
    write_config,
)

TARGET = 2.5


def fresh_config(tmp: Path, name: str, base_url: str) -> Path:
    """A config on a new database whose one sink is disabled (rows written, none sent)."""
    cfg = write_config(
        tmp / f"{name}.toml",
        base_url=base_url,
        database=tmp / f"{name}.db",
        triggers={"leads": {"interval": "5m", "on_first_poll": "emit"}},
        sinks=[{"name": "crm", "url": "http://127.0.0.1:9/hook", "secret": SECRET}],
    )
    run_child(engine_cmd("sinks", "disable", "crm", "-c", str(cfg))).check()
    return cfg


def counts(db: Path) -> tuple[int, int, int]:
    """Seen keys, lead events and deliveries persisted by one run.

    Operational events (``engine.*``, e.g. the ``engine.sink_disabled`` that ``sinks disable``
    emits since issue 14) are the engine's own, not the poll's: they are left out.
    """
    queries = (
        "SELECT count(*) FROM seen_keys",
        "SELECT count(*) FROM events WHERE type NOT LIKE 'engine.%'",
        "SELECT count(*) FROM deliveries",
    )
    with sqlite3.connect(db) as conn:
        return tuple(conn.execute(q).fetchone()[0] for q in queries)  # type: ignore[return-value]


def bench(n: int, runs: int, profile: bool) -> dict[str, float]:
    with tmpdir("poll-new") as tmp_name, SimulatorProcess(leads=n) as sim:
        tmp = Path(tmp_name)
        body = sim.info["leads_body_bytes"]
        print(f"\n-- N = {n:,} new leads, response body {mb(body)}")
        run_child(floor_fetch_cmd(sim.leads_url)).check()  # warm-up, untimed
        floor, engine, busy = [], [], []
        for r in range(runs):
            cfg = fresh_config(tmp, f"run{r}", sim.base_url)
            busy.append(wait_quiet())
            log(f"run {r + 1}/{runs} (machine {busy[-1]:.0%} busy before) ...")
            floor.append(run_child(floor_fetch_cmd(sim.leads_url, "json")).check())
            engine.append(run_child(engine_cmd("run", "--once", "-c", str(cfg))).check())
            rows = counts(tmp / f"run{r}.db")
            assert rows == (n, n, n), rows
            (tmp / f"run{r}.db").unlink()
        out = engine[-1].stdout.strip().splitlines()
        f_wall = median([c.wall for c in floor])
        e_wall = median([c.wall for c in engine])
        print(f"   engine output: {out[0]} / {out[-1]}")
        print(f"   persisted per run: {n:,} seen keys, {n:,} events, {n:,} deliveries")
        print(f"   {'':34} {'wall (median)':>14} {'CPU':>9} {'peak RSS':>10}   runs")
        for label, runs_ in (
            ("floor: httpx + json.loads", floor),
            ("engine: run --once (emit, N new)", engine),
        ):
            walls = ", ".join(f"{c.wall:.2f}" for c in runs_)
            print(
                f"   {label:<34} {fmt_s(median([c.wall for c in runs_])):>14} "
                f"{median([c.cpu for c in runs_]):7.2f} s "
                f"{median([c.maxrss_kb for c in runs_]) / 1024:7.0f} MB   [{walls}]"
            )
        r_main = ratio(e_wall, f_wall)
        verdict = "meets" if r_main <= TARGET else "MISSES"
        print(
            f"   RATIO engine / floor (json.loads)   = {r_main:.2f}x  (target <= {TARGET}x: "
            f"{verdict})"
        )
        e_cpu, f_cpu = median([c.cpu for c in engine]), median([c.cpu for c in floor])
        print(f"   CPU ratio engine / floor           = {ratio(e_cpu, f_cpu):.2f}x")
        print(f"   engine throughput: {n / e_wall:,.0f} new items/s end to end")
        print(f"   other load before each run: {', '.join(f'{b:.0%}' for b in busy)} of 2 cores")

        log("engine split (in process) ...")
        split = split_in_child(fresh_config(tmp, "split", sim.base_url))
        print("   engine's own split of one run --once (in process, wrapped functions):")
        for line in split_lines(split):
            print(f" {line}")
        if profile:
            log("profile (pyinstrument) ...")
            out_file = PROFILE_DIR / f"poll_new_{n}.txt"
            print(f"   profile of one poll (pyinstrument, main thread; tree in {shown(out_file)}):")
            for line in profile_in_child(fresh_config(tmp, "profile", sim.base_url), out_file):
                print(f" {line}")
        return {"n": n, "floor": f_wall, "engine": e_wall, "ratio": r_main}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000], help="lead counts")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    header("poll-new (issue 7): first poll with emit over N new leads vs httpx + json.loads")
    results = [bench(n, args.runs, not args.no_profile) for n in args.n]
    print("\n-- summary")
    for r in results:
        print(
            f"   poll-new N={r['n']:,}: engine {fmt_s(r['engine'])}, floor {fmt_s(r['floor'])}"
            f" -> {r['ratio']:.2f}x (target <= {TARGET}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
