"""startup: the command line as cron and operators run it, whole processes, spawn to exit.

    python benchmarks/startup.py [--runs 7] [--n 20000] [--no-importtime] [--before DIR]

Timed, interleaved ``--runs`` times (``wait_quiet()`` before each round), medians:

* ``python -c pass``: the interpreter's own start, the baseline every figure is divided by;
* ``python -c "import sqlalchemy, sqlalchemy.dialects.sqlite, pydantic"``: the libraries
  ``status`` and ``events`` cannot do without (the database, the configuration's validation),
  what is left of them is the engine's own;
* the same imports with the cyclic garbage collector paused and what they made frozen
  (``gc.disable()`` ... ``gc.freeze()``), as the command line imports the engine since
  2026-12-02 (``trigger_engine/cli/startup.py``): the same floor, measured the same way;
* ``trigger-engine --help`` and ``--version`` (target: --help <= 0.1 s);
* ``status`` and ``events`` on a small SQLite database made by the engine (a ``run --once``
  whose first poll of the simulator's 5 campaigns emits 5 events, delivered to a receiver)
  (target: <= 0.25 s each);
* ``run --once`` over N = 20,000 known leads (seeded by a first ``run --once``) against the
  bare fetch-and-parse process of the same body (``common.floor_fetch_cmd``: httpx +
  ``json.loads``) (target: engine / floor <= 1.2x).

The engine runs as ``python -m trigger_engine`` (what the ``trigger-engine`` script
imports), from this checkout or ``BENCH_ENGINE_SRC``, its modules compiled to bytecode first
as an installed package's are (``compileall``: with ``PYTHONDONTWRITEBYTECODE`` set, every
process would compile a source tree again). Then, unless ``--no-importtime``,
what each command still imports: ``python -X importtime``, the self time summed by top-level
package (the import profile of what is left).

``--before DIR`` (a snapshot made by ``benchmarks/snapshot.sh``): each engine command is run
from that tree too, right after this one's in every round, on the same databases, and the
after/before ratios of wall and CPU time are printed: on a shared machine whose load drifts,
the comparison made within one run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from common import (
    ENGINE_SRC,
    PY,
    SECRET,
    ChildResult,
    ReceiverProcess,
    SimulatorProcess,
    engine_cmd,
    floor_fetch_cmd,
    fmt_s,
    header,
    log,
    median,
    ratio,
    run_child,
    tmpdir,
    wait_quiet,
    write_config,
)

HELP_TARGET = 0.1  # seconds
QUERY_TARGET = 0.25  # seconds: status, events
RUN_ONCE_TARGET = 1.2  # x the floor
LIBRARIES = "import sqlalchemy, sqlalchemy.dialects.sqlite, pydantic"
LIBRARIES_NO_GC = f"import gc; gc.disable(); {LIBRARIES}; gc.freeze(); gc.enable()"


def _importtime(cmd: list[str], top: int) -> list[str]:
    """The heaviest top-level packages ``cmd`` imports (self time summed, from
    ``-X importtime``), and how many modules it imports."""
    result = run_child([cmd[0], "-X", "importtime", *cmd[1:]])
    by_package: dict[str, int] = defaultdict(int)
    modules = 0
    total = 0
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not match:
            continue
        own, _cumulative, _indent, name = match.groups()
        modules += 1
        total += int(own)
        by_package[name.split(".")[0]] += int(own)
    heaviest = sorted(by_package.items(), key=lambda kv: -kv[1])[:top]
    listed = ", ".join(f"{name} {us / 1000:.0f}" for name, us in heaviest)
    return [
        f"{modules} modules, {total / 1000:.0f} ms of imports (importtime's own overhead "
        f"included); heaviest packages (ms): {listed}"
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--n", type=int, default=20_000, help="known leads for run --once")
    parser.add_argument("--no-importtime", action="store_true")
    parser.add_argument(
        "--before",
        metavar="DIR",
        type=Path,
        help="another engine source tree (benchmarks/snapshot.sh): its commands are timed "
        "too, interleaved, and each after/before ratio printed",
    )
    args = parser.parse_args()
    header("startup (issue 16, target 1): whole CLI processes, spawn to exit")
    trees = [ENGINE_SRC] + ([args.before.resolve()] if args.before else [])
    for tree in trees:
        subprocess.run([PY, "-m", "compileall", "-q", str(tree / "trigger_engine")], check=True)
    print("   engine modules compiled to bytecode first (python -m compileall), as installed")
    before_env = None
    if args.before:
        rev = args.before / ".bench-rev"
        print(f"   before: {rev.read_text().strip() if rev.is_file() else args.before}")
        before_env = {**os.environ, "PYTHONPATH": str(args.before.resolve())}

    with (
        tmpdir("startup") as tmp,
        SimulatorProcess(leads=args.n, initial=5) as sim,
        ReceiverProcess() as receiver,
    ):
        big = write_config(
            Path(tmp) / "big.toml",
            base_url=sim.base_url,
            database=Path(tmp) / "big.db",
            triggers={"leads": {"interval": "5m"}},
        )
        small = write_config(
            Path(tmp) / "small.toml",
            base_url=sim.base_url,
            database=Path(tmp) / "small.db",
            triggers={"campaigns": {"interval": "5m", "on_first_poll": "emit"}},
            sinks=[{"name": "crm", "url": receiver.url, "secret": SECRET}],
        )
        log(f"seeding {args.n:,} leads and the small database (run --once each) ...")
        seed = run_child(engine_cmd("run", "--once", "-c", str(big))).check()
        made = run_child(engine_cmd("run", "--once", "-c", str(small))).check()
        print(f"   seed run ({args.n:,} leads): {seed.stdout.strip().splitlines()[0]}")
        print(f"   small database: {made.stdout.strip().splitlines()[0]}")

        commands: dict[str, list[str]] = {
            "python -c pass": [PY, "-c", "pass"],
            # what status and events cannot do without: the database toolkit (and the
            # SQLite dialect it loads on connecting) and the configuration's validation
            "libraries: sqlalchemy+pydantic": [PY, "-c", LIBRARIES],
            "libraries, collector paused": [PY, "-c", LIBRARIES_NO_GC],
            "--help": engine_cmd("--help"),
            "--version": engine_cmd("--version"),
            "status (small db)": engine_cmd("status", "-c", str(small)),
            "events (small db)": engine_cmd("events", "-c", str(small)),
            "floor: httpx + json.loads": floor_fetch_cmd(sim.leads_url, "json"),
            f"run --once ({args.n:,} known)": engine_cmd("run", "--once", "-c", str(big)),
        }
        engine_labels = [label for label, cmd in commands.items() if cmd[:3] == engine_cmd()]
        before: dict[str, list[ChildResult]] = {label: [] for label in engine_labels}
        results: dict[str, list[ChildResult]] = {label: [] for label in commands}
        busy = []
        for r in range(args.runs):
            busy.append(wait_quiet())
            log(f"round {r + 1}/{args.runs} (machine {busy[-1]:.0%} busy before) ...")
            for label, cmd in commands.items():
                results[label].append(run_child(cmd).check())
                if before_env is not None and label in before:
                    before[label].append(run_child(cmd, env=before_env).check())
        events_out = results["events (small db)"][-1].stdout.strip().splitlines()
        once_out = results[f"run --once ({args.n:,} known)"][-1].stdout.strip().splitlines()[0]
        assert len(events_out) == 5, events_out
        assert " 0 new" in once_out, once_out
        print(f"   run --once output: {once_out}")

        wall = {label: median([c.wall for c in runs]) for label, runs in results.items()}
        base = wall["python -c pass"]
        floor = wall["floor: httpx + json.loads"]
        print(f"\n   {'':30} {'wall (median)':>13} {'CPU':>8} {'/ pass':>7}   target   runs")
        for label, runs in results.items():
            if label in ("--help",):
                target = f"<= {HELP_TARGET} s"
                ok = wall[label] <= HELP_TARGET
            elif label.startswith(("status", "events")):
                target = f"<= {QUERY_TARGET} s"
                ok = wall[label] <= QUERY_TARGET
            elif label.startswith("run --once"):
                target = f"<= {RUN_ONCE_TARGET}x floor"
                ok = ratio(wall[label], floor) <= RUN_ONCE_TARGET
            else:
                target, ok = "", True
            walls = ", ".join(f"{c.wall:.3f}" for c in runs)
            verdict = "" if not target else ("  meets" if ok else "  MISSES")
            print(
                f"   {label:<30} {fmt_s(wall[label]):>13} "
                f"{median([c.cpu for c in runs]):6.3f} s {ratio(wall[label], base):6.1f}x   "
                f"{target:<15}{verdict}   [{walls}]"
            )
        run_label = f"run --once ({args.n:,} known)"
        r_once = ratio(wall[run_label], floor)
        print(
            f"\n   RATIO run --once / floor = {r_once:.2f}x (target <= {RUN_ONCE_TARGET}x); "
            f"difference {wall[run_label] - floor:+.3f} s"
        )
        print(
            f"   --help {fmt_s(wall['--help'])} (target {HELP_TARGET} s), "
            f"{wall['--help'] - base:+.3f} s over python -c pass"
        )
        libraries = wall["libraries: sqlalchemy+pydantic"]
        paused = wall["libraries, collector paused"]
        for label in ("status (small db)", "events (small db)"):
            print(
                f"   {label} {fmt_s(wall[label])} (target {QUERY_TARGET} s), "
                f"{wall[label] - base:+.3f} s over python -c pass, "
                f"{wall[label] - libraries:+.3f} s over importing its libraries alone, "
                f"{wall[label] - paused:+.3f} s over importing them with the collector paused"
            )
        print(f"   other load before each round: {', '.join(f'{b:.0%}' for b in busy)} of 2 cores")

        if before_env is not None:
            print("\n   after / before, the same command interleaved in the same rounds:")
            print(f"   {'':30} {'before wall':>11} {'after':>8} {'ratio':>6}   CPU ratio")
            for label in engine_labels:
                b_wall = median([c.wall for c in before[label]])
                b_cpu = median([c.cpu for c in before[label]])
                a_cpu = median([c.cpu for c in results[label]])
                print(
                    f"   {label:<30} {fmt_s(b_wall):>11} {fmt_s(wall[label]):>8} "
                    f"{ratio(wall[label], b_wall):5.2f}x   {ratio(a_cpu, b_cpu):5.2f}x"
                )

        if not args.no_importtime:
            log("import profiles (-X importtime) ...")
            print("\n   what each command imports (python -X importtime, one run each):")
            for label in ("--help", "status (small db)", "events (small db)", run_label):
                print(f"   {label}:")
                for line in _importtime(commands[label], top=8):
                    print(f"      {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
