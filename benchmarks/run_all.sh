#!/bin/sh
# benchmarks/run_all.sh LABEL: every benchmark at its defaults, one after the other, each
# output kept in benchmarks/results/LABEL/NAME.txt (profiles beside them). About 17 minutes.
# Set BENCH_ENGINE_SRC to measure another source tree (see snapshot.sh).
set -u
label=${1:-current}
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python}
out="$here/results/$label"
mkdir -p "$out"
export BENCH_PROFILE_DIR="$out"
for name in poll_known poll_new deliver schedule memory; do
    echo "== $name -> $out/$name.txt"
    "$py" "$here/$name.py" > "$out/$name.txt" 2> "$out/$name.log" || echo "   $name FAILED (see $out/$name.log)"
    tail -n 3 "$out/$name.txt"
done
