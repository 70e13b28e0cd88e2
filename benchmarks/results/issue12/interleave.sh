#!/bin/bash
# Issue 12: poll-known and poll-new at RESULTS.md's size (N = 100,000), deliver at 10,000,
# before (end of issue 11, 12a90d4: "i11") and after (issue 12, 180a42d: "i12b"), sides
# alternating. (Files named "i12" measured 0365ec0, before two fixes that this showed to be
# needed: a savepoint around every bulk write, and IN lists over every inserted key.)
#   sh benchmarks/snapshot.sh 12a90d4 /tmp/te-i11 && sh benchmarks/snapshot.sh 180a42d /tmp/te-i12b
#   bash benchmarks/results/issue12/interleave.sh      (from the checkout, its venv active)
set -u
out=benchmarks/results/issue12
run() {  # bench side i args...
    local name="$1_$2_$3"
    echo "$(date -u +%H:%M:%S) $name: load1 $(cut -d' ' -f1 /proc/loadavg)" >>"$out/log.txt"
    BENCH_ENGINE_SRC=/tmp/te-$2 python "benchmarks/$1.py" "${@:4}" >"$out/$name.txt" \
        2>"/tmp/issue12-$name.log"
    echo "$(date -u +%H:%M:%S) $name: exit $?" >>"$out/log.txt"
}
for i in 1 2; do
    run poll_new i12b "$i" --n 100000 --runs 1 --no-profile
    run poll_new i11 "$((i + 2))" --n 100000 --runs 1 --no-profile
    run poll_known i12b "$i" --n 100000 --runs 1 --no-profile
    run poll_known i11 "$((i + 2))" --n 100000 --runs 1 --no-profile
    run deliver i12b "$i" --n 10000 --runs 1 --no-profile --no-e2e
    run deliver i11 "$((i + 2))" --n 10000 --runs 1 --no-profile --no-e2e
done
echo "$(date -u +%H:%M:%S) all done" >>"$out/log.txt"
