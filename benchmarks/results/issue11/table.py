"""The issue-11 table: each benchmark's ratio (engine / floor, as the script prints it) in
every before and after run, the median and spread (max - min) of each side, and whether the
after median is worse than the before median by more than the larger spread.

    python benchmarks/results/issue11/table.py [DIR]     # default: this file's folder

DIR holds ``{poll_known,poll_new,deliver}_{before,after}_{1,2,3}.txt`` (interleave.sh).
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

# benchmark -> (the ratio's line, +1 if a larger ratio is worse, -1 if a smaller one is)
RATIOS = {
    "poll_known": (r"RATIO engine / floor \(json\.loads\)\s+= ([\d.]+)x", +1),
    "poll_new": (r"RATIO engine / floor \(json\.loads\)\s+= ([\d.]+)x", +1),
    "deliver": (r"RATIO engine / fastest floor throughput = ([\d.]+)x", -1),
}
SIDES = ("before", "after")


def main() -> int:
    where = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    for bench, (pattern, sense) in RATIOS.items():
        runs: dict[str, list[float]] = {}
        for side in SIDES:
            files = sorted(where.glob(f"{bench}_{side}_*.txt"))
            runs[side] = [float(re.findall(pattern, f.read_text())[-1]) for f in files]
        med = {s: statistics.median(v) for s, v in runs.items()}
        spread = {s: max(v) - min(v) for s, v in runs.items()}
        worse_by = sense * (med["after"] - med["before"])
        limit = max(spread.values())
        better = "lower" if sense > 0 else "higher"
        print(f"\n{bench}: ratio engine / floor ({better} is better)")
        print(f"  {'':7}{'runs':<22}{'median':>8}{'spread':>8}")
        for side in SIDES:
            values = ", ".join(f"{v:.2f}" for v in runs[side])
            print(f"  {side:<7}{values:<22}{med[side]:>8.2f}{spread[side]:>8.2f}")
        verdict = "WORSE beyond the spread" if worse_by > limit else "not worse beyond the spread"
        print(
            f"  after vs before: {worse_by:+.2f} worse (negative: better); larger spread "
            f"{limit:.2f} -> {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
