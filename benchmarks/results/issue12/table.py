"""Print issue 12's before/after table from the outputs in this folder (python table.py)."""

import re
import statistics
from pathlib import Path

HERE = Path(__file__).parent
PATTERNS = {
    "poll_known": (r"RATIO engine / floor \(json\.loads\)\s*=\s*([\d.]+)x", "lower"),
    "poll_new": (r"RATIO engine / floor \(json\.loads\)\s*=\s*([\d.]+)x", "lower"),
    "deliver": (r"RATIO engine / fastest floor throughput = ([\d.]+)x", "higher"),
}
for bench, (pattern, better) in PATTERNS.items():
    sides = {}
    for side in ("i11", "i12", "i12b"):
        values = []
        for path in sorted(HERE.glob(f"{bench}_{side}_*.txt")):
            found = re.search(pattern, path.read_text())
            if found:
                values.append(float(found.group(1)))
        sides[side] = values
    print(f"\n{bench}: ratio engine / floor ({better} is better)")
    for side, label in (
        ("i11", "before (12a90d4)"),
        ("i12", "0365ec0        "),
        ("i12b", "after  (180a42d)"),
    ):
        v = sides[side]
        if v:
            spread = max(v) - min(v)
            runs = ", ".join(f"{x:.2f}" for x in v)
            print(f"  {label}: {runs:<20} median {statistics.median(v):.2f}  spread {spread:.2f}")
