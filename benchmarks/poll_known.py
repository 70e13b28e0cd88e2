"""poll-known: one poll of N seed-shaped leads that are all known already, end to end.

    python benchmarks/poll_known.py [--n 100000 20000] [--runs 3] [--no-profile]

Engine: ``trigger-engine run --once`` in a subprocess (config: the ``leads`` trigger only, no
sink), after a first ``run --once`` has seeded (remembered) all N leads. Floor: a bare Python
subprocess that GETs the same body from the same simulator with httpx and parses it with
``json.loads``. Both are timed from spawn to exit, interleaved, ``--runs`` times; medians.
Target (issue 7): engine / floor <= 1.2.

Also reported: a secondary floor (httpx + ``orjson.loads``, the parser the engine uses), the
engine's start-up alone (``python -m trigger_engine --version``), peak RSS and CPU of each
process, the engine's own split of one ``run --once`` (in process, functions wrapped) and
the hot spots of one poll under pyinstrument (saved under benchmarks/profiles/).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import (
    PROFILE_DIR,
    PY,
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

TARGET = 1.2


def bench(n: int, runs: int, profile: bool) -> dict[str, float]:
    with tmpdir("poll-known") as tmp, SimulatorProcess(leads=n) as sim:
        body = sim.info["leads_body_bytes"]
        print(f"\n-- N = {n:,} leads, response body {mb(body)} ({body / n:,.0f} bytes/lead)")
        cfg = write_config(
            Path(tmp) / "engine.toml",
            base_url=sim.base_url,
            database=Path(tmp) / "engine.db",
            triggers={"leads": {"interval": "5m"}},
        )
        log(f"seeding {n:,} leads (run --once, first poll remembers) ...")
        seed = run_child(engine_cmd("run", "--once", "-c", str(cfg))).check()
        print(f"   seed run: {seed.stdout.strip().splitlines()[0]} in {fmt_s(seed.wall)}")

        floor, floor_or, engine, startup = [], [], [], []
        busy = []
        for r in range(runs):
            busy.append(wait_quiet())
            log(f"run {r + 1}/{runs} (machine {busy[-1]:.0%} busy before) ...")
            floor.append(run_child(floor_fetch_cmd(sim.leads_url, "json")).check())
            engine.append(run_child(engine_cmd("run", "--once", "-c", str(cfg))).check())
            floor_or.append(run_child(floor_fetch_cmd(sim.leads_url, "orjson")).check())
            startup.append(run_child([PY, "-m", "trigger_engine", "--version"]).check())
        last = engine[-1].stdout.strip().splitlines()[0]
        assert " 0 new" in last, last

        f_wall = median([c.wall for c in floor])
        e_wall = median([c.wall for c in engine])
        o_wall = median([c.wall for c in floor_or])
        s_wall = median([c.wall for c in startup])
        print(f"   engine output: {last}")
        print(f"   {'':34} {'wall (median)':>14} {'CPU':>9} {'peak RSS':>10}   runs")
        for label, runs_ in (
            ("floor: httpx + json.loads", floor),
            ("floor': httpx + orjson.loads", floor_or),
            ("engine: run --once (all known)", engine),
            ("engine start-up only (--version)", startup),
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
        print(f"   ratio engine / floor' (orjson)     = {ratio(e_wall, o_wall):.2f}x")
        print(f"   ratio (engine - start-up) / floor  = {ratio(e_wall - s_wall, f_wall):.2f}x")
        e_cpu, f_cpu = median([c.cpu for c in engine]), median([c.cpu for c in floor])
        print(
            f"   CPU ratio engine / floor           = {ratio(e_cpu, f_cpu):.2f}x "
            "(CPU seconds of the process; less sensitive to other load)"
        )
        print(f"   other load before each run: {', '.join(f'{b:.0%}' for b in busy)} of 2 cores")

        log("engine split (in process) ...")
        split = split_in_child(cfg)
        print("   engine's own split of one run --once (in process, wrapped functions):")
        for line in split_lines(split):
            print(f" {line}")
        if profile:
            log("profile (pyinstrument) ...")
            out = PROFILE_DIR / f"poll_known_{n}.txt"
            print(f"   profile of one poll (pyinstrument, main thread; tree in {shown(out)}):")
            for line in profile_in_child(cfg, out):
                print(f" {line}")
        return {"n": n, "floor": f_wall, "engine": e_wall, "ratio": r_main}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 20_000], help="lead counts")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    header("poll-known (issue 7): run --once over N known leads vs httpx + json.loads")
    results = [bench(n, args.runs, not args.no_profile) for n in args.n]
    print("\n-- summary")
    for r in results:
        print(
            f"   poll-known N={r['n']:,}: engine {fmt_s(r['engine'])}, floor {fmt_s(r['floor'])}"
            f" -> {r['ratio']:.2f}x (target <= {TARGET}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
