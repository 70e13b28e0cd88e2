#!/bin/bash
# benchmarks/interleave.sh OUT BEFORE AFTER: poll-new and poll-known at N = 100,000 for the
# engine at two commits, sides alternating (AFTER first), 2 rounds, each ratio to the floor
# measured in the same run; raw outputs and a log of the load in the folder OUT.
#   sh benchmarks/snapshot.sh BEFORE "$TMPDIR/te-BEFORE" && sh benchmarks/snapshot.sh AFTER "$TMPDIR/te-AFTER"
#   bash benchmarks/interleave.sh benchmarks/results/DATE-WHAT-AFTER BEFORE AFTER
#   BENCHES=poll_new bash benchmarks/interleave.sh ...     poll_new alone
# (from the checkout, its venv active)
set -u
out=$1
before=$2
after=$3
tmp=${TMPDIR:-/tmp}
mkdir -p "$out"
run() {  # bench side i args...
    local name="$1_$2_$3"
    echo "$(date -u +%H:%M:%S) $name: load1 $(cut -d' ' -f1 /proc/loadavg)" >>"$out/log.txt"
    BENCH_ENGINE_SRC="$tmp/te-$2" python "benchmarks/$1.py" "${@:4}" >"$out/$name.txt" \
        2>"$tmp/interleave-$name.log"
    echo "$(date -u +%H:%M:%S) $name: exit $?" >>"$out/log.txt"
}
for i in 1 2; do
    for bench in ${BENCHES:-poll_new poll_known}; do
        run "$bench" "$after" "$i" --n 100000 --runs 1 --no-profile
        run "$bench" "$before" "$i" --n 100000 --runs 1 --no-profile
    done
done
echo "$(date -u +%H:%M:%S) all done" >>"$out/log.txt"
