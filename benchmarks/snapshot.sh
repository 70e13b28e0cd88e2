#!/bin/sh
# benchmarks/snapshot.sh REV DIR: a copy of the engine at commit REV in DIR (read-only git:
# `git archive`), to benchmark it while the checkout moves on:
#   sh benchmarks/snapshot.sh a25a5a4 $TMPDIR/te-before
#   BENCH_ENGINE_SRC=$TMPDIR/te-before python benchmarks/poll_known.py
set -eu
rev=$1
dir=$2
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$dir"
git -C "$root" archive "$rev" trigger_engine migrations | tar -x -C "$dir"
git -C "$root" rev-parse --short "$rev" > "$dir/.bench-rev"
echo "engine at $(cat "$dir/.bench-rev") in $dir"
